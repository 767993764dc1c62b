"""The gate: allow only when every check holds; otherwise deny with one reason code.

The checks run in a fixed order (DESIGN.md section 3) and the first that fails decides.
``decide`` is a pure function of (state, request, now): the same inputs give the same
decision and the same decision digest in every process. Every check, and the decision's
``time``, use trusted now: the wall clock, or the observed floor when the wall clock is
behind it but not behind the signed floor (:func:`edge_agent.trust.clock.trusted_now`), so
a deadline once seen to pass stays passed. Any unexpected exception becomes a
deny with ``internal_error``: there is no path from a bug to an allow.

The lineage check (``lineage_unavailable``) belongs to the shell, which must write the
decision durably before returning it and replace it with :func:`lineage_unavailable` when
it cannot.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final, Literal, TypeAlias

from edge_agent.errors import ClockError
from edge_agent.policy.engine import evaluate
from edge_agent.protocol import dcbor
from edge_agent.protocol.request import Request
from edge_agent.protocol.revocation import RevocationKind
from edge_agent.protocol.roles import Role
from edge_agent.trust.clock import check_clock, trusted_now
from edge_agent.trust.state import TrustState

__all__ = [
    "GATE_OPEN",
    "Decision",
    "GateCheck",
    "GateState",
    "LastDecision",
    "Reason",
    "attestation_failure",
    "check_report",
    "decide",
    "gate_state",
    "lineage_unavailable",
]

logger = logging.getLogger(__name__)

GATE_OPEN: Final = "open"
"""What :func:`gate_state` says when every decision would pass the gate's checks."""


class Reason(StrEnum):
    """Machine-readable reason codes (DESIGN.md section 3)."""

    ALLOWED = "allowed"
    NO_BUNDLE = "no_bundle"
    BUNDLE_EXPIRED = "bundle_expired"
    FRESHNESS_EXPIRED = "freshness_expired"
    """No freshness token from the hub pinned the bundle within its ``max_offline``."""
    CLOCK_UNTRUSTED = "clock_untrusted"
    ROOT_EXPIRED = "root_expired"
    """The newest installed trust root has expired: a newer one must be installed."""
    BUNDLE_UNTRUSTED = "bundle_untrusted"
    """The installed bundle does not verify under the current trust root (its keys were
    rotated or narrowed): a bundle signed for that root must be installed."""
    ATTESTATION_FAILED = "attestation_failed"
    ATTESTATION_STALE = "attestation_stale"
    REVOKED = "revoked"
    LINEAGE_UNAVAILABLE = "lineage_unavailable"
    POLICY_DENIED = "policy_denied"
    NO_MATCHING_RULE = "no_matching_rule"
    PARENT_MISSING = "parent_missing"
    """A rule would allow this request with a parent, and the request cited none."""
    PARENT_INVALID = "parent_invalid"
    """A rule would allow this request with a parent, and the cited one was refused or
    fails the rule's parent condition."""
    INTERNAL_ERROR = "internal_error"


GateState: TypeAlias = Reason | Literal["open"]
"""What :func:`gate_state` says: :data:`GATE_OPEN`, or the :class:`Reason` every decision
would deny with."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request, with what it was decided under."""

    allowed: bool
    reason: Reason
    message: str
    rule_id: str | None
    bundle_version: int | None
    bundle_digest: bytes | None
    request: Request
    time: int

    def as_cbor(self) -> dict[str, object]:
        """The decision as a deterministic-CBOR-encodable map (its digest's preimage); the
        request's parent is in it only when there is one, so every other decision keeps
        its digest."""
        value: dict[str, object] = {
            "allowed": self.allowed,
            "reason": str(self.reason),
            "rule": self.rule_id,
            "bundle_version": self.bundle_version,
            "bundle_digest": self.bundle_digest,
            "time": self.time,
            "request": {
                "subject": self.request.subject,
                "action": self.request.action,
                "resource": self.request.resource,
                "context": [list(kv) for kv in self.request.context],
                "selectors": list(self.request.selectors),
            },
        }
        parent = self.request.parent
        if parent is not None:
            facts = parent.facts
            value["parent"] = {
                "directory_version": parent.directory_version,
                "refusal": parent.refusal,
                "facts": None
                if facts is None
                else [
                    facts.device,
                    list(facts.groups),
                    facts.seq,
                    facts.leaf_hash,
                    facts.subject,
                    facts.action,
                    facts.resource,
                    facts.time,
                    facts.depth,
                ],
            }
        return value

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(dcbor.encode(self.as_cbor())).digest()


@dataclass(frozen=True, slots=True)
class GateCheck:
    """One gate check and whether it holds now, for ``status``."""

    name: str
    passed: bool
    reason: Reason | None
    message: str


_Failure = tuple[Reason, str]
_Check = Callable[[TrustState, int], _Failure | None]
_FAILED = Reason.ATTESTATION_FAILED


def _check_fault(state: TrustState, now: int) -> _Failure | None:
    if state.fault is not None:
        return Reason.INTERNAL_ERROR, state.fault
    return None


def _check_clock(state: TrustState, now: int) -> _Failure | None:
    try:
        check_clock(now, state.floor)
    except ClockError as exc:
        return Reason.CLOCK_UNTRUSTED, exc.message
    return None


def _check_root(state: TrustState, now: int) -> _Failure | None:
    root = state.root
    if now >= root.expires_at:
        return (
            Reason.ROOT_EXPIRED,
            f"trust root version {root.version} expired {now - root.expires_at} s ago; "
            f"install trust root version {root.version + 1} or later",
        )
    return None


def _check_bundle(state: TrustState, now: int) -> _Failure | None:
    if state.distrusted is not None:
        return Reason.BUNDLE_UNTRUSTED, state.distrusted.why
    if state.bundle is None:
        return Reason.NO_BUNDLE, "no valid policy bundle is installed"
    return None


def _check_expiry(state: TrustState, now: int) -> _Failure | None:
    bundle = state.bundle
    if bundle is None:
        return None
    if now >= bundle.expires_at:
        return (
            Reason.BUNDLE_EXPIRED,
            f"bundle version {bundle.version} expired {now - bundle.expires_at} s ago",
        )
    if bundle.max_offline is None:
        return None
    last_fresh = max(bundle.issued_at, state.fresh_time or 0)
    if now - last_fresh >= bundle.max_offline:
        return (
            Reason.FRESHNESS_EXPIRED,
            f"bundle version {bundle.version} has had no freshness from the hub for "
            f"{now - last_fresh} s (max_offline {bundle.max_offline} s)",
        )
    return None


def attestation_failure(state: TrustState, now: int) -> _Failure | None:
    """A bundle with expectations needs a passing, current local measurement of this bundle
    and a passing, unexpired hub result for that same measured state. Reads only values
    in ``state``: no file is opened and nothing is measured here (O(1))."""
    bundle = state.bundle
    if bundle is None or not bundle.attestation:
        return None
    local = state.local_attestation
    if local is None:
        return _FAILED, "the bundle requires attestation and this device has not been measured"
    if local.bundle_digest != bundle.digest:
        return _FAILED, f"the last measurement was not checked against bundle v{bundle.version}"
    if not local.passed:
        return _FAILED, f"the measured state does not match the bundle: {local.detail}"
    if now >= local.valid_until:
        return (
            Reason.ATTESTATION_STALE,
            f"the last local measurement is {now - local.measured_at} s old; is the agent's "
            "re-measurement running?",
        )
    result = state.attestation_result
    if result is None:
        return _FAILED, "no attestation result from the hub's verifier yet (awaiting a challenge)"
    if not result.passed:
        return _FAILED, f"the hub's verifier failed this device: {result.detail}"
    if result.measured != local.digest:
        return (
            Reason.ATTESTATION_STALE,
            "the measured state changed since the hub's last result; awaiting a new challenge",
        )
    if now >= result.expires_at:
        return (
            Reason.ATTESTATION_STALE,
            f"the hub's attestation result expired {now - result.expires_at} s ago and was "
            "not renewed",
        )
    return None


def _check_revocation(state: TrustState, now: int) -> _Failure | None:
    if state.announced_epoch > state.seen_epoch:
        return (
            Reason.REVOKED,
            f"the hub announced revocation epoch {state.announced_epoch} but this device has "
            f"received only up to epoch {state.seen_epoch}; a revocation is being withheld "
            "or is still in transit",
        )
    bundle = state.bundle
    threshold = state.root.role(Role.POLICY).threshold
    for revocation in state.revocations:
        voids_bundle = bundle is not None and revocation.denies_bundle(
            bundle.version, bundle.signer_ids, threshold
        )
        if revocation.denies_device(state.device) or voids_bundle:
            return (
                Reason.REVOKED,
                f"revoked ({revocation.kind} {revocation.value}, epoch {revocation.epoch}): "
                f"{revocation.reason or 'no reason given'}",
            )
    if bundle is not None:
        revoked = {r.value for r in state.revocations if r.kind is RevocationKind.KEY}
        valid = [k for k in bundle.signer_ids if k.hex() not in revoked]
        if len(valid) < threshold:
            return (
                Reason.REVOKED,
                f"bundle version {bundle.version} has {len(valid)} signature(s) by keys that "
                f"are not revoked; {threshold} required",
            )
    return None


_CHECKS: tuple[tuple[str, _Check], ...] = (
    ("state", _check_fault),
    ("clock", _check_clock),
    ("root", _check_root),
    ("bundle", _check_bundle),
    ("expiry", _check_expiry),
    ("attestation", attestation_failure),
    ("revocation", _check_revocation),
)


def decide(state: TrustState, request: Request, now: int) -> Decision:
    """Decide ``request`` at wall-clock time ``now`` (Unix seconds): allow only if every
    check holds. The decision's ``time`` is trusted now (module docstring)."""
    try:
        return _decide(state, request, trusted_now(now, state.floor))
    except Exception as exc:
        logger.exception("gate failed unexpectedly; denying")
        return Decision(
            False, Reason.INTERNAL_ERROR, f"internal error: {exc}", None, None, None, request, now
        )


class LastDecision:
    """:func:`decide`, remembering its last call: asked again with the very same state,
    an equal request and the same ``now``, it gives the decision it made then. Exact:
    :func:`decide` is a pure function of those three, and a :class:`TrustState` is
    immutable (every change makes a new one, so the state is compared by identity). A
    workload asks the same thing many times a second. Safe to share between threads: the
    remembered call is replaced whole."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[TrustState, Request, int, Decision] | None = None

    def decide(self, state: TrustState, request: Request, now: int) -> Decision:
        last = self._last
        if last is not None and last[0] is state and last[2] == now and last[1] == request:
            return last[3]
        decision = decide(state, request, now)
        self._last = (state, request, now, decision)
        return decision


def _decide(state: TrustState, request: Request, now: int) -> Decision:
    bundle = state.bundle
    version = bundle.version if bundle is not None else None
    digest = bundle.digest if bundle is not None else None
    for _, check in _CHECKS:
        failure = check(state, now)
        if failure is not None:
            reason, message = failure
            return Decision(False, reason, message, None, version, digest, request, now)
    assert bundle is not None
    match = evaluate(bundle.policy, request, now)
    reason = Reason(match.reason)
    return Decision(
        match.allowed,
        reason,
        _policy_message(reason, match.rule_id, request),
        match.rule_id,
        version,
        digest,
        request,
        now,
    )


def _policy_message(reason: Reason, rule_id: str | None, request: Request) -> str:
    if reason is Reason.ALLOWED:
        return f"allowed by rule {rule_id!r}"
    if reason is Reason.POLICY_DENIED:
        return f"denied by rule {rule_id!r}"
    if reason is Reason.PARENT_MISSING:
        return f"rule {rule_id!r} allows this request only with a parent receipt; none was given"
    if reason is Reason.PARENT_INVALID:
        parent = request.parent
        why = (
            parent.refusal
            if parent is not None and parent.refusal
            else (
                "the parent does not meet the rule's parent condition (action, resource, subject, "
                "device, age or depth)"
            )
        )
        return f"rule {rule_id!r} allows this request only with a valid parent: {why}"
    return "no rule allows this request (default deny)"


def lineage_unavailable(decision: Decision, why: str) -> Decision:
    """The deny that replaces ``decision`` when it could not be written to the lineage."""
    return replace(
        decision,
        allowed=False,
        reason=Reason.LINEAGE_UNAVAILABLE,
        message=f"the decision could not be logged: {why}",
        rule_id=None,
    )


def check_report(state: TrustState, now: int) -> tuple[GateCheck, ...]:
    """Every gate check's verdict at wall-clock time ``now``, in gate order (for ``status``)."""
    now = trusted_now(now, state.floor)
    report = []
    for name, check in _CHECKS:
        failure = check(state, now)
        if failure is None:
            report.append(GateCheck(name, True, None, "ok"))
        else:
            report.append(GateCheck(name, False, failure[0], failure[1]))
    return tuple(report)


def gate_state(checks: Sequence[GateCheck], lineage_problem: str | None) -> GateState:
    """:data:`GATE_OPEN`, or the reason code every decision would deny with now: an unusable
    lineage first (``lineage_problem``, the shell's check: decisions that cannot be logged
    are denied whatever the rest says), then the first failing of ``checks`` (in gate order,
    from :func:`check_report`)."""
    if lineage_problem is not None:
        return Reason.LINEAGE_UNAVAILABLE
    for check in checks:
        if not check.passed:
            return check.reason or Reason.INTERNAL_ERROR
    return GATE_OPEN

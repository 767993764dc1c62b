"""The trust machine: (trust state, object bytes, now) -> outcome, one function per kind of
trust object the agent receives.

Each function verifies the object against the state, decides what it does and returns an
outcome that says everything the shell must do, and nothing else:

- :class:`Outcome`: the verified object, the new state (the same object when nothing
  changes), what to persist before swapping the state in (``write``, one type per store
  change; ``None``: nothing), the trust transition to log in the lineage with it, and the
  signed time it vouches for (the shell's time anchor, :mod:`edge_agent.trust.clock` rule 4);
- :class:`Refused`: the error to raise and the rejection to log; the state stays as it was.

The order in each is TUF's: verify the exact bytes, compare versions (equal bytes: no
change), then judge what the object does, and only then hand back a new state. ``now`` is
the shell's :func:`~edge_agent.trust.clock.earliest_now` for expiry (installing) and
:func:`~edge_agent.trust.clock.trusted_now` for observations; no function here reads a
clock, the store or a file, and none keeps anything between calls: the shell persists the
write, records the transition and swaps the state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeAlias, TypeVar

from edge_agent.errors import BundleError, ClockError, EdgeGovError, RootError
from edge_agent.policy.bundle import CompiledBundle, compile_for_device
from edge_agent.protocol.attestation import AttestationError, AttestationResult, verify_result
from edge_agent.protocol.freshness import FreshnessError, FreshnessToken, verify_freshness
from edge_agent.protocol.lineage_entries import Kind
from edge_agent.protocol.revocation import Revocation, RevocationError, verify_revocation
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import TrustRoot, verify_root_chain, verify_root_update
from edge_agent.trust.clock import TimeFloor, check_clock
from edge_agent.trust.gate import Reason, attestation_failure
from edge_agent.trust.restore import StoredTrust, void_revocations, void_tokens
from edge_agent.trust.state import (
    LocalVerdict,
    RevocationEffect,
    TrustState,
    check_admissible,
    passed_deadline,
    revocation_effect,
    rotated_roles,
    with_attestation_result,
    with_bundle,
    with_freshness,
    with_local_verdict,
    with_revocation,
    with_root,
)
from edge_agent.trust.verdict import Measured, judge

__all__ = [
    "ATTESTATION_NOT_REQUIRED",
    "ATTESTATION_PASSED",
    "ATTESTATION_UNOBSERVED",
    "AttestationObservation",
    "AttestationVerdict",
    "AttestationWrite",
    "BundleWrite",
    "ClockObservation",
    "FloorWrite",
    "FreshnessWrite",
    "Outcome",
    "Refused",
    "RevocationWrite",
    "RootWrite",
    "SignedTime",
    "StoreWrite",
    "Transition",
    "Write",
    "accept_attestation_result",
    "accept_bundle",
    "accept_freshness",
    "accept_measurement",
    "accept_revocation",
    "accept_root",
    "accept_root_chain",
    "accept_shadow",
    "observe_attestation",
    "observe_clock",
    "observe_deadlines",
]

_V = TypeVar("_V")

ATTESTATION_UNOBSERVED: Final = "unobserved"
"""The attestation verdict before the first observation (every verdict is then a change)."""
ATTESTATION_NOT_REQUIRED: Final = "not_required"
"""The attestation verdict when the installed bundle expects no attestation."""
ATTESTATION_PASSED: Final = "passed"
"""The attestation verdict when the gate's attestation check holds."""
AttestationVerdict: TypeAlias = Reason | Literal["unobserved", "not_required", "passed"]
"""The gate's attestation verdict as last observed: a constant above, or the reason code
the attestation check fails with. Kept in memory only, to see changes; never stored."""
_ATTESTATION_KINDS = {
    Reason.ATTESTATION_FAILED: Kind.ATTESTATION_FAILED,
    Reason.ATTESTATION_STALE: Kind.ATTESTATION_STALE,
}


@dataclass(frozen=True, slots=True)
class Transition:
    """A trust transition to log in the lineage (the shell adds the time and the chain)."""

    kind: Kind
    applied: bool
    reason: str
    detail: str
    bundle_digest: bytes | None = None
    bundle_version: int | None = None


@dataclass(frozen=True, slots=True)
class SignedTime:
    """Signed time an accepted object vouches for: ``seconds``, signed by ``role``."""

    seconds: int
    role: Role


@dataclass(frozen=True, slots=True)
class BundleWrite:
    """Make ``data`` the active bundle and raise the floor, in one transaction."""

    data: bytes
    digest: bytes
    version: int
    floor: TimeFloor


@dataclass(frozen=True, slots=True)
class RootWrite:
    """Add the next root with what it voids, in one transaction (the store's
    ``install_root``); the shell then loads the state again, as stored."""

    data: bytes
    version: int
    floor: TimeFloor
    rotated: frozenset[Role]
    announced_epoch: int | None
    """Set the announced kill epoch to this (the freshness role was rotated)."""
    seen_epoch: int | None
    """Set the seen revocation epoch to this (the revoke role was rotated)."""
    void_revocations: tuple[int, ...]
    void_tokens: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RevocationWrite:
    """Record a revocation's epoch and signed time; keep its bytes when ``applied``."""

    data: bytes
    epoch: int
    applied: bool
    seen_epoch: int
    floor: TimeFloor


@dataclass(frozen=True, slots=True)
class FreshnessWrite:
    """Keep the token pinning the active bundle (``data``) and the one naming the newest
    bundle (``pin``) when given, the announced kill epoch, and raise the floor."""

    data: bytes | None
    floor: TimeFloor
    announced_epoch: int
    pin: bytes | None


@dataclass(frozen=True, slots=True)
class FloorWrite:
    """Raise the stored time floor to ``floor`` (a signed deadline observed to pass)."""

    floor: TimeFloor


@dataclass(frozen=True, slots=True)
class AttestationWrite:
    """Keep the new state's attestation result (the attestation file), and raise the
    stored floor to ``floor`` when given."""

    floor: TimeFloor | None


StoreWrite = BundleWrite | RootWrite | RevocationWrite | FreshnessWrite | FloorWrite
"""A change to the state database; each type's fields are the store call's keywords."""
Write = StoreWrite | AttestationWrite
"""What an outcome asks the shell to persist."""


@dataclass(frozen=True, slots=True)
class Outcome(Generic[_V]):
    """An object accepted (or found already held): see the module docstring."""

    value: _V
    state: TrustState
    write: Write | None = None
    transition: Transition | None = None
    signed: SignedTime | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """An object refused: ``error`` to raise, ``transition`` (the rejection) to log."""

    error: EdgeGovError
    transition: Transition


def _refused(kind: Kind, error: EdgeGovError) -> Refused:
    return Refused(error, Transition(kind, False, error.code, str(error)))


def accept_bundle(state: TrustState, data: bytes, now: int) -> Outcome[CompiledBundle] | Refused:
    """Install the bundle ``data`` at ``now`` (earliest now: expiry is judged against it).

    Steps: 1. verify it for this device under the current root, newer than the installed
    one (the installed bytes again: no change); 2. check that ``state`` admits it (not
    issued too far ahead, not older than the freshness pin:
    :func:`~edge_agent.trust.state.check_admissible`); 3. install it
    (:func:`~edge_agent.trust.state.with_bundle`).
    """
    try:
        bundle = _admit_bundle(state, data, now)
    except BundleError as exc:
        return _refused(Kind.BUNDLE_REJECTED, exc)
    if bundle.unchanged:
        return Outcome(bundle, state)
    new = with_bundle(state, bundle)
    return Outcome(
        bundle,
        new,
        BundleWrite(data, bundle.digest, bundle.version, new.floor),
        Transition(
            Kind.BUNDLE_INSTALLED,
            True,
            str(Kind.BUNDLE_INSTALLED),
            f"bundle version {bundle.version} installed",
            bundle.digest,
            bundle.version,
        ),
        SignedTime(bundle.issued_at, Role.POLICY),
    )


def accept_shadow(
    state: TrustState, data: bytes, now: int
) -> Outcome[CompiledBundle | None] | Refused:
    """Judge the shadow bundle ``data`` at ``now`` (earliest now) exactly as
    :func:`accept_bundle` judges a bundle (the same steps 1 and 2, with the same refusal
    codes, logged as ``shadow_rejected``), without installing it: the state never changes,
    and no signed time is taken from it (a shadow never decides, so it vouches for
    nothing). The value is the bundle to hold beside the active one, or ``None`` when
    ``data`` is the active bundle itself (nothing to compare).
    """
    try:
        bundle = _admit_bundle(state, data, now)
    except BundleError as exc:
        return _refused(Kind.SHADOW_REJECTED, exc)
    return Outcome(None if bundle.unchanged else bundle, state)


def _admit_bundle(state: TrustState, data: bytes, now: int) -> CompiledBundle:
    """Steps 1 and 2 of :func:`accept_bundle`: ``data`` verified and compiled for this
    device under the current root against the installed bundle (the installed bytes again
    are ``unchanged``), and, when newer, admitted by ``state`` at ``now``.

    Raises:
        BundleError: refused (its ``code`` names the check).
    """
    bundle = compile_for_device(
        data, root=state.root, device=state.device, installed=state.installed, now=now
    )
    if not bundle.unchanged:
        check_admissible(state, bundle, now)
    return bundle


def accept_root(
    state: TrustState, data: bytes, stored: StoredTrust
) -> Outcome[TrustRoot] | Refused:
    """Rotate to the next trust root ``data`` (TUF: signed by a threshold of the current
    root's keys and of its own, exactly the next version; an expired root is still a valid
    link). ``stored`` is the state as stored, for what the rotation voids there. The root
    already installed is no change. Expiry is not judged, so there is no ``now``.
    """
    if data == state.root.raw:
        return Outcome(state.root, state)
    try:
        root = verify_root_update(state.root, data, now=None)
    except RootError as exc:
        return _refused(Kind.ROOT_REJECTED, exc)
    new = with_root(state, root)
    rotated = rotated_roles(state.root, root)
    return Outcome(
        root,
        new,
        RootWrite(
            root.raw,
            root.version,
            new.floor,
            rotated,
            announced_epoch=new.seen_epoch if Role.FRESHNESS in rotated else None,
            seen_epoch=new.seen_epoch if Role.REVOKE in rotated else None,
            void_revocations=void_revocations(stored, new),
            void_tokens=void_tokens(stored, new),
        ),
        Transition(
            Kind.ROOT_ROTATED, True, str(Kind.ROOT_ROTATED), f"trust root version {root.version}"
        ),
        SignedTime(root.issued_at, Role.ROOT),
    )


def accept_root_chain(
    state: TrustState, chain: Sequence[bytes]
) -> Outcome[tuple[TrustRoot, ...]] | Refused:
    """Check roots N+1, N+2, ... as one chain after the current root, before any is
    installed (each is then installed with :func:`accept_root`); nothing changes here."""
    try:
        roots = verify_root_chain(state.root, chain)
    except RootError as exc:
        return _refused(Kind.ROOT_REJECTED, exc)
    return Outcome(roots, state)


def accept_revocation(state: TrustState, data: bytes) -> Outcome[Revocation | None] | Refused:
    """Learn of the revocation ``data``: verified under the revoke role, then doing what
    :func:`~edge_agent.trust.state.revocation_effect` rules. The value is the revocation
    when it applies (logged as applied), ``None`` when it only records a new epoch or is
    already known (then nothing changes). Revocations carry no expiry: no ``now``.
    """
    try:
        revocation = verify_revocation(data, root=state.root, region=state.device.region)
    except RevocationError as exc:
        return _refused(Kind.REVOCATION_REJECTED, exc)
    effect = revocation_effect(state, revocation)
    if effect is RevocationEffect.KNOWN:
        return Outcome(None, state)
    new = with_revocation(state, revocation)
    applied = effect is RevocationEffect.APPLIES
    transition = Transition(
        Kind.REVOCATION_APPLIED,
        True,
        str(Reason.REVOKED),
        f"revocation epoch {revocation.epoch}: {revocation.kind} {revocation.value} "
        f"({revocation.reason or 'no reason given'})",
    )
    return Outcome(
        revocation if applied else None,
        new,
        RevocationWrite(data, revocation.epoch, applied, new.seen_epoch, new.floor),
        transition if applied else None,
        SignedTime(revocation.issued_at, Role.REVOKE),
    )


def accept_freshness(state: TrustState, data: bytes, now: int) -> Outcome[FreshnessToken] | Refused:
    """Apply the freshness token ``data``, valid at ``now`` (earliest now): signed time,
    kill epoch, ``max_offline`` (:func:`~edge_agent.trust.state.with_freshness`).

    It is persisted as the token pinning the active bundle when it renews it (so a restart
    keeps it) and as the pin when it names a newer bundle than any before; a token that
    changes nothing persists nothing.
    """
    try:
        token = verify_freshness(data, root=state.root, region=state.device.region, now=now)
    except FreshnessError as exc:
        return _refused(Kind.FRESHNESS_REJECTED, exc)
    new = with_freshness(state, token)
    pins_ours = new.fresh_time != state.fresh_time
    announced = new.announced_epoch != state.announced_epoch
    pinned = new.pin != state.pin
    write = None
    if pins_ours or announced or pinned or new.floor != state.floor:
        write = FreshnessWrite(
            data if pins_ours else None,
            new.floor,
            new.announced_epoch,
            data if pinned else None,
        )
    return Outcome(token, new, write, None, SignedTime(token.hub_time, Role.FRESHNESS))


def accept_attestation_result(
    state: TrustState, data: bytes, now: int, answered: Mapping[bytes, bytes]
) -> Outcome[AttestationResult] | Refused:
    """Keep the hub's attestation result ``data``: a verifier key signed it for this device,
    its nonce is one of ``answered`` (nonce -> the measured digest sent with it), it attests
    that measured state, and it has not expired at ``now`` (earliest now). The result
    already held is no change; a refusal is logged as a failed attestation.
    """
    held = state.attestation_result
    if held is not None and held.raw == data:
        return Outcome(held, state)
    try:
        result = verify_result(data, root=state.root, device=state.device.device_id)
        _check_answered(result, answered.get(result.nonce), now)
    except AttestationError as exc:
        return _refused(Kind.ATTESTATION_FAILED, exc)
    new = with_attestation_result(state, result)
    floor = new.floor if new.floor != state.floor else None
    return Outcome(
        result, new, AttestationWrite(floor), None, SignedTime(result.issued_at, Role.VERIFIER)
    )


def _check_answered(result: AttestationResult, sent: bytes | None, now: int) -> None:
    if sent is None:
        raise AttestationError(
            "attestation result for a nonce this agent did not answer or already used "
            "(replayed or old)"
        )
    if result.measured != sent:
        raise AttestationError(
            "attestation result attests a measured state this agent did not send"
        )
    if now >= result.expires_at:
        raise AttestationError(f"attestation result expired {now - result.expires_at} s ago")


def accept_measurement(
    state: TrustState, measured: Measured, now: int, interval_s: int
) -> Outcome[LocalVerdict]:
    """Make the verdict of ``measured`` (a local measurement taken at ``now``, repeated every
    ``interval_s``) against the installed bundle the state's local verdict
    (:func:`~edge_agent.trust.verdict.judge`). Always accepted: it is what this device is
    now. A failing verdict drops the hub's result (a fresh challenge is needed); the write
    keeps the attestation state for the other processes.
    """
    verdict = judge(state.bundle, state.device, measured, now=now, interval_s=interval_s)
    return Outcome(verdict, with_local_verdict(state, verdict), AttestationWrite(None))


@dataclass(frozen=True, slots=True)
class ClockObservation:
    """The clock verdict at one wall-clock reading: ``trusted``, the state with the signed
    deadlines trusted now has passed observed (``state`` itself: none, or untrusted), and
    the change of verdict to log (``None``: unchanged)."""

    trusted: bool
    state: TrustState
    transition: Transition | None


def observe_clock(state: TrustState, wall: int, now: int, *, trusted: bool) -> ClockObservation:
    """Judge the wall clock ``wall`` against the signed floor (``now`` is trusted now at it);
    ``trusted`` is the verdict last observed. A clock below the floor is untrusted
    (``clock_untrusted`` logged when it was trusted); one at or above it is trusted
    (``clock_restored`` logged when it was not) and the deadlines passed by ``now`` are
    observed (:func:`~edge_agent.trust.state.passed_deadline`)."""
    try:
        check_clock(wall, state.floor)
    except ClockError as exc:
        untrusted = Transition(Kind.CLOCK_UNTRUSTED, True, exc.code, str(exc))
        return ClockObservation(False, state, untrusted if trusted else None)
    observed = passed_deadline(state, now)
    if trusted:
        return ClockObservation(True, observed, None)
    restored = Transition(
        Kind.CLOCK_RESTORED,
        True,
        str(Kind.CLOCK_RESTORED),
        f"the clock ({wall}) is at or above the trusted floor ({observed.floor.seconds}) again",
    )
    return ClockObservation(True, observed, restored)


def observe_deadlines(state: TrustState, now: int) -> Outcome[TimeFloor] | None:
    """The observed floor raised to the signed deadlines trusted ``now`` has passed
    (:func:`~edge_agent.trust.state.passed_deadline`), to persist; ``None`` when none newly
    passed, the usual case on the decision path (O(1), nothing allocated)."""
    observed = passed_deadline(state, now)
    if observed is state:
        return None
    return Outcome(observed.floor, observed, FloorWrite(observed.floor))


@dataclass(frozen=True, slots=True)
class AttestationObservation:
    """The gate's attestation verdict (:data:`ATTESTATION_PASSED`, a reason code, or
    :data:`ATTESTATION_NOT_REQUIRED`) and the change to log (``None``: none to log)."""

    verdict: AttestationVerdict
    transition: Transition | None


def observe_attestation(
    state: TrustState, wall: int, now: int, *, seen: AttestationVerdict
) -> AttestationObservation:
    """The gate's attestation verdict at trusted ``now`` (wall clock ``wall``), and the
    transition to log when it differs from ``seen``, the verdict last observed (passed,
    failed, stale; a bundle that expects no attestation logs nothing)."""
    bundle = state.bundle
    failure = attestation_failure(state, now)
    verdict: AttestationVerdict
    if bundle is None or not bundle.attestation:
        verdict = ATTESTATION_NOT_REQUIRED
    else:
        verdict = ATTESTATION_PASSED if failure is None else failure[0]
    if verdict in (seen, ATTESTATION_NOT_REQUIRED):
        return AttestationObservation(verdict, None)
    if failure is None:
        result = state.attestation_result
        left = result.expires_at - wall if result is not None else 0
        detail = f"measured state matches the bundle; the hub's result holds {left} s more"
        passed = Transition(Kind.ATTESTATION_PASSED, True, str(Kind.ATTESTATION_PASSED), detail)
        return AttestationObservation(verdict, passed)
    reason, message = failure
    return AttestationObservation(
        verdict, Transition(_ATTESTATION_KINDS[reason], True, str(reason), message)
    )

"""Shadow evaluation: what a held shadow bundle would decide, beside the active bundle.

A shadow bundle (docs/rollout.md, "Shadow mode") is verified exactly as a bundle
(:func:`edge_agent.trust.machine.accept_shadow`) and then only compared: the active bundle
alone decides, and the gate's decision is never changed here. Pure (no I/O, ``now`` given).

- :class:`HeldShadow` is a shadow bundle as held: its policy decides each distinct request
  once (the engine's outcome is a function of the policy, the request and the time, which
  it reads only through ``time_utc`` windows and a cited parent's age), so the comparison
  costs a dictionary lookup for the requests a device repeats.
- :func:`shadow_outcome` re-decides a decision the policy made (reason ``allowed``,
  ``policy_denied``, ``no_matching_rule``, ``parent_missing`` or ``parent_invalid``) with the
  shadow's policy, through the same engine at the same time, and returns what the shadow
  decides when it differs in verdict, reason or rule (``None`` when it agrees). A decision
  the gate denied before the policy was consulted depends on the device's trust state, not
  on a policy, and is not compared (as ``edge-hub bundle diff`` does not re-decide it).
- :func:`shadow_dropped` says why a held shadow may no longer be held: it has expired, the
  active bundle became it, the active bundle's version reached it (it would now be
  refused as a rollback or conflict), or a revocation voids it (installed, it would deny
  everything with reason ``revoked``, which no comparison of its policy shows).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

from edge_agent.policy.bundle import CompiledBundle
from edge_agent.policy.engine import Match, evaluate
from edge_agent.protocol.lineage_entries import ShadowOutcome
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.trust.gate import Decision, Reason
from edge_agent.trust.state import TrustState

__all__ = [
    "MAX_CACHED_OUTCOMES",
    "POLICY_REASONS",
    "HeldShadow",
    "shadow_dropped",
    "shadow_outcome",
]

MAX_CACHED_OUTCOMES = 10_000
"""Distinct requests whose shadow outcome is remembered (all are forgotten past that)."""
_MINUTES_PER_DAY = 1440

POLICY_REASONS: Final = frozenset(
    {
        Reason.ALLOWED,
        Reason.POLICY_DENIED,
        Reason.NO_MATCHING_RULE,
        Reason.PARENT_MISSING,
        Reason.PARENT_INVALID,
    }
)
"""The reasons of decisions the policy made (every gate check passed): only these are
compared with the shadow."""


class HeldShadow:
    """A verified shadow ``bundle`` and its policy's outcomes by request.

    Between two consecutive ``time_utc`` window edges of the policy every window holds or
    fails alike, so outcomes are kept per request, or per (request, span between edges)
    when the policy has windows; a request citing a parent is always evaluated (a parent's
    age moves with the time). Safe to share between threads (a lost cache write only costs
    an evaluation).
    """

    __slots__ = ("_cache", "_edges", "bundle")

    def __init__(self, bundle: CompiledBundle) -> None:
        self.bundle = bundle
        conditions = bundle.policy.conditions
        self._edges = tuple(sorted({m for c in conditions if c and c.window for m in c.window}))
        self._cache: dict[object, Match] = {}

    def match(self, request: Request, now: int) -> Match:
        """What the shadow's policy decides for ``request`` at ``now`` (the engine's own
        :func:`~edge_agent.policy.engine.evaluate`)."""
        if request.parent is not None:
            return evaluate(self.bundle.policy, request, now)
        key: object = request
        if self._edges:
            key = (request, bisect_right(self._edges, now // 60 % _MINUTES_PER_DAY))
        match = self._cache.get(key)
        if match is None:
            match = evaluate(self.bundle.policy, request, now)
            if len(self._cache) >= MAX_CACHED_OUTCOMES:
                self._cache.clear()
            self._cache[key] = match
        return match


def shadow_outcome(decision: Decision, shadow: HeldShadow) -> ShadowOutcome | None:
    """What ``shadow`` decides for ``decision``'s request at its time, when that differs
    from ``decision`` in verdict, reason or rule; ``None`` when it agrees or when the gate
    decided before the policy."""
    if decision.reason not in POLICY_REASONS:
        return None
    match = shadow.match(decision.request, decision.time)
    if (
        match.allowed == decision.allowed
        and match.reason == decision.reason
        and match.rule_id == decision.rule_id
    ):
        return None
    bundle = shadow.bundle
    return ShadowOutcome(bundle.version, bundle.digest, match.allowed, match.reason, match.rule_id)


def shadow_dropped(shadow: CompiledBundle, state: TrustState, now: int) -> str | None:
    """Why ``shadow`` may no longer be held beside ``state``'s active bundle at trusted
    ``now`` (a sentence), or ``None`` while it may."""
    if now >= shadow.expires_at:
        return f"shadow bundle version {shadow.version} expired {now - shadow.expires_at} s ago"
    active = state.bundle
    if active is not None and active.digest == shadow.digest:
        return f"shadow bundle version {shadow.version} is now the active bundle"
    if active is not None and active.version >= shadow.version:
        return (
            f"the active bundle's version {active.version} reached shadow bundle version "
            f"{shadow.version}"
        )
    threshold = state.root.role(Role.POLICY).threshold
    for revocation in state.revocations:
        if revocation.denies_bundle(shadow.version, shadow.signer_ids, threshold):
            return (
                f"shadow bundle version {shadow.version} is revoked ({revocation.kind} "
                f"{revocation.value}, epoch {revocation.epoch}): installed, it would deny "
                "everything, so its policy's verdicts would mislead"
            )
    return None

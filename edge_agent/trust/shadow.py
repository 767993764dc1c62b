"""Shadow evaluation: what a held shadow bundle would decide, beside the active bundle.

A shadow bundle (docs/rollout.md, "Shadow mode") is verified exactly as a bundle
(:func:`edge_agent.trust.machine.accept_shadow`) and then only compared: the active bundle
alone decides, and the gate's decision is never changed here. Pure (no I/O, ``now`` given).

- :func:`shadow_outcome` re-decides a decision the policy made (reason ``allowed``,
  ``policy_denied``, ``no_matching_rule``, ``parent_missing`` or ``parent_invalid``) with the
  shadow's policy, through the same engine at the same time, and returns what the shadow
  decides when it differs in verdict, reason or rule (``None`` when it agrees). A decision
  the gate denied before the policy was consulted depends on the device's trust state, not
  on a policy, and is not compared (as ``edge-hub bundle diff`` does not re-decide it).
- :func:`shadow_dropped` says why a held shadow may no longer be held: it has expired, the
  active bundle became it, or the active bundle's version reached it (it would now be
  refused as a rollback or conflict).
"""

from __future__ import annotations

from typing import Final

from edge_agent.policy.bundle import CompiledBundle
from edge_agent.policy.engine import evaluate
from edge_agent.protocol.lineage_entries import ShadowOutcome
from edge_agent.trust.gate import Decision, Reason
from edge_agent.trust.state import TrustState

__all__ = ["POLICY_REASONS", "shadow_dropped", "shadow_outcome"]

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


def shadow_outcome(decision: Decision, shadow: CompiledBundle) -> ShadowOutcome | None:
    """What ``shadow`` decides for ``decision``'s request at its time, when that differs
    from ``decision`` in verdict, reason or rule; ``None`` when it agrees or when the gate
    decided before the policy."""
    if decision.reason not in POLICY_REASONS:
        return None
    match = evaluate(shadow.policy, decision.request, decision.time)
    if (
        match.allowed == decision.allowed
        and match.reason == decision.reason
        and match.rule_id == decision.rule_id
    ):
        return None
    return ShadowOutcome(shadow.version, shadow.digest, match.allowed, match.reason, match.rule_id)


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
    return None

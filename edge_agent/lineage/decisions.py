"""A gate decision as a lineage entry: the agent-side step into the shared entry format.

The entry format (``edge_agent.protocol.lineage_entries``) knows plain fields only; this module
knows the gate's :class:`~edge_agent.trust.gate.Decision`, so the format stays below the trust
machine and the hub can read entries without importing it.
"""

from __future__ import annotations

from dataclasses import replace

from edge_agent.protocol.lineage_entries import (
    GENESIS_PREV,
    Entry,
    Kind,
    ShadowOutcome,
    shadow_detail,
)
from edge_agent.trust.gate import Decision

__all__ = ["decision_entry", "divergence_entry"]


def decision_entry(decision: Decision) -> Entry:
    """The entry recording ``decision`` (its ``seq`` and ``prev`` are set when appended)."""
    return Entry(
        0,
        decision.time,
        GENESIS_PREV,
        Kind.DECISION,
        decision.allowed,
        str(decision.reason),
        decision.rule_id,
        decision.bundle_digest,
        decision.bundle_version,
        decision.request,
        decision.message,
    )


def divergence_entry(decision: Decision, shadow: ShadowOutcome) -> Entry:
    """The ``shadow_divergence`` entry logged right after ``decision``'s own: the request
    and the active verdict, reason, rule and bundle in the normal fields, what the shadow
    decides in ``detail`` (:func:`~edge_agent.protocol.lineage_entries.shadow_detail`). A
    cited parent stays on the decision's entry only (an entry carries a parent only as a
    decision).

    Raises:
        ValueError: the shadow outcome cannot be written (see ``shadow_detail``).
    """
    return Entry(
        0,
        decision.time,
        GENESIS_PREV,
        Kind.SHADOW_DIVERGENCE,
        decision.allowed,
        str(decision.reason),
        decision.rule_id,
        decision.bundle_digest,
        decision.bundle_version,
        replace(decision.request, parent=None),
        shadow_detail(shadow),
    )

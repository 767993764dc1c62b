"""A gate decision as a lineage entry: the agent-side step into the shared entry format.

The entry format (``edge_agent.protocol.lineage_entries``) knows plain fields only; this module
knows the gate's :class:`~edge_agent.trust.gate.Decision`, so the format stays below the trust
machine and the hub can read entries without importing it.
"""

from __future__ import annotations

from dataclasses import replace

from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.lineage_entries import (
    GENESIS_PREV,
    Draft,
    Entry,
    Kind,
    ShadowOutcome,
    draft_of,
    shadow_detail,
)
from edge_agent.trust.gate import Decision

__all__ = ["DecisionDrafts", "decision_entry", "divergence_entry"]


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


class DecisionDrafts:
    """The drafts of decision entries (``draft_of(decision_entry(decision))``), remembering
    the last one made: a workload asks the same thing again and again, and a decision equal
    to the last one drafted in everything but its time gets that draft with its own time,
    without the entry being built and encoded again (a draft's body does not hold the time;
    :func:`~edge_agent.protocol.lineage_entries.place_draft` writes it). The very decision
    drafted last, or one equal to it in everything including the time, gets the very same
    draft (drafts are immutable; an exec storm hands the same decision over and over within
    a second). Any other decision is drafted in full. Safe to share between threads: the
    remembered triple is replaced whole."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[Decision, tuple[object, ...], Draft] | None = None

    def draft(self, decision: Decision) -> Draft:
        """The draft of ``decision``'s entry.

        Raises:
            ValueError: as :func:`~edge_agent.protocol.lineage_entries.draft_of`.
        """
        last = self._last
        if last is not None and last[0] is decision:
            return last[2]
        key = (
            decision.allowed,
            decision.reason,
            decision.message,
            decision.rule_id,
            decision.bundle_version,
            decision.bundle_digest,
            decision.request,
        )
        if last is not None and last[1] == key and 0 <= decision.time <= MAX_COUNTER:
            draft = last[2]
            if draft.time != decision.time:
                draft = Draft(
                    decision.time,
                    draft.kind,
                    draft.allowed,
                    draft.reason,
                    draft.subject,
                    draft.action,
                    draft.body,
                    draft.head,
                )
        else:
            draft = draft_of(decision_entry(decision))
        self._last = (decision, key, draft)
        return draft

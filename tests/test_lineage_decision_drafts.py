"""The drafts of decision entries: a decision equal to the last one drafted but for its time
gets the last draft with its own time, and one equal in everything the very same draft; any
other decision is drafted in full; either way the draft is exactly what drafting it anew
makes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge_agent.lineage.decisions import DecisionDrafts, decision_entry
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.lineage_entries import draft_of
from edge_agent.protocol.request import Request
from edge_agent.trust.gate import Decision, Reason

ASKED = Request("exe:/usr/bin/x", "read", "/data/a", (("zone", "plant-a"),), ("uid:0", "gid:0"))
ALLOWED = Decision(True, Reason.ALLOWED, "allowed by rule 'r'", "r", 3, bytes(32), ASKED, 1_000)


def test_the_same_decision_later_gets_the_draft_of_its_own_time() -> None:
    drafts = DecisionDrafts()
    drafts.draft(ALLOWED)
    later = replace(ALLOWED, time=ALLOWED.time + 5, request=replace(ASKED))
    assert drafts.draft(later) == draft_of(decision_entry(later))
    assert drafts.draft(later).time == ALLOWED.time + 5


def test_the_same_decision_again_in_the_same_second_gets_the_very_same_draft() -> None:
    drafts = DecisionDrafts()
    first = drafts.draft(ALLOWED)
    assert drafts.draft(ALLOWED) is first
    assert drafts.draft(replace(ALLOWED, request=replace(ASKED))) is first
    assert first == draft_of(decision_entry(ALLOWED))
    later = replace(ALLOWED, time=ALLOWED.time + 1)
    assert drafts.draft(later) == draft_of(decision_entry(later))
    assert drafts.draft(ALLOWED) == draft_of(decision_entry(ALLOWED))


@pytest.mark.parametrize(
    "other",
    [
        replace(
            ALLOWED, allowed=False, reason=Reason.POLICY_DENIED, message="no rule", rule_id=None
        ),
        replace(ALLOWED, message="allowed by rule 's'"),
        replace(ALLOWED, rule_id="s"),
        replace(ALLOWED, bundle_version=4),
        replace(ALLOWED, bundle_digest=b"\x01" * 32),
        replace(ALLOWED, request=replace(ASKED, resource="/data/b")),
        replace(ALLOWED, request=replace(ASKED, action="write")),
        replace(ALLOWED, request=replace(ASKED, subject="exe:/usr/bin/y")),
        replace(ALLOWED, request=replace(ASKED, context=())),
        replace(ALLOWED, request=replace(ASKED, selectors=("uid:1", "gid:0"))),
    ],
    ids=[
        "denied",
        "message",
        "rule",
        "version",
        "digest",
        "resource",
        "action",
        "subject",
        "context",
        "selectors",
    ],
)
def test_a_different_decision_is_never_given_the_last_draft(other: Decision) -> None:
    drafts = DecisionDrafts()
    drafts.draft(ALLOWED)
    assert drafts.draft(other) == draft_of(decision_entry(other))
    assert drafts.draft(ALLOWED) == draft_of(decision_entry(ALLOWED))


@pytest.mark.parametrize("time", [-1, MAX_COUNTER + 1])
def test_a_time_out_of_range_is_refused_after_a_remembered_draft(time: int) -> None:
    drafts = DecisionDrafts()
    drafts.draft(ALLOWED)
    with pytest.raises(ValueError, match="entry time"):
        drafts.draft(replace(ALLOWED, time=time))

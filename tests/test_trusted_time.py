"""Trusted time (DESIGN.md section 2): max(persisted floor, last authenticated time +
monotonic time elapsed since it), with a wall clock below the signed floor untrusted.

Pure rows for :func:`trusted_now` and :func:`earliest_now`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edge_agent.protocol.roles import Role
from edge_agent.trust.clock import (
    SIGNED_TIME_SKEW_S,
    TimeAnchor,
    TimeFloor,
    advance_anchor,
    earliest_now,
    trusted_now,
)
from tests.factory import NOW

H = NOW
"""The hub time of the last verified freshness token."""
FLOOR = TimeFloor(marks=((Role.FRESHNESS, H - SIGNED_TIME_SKEW_S),))
ANCHOR = TimeAnchor(H, 100.0, Role.FRESHNESS)


@dataclass(frozen=True)
class Now:
    name: str
    wall: int
    monotonic: float
    expected: int
    floor: TimeFloor = FLOOR
    anchor: TimeAnchor | None = ANCHOR


TRUSTED = [
    Now("no anchor: the wall clock", H + 10, 110.0, H + 10, anchor=None),
    Now("wall clock ahead of the anchor", H + 500, 110.0, H + 500),
    Now("wall clock set back behind the anchor", H - 50, 350.0, H + 250),
    Now("the anchor counts whole seconds", H - 50, 100.9, H),
    Now("a monotonic clock read before the anchor adds nothing", H - 50, 90.0, H),
    Now(
        "wall clock behind the signed floor is returned as it is (untrusted)",
        H - SIGNED_TIME_SKEW_S - 1,
        350.0,
        H - SIGNED_TIME_SKEW_S - 1,
    ),
    Now(
        "observed floor ahead of the anchor",
        H - 50,
        350.0,
        H + 1000,
        floor=TimeFloor(marks=FLOOR.marks, observed=H + 1000),
    ),
    Now("anchor of a rotated role does not count", H - 50, 350.0, H - 50, floor=TimeFloor()),
    Now(
        "anchor whose role's mark is below its signed time does not count",
        H - 50,
        350.0,
        H - 50,
        floor=TimeFloor(marks=((Role.FRESHNESS, H - SIGNED_TIME_SKEW_S - 1),)),
    ),
]


@pytest.mark.parametrize("case", TRUSTED, ids=[c.name for c in TRUSTED])
def test_trusted_now(case: Now) -> None:
    assert trusted_now(case.wall, case.floor, case.anchor, case.monotonic) == case.expected


EARLIEST = [
    Now("wall clock behind the floor: the floor", H - 400, 100.0, H - 300, anchor=None),
    Now("wall clock behind the floor: the anchor", H - 400, 350.0, H + 250),
    Now("wall clock ahead of both", H + 500, 350.0, H + 500),
    Now("anchor of a rotated role does not count", H - 400, 350.0, H - 400, floor=TimeFloor()),
]


@pytest.mark.parametrize("case", EARLIEST, ids=[c.name for c in EARLIEST])
def test_earliest_now(case: Now) -> None:
    assert earliest_now(case.wall, case.floor, case.anchor, case.monotonic) == case.expected


def test_the_anchor_keeps_whichever_signed_time_puts_time_further_ahead() -> None:
    assert advance_anchor(None, H, Role.FRESHNESS, 100.0) == ANCHOR
    assert advance_anchor(ANCHOR, H + 10, Role.POLICY, 120.0) == ANCHOR
    assert advance_anchor(ANCHOR, H + 30, Role.POLICY, 120.0) == TimeAnchor(
        H + 30, 120.0, Role.POLICY
    )

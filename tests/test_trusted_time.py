"""Trusted time (DESIGN.md section 2): max(persisted floor, last authenticated time +
monotonic time elapsed since it), with a wall clock below the signed floor untrusted.

Pure rows for :func:`trusted_now` and :func:`earliest_now`, then the agent: a wall clock set
back after a verified freshness token neither stretches a bundle nor logs a decision at a
time before the signed time it was decided after.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.trust.clock import (
    SIGNED_TIME_SKEW_S,
    TimeAnchor,
    TimeFloor,
    advance_anchor,
    earliest_now,
    steady_now,
    trusted_now,
)
from tests.factory import DEVICE, NOW, HubSim

H = NOW
"""The hub time of the last verified freshness token."""
FLOOR = TimeFloor(marks=((Role.FRESHNESS, H - SIGNED_TIME_SKEW_S),))
ANCHOR = TimeAnchor(H, 100.0, Role.FRESHNESS)
CAMERA = Request("svc:camera", "exec", "/opt/camera/bin/capture")


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


STEADY = [
    Now("wall clock ahead of the start plus elapsed: the wall clock", H + 60, 150.0, H + 60),
    Now("wall clock set back: the start plus the elapsed whole seconds", H - 600, 150.9, H + 50),
    Now("a monotonic clock read before the start adds nothing", H - 600, 90.0, H),
]


@pytest.mark.parametrize("case", STEADY, ids=[c.name for c in STEADY])
def test_steady_now_never_goes_back_within_a_process(case: Now) -> None:
    assert steady_now(case.wall, H, 100.0, case.monotonic) == case.expected


def test_the_anchor_keeps_whichever_signed_time_puts_time_further_ahead() -> None:
    assert advance_anchor(None, H, Role.FRESHNESS, 100.0) == ANCHOR
    assert advance_anchor(ANCHOR, H + 10, Role.POLICY, 120.0) == ANCHOR
    assert advance_anchor(ANCHOR, H + 30, Role.POLICY, 120.0) == TimeAnchor(
        H + 30, 120.0, Role.POLICY
    )


class Monotonic:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[LocalAgent, Monotonic]]:
    """An agent that verified bundle v1 (expiring at H + 100) and a token of hub time H."""
    sim = HubSim()
    init_state_dir(tmp_path / "state", DEVICE, sim.root_bytes(), H - 3600)
    clock = Monotonic()
    with LocalAgent.open(tmp_path / "state", monotonic=clock) as agent:
        bundle = sim.bundle(1, issued_at=H - 3600, expires_at=H + 100)
        agent.install_bundle(bundle, H - 3000)
        agent.install_freshness(sim.freshness(bundle, hub_time=H), H)
        yield agent, clock


def test_a_clock_set_back_after_a_freshness_token_does_not_stretch_the_bundle(
    running: tuple[LocalAgent, Monotonic],
) -> None:
    agent, clock = running
    clock.seconds += 250

    decision = agent.decide(CAMERA, H - 50)

    assert str(decision.reason) == "bundle_expired"
    assert decision.time == H + 250


def test_a_decision_is_never_logged_before_the_signed_time_it_follows(
    running: tuple[LocalAgent, Monotonic],
) -> None:
    agent, _ = running

    decision = agent.decide(CAMERA, H - 50)

    assert decision.allowed
    assert decision.time == H

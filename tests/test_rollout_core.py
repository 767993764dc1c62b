"""Staged rollout, pure (:mod:`hub.core.rollout`): stage membership, the stage list, the
transition table, and halting over a stage's counters."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass, replace
from fractions import Fraction

import pytest

from edge_agent.errors import ConfigError
from edge_agent.protocol.bundle import verify_bundle
from hub.core.halt import StageCounters
from hub.core.rollout import (
    Divergence,
    Outcome,
    Step,
    StepKind,
    baseline_counters,
    in_stage,
    judge,
    next_step,
    parse_stages,
    soak_left,
    stage_counters,
    stage_members,
    stage_point,
    void_reason,
    with_abort_requested,
    with_aborted,
    with_advanced,
    with_completed,
    with_entered,
    with_halted,
    with_paused,
    with_resumed,
)
from hub.registry.records import IssuedRevocation
from hub.registry.rollout_records import LineageTally, RolloutRecord, RolloutState, StageLog
from tests.factory import HubSim

T0 = 1_800_000_000
IDS = [f"gw-{n:05d}" for n in range(10_000)]


def test_a_devices_point_is_pinned_by_the_rollout_and_device_ids_only() -> None:
    assert stage_point("eu-1-v8", "gw-001") == Fraction(8553004127481951917, 2**64)
    assert stage_point("eu-1-v8", "gw-004") == Fraction(17008424586329912036, 2**64)
    assert stage_point("eu-1-v9", "gw-001") != stage_point("eu-1-v8", "gw-001")


def test_stage_membership_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from hub.core.rollout import in_stage\n"
        f"print(sorted(d for d in {IDS[:2000]!r} if in_stage('eu-1-v3', d, '10')))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    here = sorted(d for d in IDS[:2000] if in_stage("eu-1-v3", d, "10"))
    assert runs[0] == runs[1] == f"{here}\n"


def test_stages_are_nested_and_close_to_their_share_of_10000_devices() -> None:
    record = _record(devices=tuple(IDS), stages=("1", "10", "50", "100"))
    sets = [set(stage_members(record, k)) for k in range(4)]
    assert sets[0] <= sets[1] <= sets[2] <= sets[3] == set(IDS)
    for members, share in zip(sets, (0.01, 0.10, 0.50, 1.0), strict=True):
        spread = 4 * math.sqrt(len(IDS) * share * (1 - share)) + 1
        assert abs(len(members) - len(IDS) * share) <= spread, (share, len(members))
    other = set(stage_members(replace(record, rollout_id="eu-1-v9"), 1))
    assert other != sets[1]


@pytest.mark.parametrize(
    ("text", "stages"),
    [
        ("1%,10%,50%,100%", ("1", "10", "50", "100")),
        ("100%", ("100",)),
        (" 12.5% , 100% ", ("12.5", "100")),
    ],
)
def test_a_stage_list_parses_to_increasing_percentages(text: str, stages: tuple[str]) -> None:
    assert parse_stages(text) == stages


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("1%,10%", "the last stage must be 100%"),
        ("10,100%", "'10' is not a percentage"),
        ("50%,10%,100%", "10% is not above the stage before"),
        ("0%,100%", "0% is not above 0%"),
        ("150%", "150% is not above 0% and at most 100%"),
        ("x%,100%", "'x%' is not a percentage"),
        (",".join(f"{n}%" for n in range(1, 22)), "at most 20 stages"),
    ],
)
def test_a_bad_stage_list_is_refused_with_the_reason(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_stages(text)


def _record(**changes: object) -> RolloutRecord:
    record = RolloutRecord(
        rollout_id="eu-1-v8",
        region="eu-1",
        state=RolloutState.RUNNING,
        created_at=T0,
        updated_at=T0,
        candidate=b"c",
        candidate_version=8,
        candidate_digest=b"\x08" * 32,
        rollback=b"r",
        channels=("group/line-a",),
        devices=("gw-001", "gw-002", "gw-003", "gw-004"),
        stages=("50", "100"),
        soak_s=600,
        halts=("deny_rate>+2%",),
    )
    return replace(record, **changes)  # type: ignore[arg-type]


ENTERED = _record(entered=0, stage_started_at=T0 + 10, history=(StageLog(0, T0 + 10, 1, 100, 5),))
LAST = replace(ENTERED, stage=1, entered=1)


@dataclass(frozen=True)
class Row:
    name: str
    record: RolloutRecord
    now: int
    halt: str | None
    step: Step
    adds: bool = True


TRANSITIONS = [
    Row("a new rollout enters its first stage", _record(), T0, None, Step(StepKind.ENTER)),
    Row("a stage soaking stays", ENTERED, T0 + 300, None, Step(StepKind.NONE)),
    Row("a soaked stage advances", ENTERED, T0 + 610, None, Step(StepKind.ADVANCE)),
    Row("the last stage soaked completes", LAST, T0 + 610, None, Step(StepKind.COMPLETE)),
    Row("a halt wins over a soak", ENTERED, T0 + 610, "x held", Step(StepKind.HALT, "x held")),
    Row(
        "a void candidate halts before its next stage is entered",
        replace(ENTERED, stage=1),
        T0 + 610,
        "void",
        Step(StepKind.HALT, "void"),
    ),
    Row(
        "a paused stage still halts",
        replace(ENTERED, state=RolloutState.PAUSED, paused_at=T0 + 20),
        T0 + 30,
        "x held",
        Step(StepKind.HALT, "x held"),
    ),
    Row(
        "a paused stage does not advance",
        replace(ENTERED, state=RolloutState.PAUSED, paused_at=T0 + 20),
        T0 + 9999,
        None,
        Step(StepKind.NONE),
    ),
    Row(
        "a paused rollout enters no stage",
        _record(state=RolloutState.PAUSED, paused_at=T0),
        T0 + 9999,
        None,
        Step(StepKind.NONE),
    ),
    Row(
        "time paused does not count towards the soak",
        replace(ENTERED, paused_s=400),
        T0 + 610,
        None,
        Step(StepKind.NONE),
    ),
    Row(
        "a stage adding no device needs no soak",
        ENTERED,
        T0 + 20,
        None,
        Step(StepKind.ADVANCE),
        False,
    ),
    Row(
        "an abort asked for is carried out",
        _record(state=RolloutState.ABORTING, reason="operator"),
        T0,
        "x held",
        Step(StepKind.ABORT, "operator"),
    ),
    Row(
        "a halted rollout stays",
        replace(ENTERED, state=RolloutState.HALTED),
        T0,
        "x",
        Step(StepKind.NONE),
    ),
    Row(
        "a completed rollout stays",
        replace(LAST, state=RolloutState.COMPLETED),
        T0,
        None,
        Step(StepKind.NONE),
    ),
]


@pytest.mark.parametrize("row", TRANSITIONS, ids=[r.name for r in TRANSITIONS])
def test_the_next_step_of_a_rollout(row: Row) -> None:
    assert next_step(row.record, row.now, row.halt, adds=row.adds) == row.step


def test_applying_steps_walks_a_rollout_through_its_stages_to_completion() -> None:
    record = _record()
    baseline = StageCounters(baseline_decisions=100, baseline_denied=5)
    record = with_entered(record, T0 + 1, devices=1, baseline=baseline)
    assert (record.entered, record.stage_started_at, soak_left(record, T0 + 101)) == (
        0,
        T0 + 1,
        500,
    )
    record = with_paused(record, T0 + 101)
    assert soak_left(record, T0 + 9000) == 500
    record = with_resumed(record, T0 + 201)
    assert (record.paused_s, soak_left(record, T0 + 301)) == (100, 400)
    record = with_advanced(record, T0 + 701, ["deny_rate = 5.00%"])
    assert (record.stage, record.entered, record.history[0].outcome) == (1, 0, "soaked")
    assert next_step(record, T0 + 701, None) == Step(StepKind.ENTER)
    record = with_entered(record, T0 + 702, devices=4, baseline=baseline)
    assert record.paused_s == 0 and len(record.history) == 2
    record = with_completed(record, T0 + 1400, [])
    assert record.state is RolloutState.COMPLETED and record.history[1].ended_at == T0 + 1400


def test_a_halt_and_an_abort_end_the_stage_with_the_reason() -> None:
    halted = with_halted(ENTERED, T0 + 50, "deny_rate>+2% held: ...", ["deny_rate = 50.00%"])
    assert halted.state is RolloutState.HALTED and halted.reason.startswith("deny_rate>+2%")
    assert halted.history[-1].outcome == "halted"
    assert halted.history[-1].observed == ("deny_rate = 50.00%",)
    asked = with_abort_requested(ENTERED, T0 + 50, "operator: wrong build")
    aborted = with_aborted(asked, T0 + 51)
    assert aborted.state is RolloutState.ABORTED and aborted.reason == "operator: wrong build"
    assert aborted.history[-1].outcome == "aborted"


@pytest.mark.parametrize(
    ("record", "change", "error"),
    [
        (
            replace(ENTERED, state=RolloutState.HALTED),
            with_paused,
            "is halted: it cannot be paused",
        ),
        (ENTERED, with_resumed, "is running: it cannot be resumed"),
        (
            replace(ENTERED, state=RolloutState.COMPLETED),
            lambda r, now: with_abort_requested(r, now, "x"),
            "is completed: it cannot be aborted",
        ),
    ],
)
def test_a_step_in_a_state_it_does_not_apply_to_is_refused(
    record: RolloutRecord, change: object, error: str
) -> None:
    with pytest.raises(ConfigError, match=error):
        change(record, T0)  # type: ignore[operator]


def test_a_stage_halts_on_the_first_condition_that_holds_over_its_candidate_decisions() -> None:
    tallies = [
        LineageTally("decision", True, "allowed", "camera-exec", 8, 90, 2),
        LineageTally("decision", True, "allowed", "camera-exec", 7, 95, 2),
        LineageTally("decision", False, "policy_denied", "no-shells", 8, 8, 2),
        LineageTally("decision", False, "policy_denied", "no-shells", 7, 5, 2),
        LineageTally("decision", False, "no_matching_rule", None, 8, 2, 1),
        LineageTally("bundle_installed", True, "bundle_installed", None, 8, 2, 2),
        LineageTally("bundle_rejected", False, "bundle_rollback", None, 7, 1, 1),
    ]
    baseline = baseline_counters(tallies, 8)
    assert (baseline.baseline_decisions, baseline.baseline_denied) == (100, 5)
    counters = stage_counters(tallies, 8, 1, StageLog(0, T0, 2, 100, 5))
    assert (counters.decisions, counters.denied, counters.install_failures) == (100, 10, 1)
    assert counters.by_rule == {"camera-exec": 90, "no-shells": 8}
    assert counters.by_reason == {"allowed": 90, "policy_denied": 8, "no_matching_rule": 2}
    judgement = judge(["install_failures>1", "deny_rate>+2%", "rule:no-shells>0"], counters)
    assert judgement.halt == (
        "deny_rate>+2% held: deny_rate = 10.00%, baseline 5.00%: +5.00 points"
    )
    assert judgement.observed[0] == "install_failures = 1"
    assert judge(["deny_rate>+5%"], counters).halt is None


def test_devices_holding_the_shadow_count_as_the_candidate_would_have_decided() -> None:
    switched = [LineageTally("decision", True, "allowed", "camera-exec", 8, 10, 1)]
    shadowed = [
        LineageTally("decision", True, "allowed", "camera-exec", 7, 30, 3),
        LineageTally("decision", False, "attestation_failed", None, 7, 4, 1),
        LineageTally("shadow_divergence", True, "allowed", "camera-exec", 7, 6, 2),
    ]
    diverged = Divergence(
        Outcome(True, "allowed", "camera-exec"), Outcome(False, "policy_denied", "freeze")
    )
    counters = stage_counters(
        switched, 8, 0, StageLog(0, T0, 1, 40, 0), shadowed=shadowed, divergences=[diverged] * 6
    )
    assert (counters.decisions, counters.denied) == (40, 6)
    assert counters.by_rule == {"camera-exec": 34, "freeze": 6}
    assert counters.by_reason == {"allowed": 34, "policy_denied": 6}
    assert judge(["deny_rate>+10%"], counters).halt == (
        "deny_rate>+10% held: deny_rate = 15.00%, baseline 0.00%: +15.00 points"
    )


def test_a_divergence_whose_decision_fell_outside_the_window_takes_nothing_away() -> None:
    diverged = Divergence(Outcome(True, "allowed", "a"), Outcome(False, "no_matching_rule", None))
    counters = stage_counters([], 8, 0, None, divergences=[diverged])
    assert (counters.decisions, counters.denied) == (1, 1)
    assert counters.by_reason == {"no_matching_rule": 1} and counters.by_rule == {}


def _revoked(kind: str, value: str, region: str = "eu-1") -> IssuedRevocation:
    return IssuedRevocation(region, 1, kind, value, "bad build", b"", T0)


@pytest.mark.parametrize(
    ("issued", "void"),
    [
        ((), None),
        ((_revoked("bundle", "7"),), None),
        ((_revoked("bundle", "8", region="us-1"),), None),
        ((_revoked("device", "gw-001"),), None),
        ((_revoked("bundle", "8"),), "revocation epoch 1 (bundle 8) voids the candidate"),
        ((_revoked("bundle", "12"),), "revocation epoch 1 (bundle 12) voids the candidate"),
        ((_revoked("key", "SIGNER"),), "revocation epoch 1 (key SIGNER) voids the candidate"),
    ],
)
def test_a_candidate_is_void_once_a_revocation_voids_its_version_or_signers(
    issued: tuple[IssuedRevocation, ...], void: str | None
) -> None:
    hub = HubSim()
    signer = hub.policy_keys[0].public.key_id.hex()
    issued = tuple(replace(r, value=r.value.replace("SIGNER", signer)) for r in issued)
    candidate = verify_bundle(hub.bundle(8), root=hub.root(), region="eu-1")
    reason = void_reason(candidate, root=hub.root(), issued=issued)
    if void is None:
        assert reason is None
    else:
        assert reason is not None
        assert reason.startswith(void.replace("SIGNER", signer))
        assert reason.endswith("version 8: its devices would deny everything with it installed")

"""Acknowledgement watermark, shipping reads, retention caps and pruning of the lineage."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from edge_agent.agent import init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.device_key import load_or_create_device_key
from edge_agent.errors import LineageError
from edge_agent.lineage.log import LineageConfig, LineageLog
from edge_agent.protocol.checkpoint import verify_checkpoint
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Entry, Kind, decode_entry
from edge_agent.protocol.lineage_export import verify_inclusion_proof
from edge_agent.protocol.request import Request
from edge_agent.trust.gate import Decision, Reason
from hub.cli.main import main as hub_main
from tests.factory import DEVICE, NOW, HubSim

REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")


def _decision(i: int) -> Decision:
    return Decision(True, Reason.ALLOWED, "ok", "camera-exec", 1, bytes(32), REQUEST, NOW + i)


def _open(state: Path, **config: object) -> LineageLog:
    """A log whose checkpoints fall every ``checkpoint_every`` entries (no time trigger)."""
    load_or_create_device_key(state)
    settings: dict[str, object] = {"checkpoint_after_s": 0, **config}
    log = LineageLog.open(
        state,
        DEVICE.device_id,
        config=LineageConfig(**settings),
        recorded_head=False,  # type: ignore[arg-type]
    )
    assert log.fault is None
    return log


def _fill(log: LineageLog, count: int, start: int = 0) -> None:
    """Record ``count`` decisions; on a log of ``start`` entries they become seq ``start`` on."""
    for i in range(start, start + count):
        _, seq = log.record_decision(_decision(i))
        assert seq == i


@pytest.fixture
def log(tmp_path: Path) -> LineageLog:
    opened = _open(tmp_path, checkpoint_every=10)
    _fill(opened, 95)
    return opened


def test_watermark_starts_at_zero_and_only_moves_up(log: LineageLog) -> None:
    assert log.acknowledged == 0
    assert log.acknowledge(40) == 40
    assert log.acknowledge(25) == 40
    assert log.acknowledge(40) == 40
    assert log.acknowledged == 40


def test_watermark_refuses_more_entries_than_the_log_holds(log: LineageLog) -> None:
    with pytest.raises(LineageError, match="holds 95"):
        log.acknowledge(96)
    with pytest.raises(LineageError):
        log.acknowledge(-1)
    assert log.acknowledge(95) == 95


def test_watermark_survives_a_restart(tmp_path: Path, log: LineageLog) -> None:
    log.acknowledge(33)
    log.close(NOW + 100)
    again = _open(tmp_path)
    assert again.acknowledged == 33


def test_unacknowledged_hands_out_the_entries_after_the_watermark_in_order(
    log: LineageLog,
) -> None:
    first = log.unacknowledged(30)
    assert [seq for seq, _ in first] == list(range(30))
    assert all(decode_entry(data, seq).seq == seq for seq, data in first)
    log.acknowledge(90)
    assert [seq for seq, _ in log.unacknowledged(30)] == [90, 91, 92, 93, 94]
    log.acknowledge(95)
    assert log.unacknowledged(30) == []


@pytest.mark.parametrize("limit", [0, -1, 100_000])
def test_unacknowledged_refuses_an_unbounded_limit(log: LineageLog, limit: int) -> None:
    with pytest.raises(ValueError):
        log.unacknowledged(limit)


def test_checkpoint_note_signs_exactly_the_size_asked_for(log: LineageLog) -> None:
    assert log.key is not None
    for size in (95, 37, 1):
        note = log.checkpoint_note(size, NOW + 200)
        checkpoint = verify_checkpoint(note, log.key.public, log.origin)
        assert (checkpoint.size, checkpoint.root) == (size, log.root_at(size))
        assert log.checkpoint_note(size, NOW + 300) == note
    log.verify()


@pytest.mark.parametrize("size", [0, 96])
def test_checkpoint_note_refuses_sizes_outside_the_log(log: LineageLog, size: int) -> None:
    with pytest.raises(LineageError):
        log.checkpoint_note(size, NOW)


def test_a_retention_cap_never_prunes_unacknowledged_entries(tmp_path: Path) -> None:
    log = _open(tmp_path, checkpoint_every=10, retain_max_entries=5, retain_max_age_s=1)
    _fill(log, 95)
    assert log.apply_retention(NOW + 10_000) == 0
    assert log.summary().base == 0
    log.acknowledge(47)
    pruned = log.apply_retention(NOW + 10_000)
    summary = log.summary()
    assert pruned == summary.base == 40
    assert summary.acknowledged == 47
    assert [seq for seq, _ in log.unacknowledged(100)][:1] == [47]
    log.verify()


def test_the_entry_cap_keeps_the_newest_entries(tmp_path: Path) -> None:
    log = _open(tmp_path, checkpoint_every=10, retain_max_entries=30)
    _fill(log, 95)
    log.acknowledge(95)
    assert log.apply_retention(NOW + 100) == 60
    assert log.summary().base == 60
    log.verify()


def test_the_age_cap_prunes_only_entries_older_than_it(tmp_path: Path) -> None:
    log = _open(tmp_path, checkpoint_every=10, retain_max_age_s=50)
    _fill(log, 95)
    log.acknowledge(95)
    assert log.apply_retention(NOW + 94 + 50) == 90
    log.verify()


def test_pruning_is_recorded_in_the_log_and_exports_verify(tmp_path: Path) -> None:
    log = _open(tmp_path, checkpoint_every=10, retain_max_entries=10)
    _fill(log, 95)
    log.acknowledge(95)
    log.apply_retention(NOW + 100)
    assert log.store is not None
    last = decode_entry(log.store.entry(log.size - 1))
    assert last.kind is Kind.LINEAGE_PRUNED and last.reason == "retention"
    assert "entries 0 to 79" in last.detail


def test_proofs_still_verify_after_pruning(log: LineageLog) -> None:
    assert log.key is not None
    log.acknowledge(95)
    log.prune_before(62, NOW + 100)
    assert log.summary().base == 60
    for seq in (60, 61, 77, 95):
        proof = log.prove(seq, NOW + 100)
        verify_inclusion_proof(proof, log.key.public, log.origin)
    with pytest.raises(LineageError):
        log.prove(59, NOW + 100)
    with pytest.raises(LineageError):
        log.root_at(59)


def test_explicit_prune_keeps_unacknowledged_entries_unless_told(log: LineageLog) -> None:
    log.acknowledge(25)
    assert log.prune_before(80, NOW + 100) == 20
    assert log.summary().base == 20
    assert log.prune_before(80, NOW + 100, include_unacknowledged=True) == 60
    assert log.summary().base == 80
    log.verify()


def test_nothing_is_pruned_from_a_log_with_an_unacknowledged_break(log: LineageLog) -> None:
    assert log.store is not None
    log.acknowledge(95)
    log.store.set_meta(**{"break": "entry 3 was edited", "break_seq": 3})
    with pytest.raises(LineageError, match="break"):
        log.prune_before(80, NOW + 100)


def test_retention_in_many_random_shapes_keeps_every_unacknowledged_entry(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    for case in range(12):
        state = tmp_path / str(case)
        state.mkdir()
        log = _open(
            state,
            checkpoint_every=rng.choice([1, 3, 7, 16]),
            retain_max_entries=rng.choice([None, 1, 10, 40]),
            retain_max_age_s=rng.choice([None, 1, 30]),
        )
        for _ in range(4):
            _fill(log, rng.randrange(1, 40), log.size)
            total = log.size
            acked = log.acknowledge(rng.randrange(log.acknowledged, total + 1))
            log.apply_retention(NOW + total + rng.randrange(0, 60))
            summary = log.summary()
            assert summary.base <= acked
            log.verify()
            shipped = log.unacknowledged(4096)
            assert [seq for seq, _ in shipped] == list(range(acked, summary.size))
        log.close(NOW + 1000)


def test_shipping_calls_from_another_thread_do_not_disturb_deciders(log: LineageLog) -> None:
    errors: list[BaseException] = []

    def ship() -> None:
        try:
            for _ in range(200):
                pending = log.unacknowledged(16)
                if pending:
                    end = pending[-1][0] + 1
                    log.checkpoint_note(end, NOW)
                    log.acknowledge(end)
        except BaseException as exc:
            errors.append(exc)

    shipper = threading.Thread(target=ship)
    deciders = [threading.Thread(target=_fill_any, args=(log, 50, k)) for k in range(4)]
    for thread in (shipper, *deciders):
        thread.start()
    for thread in (shipper, *deciders):
        thread.join()
    assert not errors
    assert log.size == 95 + 200
    log.verify()


def _fill_any(log: LineageLog, count: int, k: int) -> None:
    for i in range(count):
        _, seq = log.record_decision(_decision(1000 * k + i))
        assert seq is not None


def test_log_status_shows_the_watermark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    init_state_dir(state, DEVICE, HubSim().root_bytes(), NOW)
    log = LineageLog.open(state, DEVICE.device_id)
    log.append(Entry(0, NOW, GENESIS_PREV, Kind.ROOT_ROTATED, True, "root_rotated"))
    _fill(log, 9, 1)
    log.acknowledge(4)
    log.close(NOW + 10)
    assert agent_main(["log", "status", "--state-dir", str(state), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["acknowledged"] == 4 and status["unacknowledged"] == 6
    assert status["size"] == 10 and status["available"] is True
    assert agent_main(["log", "status", "--state-dir", str(state)]) == 0
    text = capsys.readouterr().out
    assert "acknowledged  4 by the hub, 6 waiting" in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_log_prune_cli_keeps_unacknowledged_entries_and_the_export_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    init_state_dir(state, DEVICE, HubSim().root_bytes(), NOW)
    config = LineageConfig(checkpoint_every=10, checkpoint_after_s=0)
    log = LineageLog.open(state, DEVICE.device_id, config=config)
    _fill(log, 50)
    log.acknowledge(25)
    log.close(NOW + 100)
    assert agent_main(["log", "prune", "--state-dir", str(state), "--before", "45"]) == 0
    out = capsys.readouterr().out
    assert "pruned entries 0 to 19" in out and "not acknowledged" in out
    assert agent_main(["log", "verify", "--state-dir", str(state)]) == 0
    export = tmp_path / "x.cbor"
    assert agent_main(["log", "export", "--state-dir", str(state), "--out", str(export)]) == 0
    assert agent_main(["pubkey", "--state-dir", str(state)]) == 0
    (tmp_path / "pub.pem").write_text(capsys.readouterr().out)
    assert (
        hub_main(["lineage", "verify", str(export), "--device-key", str(tmp_path / "pub.pem")]) == 0
    )

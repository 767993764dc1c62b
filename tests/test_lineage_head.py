"""A lineage that vanishes or is edited is found against the head kept in the agent state;
reading the log never changes its standing (issue 14, items 7 and 7b)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.errors import LineageError
from edge_agent.lineage import log as log_module
from edge_agent.lineage.log import TAMPERED, LineageConfig, LineageLog
from edge_agent.lineage.store import LINEAGE_DB, LineageStore
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.merkle import leaf_hash
from edge_agent.protocol.request import Request
from edge_agent.store import LineageHeadStore, RecordedHead
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.sync.config import SyncConfig
from edge_agent.sync.daemon import AgentDaemon
from edge_agent.trust.gate import Reason
from hub.cli.main import main as hub_main
from tests.factory import DEVICE, NOW, HubSim

ALLOWED = Request("svc:camera", "exec", "/opt/camera/bin/capture")
SIGNED = 41
"""Entries in the fixture's log, all covered by the checkpoint signed when it closed."""


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state_dir, sim = tmp_path / "state", HubSim()
    init_state_dir(state_dir, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        for i in range(SIGNED - 1):
            agent.decide(ALLOWED, NOW + i)
    return state_dir


def _head(state_dir: Path) -> RecordedHead:
    head = LineageHeadStore.open(state_dir)
    try:
        return head.load()
    finally:
        head.close()


def _sql(state_dir: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    db = sqlite3.connect(state_dir / LINEAGE_DB)
    for statement, params in statements:
        db.execute(statement, params)
    db.commit()
    db.close()


def _delete(state_dir: Path) -> None:
    for name in (LINEAGE_DB, f"{LINEAGE_DB}-wal", f"{LINEAGE_DB}-shm"):
        (state_dir / name).unlink(missing_ok=True)


def _empty(state_dir: Path) -> None:
    _delete(state_dir)
    (state_dir / LINEAGE_DB).write_bytes(b"")


def _truncate(state_dir: Path) -> None:
    """Cut the log at 30 entries and make what is left consistent on its own: size, last
    hash and checkpoints all agree, so only the head in the state can tell."""
    db = sqlite3.connect(state_dir / LINEAGE_DB)
    last = db.execute("SELECT data FROM entries WHERE seq = 29").fetchone()[0]
    db.close()
    _sql(
        state_dir,
        ("DELETE FROM entries WHERE seq >= 30", ()),
        ("DELETE FROM checkpoints WHERE size > 30", ()),
        ("UPDATE meta SET value = 30 WHERE key = 'size'", ()),
        ("UPDATE meta SET value = ? WHERE key = 'prev'", (leaf_hash(last),)),
    )


def _edit_middle(state_dir: Path) -> None:
    _sql(state_dir, ("UPDATE entries SET data = data || x'00' WHERE seq = 17", ()))


def _edit_unsigned(state_dir: Path) -> None:
    """Append five entries that no checkpoint covers yet, then edit one of them."""
    log = LineageLog.open(state_dir, DEVICE.device_id)
    for i in range(5):
        log.record_transition(
            Kind.CLOCK_RESTORED, time=NOW + 100 + i, applied=True, reason="r", detail="d"
        )
    assert log.store is not None and log.head is not None
    log.store.close()
    log.head.close()
    _sql(state_dir, ("UPDATE entries SET data = data || x'00' WHERE seq = ?", (SIGNED + 2,)))


def _drop_checkpoint(state_dir: Path) -> None:
    _sql(state_dir, ("DELETE FROM checkpoints WHERE size = ?", (SIGNED,)))


@dataclass(frozen=True)
class Tamper:
    name: str
    apply: Callable[[Path], None]
    says: str
    """What ``log verify`` names."""
    found_at_start: bool = True
    """Whether opening finds it (else only the full audit in the background does)."""


TAMPERS = [
    Tamper("log deleted", _delete, "is missing"),
    Tamper("truncated to 0 bytes", _empty, "the log holds 0 entries but the agent state"),
    Tamper("truncated to fewer entries", _truncate, "the log holds 30 entries"),
    Tamper("entry edited in the middle", _edit_middle, "entry 17", found_at_start=False),
    Tamper("entry edited after the last checkpoint", _edit_unsigned, f"entry {SIGNED + 2}"),
    Tamper("checkpoint row deleted", _drop_checkpoint, f"checkpoint at size {SIGNED}"),
]


def _log_verify(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = agent_main(["log", "verify", "--state-dir", str(state_dir)])
    return code, capsys.readouterr().out


def _first_entry(state_dir: Path) -> tuple[Kind, str, str]:
    db = sqlite3.connect(state_dir / LINEAGE_DB)
    data = db.execute("SELECT data FROM entries WHERE seq = 0").fetchone()[0]
    db.close()
    entry = decode_entry(data, 0)
    return entry.kind, entry.reason, entry.detail


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.name for t in TAMPERS])
def test_a_vanished_or_edited_lineage_closes_the_gate_and_starts_a_tamper_segment(
    state: Path, tamper: Tamper, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _head(state).size == SIGNED
    tamper.apply(state)

    code, out = _log_verify(state, capsys)
    assert code == 1 and "lineage FAIL" in out and tamper.says in out
    assert _head(state).broken is None, "a read-only command recorded the break"

    with LocalAgent.open(state) as agent:
        assert agent.lineage is not None
        if not tamper.found_at_start:
            assert agent.decide(ALLOWED, NOW + 200).allowed
            agent.lineage.audit()
        assert agent.decide(ALLOWED, NOW + 201).reason is Reason.LINEAGE_UNAVAILABLE
        assert agent.gate_state(NOW + 201) == "lineage_unavailable"

    kind, reason, detail = _first_entry(state)
    assert (kind, reason) == (Kind.SEGMENT_START, TAMPERED)
    assert "the agent state recorded" in detail and tamper.says in detail
    assert _head(state).broken is not None
    kept = [p for p in state.glob(f"{LINEAGE_DB}.broken-*") if p.name[-4:] not in ("-wal", "-shm")]
    assert len(kept) == (0 if tamper.name == "log deleted" else 1)

    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW + 202).reason is Reason.LINEAGE_UNAVAILABLE
    code, out = _log_verify(state, capsys)
    assert code == 1 and "unacknowledged lineage break" in out


def test_the_technician_reopens_the_gate_deliberately_and_the_new_segment_is_guarded(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _delete(state)
    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW + 200).reason is Reason.LINEAGE_UNAVAILABLE
    note = ["--note", "ticket 7"]
    assert agent_main(["log", "acknowledge-break", "--state-dir", str(state), *note]) == 0
    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW + 201).allowed
    code, out = _log_verify(state, capsys)
    assert code == 0 and "lineage OK" in out
    assert _head(state).broken is None and _head(state).size >= 3

    _delete(state)
    code, out = _log_verify(state, capsys)
    assert code == 1 and "is missing" in out


def test_acknowledging_a_break_nobody_recorded_yet_records_it_first(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _truncate(state)
    assert agent_main(["log", "acknowledge-break", "--state-dir", str(state)]) == 0
    kind, reason, _ = _first_entry(state)
    assert (kind, reason) == (Kind.SEGMENT_START, TAMPERED)
    code, _ = _log_verify(state, capsys)
    assert code == 0


def test_the_hub_sees_the_tamper_segment_as_a_fork_and_its_first_entry_says_why(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def export(out: Path) -> None:
        assert agent_main(["log", "export", "--state-dir", str(state), "--out", str(out)]) == 0

    export(tmp_path / "before.cbor")
    _delete(state)
    with LocalAgent.open(state):
        pass
    export(tmp_path / "after.cbor")
    assert agent_main(["pubkey", "--state-dir", str(state)]) == 0
    (tmp_path / "pub.pem").write_text(capsys.readouterr().out)
    verify = ["lineage", "verify", str(tmp_path / "after.cbor")]
    verify += ["--device-key", str(tmp_path / "pub.pem")]
    assert hub_main(verify) == 0
    assert hub_main([*verify, "--checkpoint", str(tmp_path / "before.cbor")]) == 1
    assert "FORK" in capsys.readouterr().err


def test_the_hub_acknowledgement_is_kept_in_the_state_and_checked(state: Path) -> None:
    log = LineageLog.open(state, DEVICE.device_id)
    log.acknowledge(20)
    log.close(NOW)
    log = LineageLog.open(state, DEVICE.device_id)
    recorded = _head(state)
    assert recorded.acked == 20 and recorded.acked_root == log.root_at(20)
    head = LineageHeadStore.open(state)
    head.restart(RecordedHead(recorded.size, recorded.root, 20, bytes(32)))
    head.close()
    reader = LineageLog.open(state, DEVICE.device_id, record_breaks=False)
    assert reader.fault is not None and "the hub's last acknowledgement" in reader.fault


# --- 7b: reading the log never breaks it -----------------------------------------------


def test_a_verification_reads_one_snapshot_while_another_connection_appends(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving of the busy agent: an append commits between the verifier reading
    the log's size and reading its entries."""
    busy = LineageLog.open(state, DEVICE.device_id)
    reader = LineageLog.open(state, DEVICE.device_id, verify_at_open=False, record_breaks=False)
    original = LineageStore.tip
    appended: list[int] = []

    def tip_then_append(store: LineageStore) -> object:
        tip = original(store)
        if store is not busy.store and not appended:
            seq = busy.record_transition(
                Kind.CLOCK_RESTORED, time=NOW + 300, applied=True, reason="r", detail="d"
            )
            assert seq is not None
            appended.append(seq)
        return tip

    monkeypatch.setattr(LineageStore, "tip", tip_then_append)
    report = reader.verify()
    assert appended == [SIGNED] and report.size == SIGNED
    monkeypatch.undo()
    assert reader.verify().size == SIGNED + 1
    busy.close(NOW)
    reader.close(NOW)


def test_log_status_of_an_edited_log_reports_it_and_records_nothing(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_unsigned(state)
    before = (state / LINEAGE_DB).stat().st_size
    assert agent_main(["log", "status", "--state-dir", str(state)]) == 0
    assert "UNAVAILABLE" in capsys.readouterr().out
    assert agent_main(["status", "--state-dir", str(state)]) in (0, 1)
    db = sqlite3.connect(state / LINEAGE_DB)
    assert db.execute("SELECT value FROM meta WHERE key = 'break'").fetchone() is None
    db.close()
    assert _head(state).broken is None
    assert not list(state.glob(f"{LINEAGE_DB}.broken-*"))
    assert (state / LINEAGE_DB).stat().st_size >= before


def test_a_check_that_fails_once_and_passes_again_records_no_break(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = log_module.verify_store
    failures: list[str] = []

    def fail_once(*args: object, **kwargs: object) -> object:
        if not failures:
            failures.append("injected")
            raise LineageError("entry beyond the recorded log size 41", seq=41)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(log_module, "verify_store", fail_once)
    with LocalAgent.open(state) as agent:
        assert failures == ["injected"]
        assert agent.decide(ALLOWED, NOW + 200).allowed
    assert _head(state).broken is None
    assert not list(state.glob(f"{LINEAGE_DB}.broken-*"))


def test_log_status_while_a_writer_thread_appends_never_breaks_the_log(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = LineageLog.open(state, DEVICE.device_id, config=LineageConfig(checkpoint_every=7))
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            busy.record_transition(
                Kind.CLOCK_RESTORED, time=NOW + 400 + i, applied=True, reason="r", detail="d"
            )
            i += 1
            stop.wait(0.001)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(5):
            assert agent_main(["log", "status", "--state-dir", str(state)]) == 0
            assert "lineage       OK" in capsys.readouterr().out
    finally:
        stop.set()
        writer.join()
    busy.close(NOW)
    assert _head(state).broken is None
    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW + 500).allowed


def test_the_running_agent_audits_the_whole_log_in_the_background(state: Path) -> None:
    _edit_middle(state)

    async def run() -> str | None:
        with LocalAgent.open(state) as agent:
            assert agent.lineage is not None and agent.lineage.fault is None
            daemon = AgentDaemon(agent, BrokerSettings("127.0.0.1", 1), SyncConfig())
            await asyncio.wait_for(daemon._audit_lineage(), timeout=30)
            assert agent.decide(ALLOWED, NOW + 200).reason is Reason.LINEAGE_UNAVAILABLE
            return agent.lineage.fault

    fault = asyncio.run(run())
    assert fault is not None and "entry 17" in fault

"""The running agent against its lineage on disk: a break another process records, a file
deleted, replaced, emptied or overwritten under it, garbage found at start-up, the
acknowledgement while an agent runs, and the files' permissions (hostile report 2, items
1 to 4 and 10)."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.errors import LineageDamagedError
from edge_agent.lineage.log import TAMPERED
from edge_agent.lineage.store import LINEAGE_DB
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.request import Request
from edge_agent.store import LineageHeadStore, RecordedHead, agent_lock
from edge_agent.trust.gate import Reason
from tests.factory import DEVICE, NOW, HubSim

ALLOWED = Request("svc:camera", "exec", "/opt/camera/bin/capture")
PAGE_BYTES = 4096
WAL_FILES = (f"{LINEAGE_DB}-wal", f"{LINEAGE_DB}-shm")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state_dir, sim = tmp_path / "state", HubSim()
    init_state_dir(state_dir, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        for i in range(20):
            agent.decide(ALLOWED, NOW + i)
    return state_dir


def _running(state_dir: Path) -> LocalAgent:
    """An agent whose every decision makes the periodic state check (its clock ticks a
    second per reading)."""
    ticks = itertools.count()
    return LocalAgent.open(state_dir, monotonic=lambda: float(next(ticks)))


def _head(state_dir: Path) -> RecordedHead:
    head = LineageHeadStore.open(state_dir)
    try:
        return head.load()
    finally:
        head.close()


def _first_entry(state_dir: Path) -> tuple[Kind, str, str]:
    db = sqlite3.connect(state_dir / LINEAGE_DB)
    data = db.execute("SELECT data FROM entries WHERE seq = 0").fetchone()[0]
    db.close()
    entry = decode_entry(data, 0)
    return entry.kind, entry.reason, entry.detail


def _kept(state_dir: Path) -> list[Path]:
    return [
        p for p in state_dir.glob(f"{LINEAGE_DB}.broken-*") if not p.name.endswith(("-wal", "-shm"))
    ]


def _delete(state_dir: Path) -> None:
    for name in (LINEAGE_DB, *WAL_FILES):
        (state_dir / name).unlink(missing_ok=True)


def _replace(state_dir: Path) -> None:
    """A copy of the log put in its place: the same bytes in another file."""
    copy = state_dir / "copy.db"
    shutil.copyfile(state_dir / LINEAGE_DB, copy)
    os.replace(copy, state_dir / LINEAGE_DB)


def _empty_in_place(state_dir: Path) -> None:
    for name in (LINEAGE_DB, f"{LINEAGE_DB}-wal"):
        os.truncate(state_dir / name, 0)


def _zero_first_page(state_dir: Path) -> None:
    fd = os.open(state_dir / LINEAGE_DB, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(PAGE_BYTES), 0)
    finally:
        os.close(fd)


def _garbage(state_dir: Path) -> None:
    _delete(state_dir)
    (state_dir / LINEAGE_DB).write_bytes(os.urandom(2 * PAGE_BYTES))


@dataclass(frozen=True)
class Tamper:
    name: str
    apply: Callable[[Path], None]
    says: str
    kept: int
    """Files kept as ``lineage.db.broken-*`` (nothing is kept of a deleted log)."""


UNDER_THE_AGENT = [
    Tamper("log deleted", _delete, "was deleted or moved away", 0),
    Tamper("log replaced by a copy", _replace, "was replaced by another file", 1),
    Tamper("log and WAL emptied in place", _empty_in_place, "was cut from", 1),
    Tamper("first page zeroed in place", _zero_first_page, "no longer an SQLite database", 1),
]


def test_a_break_another_process_records_closes_the_running_agents_gate(state: Path) -> None:
    with _running(state) as agent:
        assert agent.decide(ALLOWED, NOW + 100).allowed
        other = LineageHeadStore.open(state)
        other.mark_broken("lineage break: found by another process")
        other.close()
        decision = agent.decide(ALLOWED, NOW + 101)
        assert decision.reason is Reason.LINEAGE_UNAVAILABLE
        assert agent.gate_state(NOW + 101) == "lineage_unavailable"
        assert agent.lineage is not None
        assert "found by another process" in (agent.lineage.status() or "")


def test_a_cli_decide_after_the_log_was_deleted_closes_the_running_agents_gate(
    state: Path,
) -> None:
    with _running(state) as agent:
        assert agent.decide(ALLOWED, NOW + 100).allowed
        _delete(state)
        decide = ["decide", "--state-dir", str(state), "--subject", ALLOWED.subject]
        agent_main([*decide, "--action", ALLOWED.action, "--resource", ALLOWED.resource])
        assert _head(state).broken is not None
        for second in range(3):
            decision = agent.decide(ALLOWED, NOW + 101 + second)
            assert decision.reason is Reason.LINEAGE_UNAVAILABLE
    kind, reason, _ = _first_entry(state)
    assert (kind, reason) == (Kind.SEGMENT_START, TAMPERED)


@pytest.mark.parametrize("tamper", UNDER_THE_AGENT, ids=[t.name for t in UNDER_THE_AGENT])
def test_a_log_tampered_with_under_the_running_agent_is_a_break_it_records(
    state: Path, tamper: Tamper
) -> None:
    with _running(state) as agent:
        assert agent.decide(ALLOWED, NOW + 100).allowed
        tamper.apply(state)
        decision = agent.decide(ALLOWED, NOW + 101)
        assert decision.reason is Reason.LINEAGE_UNAVAILABLE
        assert agent.decide(ALLOWED, NOW + 102).reason is Reason.LINEAGE_UNAVAILABLE
        assert agent.lineage is not None and agent.lineage.store is not None
        assert agent.lineage.store.check_files() is None, "still writing the old file"
    broken = _head(state).broken
    assert broken is not None and tamper.says in broken
    kind, reason, detail = _first_entry(state)
    assert (kind, reason) == (Kind.SEGMENT_START, TAMPERED) and tamper.says in detail
    assert len(_kept(state)) == tamper.kept


def test_a_write_sqlite_finds_corrupt_is_a_break_the_running_agent_records(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupt(drafts: object, *, wait: bool) -> object:
        raise LineageDamagedError("cannot write the lineage: database disk image is malformed")

    with _running(state) as agent:
        assert agent.lineage is not None
        monkeypatch.setattr(agent.lineage, "_append_batch", corrupt)
        assert agent.decide(ALLOWED, NOW + 100).reason is Reason.LINEAGE_UNAVAILABLE
        monkeypatch.undo()
        assert agent.decide(ALLOWED, NOW + 101).reason is Reason.LINEAGE_UNAVAILABLE
    broken = _head(state).broken
    assert broken is not None and "malformed" in broken
    kind, reason, _ = _first_entry(state)
    assert (kind, reason) == (Kind.SEGMENT_START, TAMPERED)
    assert len(_kept(state)) == 1


@pytest.mark.parametrize("damage", [_garbage, _zero_first_page], ids=["random bytes", "zeroed"])
def test_a_log_that_is_no_database_is_a_break_kept_aside_and_acknowledged(
    state: Path, damage: Callable[[Path], None], capsys: pytest.CaptureFixture[str]
) -> None:
    damage(state)
    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW + 100).reason is Reason.LINEAGE_UNAVAILABLE
    assert _head(state).broken is not None
    assert len(_kept(state)) == 1
    kind, reason, _ = _first_entry(state)
    assert (kind, reason) == (Kind.SEGMENT_START, TAMPERED)

    assert agent_main(["log", "acknowledge-break", "--state-dir", str(state)]) == 0
    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW + 101).allowed
    capsys.readouterr()
    assert agent_main(["log", "verify", "--state-dir", str(state)]) == 0


def test_a_new_log_overwritten_after_a_recorded_break_is_moved_aside_too(state: Path) -> None:
    _delete(state)
    with LocalAgent.open(state):
        pass
    _garbage(state)
    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW + 100).reason is Reason.LINEAGE_UNAVAILABLE
    assert len(_kept(state)) == 1
    assert agent_main(["log", "acknowledge-break", "--state-dir", str(state)]) == 0
    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW + 101).allowed


def test_acknowledge_break_refuses_while_an_agent_holds_the_state_dir(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _delete(state)
    with LocalAgent.open(state):
        pass
    acknowledge = ["log", "acknowledge-break", "--state-dir", str(state)]
    with agent_lock(state) as held:
        assert held
        capsys.readouterr()
        assert agent_main(acknowledge) == 1
        assert "stop the agent first" in capsys.readouterr().err
    assert _head(state).broken is not None
    assert agent_main(acknowledge) == 0
    assert _head(state).broken is None


def test_edge_agent_run_holds_the_agent_lock_while_it_runs(tmp_path: Path) -> None:
    state = tmp_path / "running"
    settings = {"broker.url": "mqtt://127.0.0.1:1"}
    init_state_dir(state, DEVICE, HubSim().root_bytes(), NOW, settings)
    command = [sys.executable, "-m", "edge_agent.cli", "run", "--state-dir", str(state)]
    process = subprocess.Popen([*command, "--socket", str(state / "s")], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (state / "s").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with agent_lock(state, exclusive=True) as alone:
            assert not alone
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    with agent_lock(state, exclusive=True) as alone:
        assert alone


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_lineage_files_are_the_owners_alone(state: Path, tmp_path: Path) -> None:
    with LocalAgent.open(state) as agent:
        agent.decide(ALLOWED, NOW + 100)
        for name in (LINEAGE_DB, *WAL_FILES):
            assert _mode(state / name) == 0o600, name
    out = tmp_path / "export.cbor"
    assert agent_main(["log", "export", "--state-dir", str(state), "--out", str(out)]) == 0
    assert _mode(out) == 0o600
    _zero_first_page(state)
    with LocalAgent.open(state):
        pass
    assert [_mode(p) for p in _kept(state)] == [0o600]


def test_an_older_world_readable_log_is_made_the_owners_alone_when_opened(state: Path) -> None:
    os.chmod(state / LINEAGE_DB, 0o644)
    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW + 100).allowed
    assert _mode(state / LINEAGE_DB) == 0o600

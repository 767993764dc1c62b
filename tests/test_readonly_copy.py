"""The private copy a read-only inspection makes of a database with a non-empty ``-wal``
holds the whole decision log: it is the owner's alone, it goes when the command is stopped
by SIGTERM or SIGHUP (``timeout``, systemd, a dropped ssh session) as after Ctrl-C, and a
copy left by a process killed with SIGKILL is removed by the next one the same user makes.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.protocol.request import Request
from edge_agent.support.readonly import connect_read_only
from tests.factory import DEVICE, NOW, HubSim


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Path]:
    """A state directory whose lineage.db has committed entries in its -wal, held by an
    agent that has not checkpointed."""
    state = tmp_path / "state"
    sim = HubSim()
    init_state_dir(state, DEVICE, sim.root_bytes(), NOW)
    holder = LocalAgent.open(state)
    try:
        holder.install_bundle(sim.bundle(1), NOW)
        holder.decide(Request("svc:camera", "exec", "/bin/x"), NOW + 1)
        assert (state / "lineage.db-wal").stat().st_size > 0
        yield state
    finally:
        holder.close()


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory of the test's own, for this process and its children."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["TERM", "HUP"]
)
def test_a_follower_stopped_by_sigterm_or_sighup_removes_its_private_copy(
    held: Path, private_tmp: Path, signum: int, code: int
) -> None:
    argv = [sys.executable, "-m", "edge_agent.cli", "--read-only", "log", "show", "-f"]
    follower = subprocess.Popen(
        [*argv, "--json", "--state-dir", str(held), "--limit", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["time"] == NOW + 1
        assert [p.name for p in private_tmp.iterdir()]
        follower.send_signal(signum)
        assert follower.wait(timeout=30) == code
        assert "Traceback" not in (follower.stderr.read() if follower.stderr else "")
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert list(private_tmp.iterdir()) == []


def test_the_private_copy_is_the_owners_alone(held: Path, private_tmp: Path) -> None:
    db = connect_read_only(held / "lineage.db", 1.0)
    try:
        (copy,) = private_tmp.iterdir()
        assert copy.name.startswith(f"edgegov-ro-{os.getpid()}-")
        assert stat.S_IMODE(copy.stat().st_mode) == 0o700
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in copy.iterdir()}
        assert modes["lineage.db"] == modes["lineage.db-wal"] == 0o600
    finally:
        db.close()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_copy_left_by_a_killed_process_is_removed_by_the_next_copy(
    held: Path, private_tmp: Path
) -> None:
    dead = private_tmp / f"edgegov-ro-{_dead_pid()}-x1"
    alive = private_tmp / f"edgegov-ro-{os.getppid()}-x2"
    unnamed = private_tmp / "edgegov-ro-notapid"
    not_a_directory = private_tmp / f"edgegov-ro-{_dead_pid()}-x3"
    for directory in (dead, alive, unnamed):
        directory.mkdir()
        (directory / "lineage.db").write_bytes(b"entries")
    not_a_directory.write_bytes(b"kept")

    db = connect_read_only(held / "lineage.db", 1.0)
    db.close()

    assert sorted(p.name for p in private_tmp.iterdir()) == sorted(
        [alive.name, unnamed.name, not_a_directory.name]
    )

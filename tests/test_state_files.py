"""Every state file the agent loads is read only when it is a regular file, without ever
blocking: a FIFO (a blocking open waits for a writer for ever), a device that never ends, or
a directory put where a state file belongs is refused at once, and the agent fails closed
for what that file vouched for only (hostile tester, issue 23 F5: a FIFO at directory.cbor
wedged the whole agent)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent
from edge_agent.attest.persist import ATTESTATION_FILE
from edge_agent.device_key import KEY_NAME
from edge_agent.directory_file import DIRECTORY_FILE
from edge_agent.errors import ConfigError, StateError
from edge_agent.protocol.request import Request
from edge_agent.support.files import NotRegularFileError, read_regular_file
from edge_agent.sync.config import load_config
from edge_agent.trust.gate import Reason
from tests.test_ancestry_agent import CHILD, Fleet, _daemon, _send

HANG_GUARD_S = 60
"""A read that blocks fails the test here instead of wedging the suite; no timing is
asserted."""


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _device(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _directory(path: Path) -> None:
    path.mkdir()


NOT_REGULAR: list[tuple[str, Callable[[Path], None], str]] = [
    ("fifo", _fifo, "a FIFO"),
    ("device", _device, "a character device"),
    ("directory", _directory, "a directory"),
]


@pytest.mark.timeout(HANG_GUARD_S)
@pytest.mark.parametrize(("name", "make", "kind"), NOT_REGULAR, ids=[n for n, _, _ in NOT_REGULAR])
def test_a_path_that_is_not_a_regular_file_is_refused_without_reading(
    tmp_path: Path, name: str, make: Callable[[Path], None], kind: str
) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(NotRegularFileError, match=f"is {kind}, not a regular file"):
        read_regular_file(path, 1 << 20)


def test_a_regular_file_is_read_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"x" * 10)
    assert read_regular_file(path, 4) == b"xxxx"
    assert read_regular_file(path, 100) == b"x" * 10
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "missing", 1)


@pytest.mark.timeout(HANG_GUARD_S)
@pytest.mark.parametrize(("name", "make", "kind"), NOT_REGULAR, ids=[n for n, _, _ in NOT_REGULAR])
def test_a_directory_file_that_is_not_a_regular_file_refuses_parents_only(
    tmp_path: Path, name: str, make: Callable[[Path], None], kind: str
) -> None:
    fleet = Fleet(tmp_path / "state")
    make(fleet.state_dir / DIRECTORY_FILE)
    with LocalAgent.open(fleet.state_dir) as agent:
        assert agent.directory.current() is None
        cited = agent.decide(CHILD, int(time.time()), parent=fleet.camera_receipt())
        assert cited.reason is Reason.PARENT_INVALID
        plain = agent.decide(
            Request("svc:x", "model.invoke", "model://vision/v3"), int(time.time())
        )
        assert plain.allowed
        if name != "directory":
            _send(_daemon(agent, fleet.wall), fleet.directory(1))
            held = agent.directory.current()
            assert held is not None and held.version == 1
            assert (fleet.state_dir / DIRECTORY_FILE).is_file()


@pytest.mark.timeout(HANG_GUARD_S)
def test_an_attestation_file_that_is_a_fifo_is_left_out(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "state")
    os.mkfifo(fleet.state_dir / ATTESTATION_FILE)
    with LocalAgent.open(fleet.state_dir) as agent:
        assert agent.state.attestation_result is None and agent.state.fault is None


@pytest.mark.timeout(HANG_GUARD_S)
def test_a_device_key_that_is_a_fifo_is_a_state_error(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "state")
    key = fleet.state_dir / KEY_NAME
    key.unlink()
    os.mkfifo(key)
    with pytest.raises(StateError, match="a FIFO, not a regular file"):
        LocalAgent.open(fleet.state_dir)


@pytest.mark.timeout(HANG_GUARD_S)
def test_a_config_file_that_is_a_fifo_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    os.mkfifo(path)
    with pytest.raises(ConfigError, match="a FIFO, not a regular file"):
        load_config(path, {})

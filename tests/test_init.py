"""``edge-agent init`` is all or nothing: a failure leaves the state directory as it found it,
and running it again works."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent import device_key
from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.device_key import KEY_NAME, load_or_create_device_key
from edge_agent.errors import StateError
from edge_agent.store import StateStore
from tests.factory import DEVICE, NOW, HubSim


def _fail(*args: object, **kwargs: object) -> None:
    raise OSError(28, "No space left on device")


def _refuse(*args: object, **kwargs: object) -> None:
    raise StateError("cannot create the agent state: disk full")


def _init(state: Path, root: bytes) -> None:
    init_state_dir(state, DEVICE, root, NOW)


def test_a_failed_device_key_write_leaves_nothing_and_init_can_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, root = tmp_path / "state", HubSim().root_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(device_key, "_write_all", _fail)
        with pytest.raises(StateError, match="cannot create the device key"):
            _init(state, root)

    assert list(state.iterdir()) == []
    _init(state, root)
    with LocalAgent.open(state) as agent:
        assert agent.state.device == DEVICE


def test_a_failed_database_write_removes_the_key_init_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, root = tmp_path / "state", HubSim().root_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(StateStore, "create", _refuse)
        with pytest.raises(StateError):
            _init(state, root)

    assert list(state.iterdir()) == []
    _init(state, root)
    with LocalAgent.open(state) as agent:
        assert agent.state.device == DEVICE


def test_a_failed_init_keeps_a_device_key_from_an_earlier_enrolment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    earlier = load_or_create_device_key(state)
    with monkeypatch.context() as patch:
        patch.setattr(StateStore, "create", _refuse)
        with pytest.raises(StateError):
            _init(state, HubSim().root_bytes())

    assert load_or_create_device_key(state).public == earlier.public


def test_cli_init_that_cannot_write_the_device_key_can_be_run_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, root_file = tmp_path / "state", tmp_path / "root.cbor"
    root_file.write_bytes(HubSim().root_bytes())
    args = ["init", "--state-dir", str(state), "--device-id", "gw-001", "--root", str(root_file)]
    args += ["--region", "eu-1", "--group", "line-a", "--profile", "generic-x86_64"]
    (state / KEY_NAME).mkdir(parents=True)

    assert agent_main(args) == 1
    assert [p.name for p in state.iterdir()] == [KEY_NAME]
    (state / KEY_NAME).rmdir()
    assert agent_main(args) == 0
    assert agent_main(["pubkey", "--state-dir", str(state)]) == 0
    assert "already initialised" not in capsys.readouterr().err

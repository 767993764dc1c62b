"""Every ``edge-agent`` command that writes an ``--out`` file (``log receipt``, ``log
checkpoint``, ``log consistency``, ``log export``) writes it as :func:`write_out` does: a new
file, or with ``--force`` a regular one replaced, and never a file inside the state
directory, even with ``--force``. ``log export --out st/device.key`` used to truncate the
device's key in place: the device was dead after it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.protocol.request import Request
from tests.factory import DEVICE, NOW, HubSim

WRITERS: list[tuple[str, list[str]]] = [
    ("log export", ["log", "export"]),
    ("log export jsonl", ["log", "export", "--format", "jsonl"]),
    ("log receipt", ["log", "receipt", "1"]),
    ("log checkpoint", ["log", "checkpoint"]),
    ("log consistency", ["log", "consistency", "1", "3"]),
]
"""Every agent command with an ``--out`` (attest tpm-enroll needs a TPM: not here)."""

AGENT_FILES = ["device.key", "state.db", "lineage.db", "lineage.db-wal", "new-file"]
"""Files inside the state directory an ``--out`` may name: its own, or a new one there."""


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An enrolled device with a bundle and a few logged decisions."""
    directory = tmp_path_factory.mktemp("out") / "state"
    sim = HubSim()
    init_state_dir(directory, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(directory) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        for offset in range(3):
            agent.decide(Request("svc:camera", "exec", "/bin/x"), NOW + offset)
    return directory


def _fingerprint(directory: Path) -> dict[str, str]:
    """Every file in ``directory`` by content, but the lock, ``-shm`` and an empty ``-wal``
    (what opening a database leaves)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
        and not path.name.endswith(("-shm", ".lock"))
        and not (path.name.endswith("-wal") and path.stat().st_size == 0)
    }


@pytest.mark.parametrize("name", AGENT_FILES)
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("words", [w for _, w in WRITERS], ids=[n for n, _ in WRITERS])
def test_an_out_inside_the_state_directory_is_refused_even_with_force(
    state: Path, words: list[str], force: bool, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _fingerprint(state)
    extra = ["--force"] if force else []
    capsys.readouterr()
    code = agent_main(
        [*words, "--state-dir", str(state), "--out", str(state / name), "--json", *extra]
    )
    document = json.loads(capsys.readouterr().out)
    assert code == 2
    assert document["code"] == "out_in_state_dir"
    assert "inside the agent's state directory" in str(document["message"])
    assert _fingerprint(state) == before


@pytest.mark.parametrize("words", [w for _, w in WRITERS], ids=[n for n, _ in WRITERS])
def test_an_out_reaching_the_state_directory_through_a_symlinked_directory_is_refused(
    state: Path, tmp_path: Path, words: list[str]
) -> None:
    (tmp_path / "link").symlink_to(state)
    before = _fingerprint(state)
    out = tmp_path / "link" / "device.key"
    code = agent_main([*words, "--state-dir", str(state), "--out", str(out), "-q", "--force"])
    assert code == 2
    assert _fingerprint(state) == before


@pytest.mark.parametrize("words", [w for _, w in WRITERS], ids=[n for n, _ in WRITERS])
def test_an_existing_out_file_is_replaced_only_with_force(
    state: Path, tmp_path: Path, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "evidence"
    out.write_bytes(b"kept")
    capsys.readouterr()
    assert agent_main([*words, "--state-dir", str(state), "--out", str(out)]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert out.read_bytes() == b"kept"
    assert agent_main([*words, "--state-dir", str(state), "--out", str(out), "--force"]) == 0
    assert out.read_bytes() != b"kept"


def test_log_export_to_a_device_is_an_input_error(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = agent_main(["log", "export", "--state-dir", str(state), "--out", "/dev/full"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("edge-agent: error: refusing to write /dev/full: it is a character")
    assert len(err.splitlines()) == 1

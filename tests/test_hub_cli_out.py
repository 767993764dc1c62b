"""Every ``edge-hub`` ``--out`` refuses, even with ``--force``, to replace the hub
directory's own state (the registry and its WAL files, the key directory, ``serve.json``,
``serve.lock``) or a key directory or trust root the command read; and replaces any other
existing file only with ``--force`` (issue 22: ``bundle build --out hub.db`` replaced the
registry, ``--out keys/root.cbor`` the trust root it had just read)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hub.cli.main import main as hub_main
from tests.hub_support import HubSetup, make_hub_dir

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policy.yaml"

Command = Callable[[Path], list[str]]
"""The arguments of one ``--out`` command for a hub directory (before ``--out``)."""


def _bundle_build(hub: Path) -> list[str]:
    return ["bundle", "build", str(EXAMPLE), "--keys", str(hub / "keys"), "--version", "3"]


def _break_glass(hub: Path) -> list[str]:
    return ["break-glass", "--device", "gw-001", "--minutes", "5", "--reason", "INC-1"]


def _device_acl(hub: Path) -> list[str]:
    return ["device", "acl"]


def _keys_export(hub: Path) -> list[str]:
    return ["keys", "export", "witness"]


COMMANDS: list[tuple[str, Command]] = [
    ("bundle build", _bundle_build),
    ("break-glass", _break_glass),
    ("device acl", _device_acl),
    ("keys export", _keys_export),
]

HUB_STATE = ["hub.db", "hub.db-wal", "hub.db-shm", "keys/root.cbor", "serve.json", "serve.lock"]


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    hub = make_hub_dir(tmp_path / "hub")
    for name in ("serve.json", "serve.lock"):
        (hub.path / name).write_bytes(b"held")
    return hub


def _content(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def _refused_and_kept(argv: list[str], target: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused with the reason, and ``target`` left as it was (SQLite's own WAL files,
    which a command opening the registry may create and remove, are at least not
    written)."""
    before = _content(target)
    assert hub_main(argv) == 2
    assert "it is the hub's own state" in capsys.readouterr().err
    after = _content(target)
    assert after == before or (target.name.startswith("hub.db-") and after is None)


@pytest.mark.parametrize("state", HUB_STATE)
@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_an_out_onto_the_hub_state_is_refused_even_with_force(
    setup: HubSetup,
    capsys: pytest.CaptureFixture[str],
    name: str,
    command: Command,
    state: str,
) -> None:
    target = setup.path / state
    argv = [*command(setup.path), "--hub-dir", str(setup.path), "--out", str(target), "--force"]
    _refused_and_kept(argv, target, capsys)


def test_bundle_build_in_the_hub_dir_by_default_keeps_its_registry_and_root(
    setup: HubSetup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hostile tester's repro: no --hub-dir, the current directory is the hub's."""
    monkeypatch.chdir(setup.path)
    monkeypatch.delenv("EDGE_HUB_DIR", raising=False)
    build = ["bundle", "build", str(EXAMPLE), "--keys", "keys", "--version", "3"]
    for out in ("hub.db", "keys/root.cbor", "./keys/../hub.db"):
        _refused_and_kept([*build, "--out", out, "--force"], setup.path / out, capsys)


def test_bundle_build_keeps_the_keys_and_root_it_was_given_outside_the_hub(
    setup: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "other-hub"
    elsewhere.mkdir()
    build = [*_bundle_build(setup.path), "--hub-dir", str(elsewhere), "--force"]
    for target in (setup.keys / "root.cbor", setup.keys / "policy-1.pem"):
        _refused_and_kept([*build, "--out", str(target)], target, capsys)
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(EXAMPLE.read_bytes())
    argv = [*build, "--out", str(policy)]
    argv[2] = str(policy)
    assert hub_main(argv) == 2
    assert policy.read_bytes() == EXAMPLE.read_bytes()


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_an_existing_out_file_is_replaced_only_with_force(
    setup: HubSetup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    command: Command,
) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"old")
    argv = [*command(setup.path), "--hub-dir", str(setup.path), "--out", str(out)]
    assert hub_main(argv) == 2
    assert "add --force to replace it" in capsys.readouterr().err
    assert out.read_bytes() == b"old"
    assert hub_main([*argv, "--force"]) == 0
    assert out.read_bytes() != b"old"

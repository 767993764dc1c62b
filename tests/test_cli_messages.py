"""What the command lines say and exit with when things go wrong (table-driven): root
installs that are no-ops or refused as a whole, unusable state directories, and a stdout
whose reader has gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.cli import main as agent_main
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES, MAX_ROOT_BYTES
from edge_agent.support.cli import EXIT_STDOUT_GONE
from hub.cli.main import main as hub_main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policy.yaml"
DECIDE = ("decide", "--subject", "svc:camera", "--action", "exec", "--resource", "/bin/x")


def _enrol(tmp_path: Path, rotations: int = 0) -> tuple[Path, Path]:
    """A device enrolled on root v1; ``root-vN.cbor`` for v1 and each later rotation (the
    root keys rotate every time, so v(N+2) is not signed by v(N)'s keys)."""
    keys, state = tmp_path / "keys", tmp_path / "state"
    assert hub_main(["keys", "init", "--out", str(keys)]) == 0
    (tmp_path / "root-v1.cbor").write_bytes((keys / "root.cbor").read_bytes())
    for version in range(2, rotations + 2):
        assert hub_main(["root", "rotate", "--keys", str(keys)]) == 0
        (tmp_path / f"root-v{version}.cbor").write_bytes((keys / "root.cbor").read_bytes())
    enrol = ["init", "--state-dir", str(state), "--device-id", "gw-001", "--region", "eu-1"]
    enrol += ["--group", "line-a", "--profile", "generic-x86_64"]
    assert agent_main([*enrol, "--root", str(tmp_path / "root-v1.cbor")]) == 0
    return keys, state


def _root_version(state: Path, capsys: pytest.CaptureFixture[str]) -> int:
    capsys.readouterr()
    code = agent_main(["status", "--state-dir", str(state), "--json"])
    status = json.loads(capsys.readouterr().out)
    assert code == (0 if status["gate"] == "open" else 1)
    version = status["root"]["version"]
    assert isinstance(version, int)
    return version


# --- root install: no-ops, all or nothing, the version to install next -----------------------


@dataclass(frozen=True)
class RootInstall:
    name: str
    versions: tuple[int, ...]
    """The root files given, by version, in this order."""
    code: int
    says: str
    installed: int
    """The root version the device is on afterwards."""


ROOT_INSTALLS = [
    RootInstall("the current root again", (1,), 0, "version 1 already installed", 1),
    RootInstall("the current root, then the next", (1, 2), 0, "version 2 installed", 2),
    RootInstall("three versions in one go", (2, 3, 4), 0, "version 4 installed", 4),
    RootInstall("v2 then v4: nothing installed", (2, 4), 1, "install version 3 first", 1),
    RootInstall("v4 alone, root keys rotated since", (4,), 1, "install version 2 first", 1),
    RootInstall("v3 before v2", (3, 2), 1, "install version 2 first", 1),
    RootInstall("v2 twice", (2, 2), 1, "rollback refused", 1),
]


@pytest.mark.parametrize("case", ROOT_INSTALLS, ids=[c.name for c in ROOT_INSTALLS])
def test_root_install_is_all_or_nothing_and_names_what_to_do(
    case: RootInstall, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, state = _enrol(tmp_path, rotations=3)
    files = [str(tmp_path / f"root-v{v}.cbor") for v in case.versions]
    capsys.readouterr()

    code = agent_main(["root", "install", *files, "--state-dir", str(state)])

    out, err = capsys.readouterr()
    assert code == case.code, err
    assert case.says in (out + err)
    assert "Traceback" not in err
    assert _root_version(state, capsys) == case.installed


# --- unusable state directories: one clear error, exit 2 -------------------------------------


@dataclass(frozen=True)
class StateDir:
    name: str
    make: Callable[[Path], None]
    """Turns an enrolled state directory into the case."""
    code: int
    says: str


def _replace_db(make: Callable[[Path], None]) -> Callable[[Path], None]:
    def replace(state: Path) -> None:
        for path in state.glob("state.db*"):
            path.unlink()
        make(state / "state.db")

    return replace


STATE_DIRS = [
    StateDir("missing", lambda s: os.rename(s, s.with_name("gone")), 3, "edge-agent init"),
    StateDir("without state.db", _replace_db(lambda db: None), 3, "edge-agent init"),
    StateDir("state.db a directory", _replace_db(lambda db: db.mkdir()), 3, "is not a file"),
    StateDir(
        "state.db damaged",
        _replace_db(lambda db: db.write_bytes(b"not sqlite" * 100)),
        1,
        "state",
    ),
]
COMMANDS = {"decide": DECIDE, "status": ("status",)}
STATE_CASES = [(case, command) for case in STATE_DIRS for command in COMMANDS]


@pytest.mark.parametrize(
    ("case", "command"), STATE_CASES, ids=[f"{command}: {c.name}" for c, command in STATE_CASES]
)
def test_an_unusable_state_dir_gives_one_error_and_one_exit_code(
    case: StateDir, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, state = _enrol(tmp_path)
    case.make(state)
    capsys.readouterr()

    code = agent_main([*COMMANDS[command], "--state-dir", str(state)])

    out, err = capsys.readouterr()
    assert code == case.code, (out, err)
    assert case.says in out + err
    assert "Traceback" not in err
    if case.code == 3:
        assert (out, len(err.splitlines())) == ("", 1)


def test_help_names_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        agent_main(["--help"])
    assert "141" in capsys.readouterr().out


# --- a stdout whose reader has gone (| head -1) ----------------------------------------------


def _with_stdout_closed(module: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m module args`` with stdout a pipe whose read end is already closed."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            stdout=write,
            stderr=subprocess.PIPE,
            check=False,
            timeout=120,
        )
    finally:
        os.close(write)


@dataclass(frozen=True)
class Reader:
    name: str
    module: str
    args: Callable[[Path, Path], tuple[str, ...]]
    """From (keys dir, state dir)."""


READERS = [
    Reader(
        "edge-agent decide", "edge_agent.launcher", lambda k, s: (*DECIDE, "--state-dir", str(s))
    ),
    Reader(
        "edge-agent status", "edge_agent.launcher", lambda k, s: ("status", "--state-dir", str(s))
    ),
    Reader(
        "edge-hub bundle inspect",
        "hub.cli.main",
        lambda k, s: ("bundle", "inspect", str(k.parent / "b1.cbor")),
    ),
]


@pytest.mark.parametrize("case", READERS, ids=[r.name for r in READERS])
def test_a_closed_stdout_ends_the_command_quietly(case: Reader, tmp_path: Path) -> None:
    keys, state = _enrol(tmp_path)
    build = ["bundle", "build", str(EXAMPLE), "--keys", str(keys), "--version", "1"]
    assert hub_main([*build, "--out", str(tmp_path / "b1.cbor")]) == 0

    done = _with_stdout_closed(case.module, *case.args(keys, state))

    assert done.returncode == EXIT_STDOUT_GONE, done.stderr
    assert done.stderr == b""


# --- an offered signed object over its size cap: that object's refusal, in the lineage ------


@dataclass(frozen=True)
class Oversized:
    command: tuple[str, ...]
    max_bytes: int
    kind: str
    code: str
    says: str


OVERSIZED = [
    Oversized(
        ("bundle", "install"), MAX_BUNDLE_BYTES, "bundle_rejected", "bundle_format", "bundle"
    ),
    Oversized(("root", "install"), MAX_ROOT_BYTES, "root_rejected", "root_rejected", "trust root"),
]


@pytest.mark.parametrize("case", OVERSIZED, ids=[" ".join(c.command) for c in OVERSIZED])
def test_an_oversized_offered_object_is_refused_and_recorded_like_any_other(
    case: Oversized, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, state = _enrol(tmp_path)
    big = tmp_path / "big.cbor"
    big.write_bytes(b"\xd8\x62" + bytes(case.max_bytes * 3))
    capsys.readouterr()

    code = agent_main([*case.command, str(big), "--state-dir", str(state)])

    err = capsys.readouterr().err
    assert code == 1, err
    assert f"{case.says} is larger than the {case.max_bytes}-byte limit" in err
    assert (
        agent_main(["log", "show", "--kind", case.kind, "--json", "--state-dir", str(state)]) == 0
    )
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [entry["reason"] for entry in entries] == [case.code]

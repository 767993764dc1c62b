"""``edge-agent exec``: runs exactly the decided binary on allow, nothing otherwise (exit 126).

Binaries are small shell scripts and a copy of ``echo``; the ones that must not run would
create a marker file, so "did not run" is proven by the marker's absence.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent
from edge_agent.protocol.request import Request
from edge_agent.socket import exec_gate
from edge_agent.socket.config import SocketConfig
from edge_agent.trust.gate import Decision
from tests.socket_helpers import REPO, embedded, enrolled_state, public_dir, serving

PINNED = b"#!/bin/sh\necho pinned\n"
BUNDLE = "/opt/edge-agent/_internal"


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _rules(bindir: Path) -> list[dict[str, object]]:
    return [
        {
            "id": "gated-tools",
            "effect": "allow",
            "subjects": ["uid:0"],
            "actions": ["exec"],
            "resources": [f"{bindir}/allowed/*"],
        },
        {
            "id": "pinned-tool",
            "effect": "allow",
            "subjects": ["uid:0"],
            "actions": ["exec"],
            "resources": [f"{bindir}/pinned/*"],
            "when": {"context": {"sha256": [hashlib.sha256(PINNED).hexdigest()]}},
        },
        {
            "id": "never-these",
            "effect": "deny",
            "subjects": ["*"],
            "actions": ["exec"],
            "resources": [f"{bindir}/denied/*"],
        },
    ]


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Path, Path, Path]]:
    """(bin directory, state directory, socket) with ``edge-agent serve`` running."""
    with public_dir() as directory:
        bindir = directory / "bin"
        _script(bindir / "allowed" / "args-and-status", 'printf "%s|" "$@"\nexit 7\n')
        (bindir / "allowed").mkdir(exist_ok=True)
        shutil.copy("/bin/echo", bindir / "allowed" / "echo")
        _script(bindir / "denied" / "touch-marker", 'touch "$1"\n')
        _script(bindir / "unlisted" / "touch-marker", 'touch "$1"\n')
        (bindir / "pinned").mkdir()
        (bindir / "pinned" / "tool").write_bytes(PINNED)
        (bindir / "pinned" / "tool").chmod(0o755)
        state = enrolled_state(directory / "state", _rules(bindir))
        sock = directory / "agent.sock"
        with serving(state, sock):
            yield bindir, state, sock


def _gate(
    sock: Path, *command: str, env: dict[str, str] | None = None, module: str = "edge_agent.cli"
) -> subprocess.CompletedProcess[str]:
    prefix = ["exec"] if module == "edge_agent.cli" else []
    return subprocess.run(
        [sys.executable, "-m", module, *prefix, "--socket", str(sock), "--", *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_an_allowed_binary_runs_with_its_arguments_and_its_exit_status(
    world: tuple[Path, Path, Path],
) -> None:
    bindir, _, sock = world
    done = _gate(sock, str(bindir / "allowed" / "args-and-status"), "a b", "", "c")
    assert (done.returncode, done.stdout, done.stderr) == (7, "a b||c|", "")


def test_a_command_is_found_on_path_and_an_elf_binary_runs_from_its_descriptor(
    world: tuple[Path, Path, Path],
) -> None:
    bindir, _, sock = world
    env = dict(os.environ, PATH=f"{bindir / 'allowed'}:{os.environ.get('PATH', '')}")
    done = _gate(sock, "echo", "hello", "gate", env=env)
    assert (done.returncode, done.stdout) == (0, "hello gate\n")


def test_the_program_gets_default_signal_dispositions_not_pythons(
    world: tuple[Path, Path, Path],
) -> None:
    bindir, _, sock = world
    probe = _script(bindir / "allowed" / "signal-mask", "grep SigIgn /proc/$$/status\n")
    direct = subprocess.run([str(probe)], capture_output=True, text=True, check=True)
    gated = _gate(sock, str(probe))
    assert gated.returncode == 0
    sigpipe = 1 << (signal.SIGPIPE - 1)
    assert int(gated.stdout.split()[1], 16) & sigpipe == 0
    assert gated.stdout == direct.stdout


def test_the_fast_entry_point_gates_the_same_way(world: tuple[Path, Path, Path]) -> None:
    bindir, _, sock = world
    done = _gate(
        sock, str(bindir / "allowed" / "args-and-status"), "x", module="edge_agent.socket.exec_gate"
    )
    assert (done.returncode, done.stdout) == (7, "x|")


@pytest.mark.parametrize(
    ("folder", "reason"),
    [("denied", "policy_denied"), ("unlisted", "no_matching_rule")],
)
def test_a_denied_binary_does_not_run_and_exits_126_with_the_reason(
    world: tuple[Path, Path, Path], tmp_path: Path, folder: str, reason: str
) -> None:
    bindir, _, sock = world
    marker = tmp_path / "ran"
    done = _gate(sock, str(bindir / folder / "touch-marker"), str(marker))
    assert done.returncode == 126
    assert not marker.exists()
    assert "denied" in done.stderr and reason in done.stderr


def test_a_symlink_is_decided_as_the_file_it_points_to(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    bindir, _, sock = world
    link = tmp_path / "innocent-name"
    link.symlink_to(bindir / "denied" / "touch-marker")
    marker = tmp_path / "ran"
    done = _gate(sock, str(link), str(marker))
    assert done.returncode == 126 and not marker.exists()
    assert f"{bindir}/denied/touch-marker" in done.stderr


def test_the_digest_in_the_context_pins_the_exact_binary(
    world: tuple[Path, Path, Path],
) -> None:
    bindir, _, sock = world
    tool = bindir / "pinned" / "tool"
    assert _gate(sock, str(tool)).stdout == "pinned\n"
    tool.write_bytes(PINNED + b"echo tampered\n")
    try:
        done = _gate(sock, str(tool))
    finally:
        tool.write_bytes(PINNED)
    assert done.returncode == 126 and "no_matching_rule" in done.stderr
    assert done.stdout == ""


def test_a_command_that_does_not_exist_exits_127(world: tuple[Path, Path, Path]) -> None:
    _, _, sock = world
    done = _gate(sock, "no-such-command-edgegov")
    assert done.returncode == 127 and "not found" in done.stderr


def test_usage_errors_do_not_run_anything(world: tuple[Path, Path, Path]) -> None:
    bindir, _, sock = world
    reserved = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "exec",
            "--socket",
            str(sock),
            "--context",
            "sha256=00",
            "--",
            str(bindir / "allowed" / "args-and-status"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reserved.returncode == 2 and "sha256" in reserved.stderr
    assert _gate(sock).returncode == 2


def test_with_no_agent_listening_nothing_runs_and_the_gate_exits_126(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    bindir, _, _ = world
    marker = tmp_path / "ran"
    allowed = _script(bindir / "allowed" / "touch-marker", 'touch "$1"\n')
    done = _gate(tmp_path / "absent.sock", str(allowed), str(marker))
    assert done.returncode == 126 and not marker.exists()
    assert "no agent socket" in done.stderr and "fail closed" in done.stderr


def test_an_agent_killed_mid_life_leaves_the_gate_closed(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    bindir, state, _ = world
    sock = tmp_path / "killed.sock"
    allowed = _script(bindir / "allowed" / "touch-marker", 'touch "$1"\n')
    marker = tmp_path / "ran"
    with serving(state, sock) as agent:
        assert _gate(sock, str(allowed), str(marker)).returncode == 0
        marker.unlink()
        agent.send_signal(signal.SIGKILL)
        agent.wait()
    assert sock.exists()
    done = _gate(sock, str(allowed), str(marker))
    assert done.returncode == 126 and not marker.exists()
    assert "not accepting connections" in done.stderr


class _AfterDeciding:
    """Decides through the real agent, then does something to the binary before answering."""

    def __init__(self, agent: LocalAgent, then: Callable[[], None]) -> None:
        self._agent = agent
        self._then = then

    def decide(self, request: Request, wall: int) -> Decision:
        decision = self._agent.decide(request, wall)
        self._then()
        return decision


def _replace_by_rename(path: Path, marker: Path) -> Callable[[], None]:
    def swap() -> None:
        fresh = path.with_suffix(".new")
        _script(fresh, f'touch "{marker}"\n')
        os.replace(fresh, path)

    return swap


def _rewrite_in_place(path: Path, marker: Path) -> Callable[[], None]:
    def rewrite() -> None:
        with open(path, "r+b") as handle:
            handle.write(f'#!/bin/sh\ntouch "{marker}"\n'.encode())
            handle.truncate()

    return rewrite


@pytest.mark.parametrize(
    ("change", "runs_original"),
    [(_replace_by_rename, True), (_rewrite_in_place, False)],
    ids=["renamed-over", "rewritten-in-place"],
)
def test_a_binary_replaced_after_the_decision_is_not_executed(
    tmp_path: Path,
    change: Callable[[Path, Path], Callable[[], None]],
    runs_original: bool,
) -> None:
    with public_dir() as directory:
        bindir = directory / "bin"
        tool = _script(bindir / "allowed" / "tool", "echo original\n")
        marker = tmp_path / "replacement-ran"
        state = enrolled_state(tmp_path / "state", _rules(bindir))
        sock = directory / "agent.sock"
        with LocalAgent.open(state) as agent:
            decider = _AfterDeciding(agent, change(tool, marker))
            with embedded(decider, SocketConfig(path=sock)):
                done = _gate(sock, str(tool))
        assert not marker.exists()
        if runs_original:
            assert (done.returncode, done.stdout, done.stderr) == (0, "original\n", "")
        else:
            assert done.returncode == 126 and done.stdout == ""
            assert "changed on disk" in done.stderr


_ARGUMENT_LISTS = [
    [],
    ["--", "/bin/true"],
    ["/bin/true", "--action", "x"],
    ["--action", "run", "--", "/bin/true", "-v"],
    ["--action=run", "--timeout=0.5", "/bin/true"],
    ["--context", "zone=a", "--context=line=3", "--socket", "/tmp/s.sock", "--", "tool"],
    ["--timeout", "3", "--", "--looks-like-an-option"],
    ["--context=", "--", "tool"],
    ["--", "--"],
]


@pytest.mark.parametrize("argv", _ARGUMENT_LISTS, ids=range(len(_ARGUMENT_LISTS)))
def test_options_read_without_argparse_are_what_argparse_reads(argv: list[str]) -> None:
    plain = exec_gate._plain_options(argv)
    assert plain is not None
    parsed = exec_gate._parsed_options(argv)
    for name in ("action", "context", "socket", "timeout", "command"):
        assert getattr(plain, name) == getattr(parsed, name), name


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--act", "x", "--", "tool"],
        ["--timeout", "soon", "--", "tool"],
        ["--timeout", "-1", "--", "tool"],
        ["--socket"],
        ["--verbose", "--", "tool"],
        ["-h"],
    ],
    ids=["help", "abbreviation", "bad-timeout", "dash-value", "missing-value", "unknown", "short"],
)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert exec_gate._plain_options(argv) is None


def test_the_gate_starts_without_the_heavy_imports() -> None:
    # What edge-agent exec imports runs before every gated program (docs/socket.md 4).
    heavy = [
        "argparse",
        "asyncio",
        "cbor2",
        "collections",
        "enum",
        "hashlib",
        "pydantic",
        "re",
        "signal",
        "socket",
        "sqlite3",
        "threading",
        "typing",
    ]
    probe = (
        "import sys, edge_agent.socket.exec_gate, edge_agent.launcher; "
        f"print(sorted(set({heavy!r}) & set(sys.modules)))"
    )
    # -S: the venv's site (its .pth files) imports re itself, as the frozen gate does not.
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "size", [0, 1, exec_gate.BUILTIN_HASH_MAX_BYTES, exec_gate.BUILTIN_HASH_MAX_BYTES + 1]
)
def test_small_and_large_files_get_the_same_sha256_as_hashlib_gives(
    tmp_path: Path, size: int
) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "binary"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert exec_gate._digest(fd, size, str(path)) == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


def test_outside_a_frozen_build_the_program_gets_the_environment_as_it_is() -> None:
    environ = {"LD_LIBRARY_PATH": "/opt/lib", "LD_LIBRARY_PATH_ORIG": "/x", "_PYI_X": "1"}
    assert exec_gate.program_environment(environ, bundle_dir=None) == environ


def test_a_frozen_build_gives_the_program_back_the_callers_library_path() -> None:
    environ = {
        "LD_LIBRARY_PATH": f"{BUNDLE}:/caller/lib",
        "LD_LIBRARY_PATH_ORIG": "/caller/lib",
        "_PYI_ARCHIVE_FILE": "/opt/edge-agent/edge-agent-exec",
        "_PYI_PARENT_PROCESS_LEVEL": "1",
        "HOME": "/root",
    }
    assert exec_gate.program_environment(environ, bundle_dir=BUNDLE) == {
        "LD_LIBRARY_PATH": "/caller/lib",
        "HOME": "/root",
    }


def test_a_frozen_build_drops_the_library_path_the_caller_did_not_have() -> None:
    environ = {"LD_LIBRARY_PATH": BUNDLE, "_PYI_X": "1", "TERM": "dumb"}
    assert exec_gate.program_environment(environ, bundle_dir=BUNDLE) == {"TERM": "dumb"}


def test_a_frozen_build_keeps_what_the_caller_set_itself() -> None:
    environ = {"LD_LIBRARY_PATH": BUNDLE, "LD_LIBRARY_PATH_ORIG": "/callers/own"}
    assert exec_gate.program_environment(environ, bundle_dir=BUNDLE) == {
        "LD_LIBRARY_PATH_ORIG": "/callers/own"
    }

"""Who asks comes from the kernel: uids decide differently, the body cannot claim anyone.

The agent runs as a real ``edge-agent serve`` process; the second uid (65534, nobody) is a
forked child that drops its uid and gid before it connects.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.cli import main as agent_main
from edge_agent.client import Client
from edge_agent.protocol import dcbor
from edge_agent.socket import peer
from edge_agent.socket.errors import IdentityError
from edge_agent.socket.peer import ExeHashCache, attest
from edge_agent.socket.wire import frame
from tests.socket_helpers import NOBODY, enrolled_state, public_dir, run_as, serving

PYTHON = os.path.realpath(sys.executable)

RULES = [
    {
        "id": "maintenance-reads-config",
        "effect": "allow",
        "subjects": ["svc:maintenance"],
        "actions": ["read"],
        "resources": ["/etc/edge/**"],
    },
    {
        "id": "nobody-reads-public",
        "effect": "allow",
        "subjects": ["user:nobody"],
        "actions": ["read"],
        "resources": ["/public/**"],
    },
    {
        "id": "python-probes",
        "effect": "allow",
        "subjects": [f"exe:{PYTHON}"],
        "actions": ["probe"],
        "resources": ["/health"],
    },
]
WORKLOADS = {"svc:maintenance": ["uid:0"]}


@pytest.fixture(scope="module")
def agent() -> Iterator[tuple[Path, Path]]:
    with public_dir() as directory:
        state = enrolled_state(directory / "state", RULES, WORKLOADS)
        sock = directory / "agent.sock"
        with serving(state, sock, "--group", str(NOBODY)):
            yield state, sock


def _as_nobody(sock: Path, action: str, resource: str, context: dict[str, str]) -> str:
    def ask() -> bytes:
        with Client(sock) as client:
            result = client.decide(action, resource, context)
        return f"{result.allowed} {result.reason} {result.rule} {result.selectors[0]}".encode()

    return run_as(NOBODY, NOBODY, ask).decode()


def test_the_same_request_from_two_uids_gets_the_decision_each_uid_is_owed(
    agent: tuple[Path, Path],
) -> None:
    _, sock = agent
    with Client(sock) as client:
        as_root = client.decide("read", "/etc/edge/agent.toml")
        root_public = client.decide("read", "/public/readme")
    assert (as_root.allowed, as_root.rule) == (True, "maintenance-reads-config")
    assert (root_public.allowed, root_public.reason) == (False, "no_matching_rule")
    assert _as_nobody(sock, "read", "/etc/edge/agent.toml", {}) == (
        f"False no_matching_rule None uid:{NOBODY}"
    )
    assert _as_nobody(sock, "read", "/public/readme", {}) == (
        f"True allowed nobody-reads-public uid:{NOBODY}"
    )


def test_context_claiming_another_identity_changes_nothing(agent: tuple[Path, Path]) -> None:
    _, sock = agent
    claims = {"subject": "svc:maintenance", "uid": "0", "selectors": "uid:0", "user": "root"}
    assert _as_nobody(sock, "read", "/etc/edge/agent.toml", claims) == (
        f"False no_matching_rule None uid:{NOBODY}"
    )


def test_a_body_naming_a_subject_is_refused_and_the_connection_still_answers(
    agent: tuple[Path, Path],
) -> None:
    _, sock = agent

    def forge() -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(str(sock))
            raw.sendall(
                frame(
                    dcbor.encode(
                        {
                            "v": 1,
                            "id": 1,
                            "op": "decide",
                            "action": "read",
                            "resource": "/etc/edge/agent.toml",
                            "subject": "svc:maintenance",
                        }
                    )
                )
            )
            first = _read_frame(raw)
            raw.sendall(frame(dcbor.encode({"v": 1, "id": 2, "op": "identify"})))
            second = _read_frame(raw)
        return repr((first["ok"], first.get("error"), second["uid"])).encode()

    assert run_as(NOBODY, NOBODY, forge) == repr((False, "bad_request", NOBODY)).encode()


def test_identify_reports_the_kernel_view_and_policy_can_name_the_executable(
    agent: tuple[Path, Path],
) -> None:
    _, sock = agent
    with Client(sock) as client:
        seen = client.identify()
        probe = client.decide("probe", "/health")
    assert (seen.pid, seen.uid, seen.gid) == (os.getpid(), 0, 0)
    assert seen.subject == f"exe:{PYTHON}"
    expected = hashlib.sha256(Path(PYTHON).read_bytes()).hexdigest()
    assert seen.selectors == ("uid:0", "gid:0", "user:root", f"exe-sha256:{expected}")
    assert (probe.allowed, probe.rule, probe.subject) == (True, "python-probes", f"exe:{PYTHON}")


def test_every_socket_decision_is_in_the_lineage_under_the_kernel_identity(
    agent: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    state, sock = agent
    with Client(sock) as client:
        client.decide("read", "/etc/edge/lineage-probe", {"why": "test"})
    capsys.readouterr()
    assert agent_main(["log", "show", "--state-dir", str(state), "--json", "--limit", "1000"]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    probe = [
        e for e in entries if e["request"] and e["request"]["resource"] == "/etc/edge/lineage-probe"
    ]
    assert len(probe) == 1
    request = probe[0]["request"]
    assert request["subject"] == f"exe:{PYTHON}"
    assert request["selectors"][:3] == ["uid:0", "gid:0", "user:root"]
    assert request["context"] == {"why": "test"}
    assert (probe[0]["decision"], probe[0]["rule"]) == ("allow", "maintenance-reads-config")


def _read_frame(raw: socket.socket) -> dict[str, object]:
    header = _read_exactly(raw, 4)
    body = dcbor.decode(_read_exactly(raw, int.from_bytes(header, "big")), max_bytes=1 << 20)
    assert isinstance(body, dict)
    return body  # type: ignore[return-value]


def _read_exactly(raw: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = raw.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


# The attestation itself, against real processes on a plain listening socket.


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "l.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    yield server, path
    server.close()


_CONNECT_THEN_EXEC = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
os.set_inheritable(s.fileno(), True)
sys.stdin.readline()
os.execv("/bin/sleep", ["sleep", "30"])
"""


def _connect_child(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _CONNECT_THEN_EXEC, str(path)], stdin=subprocess.PIPE
    )


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "start-time"])
def test_a_caller_that_execs_another_program_loses_its_identity(
    listener: tuple[socket.socket, Path], monkeypatch: pytest.MonkeyPatch, pidfd: bool
) -> None:
    monkeypatch.setattr(peer, "_pidfd_supported", pidfd)
    server, path = listener
    child = _connect_child(path)
    try:
        conn, _ = server.accept()
        process = attest(conn, ExeHashCache())
        assert process.pinned is pidfd
        assert process.identity.exe == PYTHON
        process.check()
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
        _wait_for_exe(child.pid, "/usr/bin/sleep")
        with pytest.raises(IdentityError, match="executed another program"):
            process.check()
        assert peer.attest(conn, ExeHashCache()).identity.exe == os.path.realpath("/bin/sleep")
    finally:
        child.kill()
        child.wait()
    with pytest.raises(IdentityError, match="exited"):
        process.check()
    process.close()
    conn.close()


def test_a_caller_that_is_gone_before_attestation_is_refused(
    listener: tuple[socket.socket, Path],
) -> None:
    server, path = listener
    code = f"import socket; socket.socket(socket.AF_UNIX).connect({str(path)!r})"
    child = subprocess.Popen([sys.executable, "-c", code])
    child.wait()
    conn, _ = server.accept()
    with pytest.raises(IdentityError, match="exited"):
        attest(conn, ExeHashCache())
    conn.close()


def _wait_for_exe(pid: int, want: str) -> None:
    for _ in range(3000):
        if os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(want):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never ran {want}")


def test_after_serve_stops_the_lineage_of_its_decisions_verifies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with public_dir() as directory:
        state = enrolled_state(directory / "state", RULES, WORKLOADS)
        sock = directory / "agent.sock"
        with serving(state, sock), Client(sock) as client:
            answers = [client.decide("read", f"/etc/edge/{i}").allowed for i in range(50)]
        assert answers == [True] * 50
        capsys.readouterr()
        assert agent_main(["log", "verify", "--state-dir", str(state)]) == 0
        assert "lineage OK" in capsys.readouterr().out

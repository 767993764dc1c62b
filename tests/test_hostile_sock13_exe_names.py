"""Hostile callers whose executable path is not valid UTF-8 (session 13, the epoll responder).

Linux file names are bytes; ``/proc/PID/exe`` of a program at ``/tmp/x/perl\\xff`` reads back
(in Python) with a lone surrogate, which attestation accepts and the socket's CBOR encoder
cannot encode. On the responder thread that exception is not caught: one ``identify`` or
``decide`` from such a program ends the thread, and ``edge-agent serve`` keeps running,
its socket present and accepting into the backlog, while answering nobody again. SIGTERM
then fails with ``Bad file descriptor`` (exit 70). Main's asyncio server drops only that
caller's connection and goes on answering the others.

Each test runs a real ``edge-agent serve`` and a copy of ``/usr/bin/perl`` under such a
name as the caller (a copy, so ``/proc/PID/exe`` names it; perl finds its libraries by
absolute paths wherever it is copied).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.client import AgentUnavailableError, Client
from edge_agent.socket.wire import Op, WireRequest, encode_request
from tests.socket_helpers import START_TIMEOUT_S, enrolled_state, public_dir, serving

PERL = "/usr/bin/perl"
RULES = [
    {
        "id": "root-reads",
        "effect": "allow",
        "subjects": ["uid:0"],
        "actions": ["read"],
        "resources": ["/etc/edge/**"],
    }
]
ASK = r"""
use IO::Socket::UNIX;
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]) or die "connect: $!";
syswrite($s, pack("H*", $ARGV[1]));
my $rin = ""; vec($rin, fileno($s), 1) = 1;
my $r = "";
if (select(my $rout = $rin, undef, undef, 5)) { sysread($s, $r, 65536); }
print unpack("H*", $r);
"""
"""One request (hex, argv[2]) on the socket (argv[1]); what came back, as hex."""

pytestmark = pytest.mark.skipif(not os.access(PERL, os.X_OK), reason="needs /usr/bin/perl")


@pytest.fixture
def agent() -> Iterator[tuple[Path, Path, subprocess.Popen[bytes]]]:
    with public_dir() as directory:
        state = enrolled_state(directory / "state", RULES)
        sock = directory / "agent.sock"
        with serving(state, sock) as process:
            yield directory, sock, process


def _ask_from_undecodable_exe(directory: Path, sock: Path, request: WireRequest) -> None:
    exe = os.path.join(os.fsencode(directory), b"perl\xff")
    shutil.copy(PERL, exe)
    os.chmod(exe, 0o755)
    subprocess.run(
        [exe, b"-e", ASK.encode(), os.fsencode(sock), encode_request(request).hex().encode()],
        capture_output=True,
        timeout=30,
        check=False,
    )


@pytest.mark.xfail(
    strict=True,
    reason="an identify from a program whose path is not UTF-8 ends the responder thread: "
    "serve answers nobody afterwards",
)
def test_an_undecodable_exe_path_on_identify_does_not_stop_the_agent_answering_others(
    agent: tuple[Path, Path, subprocess.Popen[bytes]],
) -> None:
    directory, sock, _ = agent
    _ask_from_undecodable_exe(directory, sock, WireRequest(1, Op.IDENTIFY))
    with Client(sock, timeout=3) as client:
        assert client.decide("read", "/etc/edge/after").allowed


@pytest.mark.xfail(
    strict=True,
    reason="a decide from a program whose path is not UTF-8 ends the responder thread while "
    "answering its commit: serve answers nobody afterwards",
)
def test_an_undecodable_exe_path_on_decide_does_not_stop_the_agent_answering_others(
    agent: tuple[Path, Path, subprocess.Popen[bytes]],
) -> None:
    directory, sock, _ = agent
    _ask_from_undecodable_exe(directory, sock, WireRequest(1, Op.DECIDE, "read", "/etc/edge/x"))
    with Client(sock, timeout=3) as client:
        assert client.decide("read", "/etc/edge/after").allowed


@pytest.mark.xfail(
    strict=True,
    reason="once the responder thread has died, SIGTERM fails in Responder.stop "
    "(eventfd already closed: EBADF) and serve exits 70",
)
def test_serve_stops_cleanly_after_a_caller_with_an_undecodable_exe_path(
    agent: tuple[Path, Path, subprocess.Popen[bytes]],
) -> None:
    directory, sock, process = agent
    _ask_from_undecodable_exe(directory, sock, WireRequest(1, Op.IDENTIFY))
    with contextlib.suppress(AgentUnavailableError), Client(sock, timeout=1) as client:
        client.identify()  # a second for the responder to finish ending, where it does
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=START_TIMEOUT_S) == 0
    assert not sock.exists()

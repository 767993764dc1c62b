"""A caller whose executable path is not valid UTF-8 is refused, and only that caller.

Linux file names are bytes; ``/proc/PID/exe`` of a program at ``/tmp/x/perl\\xff`` reads back
(in Python) with a lone surrogate, which no answer, log line or lineage entry can encode as
text. Attestation refuses such a caller (``identity_unverified``, the connection closed,
the message naming the path with the byte escaped): the agent names callers by that path.
The agent goes on answering everyone else, and stops cleanly on SIGTERM.

Found by the hostile tests of session 13: on the epoll responder, such a caller's
``identify`` or ``decide`` raised on the responder thread, which died; ``serve`` kept its
socket but answered nobody, and SIGTERM exited 70 (the wake-up eventfd already closed).

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
from edge_agent.protocol import dcbor
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
$SIG{PIPE} = "IGNORE";
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]) or die "connect: $!";
syswrite($s, pack("H*", $ARGV[1]));
my $rin = ""; vec($rin, fileno($s), 1) = 1;
my $r = "";
if (select(my $rout = $rin, undef, undef, 5)) { sysread($s, $r, 65536); }
print unpack("H*", $r);
"""
"""One request (hex, argv[2]) on the socket (argv[1]); what came back, as hex. A refused
caller may be refused (and its connection closed) before it writes: SIGPIPE is ignored."""

pytestmark = pytest.mark.skipif(not os.access(PERL, os.X_OK), reason="needs /usr/bin/perl")


@pytest.fixture
def agent() -> Iterator[tuple[Path, Path, subprocess.Popen[bytes]]]:
    with public_dir() as directory:
        state = enrolled_state(directory / "state", RULES)
        sock = directory / "agent.sock"
        with serving(state, sock) as process:
            yield directory, sock, process


def _ask_from_undecodable_exe(directory: Path, sock: Path, request: WireRequest) -> object:
    """Ask ``request`` from such a program: the agent's first answer, decoded."""
    exe = os.path.join(os.fsencode(directory), b"perl\xff")
    shutil.copy(PERL, exe)
    os.chmod(exe, 0o755)
    asked = subprocess.run(
        [exe, b"-e", ASK.encode(), os.fsencode(sock), encode_request(request).hex().encode()],
        capture_output=True,
        timeout=30,
        check=False,
    )
    answer = bytes.fromhex(asked.stdout.decode())
    return dcbor.decode(answer[4 : 4 + int.from_bytes(answer[:4], "big")], max_bytes=1 << 20)


def test_an_undecodable_exe_path_on_identify_does_not_stop_the_agent_answering_others(
    agent: tuple[Path, Path, subprocess.Popen[bytes]],
) -> None:
    directory, sock, _ = agent
    refused = _ask_from_undecodable_exe(directory, sock, WireRequest(1, Op.IDENTIFY))
    assert isinstance(refused, dict)
    assert (refused["ok"], refused["error"]) == (False, "identity_unverified")
    assert "perl\\xff is not valid UTF-8" in refused["message"]
    with Client(sock, timeout=3) as client:
        assert client.decide("read", "/etc/edge/after").allowed


def test_an_undecodable_exe_path_on_decide_does_not_stop_the_agent_answering_others(
    agent: tuple[Path, Path, subprocess.Popen[bytes]],
) -> None:
    directory, sock, _ = agent
    refused = _ask_from_undecodable_exe(
        directory, sock, WireRequest(1, Op.DECIDE, "read", "/etc/edge/x")
    )
    assert isinstance(refused, dict) and refused["error"] == "identity_unverified"
    with Client(sock, timeout=3) as client:
        assert client.decide("read", "/etc/edge/after").allowed


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

"""Bad input against a real ``edge-agent serve``: it keeps answering and its memory stays bounded.

Each test floods the agent one way (garbage, truncated frames, a 100 MB declared length,
1,000 idle connections, a client that never reads), then checks that a well-behaved client
still gets its decision and that the agent's resident memory grew by less than a generous
bound (RSS measured before and after, in the test).
"""

from __future__ import annotations

import errno
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.client import Client
from edge_agent.protocol import dcbor
from edge_agent.socket.wire import Op, WireRequest, encode_request, frame
from tests.socket_helpers import enrolled_state, public_dir, rss_kib, serving

RULES = [
    {
        "id": "anyone-reads-public",
        "effect": "allow",
        "subjects": ["*"],
        "actions": ["read"],
        "resources": ["/public/**"],
    }
]
RSS_GROWTH_BOUND_KIB = 64 * 1024


@pytest.fixture(scope="module")
def agent() -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    with public_dir() as directory:
        state = enrolled_state(directory / "state", RULES)
        sock = directory / "agent.sock"
        with serving(state, sock) as process:
            with Client(sock) as client:
                for _ in range(200):
                    client.decide("read", "/public/warm-up")
            yield sock, process


def _well_behaved(sock: Path) -> None:
    with Client(sock, timeout=10) as client:
        result = client.decide("read", "/public/report")
    assert (result.allowed, result.rule) == (True, "anyone-reads-public")


def _connect(sock: Path) -> socket.socket:
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(sock))
    raw.settimeout(10)
    return raw


def _answers_until_closed(raw: socket.socket) -> list[dict[str, object]]:
    """Every frame the agent sends before it closes the connection."""
    data = b""
    while chunk := raw.recv(65536):
        data += chunk
    frames = []
    while data:
        size = int.from_bytes(data[:4], "big")
        body = dcbor.decode(data[4 : 4 + size], max_bytes=1 << 20)
        assert isinstance(body, dict)
        frames.append(body)
        data = data[4 + size :]
    return frames  # type: ignore[return-value]


def test_a_100_mb_declared_length_is_refused_before_any_body_is_read(
    agent: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    sock, process = agent
    before = rss_kib(process.pid)
    raw = _connect(sock)
    raw.sendall((100 * 1024 * 1024).to_bytes(4, "big") + b"\xa0" * 1024)
    answers = _answers_until_closed(raw)
    raw.close()
    assert [(a["ok"], a["error"]) for a in answers] == [(False, "frame_too_large")]
    _well_behaved(sock)
    assert rss_kib(process.pid) - before < RSS_GROWTH_BOUND_KIB


def test_garbage_and_truncated_frames_leave_the_agent_answering(
    agent: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    sock, process = agent
    before = rss_kib(process.pid)
    rng = random.Random(5)
    for _ in range(200):
        raw = _connect(sock)
        raw.sendall(rng.randbytes(rng.randrange(1, 4096)))
        raw.shutdown(socket.SHUT_WR)
        for answer in _answers_until_closed(raw):
            assert answer["ok"] is False
        raw.close()
    for cut in (1, 3, 4, 10):
        raw = _connect(sock)
        raw.sendall(encode_request(WireRequest(1, Op.DECIDE, "read", "/public/x"))[:cut])
        raw.shutdown(socket.SHUT_WR)
        assert _answers_until_closed(raw) == []
        raw.close()
    _well_behaved(sock)
    assert rss_kib(process.pid) - before < RSS_GROWTH_BOUND_KIB


def test_well_framed_garbage_is_answered_and_the_connection_stays_usable(
    agent: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    sock, _ = agent
    raw = _connect(sock)
    for payload in (b"\xff", dcbor.encode([1]), dcbor.encode({"v": 9, "id": 1, "op": "x"})):
        raw.sendall(frame(payload))
    raw.sendall(encode_request(WireRequest(2, Op.DECIDE, "read", "/public/x")))
    raw.shutdown(socket.SHUT_WR)
    answers = _answers_until_closed(raw)
    raw.close()
    assert [a.get("error") for a in answers] == [
        "bad_request",
        "bad_request",
        "unsupported_version",
        None,
    ]
    assert answers[-1]["allowed"] is True and answers[-1]["id"] == 2


def test_a_thousand_idle_connections_do_not_starve_a_well_behaved_client(
    agent: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    sock, process = agent
    before = rss_kib(process.pid)
    idle = [_connect(sock) for _ in range(1000)]
    try:
        _well_behaved(sock)
        during = rss_kib(process.pid)
    finally:
        for raw in idle:
            raw.close()
    _well_behaved(sock)
    assert during - before < RSS_GROWTH_BOUND_KIB


def test_a_client_that_never_reads_does_not_starve_others(
    agent: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    sock, process = agent
    before = rss_kib(process.pid)
    hog = _connect(sock)
    hog.setblocking(False)
    request = encode_request(WireRequest(1, Op.DECIDE, "read", "/public/hog"))
    sent = 0
    while sent < 32 * 1024 * 1024:
        try:
            sent += hog.send(request * 64)
        except OSError as exc:
            assert exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
            break
    try:
        for _ in range(20):
            _well_behaved(sock)
        assert rss_kib(process.pid) - before < RSS_GROWTH_BOUND_KIB
    finally:
        hog.close()
    _well_behaved(sock)


def test_a_flood_of_tiny_garbage_frames_is_bounded_and_others_are_answered(
    agent: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    sock, process = agent
    before = rss_kib(process.pid)
    flood = _connect(sock)
    flood.setblocking(False)
    tiny = frame(b"\xff") * 65536
    sent = 0
    while sent < 64 * 1024 * 1024:
        try:
            sent += flood.send(tiny)
        except OSError as exc:
            assert exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
            break
    try:
        for _ in range(20):
            _well_behaved(sock)
        assert rss_kib(process.pid) - before < RSS_GROWTH_BOUND_KIB
    finally:
        flood.close()

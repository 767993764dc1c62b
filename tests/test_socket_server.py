"""DecisionServer embedded in a program: limits, eviction, back-pressure, socket file, shutdown.

The server runs on its own event loop in a thread (as it would inside the agent daemon);
deciders here are small stand-ins so each test controls timing and counts calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.client import AgentRequestError, Client
from edge_agent.errors import ConfigError
from edge_agent.protocol import dcbor
from edge_agent.protocol.request import Request
from edge_agent.socket.config import SocketConfig, SocketLimits
from edge_agent.socket.server import DecisionServer
from edge_agent.socket.wire import Op, WireRequest, encode_request, frame
from edge_agent.trust.gate import Decision
from tests.socket_helpers import NOBODY, Echo, embedded

WAIT_S = 30.0


class Gate(Echo):
    """Blocks every decision until released; records the most decided at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.running = 0
        self.peak = 0

    def decide(self, request: Request, wall: int) -> Decision:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.started.release()
        assert self.release.wait(WAIT_S)
        with self.lock:
            self.running -= 1
        return super().decide(request, wall)


class Broken(Echo):
    def decide(self, request: Request, wall: int) -> Decision:
        if request.action == "crash":
            raise RuntimeError("boom")
        return super().decide(request, wall)


def _config(tmp_path: Path, **limits: object) -> SocketConfig:
    return SocketConfig(path=tmp_path / "agent.sock", limits=SocketLimits(**limits))  # type: ignore[arg-type]


def _raw(path: Path) -> socket.socket:
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(path))
    raw.settimeout(WAIT_S)
    return raw


def _read_frame(raw: socket.socket) -> dict[str, object] | None:
    header = _exactly(raw, 4)
    if header is None:
        return None
    body = _exactly(raw, int.from_bytes(header, "big"))
    assert body is not None
    value = dcbor.decode(body, max_bytes=1 << 20)
    assert isinstance(value, dict)
    return value  # type: ignore[return-value]


def _exactly(raw: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = raw.recv(size - len(data))
        if not chunk:
            assert not data, "closed mid-frame"
            return None
        data += chunk
    return data


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def _identify(raw: socket.socket, request_id: int = 1) -> dict[str, object] | None:
    raw.sendall(encode_request(WireRequest(request_id, Op.IDENTIFY)))
    return _read_frame(raw)


def test_the_socket_file_gets_its_mode_and_group_and_is_removed_on_close(tmp_path: Path) -> None:
    config = SocketConfig(path=tmp_path / "run" / "agent.sock", mode=0o660, group=NOBODY)
    with embedded(Echo(), config):
        info = os.stat(config.path)
        assert stat.S_ISSOCK(info.st_mode)
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o660, NOBODY)
    assert not config.path.exists()


def test_a_stale_socket_is_replaced_but_a_live_one_or_a_file_is_not(tmp_path: Path) -> None:
    config = _config(tmp_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(config.path))
    stale.close()
    with embedded(Echo(), config):
        with pytest.raises(ConfigError, match="already serving"):
            asyncio.run(_enter(DecisionServer(Echo(), config)))
        with Client(config.path) as client:
            assert client.decide("read", "/x").allowed
    config.path.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        asyncio.run(_enter(DecisionServer(Echo(), config)))
    assert config.path.read_text() == "not a socket"


def test_bad_socket_settings_are_config_errors(tmp_path: Path) -> None:
    too_long = SocketConfig(path=tmp_path / ("x" * 120) / "agent.sock")
    with pytest.raises(ConfigError, match="longer than"):
        asyncio.run(_enter(DecisionServer(Echo(), too_long)))
    no_group = SocketConfig(path=tmp_path / "a.sock", group="no-such-group-edgegov")
    with pytest.raises(ConfigError, match="does not exist"):
        asyncio.run(_enter(DecisionServer(Echo(), no_group)))


async def _enter(server: DecisionServer) -> None:
    async with server:
        pass


def test_at_the_connection_limit_the_longest_idle_connection_is_evicted(tmp_path: Path) -> None:
    config = _config(tmp_path, max_connections=20)
    with embedded(Echo(), config) as server:
        idle = []
        for number in range(100):
            raw = _raw(config.path)
            assert _identify(raw, number) is not None
            idle.append(raw)
        with Client(config.path) as client:
            assert client.decide("read", "/after-the-flood").allowed
        stats = server.stats()
        assert stats.evicted >= 80 and stats.open_connections <= 20
        assert _read_frame(idle[0]) is None
        for raw in idle:
            raw.close()


def test_when_every_connection_is_busy_a_new_one_is_refused_busy(tmp_path: Path) -> None:
    config = _config(tmp_path, max_connections=2)
    decider = Gate()
    with embedded(decider, config) as server:
        busy = [_raw(config.path) for _ in range(2)]
        for number, raw in enumerate(busy):
            assert _identify(raw, number) is not None
            raw.sendall(encode_request(WireRequest(9, Op.DECIDE, "read", "/slow")))
            assert decider.started.acquire(timeout=WAIT_S)
        refused = _raw(config.path)
        answer = _read_frame(refused)
        assert answer is not None and (answer["ok"], answer["error"]) == (False, "busy")
        assert _read_frame(refused) is None
        decider.release.set()
        for raw in busy:
            answer = _read_frame(raw)
            assert answer is not None and answer["allowed"] is True
            raw.close()
        assert server.stats().refused_busy == 1


def test_pipelined_requests_are_decided_at_most_the_per_connection_bound_at_once(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, max_inflight_per_connection=4)
    decider = Gate()
    with embedded(decider, config):
        raw = _raw(config.path)
        raw.sendall(
            b"".join(
                encode_request(WireRequest(i, Op.DECIDE, "read", f"/r/{i}")) for i in range(50)
            )
        )
        for _ in range(4):
            assert decider.started.acquire(timeout=WAIT_S)
        decider.release.set()
        answers = [_read_frame(raw) for _ in range(50)]
        raw.close()
    assert decider.peak == 4
    assert sorted((a["id"], a["message"]) for a in answers if a) == sorted(
        (i, f"/r/{i}") for i in range(50)
    )


def test_a_decider_failure_is_an_internal_error_and_the_connection_goes_on(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    with embedded(Broken(), config), Client(config.path) as client:
        with pytest.raises(AgentRequestError) as refused:
            client.decide("crash", "/x")
        assert refused.value.code == "internal_error"
        assert client.decide("read", "/x").allowed


def test_an_idle_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    config = _config(tmp_path, idle_timeout_s=0.2)
    with embedded(Echo(), config) as server:
        raw = _raw(config.path)
        assert _identify(raw) is not None
        assert _read_frame(raw) is None
        raw.close()
        assert server.stats().timeouts >= 1


def test_a_stalled_partial_frame_is_closed_after_the_frame_timeout(tmp_path: Path) -> None:
    config = _config(tmp_path, frame_timeout_s=0.2)
    with embedded(Echo(), config):
        raw = _raw(config.path)
        raw.sendall(encode_request(WireRequest(1, Op.DECIDE, "read", "/x"))[:7])
        assert _read_frame(raw) is None
        raw.close()


def test_a_client_that_never_reads_is_disconnected_after_the_write_timeout(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, write_timeout_s=0.3)
    with embedded(Echo(), config) as server:
        hog = _raw(config.path)
        hog.setblocking(False)
        request = encode_request(WireRequest(1, Op.DECIDE, "read", "/hog"))
        with pytest.raises(BlockingIOError):
            while True:
                hog.send(request * 256)
        _wait_for(lambda: server.stats().timeouts >= 1)
        hog.setblocking(True)
        hog.settimeout(WAIT_S)
        with contextlib.suppress(ConnectionResetError):
            while hog.recv(1 << 20):
                pass
        hog.close()
        with Client(config.path) as client:
            assert client.decide("read", "/still-here").allowed


def test_shutdown_lets_answers_in_flight_finish_before_it_returns(tmp_path: Path) -> None:
    config = _config(tmp_path, shutdown_grace_s=WAIT_S)
    decider = Gate()
    raw: socket.socket | None = None
    with embedded(decider, config):
        raw = _raw(config.path)
        raw.sendall(encode_request(WireRequest(5, Op.DECIDE, "read", "/during-shutdown")))
        assert decider.started.acquire(timeout=WAIT_S)
        threading.Timer(0.2, decider.release.set).start()
    assert decider.running == 0 and decider.calls == 1
    answer = _read_frame(raw)
    raw.close()
    assert answer is not None and (answer["id"], answer["allowed"]) == (5, True)
    assert not config.path.exists()


def test_requests_on_one_connection_keep_their_order_of_ids(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with embedded(Echo(), config):
        raw = _raw(config.path)
        raw.sendall(frame(dcbor.encode({"v": 1, "id": 3, "op": "identify"})))
        first = _read_frame(raw)
        raw.sendall(encode_request(WireRequest(4, Op.DECIDE, "deny", "/x")))
        second = _read_frame(raw)
        raw.close()
    assert first is not None and first["id"] == 3 and first["uid"] == os.getuid()
    assert second is not None and (second["id"], second["allowed"], second["reason"]) == (
        4,
        False,
        "policy_denied",
    )

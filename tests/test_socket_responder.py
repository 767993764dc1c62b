"""The epoll responder (a :class:`BatchDecider` served off the event loop): what its own
threads could get wrong.

No answer before its decision is recorded; one commit answers every decision it holds;
a slow, silent or vanished client holds only its own connection; frames split anywhere are
put back together; the bounds in flight hold; shutdown waits for the commit in flight.
The decider here (:class:`Ledger`) judges like ``Echo`` and lets each test hold ``record``.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_agent.client import Client
from edge_agent.protocol import dcbor
from edge_agent.protocol.request import Request
from edge_agent.socket.config import SocketConfig, SocketLimits
from edge_agent.socket.deciders import BatchDecider
from edge_agent.socket.wire import Op, WireRequest, encode_request
from edge_agent.trust.gate import Decision, Reason
from tests.socket_helpers import embedded

WAIT_S = 30.0
QUIET_S = 0.3
"""How long a test waits to see that nothing arrives."""


class Ledger:
    """A :class:`BatchDecider`: allows everything but action ``deny``; ``record`` waits for
    ``open`` and notes which resources it made durable, batch by batch."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()
        self.judged = 0
        self.durable: list[str] = []
        self.batches: list[int] = []
        self.recording = 0
        self.fail = False

    def judge(self, request: Request, wall: int) -> Decision:
        with self.lock:
            self.judged += 1
        allowed = request.action != "deny"
        reason = Reason.ALLOWED if allowed else Reason.POLICY_DENIED
        return Decision(allowed, reason, request.resource, "ledger", 1, bytes(32), request, wall)

    def record(self, decisions: Sequence[Decision]) -> list[Decision]:
        with self.lock:
            self.recording += 1
        try:
            assert self.open.wait(WAIT_S)
            if self.fail:
                raise RuntimeError("disk on fire")
            with self.lock:
                self.durable.extend(d.request.resource for d in decisions)
                self.batches.append(len(decisions))
            return list(decisions)
        finally:
            with self.lock:
                self.recording -= 1

    def decide_cited(
        self, request: Request, wall: int, parent: bytes | None, want_receipt: bool
    ) -> tuple[Decision, bytes | None]:
        decision = self.record([self.judge(request, wall)])[0]
        return decision, b"receipt" if want_receipt else None


def _config(tmp_path: Path, **limits: object) -> SocketConfig:
    return SocketConfig(path=tmp_path / "agent.sock", limits=SocketLimits(**limits))  # type: ignore[arg-type]


def _raw(path: Path) -> socket.socket:
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(path))
    raw.settimeout(WAIT_S)
    return raw


def _decide(request_id: int, resource: str, action: str = "read") -> bytes:
    return encode_request(WireRequest(request_id, Op.DECIDE, action, resource))


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


def _nothing_arrives(raw: socket.socket) -> bool:
    raw.settimeout(QUIET_S)
    try:
        return raw.recv(1, socket.MSG_PEEK) == b""
    except TimeoutError:
        return True
    finally:
        raw.settimeout(WAIT_S)


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_the_ledger_is_served_by_the_responder() -> None:
    assert isinstance(Ledger(), BatchDecider)


def test_no_answer_is_sent_before_its_decision_is_recorded(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ledger = Ledger()
    ledger.open.clear()
    with embedded(ledger, config):
        raw = _raw(config.path)
        raw.sendall(_decide(1, "/held"))
        _wait_for(lambda: ledger.recording == 1)
        assert _nothing_arrives(raw)
        ledger.open.set()
        answer = _read_frame(raw)
        assert answer is not None and (answer["id"], answer["allowed"]) == (1, True)
        assert ledger.durable == ["/held"]
        raw.close()


def test_decisions_read_during_a_commit_share_the_next_one_and_all_are_answered(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    ledger = Ledger()
    ledger.open.clear()
    with embedded(ledger, config):
        clients = [_raw(config.path) for _ in range(16)]
        clients[0].sendall(_decide(0, "/first"))
        _wait_for(lambda: ledger.recording == 1)
        for number, raw in enumerate(clients[1:], 1):
            raw.sendall(_decide(number, f"/r/{number}"))
        _wait_for(lambda: ledger.judged == 16)
        ledger.open.set()
        answers = [_read_frame(raw) for raw in clients]
        for raw in clients:
            raw.close()
    assert ledger.batches == [1, 15]
    assert [(a["id"], a["message"]) for a in answers if a] == [(0, "/first")] + [
        (n, f"/r/{n}") for n in range(1, 16)
    ]


class Watching(Ledger):
    """A :class:`Ledger` whose ``judge`` takes its time for action ``slow`` (holding the
    responder, as a long wake-up would) and, for action ``probe``, notes whether
    ``watched`` had an answer waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: socket.socket | None = None
        self.answered_first: list[bool] = []
        self.slowing = threading.Event()
        self.slowed = threading.Event()

    def judge(self, request: Request, wall: int) -> Decision:
        if request.action == "slow":
            self.slowing.set()
            time.sleep(4 * QUIET_S)
            self.slowed.set()
        elif request.action == "probe":
            assert self.watched is not None
            readable, _, _ = select.select([self.watched], [], [], 0)
            self.answered_first.append(bool(readable))
        return super().judge(request, wall)


def test_a_commits_answers_are_sent_before_requests_read_in_the_same_wake_up_are_judged(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    ledger = Watching()
    with embedded(ledger, config):
        first, slow, probe = (_raw(config.path) for _ in range(3))
        for raw in (first, slow, probe):
            raw.sendall(_decide(0, "/warm"))
            assert _read_frame(raw) is not None
        ledger.watched = first
        ledger.open.clear()
        first.sendall(_decide(1, "/first"))
        _wait_for(lambda: ledger.recording == 1)
        slow.sendall(_decide(1, "/slow", "slow"))
        assert ledger.slowing.wait(WAIT_S)
        # The responder is inside the slow judgement: the commit's wake-up and the probe
        # become ready together, for its next wake-up.
        ledger.open.set()
        _wait_for(lambda: ledger.recording == 0)
        time.sleep(QUIET_S)  # for the committer to hand the commit back
        probe.sendall(_decide(1, "/probe", "probe"))
        assert not ledger.slowed.is_set(), "the machine is too slow for this test's timing"
        _wait_for(lambda: bool(ledger.answered_first))  # before the answers are read
        answers = [_read_frame(raw) for raw in (first, slow, probe)]
        for raw in (first, slow, probe):
            raw.close()
    assert [a["message"] for a in answers if a] == ["/first", "/slow", "/probe"]
    assert ledger.answered_first == [True]


def test_a_failed_record_answers_internal_error_to_its_whole_batch_and_serving_goes_on(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    ledger = Ledger()
    ledger.fail = True
    with embedded(ledger, config):
        raw = _raw(config.path)
        raw.sendall(_decide(7, "/x"))
        answer = _read_frame(raw)
        assert answer is not None and (answer["id"], answer["ok"], answer["error"]) == (
            7,
            False,
            "internal_error",
        )
        ledger.fail = False
        raw.sendall(_decide(8, "/y"))
        answer = _read_frame(raw)
        assert answer is not None and (answer["id"], answer["allowed"]) == (8, True)
        raw.close()


def test_a_slow_or_silent_client_does_not_hold_up_the_others(tmp_path: Path) -> None:
    config = _config(tmp_path, frame_timeout_s=WAIT_S, write_timeout_s=WAIT_S)
    with embedded(Ledger(), config):
        stalled = _raw(config.path)
        stalled.sendall(_decide(1, "/stalled")[:9])
        deaf = _raw(config.path)
        deaf.setblocking(False)
        pipelined = b"".join(_decide(i, f"/deaf/{i}") for i in range(256))
        sent = 0
        try:
            while sent < 64 * len(pipelined):
                sent += deaf.send(pipelined)
        except BlockingIOError:
            pass
        started = time.monotonic()
        with Client(config.path, timeout=WAIT_S) as client:
            for number in range(50):
                assert client.decide("read", f"/prompt/{number}").allowed
        assert time.monotonic() - started < 10
        stalled.close()
        deaf.close()


def test_a_client_gone_mid_request_is_dropped_and_its_answer_never_sent(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ledger = Ledger()
    ledger.open.clear()
    with embedded(ledger, config) as server:
        gone = _raw(config.path)
        gone.sendall(_decide(1, "/gone"))
        _wait_for(lambda: ledger.recording == 1)
        gone.close()
        half = _raw(config.path)
        half.sendall(_decide(2, "/half")[:6])
        half.close()
        _wait_for(lambda: server.stats().open_connections == 0)
        ledger.open.set()
        with Client(config.path) as client:
            assert client.decide("read", "/after").allowed
        stats = server.stats()
    # The vanished client's decision is recorded (harmless) and counted, never answered.
    assert ledger.durable == ["/gone", "/after"]
    assert stats.decisions == 2


def test_frames_split_anywhere_across_reads_are_put_back_together(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with embedded(Ledger(), config):
        raw = _raw(config.path)
        stream = b"".join(_decide(i, f"/split/{i}") for i in range(6))
        for cut in (1, 3, 4, 5, 17, len(stream) // 2, len(stream) - 1):
            raw.sendall(stream[:cut])
            time.sleep(0.02)
            raw.sendall(stream[cut:])
            answers = [_read_frame(raw) for _ in range(6)]
            assert sorted((a["id"], a["message"]) for a in answers if a) == [
                (i, f"/split/{i}") for i in range(6)
            ]
        for byte in _decide(99, "/byte-by-byte"):
            raw.sendall(bytes([byte]))
        answer = _read_frame(raw)
        assert answer is not None and (answer["id"], answer["message"]) == (99, "/byte-by-byte")
        raw.close()


def test_a_pipelining_client_has_at_most_its_bound_judged_and_unrecorded(tmp_path: Path) -> None:
    config = _config(tmp_path, max_inflight_per_connection=4)
    ledger = Ledger()
    ledger.open.clear()
    with embedded(ledger, config):
        raw = _raw(config.path)
        raw.sendall(b"".join(_decide(i, f"/p/{i}") for i in range(40)))
        _wait_for(lambda: ledger.judged == 4)
        time.sleep(QUIET_S)
        assert ledger.judged == 4
        ledger.open.set()
        answers = [_read_frame(raw) for _ in range(40)]
        raw.close()
    assert sorted(a["id"] for a in answers if a) == list(range(40))
    assert max(ledger.batches) <= 4


def test_shutdown_waits_for_the_commit_in_flight_and_answers_nothing_after_the_grace(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, shutdown_grace_s=0.1)
    ledger = Ledger()
    ledger.open.clear()
    with embedded(ledger, config):
        raw = _raw(config.path)
        raw.sendall(_decide(1, "/late"))
        _wait_for(lambda: ledger.recording == 1)
        threading.Timer(0.5, ledger.open.set).start()
    assert ledger.recording == 0 and ledger.durable == ["/late"]
    assert _read_frame(raw) is None
    raw.close()
    assert not config.path.exists()


def test_a_cited_request_is_decided_off_the_responder_and_answered_with_its_receipt(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    with embedded(Ledger(), config), Client(config.path) as client:
        result = client.decide("read", "/cited", want_receipt=True)
        assert (result.allowed, result.receipt) == (True, b"receipt")
        assert client.decide("read", "/plain").receipt is None


def test_the_committer_sleeps_while_no_decision_is_asked(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with embedded(Ledger(), config) as server:
        committer = next(t for t in threading.enumerate() if t.name == "edge-agent-commit")
        tid = committer.native_id
        assert tid is not None and server.stats().decisions == 0
        before = _thread_cpu_s(tid)
        time.sleep(0.5)
        assert _thread_cpu_s(tid) - before < 0.05


def _thread_cpu_s(tid: int) -> float:
    """CPU time (user + system) of thread ``tid`` of this process, in seconds."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_stalled_and_deaf_connections_are_closed_after_their_timeouts(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, idle_timeout_s=0.3, frame_timeout_s=0.3, write_timeout_s=0.3)
    with embedded(Ledger(), config) as server:
        idle = _raw(config.path)
        idle.sendall(_decide(1, "/idle"))
        assert _read_frame(idle) is not None
        stalled = _raw(config.path)
        stalled.sendall(_decide(2, "/stalled")[:7])
        deaf = _raw(config.path)
        deaf.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                deaf.send(_decide(3, "/deaf") * 256)
        assert _read_frame(idle) is None
        assert _read_frame(stalled) is None
        _wait_for(lambda: server.stats().timeouts >= 3)
        with Client(config.path) as client:
            assert client.decide("read", "/still-here").allowed
        for raw in (idle, stalled, deaf):
            raw.close()


def test_at_the_connection_limit_idle_ones_are_evicted_and_busy_ones_refuse_newcomers(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, max_connections=2)
    ledger = Ledger()
    with embedded(ledger, config) as server:
        idle = _raw(config.path)
        idle.sendall(_decide(1, "/idle"))
        assert _read_frame(idle) is not None
        ledger.open.clear()
        busy = [_raw(config.path) for _ in range(2)]
        for number, raw in enumerate(busy):
            raw.sendall(_decide(number, f"/busy/{number}"))
        _wait_for(lambda: ledger.judged == 3)
        assert _read_frame(idle) is None
        refused = _raw(config.path)
        answer = _read_frame(refused)
        assert answer is not None and (answer["ok"], answer["error"]) == (False, "busy")
        assert _read_frame(refused) is None
        ledger.open.set()
        for raw in busy:
            answer = _read_frame(raw)
            assert answer is not None and answer["allowed"] is True
        stats = server.stats()
        for raw in (idle, refused, *busy):
            raw.close()
    assert (stats.evicted, stats.refused_busy) == (1, 1)

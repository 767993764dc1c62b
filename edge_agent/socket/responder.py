"""The decision server's hot path on two threads of its own, with no asyncio: a responder
that waits with ``epoll`` and a committer that makes decisions durable.

The responder thread owns every connection: it accepts, reads each ready connection
(one ``recv`` per connection and wake-up), splits frames, decodes, re-checks the peer and has
the decider judge each request (the gate, in memory), collecting the wake-up's decisions.
At the end of the wake-up it hands them to the committer in one go, and sends what each
connection has to send in one ``send``. The committer thread takes every batch handed over
since its last commit and records them with one call (one lineage transaction, one
``fdatasync``), then wakes the responder once (an ``eventfd``), which answers every
decision of that commit. No future, task, transport or callback handle per request; the
two threads meet once per commit.

Invariants (those of :mod:`edge_agent.socket.server`, kept here):

- No decision is answered before the decider's ``record`` has returned it: the answer is
  built from what ``record`` returned (the decision once durable, or the deny replacing
  it), on the responder, after the committer's wake-up. A failure of ``record`` answers
  ``internal_error`` (a deny) to every decision of that commit.
- The peer is re-checked before every request; malformed input gets the same errors as on
  the asyncio path (the same decoder, the same checks, in the same order).
- Bounded: unparsed bytes (one largest frame past a read), unsent answers (reading pauses
  above :data:`HIGH_WATER_BYTES`), decisions in flight per connection (reading pauses) and
  in total (the connection waits its turn: each slot freed goes to the connection waiting
  longest, before any request read later takes one), frames per connection and wake-up
  (:data:`~edge_agent.socket._connection.FRAMES_PER_TURN`), and time (idle, partial frame,
  unread answers: checked at every sweep).
- A failure nobody foresaw costs one answer (``internal_error``) or one connection
  (closed), never the thread; should a thread fail all the same, every connection is
  closed and ``on_failure`` called (the server then stops: see
  :meth:`~edge_agent.socket.server.DecisionServer.watch`).
- A peer that hangs up is dropped at once (its decisions in flight may still be logged,
  never answered); a slow peer holds only its own connection.
- :meth:`Responder.stop` stops accepting and reading, lets decisions in flight answer for
  ``shutdown_grace_s``, closes every connection, and :meth:`Responder.join` returns once
  no decision it started is still being recorded.

Attestation of a new peer and requests citing a parent or asking for a receipt (rare; they
verify signatures) run in a small thread pool and report back through the same wake-up.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import queue
import select
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from edge_agent.protocol.request import Request
from edge_agent.socket._connection import FRAMES_PER_TURN, Counters, expired, result_of
from edge_agent.socket.config import SocketLimits
from edge_agent.socket.deciders import BatchDecider
from edge_agent.socket.errors import ErrorCode, IdentityError, ProtocolError
from edge_agent.socket.peer import ExeHashCache, PeerProcess, attest
from edge_agent.socket.wire import (
    HEADER_BYTES,
    DecisionAnswers,
    DecisionResult,
    Op,
    RequestDecoder,
    WireRequest,
    encode_error,
    encode_identity,
    frame_length,
)
from edge_agent.trust.gate import Decision

if TYPE_CHECKING:
    from edge_agent.socket.errors import ErrorCodeValue

__all__ = ["HIGH_WATER_BYTES", "Responder"]

logger = logging.getLogger(__name__)

READ_BYTES = 65536
"""Most bytes read from one connection per wake-up."""

HIGH_WATER_BYTES = 64 * 1024
"""Unsent answer bytes above which a connection is not read (asyncio's default)."""

LOW_WATER_BYTES = 16 * 1024
"""Unsent answer bytes at or below which such a connection is read again."""

ACCEPTS_PER_WAKE = 64
"""Most connections accepted per wake-up (a flood of connects cannot hold off answers)."""

EVENTS_PER_WAKE = 512
"""Most epoll events taken per wake-up."""

_SWEEP_MIN_S, _SWEEP_MAX_S = 0.05, 1.0
"""Bounds of the sweep's period (a quarter of the shortest timeout), in seconds."""

_IN, _OUT, _GONE = select.EPOLLIN, select.EPOLLOUT, select.EPOLLHUP | select.EPOLLERR

_Batch = list[tuple["_Peer", int, Decision]]
"""Decisions judged in one wake-up: connection, request id, decision (not yet durable)."""


class _Peer:
    """One accepted connection: its socket, attested peer, buffers and counts."""

    __slots__ = (
        "answered",
        "answers",
        "asked",
        "attesting",
        "blocked",
        "buffer",
        "closed",
        "eof",
        "fd",
        "flush_then_close",
        "frame_started",
        "inflight",
        "last_activity",
        "mask",
        "number",
        "out",
        "peer",
        "queued",
        "reading",
        "requests",
        "sock",
        "write_paused_at",
    )

    def __init__(self, sock: socket.socket, number: int, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.number = number
        self.peer: PeerProcess | None = None
        self.attesting = False
        """Its peer is being identified in the pool, from its socket: the socket is closed
        only once that is over (its descriptor must not be reused meanwhile)."""
        self.buffer = bytearray()
        self.out = bytearray()
        self.inflight = 0
        self.last_activity = now
        self.frame_started: float | None = None
        self.write_paused_at: float | None = None
        self.closed = False
        """No more requests taken nor answers written (the socket may still be flushing)."""
        self.flush_then_close = False
        self.eof = False
        self.reading = False
        self.queued = False
        self.mask = 0
        self.blocked = False
        """A send left bytes unsent: wait for the socket to be writable."""
        self.requests = RequestDecoder()
        self.answers = DecisionAnswers()
        self.answered: tuple[Decision, DecisionResult] | None = None
        """The last decision answered and its result: the gate gives the very same
        decision again for the same request in the same second."""
        self.asked: Request | None = None
        """The last request built for the decider: the peer's identity is fixed, so a
        request asking the same action on the same resource in the same context is it."""

    @property
    def idle(self) -> bool:
        """Attested with nothing in flight: what may be evicted at the connection limit."""
        return self.peer is not None and not self.inflight


class Responder:
    """Serves ``listener`` with ``decider`` on its own threads between :meth:`start` and
    :meth:`stop` / :meth:`join`."""

    def __init__(
        self,
        decider: BatchDecider,
        listener: socket.socket,
        limits: SocketLimits,
        counters: Counters,
        cache: ExeHashCache,
        on_failure: Callable[[], None],
    ) -> None:
        self.limits = limits
        self.counters = counters
        self._decider = decider
        self._cache = cache
        self._listener = listener
        self._pool = ThreadPoolExecutor(limits.decision_threads, "edge-agent-attest")
        self._epoll = select.epoll()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_closed = False
        self._wake_lock = threading.Lock()
        """Held by :meth:`stop` and :meth:`join` only: the wake-up descriptor is closed once
        and never written after (its number could name another file by then)."""
        self._on_failure = on_failure
        self._committer_failed = False
        self._later: deque[Callable[[], None]] = deque()
        """Work other threads hand to the responder (run there after a wake-up)."""
        self._batches: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._peers: dict[int, _Peer] = {}
        """Every open socket by descriptor (admitted or being refused)."""
        self._order: OrderedDict[_Peer, None] = OrderedDict()
        """Admitted connections, least recently active first."""
        self._waiting: OrderedDict[_Peer, None] = OrderedDict()
        """Connections with a request ready and no slot for it, in arrival order."""
        self._granted: set[_Peer] = set()
        """Connections handed a freed slot from :attr:`_waiting`, until their turn ends:
        nobody else may take the slots they hold."""
        self._again: deque[_Peer] = deque()
        self._dirty: set[_Peer] = set()
        self._judged: _Batch = []
        self._inflight = 0
        self._closing = False
        self._stop = threading.Event()
        self._now = time.monotonic()
        shortest = min(limits.idle_timeout_s, limits.frame_timeout_s, limits.write_timeout_s)
        self._sweep_period = min(_SWEEP_MAX_S, max(_SWEEP_MIN_S, shortest / 4))
        self._next_sweep = self._now + self._sweep_period
        self._listening = True
        self._buffer_bound = HEADER_BYTES + limits.max_frame_bytes
        self._thread = threading.Thread(target=self._serve, name="edge-agent-socket")
        self._committer = threading.Thread(target=self._commit, name="edge-agent-commit")

    @property
    def open_connections(self) -> int:
        return len(self._order)

    def start(self) -> None:
        self._listener.setblocking(False)
        self._epoll.register(self._listener.fileno(), _IN)
        self._epoll.register(self._wake_fd, _IN)
        self._committer.start()
        self._thread.start()

    def stop(self) -> None:
        """Begin the shutdown (from any thread): stop accepting and reading, answer what is
        in flight within the grace period, then close every connection."""
        self._stop.set()
        with self._wake_lock:
            if not self._wake_closed:
                self._call_soon(_nothing)

    def join(self) -> None:
        """Wait until the responder has closed every connection and nothing it started is
        still being recorded (also once it has failed: :meth:`stop` then does nothing)."""
        self._thread.join()
        with self._wake_lock:
            if not self._wake_closed:
                self._wake_closed = True
                os.close(self._wake_fd)

    # the responder thread

    def _serve(self) -> None:
        """The responder thread. Should it fail (or the committer), every connection is
        closed and ``on_failure`` called: a socket nobody answers must not stay up."""
        failed = False
        try:
            self._loop()
            failed = self._committer_failed
        except Exception:
            logger.exception("the decision socket's responder failed; closing every connection")
            failed = True
        finally:
            self._close_all()
            self._batches.put(None)
            self._committer.join()
            self._pool.shutdown(wait=True)
            self._run_later()  # what the last commit and attestations handed back: close it
            self._epoll.close()
        if failed:
            self._on_failure()

    def _loop(self) -> None:
        grace_ends: float | None = None
        while not self._committer_failed:
            if grace_ends is None and self._stop.is_set():
                grace_ends = self._now + self.limits.shutdown_grace_s
                self._begin_closing()
            if grace_ends is not None and (not self._inflight or self._now >= grace_ends):
                return
            wake_at = self._next_sweep if grace_ends is None else min(self._next_sweep, grace_ends)
            timeout = 0.0 if self._again else max(0.0, wake_at - time.monotonic())
            events = self._epoll.poll(timeout, EVENTS_PER_WAKE)
            self._now = time.monotonic()
            woken = (self._wake_fd, _IN) in events
            if woken:
                # A commit's answers go out before this wake-up's reads are judged: their
                # clients are waiting, and come back with their next requests sooner.
                self._run_later()
                self._flush_dirty()
            for fd, mask in events:
                peer = self._peers.get(fd)
                if peer is not None:
                    self._guarded(peer, self._on_event, peer, mask)
                elif fd == self._wake_fd:
                    if not woken:
                        self._run_later()
                elif fd == self._listener.fileno():
                    self._accept()
            self._take_turns()
            if self._judged:
                self._batches.put(self._judged)
                self._judged = []
            self._flush_dirty()
            if self._now >= self._next_sweep:
                self._sweep()

    def _on_event(self, peer: _Peer, mask: int) -> None:
        if mask & _GONE:
            # The peer hung up (or the socket failed): nothing sent could be read.
            self._abort(peer)
            return
        if mask & _OUT:
            self._flush(peer)
        if mask & _IN and peer.reading:
            self._read(peer)

    def _read(self, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort(peer)
            return
        if data:
            peer.buffer += data
            peer.last_activity = self._now
        else:
            peer.eof = True
        self._process(peer)

    def _take_turns(self) -> None:
        """Let connections with work left from an earlier turn (frames beyond
        :data:`FRAMES_PER_TURN`, a bound lifted) take one more turn each."""
        for _ in range(len(self._again)):
            peer = self._again.popleft()
            peer.queued = False
            if not peer.closed:
                self._guarded(peer, self._process, peer)

    def _guarded(self, peer: _Peer, work: Callable[..., None], *args: object) -> None:
        """Run ``work(*args)`` for ``peer``: a failure nobody foresaw closes that
        connection (dropping what it has not been sent), never the responder."""
        try:
            work(*args)
        except Exception:
            logger.exception("connection %d failed unexpectedly; closing it", peer.number)
            self._abort(peer)

    def _again_later(self, peer: _Peer) -> None:
        if not peer.queued and not peer.closed:
            peer.queued = True
            self._again.append(peer)

    def _process(self, peer: _Peer) -> None:
        """Handle complete frames while ``peer`` may start more work and a slot is free
        for it (else it waits its turn); then read it only if it may go on."""
        handled = 0
        while peer.buffer and self._may_take_work(peer):
            if handled == FRAMES_PER_TURN:
                self._again_later(peer)
                break
            if not self._has_slot(peer):
                if self._holds_request(peer):
                    self._waiting[peer] = None
                break
            payload = self._next_frame(peer)
            if payload is None:
                break
            handled += 1
            if peer in self._order:
                self._order.move_to_end(peer)
            try:
                self._handle(peer, payload)
            except Exception:
                logger.exception("answering connection %d failed unexpectedly", peer.number)
                self._refuse(peer, ErrorCode.INTERNAL_ERROR, "the agent failed to answer")
        self._release(peer)
        if peer.closed:
            return
        room = len(peer.buffer) <= self._buffer_bound
        self._want_reading(peer, room and not peer.eof and self._may_take_work(peer))
        self._finish_if_done(peer)

    def _may_take_work(self, peer: _Peer) -> bool:
        """Whether ``peer`` itself may start more work (the total is :meth:`_has_slot`'s)."""
        if peer.closed or peer.peer is None or peer.write_paused_at is not None:
            return False
        return not self._closing and peer.inflight < self.limits.max_inflight_per_connection

    def _has_slot(self, peer: _Peer) -> bool:
        """Whether a decision slot is free for ``peer``: one handed to it, or one nobody
        waits for. Connections waiting are served first, in arrival order."""
        granted = peer in self._granted
        held = len(self._granted) - granted
        if self._inflight + held >= self.limits.max_inflight_total:
            return False
        return granted or not self._waiting

    def _holds_request(self, peer: _Peer) -> bool:
        """Whether ``peer``'s buffer holds a whole frame, or a header to refuse."""
        buffer = peer.buffer
        if len(buffer) < HEADER_BYTES:
            return False
        length = int.from_bytes(buffer[:HEADER_BYTES], "big")
        return not 0 < length <= self.limits.max_frame_bytes or len(buffer) >= HEADER_BYTES + length

    def _grant(self) -> None:
        """Hand each slot free and not held to the connection waiting longest."""
        total = self.limits.max_inflight_total
        while self._waiting and self._inflight + len(self._granted) < total:
            waiting, _ = self._waiting.popitem(last=False)
            self._granted.add(waiting)
            self._again_later(waiting)

    def _release(self, peer: _Peer) -> None:
        """``peer``'s turn is over: a slot handed to it and not taken goes to the next."""
        if peer in self._granted:
            self._granted.discard(peer)
            self._grant()

    def _next_frame(self, peer: _Peer) -> bytes | None:
        buffer = peer.buffer
        if len(buffer) < HEADER_BYTES:
            self._mark_partial(peer, bool(buffer))
            return None
        length = int.from_bytes(buffer[:HEADER_BYTES], "big")
        if not 0 < length <= self.limits.max_frame_bytes:
            try:
                frame_length(bytes(buffer[:HEADER_BYTES]), self.limits.max_frame_bytes)
            except ProtocolError as exc:
                self.counters.protocol_errors += 1
                self._refuse(peer, exc.code, str(exc))
                return None
        end = HEADER_BYTES + length
        if len(buffer) < end:
            self._mark_partial(peer, True)
            return None
        payload = bytes(buffer[HEADER_BYTES:end])
        del buffer[:end]
        peer.frame_started = None
        self._mark_partial(peer, bool(buffer))
        return payload

    def _mark_partial(self, peer: _Peer, partial: bool) -> None:
        if not partial:
            peer.frame_started = None
        elif peer.frame_started is None:
            peer.frame_started = self._now

    def _handle(self, peer: _Peer, payload: bytes) -> None:
        try:
            request = peer.requests.decode(payload)
        except ProtocolError as exc:
            self.counters.protocol_errors += 1
            self._write(peer, encode_error(exc.request_id, exc.code, str(exc)))
            return
        assert peer.peer is not None
        try:
            peer.peer.check()
        except IdentityError as exc:
            self.counters.identity_failures += 1
            logger.warning("connection %d refused: %s", peer.number, exc)
            self._write(peer, encode_error(request.id, ErrorCode.IDENTITY_UNVERIFIED, str(exc)))
            self._close(peer)
            return
        identity = peer.peer.identity
        if request.op == Op.IDENTIFY:
            self._write(peer, encode_identity(request.id, identity.as_result()))
            return
        asked = peer.asked
        if (
            asked is None
            or asked.action != request.action
            or asked.resource != request.resource
            or asked.context != request.context
        ):
            asked = peer.asked = Request(
                subject=identity.subject,
                action=request.action,
                resource=request.resource,
                context=request.context,
                selectors=identity.selectors,
            )
        if request.parent is not None or request.want_receipt:
            self._decide_cited(peer, request, asked)
            return
        try:
            decision = self._decider.judge(asked, int(time.time()))
        except Exception as exc:
            logger.error("deciding request %d failed unexpectedly: %r", request.id, exc)
            self._write(
                peer,
                encode_error(request.id, ErrorCode.INTERNAL_ERROR, "the agent failed to decide"),
            )
            return
        peer.inflight += 1
        self._inflight += 1
        self._judged.append((peer, request.id, decision))

    def _decide_cited(self, peer: _Peer, request: WireRequest, asked: Request) -> None:
        """A request citing a parent or asking for its receipt: decided, recorded and
        proven in the pool (it verifies and may sign), answered through a wake-up."""
        peer.inflight += 1
        self._inflight += 1
        deciding = self._pool.submit(
            self._decider.decide_cited,
            asked,
            int(time.time()),
            request.parent,
            request.want_receipt,
        )
        handing = functools.partial(self._hand_back, self._cited, peer, request.id)
        deciding.add_done_callback(handing)

    def _cited(
        self, peer: _Peer, request_id: int, deciding: Future[tuple[Decision, bytes | None]]
    ) -> None:
        self._finished(peer)
        error = deciding.exception()
        if error is not None:
            logger.error("deciding request %d failed unexpectedly: %r", request_id, error)
            self._write(
                peer,
                encode_error(request_id, ErrorCode.INTERNAL_ERROR, "the agent failed to decide"),
            )
            return
        self.counters.decisions += 1
        self._write(peer, self._answer(peer, request_id, result_of, *deciding.result()))

    def _recorded(self, batch: _Batch, decisions: list[Decision] | None) -> None:
        """Answer every decision of one commit (``None``: the commit failed unexpectedly)."""
        if decisions is None:
            for peer, request_id, _ in batch:
                self._finished(peer)
                failed = encode_error(
                    request_id, ErrorCode.INTERNAL_ERROR, "the agent failed to decide"
                )
                self._write(peer, failed)
            return
        self.counters.decisions += len(batch)
        for (peer, request_id, _), decision in zip(batch, decisions, strict=True):
            self._finished(peer)
            if not peer.closed:
                self._write(peer, self._answer(peer, request_id, self._result, peer, decision))

    def _result(self, peer: _Peer, decision: Decision) -> DecisionResult:
        answered = peer.answered
        if answered is None or answered[0] is not decision:
            answered = peer.answered = (decision, result_of(decision))
        return answered[1]

    def _answer(
        self,
        peer: _Peer,
        request_id: int,
        result: Callable[..., DecisionResult],
        *args: object,
    ) -> bytes:
        """The encoded answer to one decision, its fields ``result(*args)``; should that
        fail (a bug), ``internal_error`` (a deny) to that request alone."""
        try:
            return peer.answers.encode(request_id, result(*args))
        except Exception:
            logger.exception(
                "answering request %d on connection %d failed unexpectedly",
                request_id,
                peer.number,
            )
            return encode_error(request_id, ErrorCode.INTERNAL_ERROR, "the agent failed to answer")

    def _finished(self, peer: _Peer) -> None:
        """One decision of ``peer`` is answered (or will never be): the bounds it held are
        free; connections waiting for them get a turn."""
        peer.inflight -= 1
        self._inflight -= 1
        if not peer.reading or peer.buffer or peer.eof:
            self._again_later(peer)
        self._grant()

    # writing and closing

    def _write(self, peer: _Peer, data: bytes) -> None:
        if not peer.closed:
            peer.out += data
            self._dirty.add(peer)

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for peer in dirty:
            self._guarded(peer, self._flush, peer)

    def _flush(self, peer: _Peer) -> None:
        if self._peers.get(peer.fd) is not peer:
            return
        if peer.out:
            try:
                sent = peer.sock.send(peer.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._abort(peer)
                return
            del peer.out[:sent]
        peer.blocked = bool(peer.out)
        if not peer.out and peer.flush_then_close:
            self._drop(peer)
            return
        if len(peer.out) > HIGH_WATER_BYTES:
            if peer.write_paused_at is None:
                peer.write_paused_at = self._now
        elif peer.write_paused_at is not None and len(peer.out) <= LOW_WATER_BYTES:
            peer.write_paused_at = None
            self._again_later(peer)
        self._want_reading(peer, peer.reading and peer.write_paused_at is None)

    def _want_reading(self, peer: _Peer, reading: bool) -> None:
        if reading and not peer.reading and peer.frame_started is not None:
            # The client could not send while we were not reading: its frame's deadline
            # starts again now.
            peer.frame_started = self._now
        peer.reading = reading
        mask = (_IN if reading else 0) | (_OUT if peer.blocked else 0)
        if mask != peer.mask and self._peers.get(peer.fd) is peer:
            self._epoll.modify(peer.fd, mask)
            peer.mask = mask

    def _refuse(self, peer: _Peer, code: ErrorCodeValue, message: str) -> None:
        """Answer ``code`` without a request id and close (connection-level errors)."""
        self._write(peer, encode_error(None, code, message))
        self._close(peer)

    def _close(self, peer: _Peer) -> None:
        """Take nothing more from ``peer``; close once the answers written are sent."""
        peer.closed = True
        peer.flush_then_close = True
        self._forget(peer)
        self._want_reading(peer, False)
        self._dirty.add(peer)

    def _abort(self, peer: _Peer) -> None:
        """Close now, dropping unsent answers."""
        peer.closed = True
        self._forget(peer)
        self._drop(peer)

    def _forget(self, peer: _Peer) -> None:
        self._order.pop(peer, None)
        self._waiting.pop(peer, None)
        self._release(peer)

    def _drop(self, peer: _Peer) -> None:
        if self._peers.get(peer.fd) is not peer:
            return
        del self._peers[peer.fd]
        peer.closed = True
        self._forget(peer)
        self._epoll.unregister(peer.fd)
        if not peer.attesting:
            peer.sock.close()
        if peer.peer is not None:
            peer.peer.close()

    def _finish_if_done(self, peer: _Peer) -> None:
        """After the client's EOF (or at shutdown): close once every answer is written and
        no complete request is left to handle."""
        if not peer.eof or peer.closed or peer.inflight or peer.peer is None:
            return
        if self._closing or not _holds_complete_frame(peer.buffer):
            self._close(peer)

    # accepting

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting until the next sweep, not spin.
                    logger.error("cannot accept a connection: %s", exc)
                    self._epoll.modify(self._listener.fileno(), 0)
                    self._listening = False
                return
            sock.setblocking(False)
            self.counters.accepted += 1
            peer = _Peer(sock, self.counters.accepted, self._now)
            self._peers[peer.fd] = peer
            self._epoll.register(peer.fd, 0)
            if self._admit(peer):
                peer.attesting = True
                attesting = self._pool.submit(attest, sock, self._cache)
                handing = functools.partial(self._hand_back, self._attested, peer)
                attesting.add_done_callback(handing)

    def _admit(self, peer: _Peer) -> bool:
        if self._closing:
            self._refuse(peer, ErrorCode.SHUTTING_DOWN, "the agent is shutting down")
            return False
        if len(self._order) >= self.limits.max_connections and not self._evict_idle():
            self.counters.refused_busy += 1
            self._refuse(
                peer,
                ErrorCode.BUSY,
                f"the agent is serving its limit of {self.limits.max_connections} connections, "
                "all busy; try again",
            )
            return False
        self._order[peer] = None
        return True

    def _evict_idle(self) -> bool:
        for peer in self._order:
            if peer.idle:
                logger.info("connection limit reached: evicting idle connection %d", peer.number)
                self.counters.evicted += 1
                self._abort(peer)
                return True
        return False

    def _attested(self, peer: _Peer, attesting: Future[PeerProcess]) -> None:
        peer.attesting = False
        error = attesting.exception()
        if peer.closed:
            if error is None:
                attesting.result().close()
            if self._peers.get(peer.fd) is not peer:
                peer.sock.close()  # dropped while identified (see _drop)
            return
        if error is None:
            process = attesting.result()
            peer.peer = process
            identity = process.identity
            logger.debug(
                "connection %d: pid %d uid %d %s",
                peer.number,
                identity.pid,
                identity.uid,
                identity.exe,
            )
            self._process(peer)
            return
        if isinstance(error, IdentityError):
            self.counters.identity_failures += 1
            logger.warning("caller refused: %s", error)
            self._refuse(peer, ErrorCode.IDENTITY_UNVERIFIED, str(error))
            return
        logger.error("attesting connection %d failed unexpectedly: %r", peer.number, error)
        self._refuse(peer, ErrorCode.INTERNAL_ERROR, "the agent failed to identify the caller")

    # wake-ups, time limits, shutdown

    def _call_soon(self, work: Callable[[], None]) -> None:
        """Have the responder run ``work`` (from any thread)."""
        self._later.append(work)
        os.eventfd_write(self._wake_fd, 1)

    def _hand_back(self, work: Callable[..., None], peer: _Peer, *args: object) -> None:
        """A pool future's done callback: have the responder run ``work(peer, *args,
        future)``, guarded as any work for ``peer``."""
        self._call_soon(functools.partial(self._guarded, peer, work, peer, *args))

    def _run_later(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake_fd)
        for _ in range(len(self._later)):
            work = self._later.popleft()
            try:
                work()
            except Exception:
                logger.exception("work handed to the decision socket's responder failed")

    def _sweep(self) -> None:
        self._next_sweep = self._now + self._sweep_period
        if not self._listening and not self._closing:
            self._epoll.modify(self._listener.fileno(), _IN)
            self._listening = True
        for peer in list(self._order):
            why = expired(peer, self._now, self.limits)
            if why is not None:
                self.counters.timeouts += 1
                logger.info("closing connection %d: %s", peer.number, why)
                self._abort(peer)

    def _begin_closing(self) -> None:
        """No new connections, no new requests; connections with nothing in flight close."""
        self._closing = True
        if self._listening:
            self._epoll.modify(self._listener.fileno(), 0)
            self._listening = False
        for peer in list(self._order):
            peer.eof = True
            self._want_reading(peer, False)
            self._finish_if_done(peer)
        self._flush_dirty()

    def _close_all(self) -> None:
        """The last step: send what can be sent without waiting, and close every socket."""
        for peer in list(self._peers.values()):
            if not peer.inflight:
                self._flush(peer)
            self._drop(peer)

    # the committer thread

    def _commit(self) -> None:
        """The committer thread (:meth:`_commit_batches`). Should it fail, the responder
        stops serving: the decisions it held would never be answered."""
        try:
            self._commit_batches()
        except Exception:
            logger.exception("the decision socket's committer failed; stopping the server")
            self._committer_failed = True
            with self._wake_lock:
                if not self._wake_closed:
                    self._call_soon(_nothing)

    def _commit_batches(self) -> None:
        """Record every batch handed over since the last commit with one call; have the
        responder answer them. Ends at the ``None`` the responder puts last."""
        ending = False
        while not ending:
            batch = self._batches.get()
            if batch is None:
                return
            while True:
                try:
                    more = self._batches.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    ending = True
                    break
                batch += more
            decisions: list[Decision] | None
            try:
                decisions = self._decider.record([decision for _, _, decision in batch])
            except Exception:
                logger.exception("recording %d decisions failed unexpectedly", len(batch))
                decisions = None
            self._call_soon(functools.partial(self._recorded, batch, decisions))


def _holds_complete_frame(buffer: bytearray) -> bool:
    if len(buffer) < HEADER_BYTES:
        return False
    return len(buffer) >= HEADER_BYTES + int.from_bytes(buffer[:HEADER_BYTES], "big")


def _nothing() -> None:
    """A wake-up with no work: the responder looks at its stop flag."""

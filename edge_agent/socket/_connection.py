"""One client connection of the decision server, as an asyncio protocol (no task per request).

Life of a connection: accepted (reading paused) -> attested in the decision pool -> frames
parsed from its buffer as they complete -> each ``decide`` submitted to the decision pool,
its answer written when the future completes -> closed (by the client, a limit, the sweeper
or shutdown). Everything is bounded: reading is paused whenever the connection may not
start another decision (its in-flight bound, the server's total bound, or a client not
reading its answers) or holds more than one largest frame unparsed, so its buffer never
holds more than one socket read past that; at most :data:`FRAMES_PER_TURN` frames are
handled before the loop is yielded to the other connections.

Callbacks never raise: a failure becomes an error answer or a closed connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from edge_agent.protocol.request import Request
from edge_agent.socket.config import SocketLimits
from edge_agent.socket.deciders import Decider
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

__all__ = [
    "FRAMES_PER_TURN",
    "Connection",
    "ConnectionOwner",
    "Counters",
    "Timed",
    "expired",
    "result_of",
]

logger = logging.getLogger(__name__)

FRAMES_PER_TURN = 16
"""Frames one connection handles before yielding the event loop to the others."""


@dataclass(slots=True)
class Counters:
    """The server's running counts; connections add to them as events happen."""

    accepted: int = 0
    evicted: int = 0
    refused_busy: int = 0
    identity_failures: int = 0
    protocol_errors: int = 0
    timeouts: int = 0
    decisions: int = 0


class ConnectionOwner(Protocol):
    """What a connection uses of the server that owns it
    (:class:`~edge_agent.socket.server.DecisionServer`): its limits, pool, deciders and
    counters, and the calls that admit, schedule and forget connections. Named here so this
    module does not import the server, which imports it."""

    @property
    def limits(self) -> SocketLimits: ...
    @property
    def pool(self) -> ThreadPoolExecutor: ...
    @property
    def cache(self) -> ExeHashCache: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def closing(self) -> bool: ...
    @property
    def sync_decider(self) -> Decider | None: ...

    def admit(self, connection: Connection) -> bool: ...
    def forget(self, connection: Connection) -> None: ...
    def touch(self, connection: Connection) -> None: ...
    def may_start(self, connection: Connection) -> bool: ...
    def started(self, connection: Connection) -> None: ...
    def finished(self, connection: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One accepted connection; the server tracks it and the sweeper enforces its timeouts."""

    def __init__(self, server: ConnectionOwner, number: int) -> None:
        self.server = server
        self.number = number
        self.transport: asyncio.Transport | None = None
        self.peer: PeerProcess | None = None
        self.buffer = bytearray()
        self.inflight: set[asyncio.Future[Decision]] = set()
        self.last_activity = time.monotonic()
        self.frame_started: float | None = None
        self.write_paused_at: float | None = None
        self.closed = False
        self._eof = False
        self._reading = True
        self._scheduled = False
        self._buffer_bound = HEADER_BYTES + server.limits.max_frame_bytes
        """Unparsed bytes held before reading pauses: one largest frame."""
        self._requests = RequestDecoder()
        self._answers = DecisionAnswers()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._pause_reading()
        if not self.server.admit(self):
            return
        sock = transport.get_extra_info("socket")
        attesting = asyncio.get_running_loop().run_in_executor(
            self.server.pool, attest, sock, self.server.cache
        )
        attesting.add_done_callback(self._attested)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.last_activity = time.monotonic()
        if len(self.buffer) > self._buffer_bound:
            self._pause_reading()
        self._process()

    def eof_received(self) -> bool:
        # Keep the transport open: requests already received still get their answers.
        self._eof = True
        self._finish_if_done()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.forget(self)
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        self.write_paused_at = time.monotonic()
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused_at = None
        self._schedule()

    # the server's view

    @property
    def reading(self) -> bool:
        """Whether the server is reading this connection (not paused by a limit)."""
        return self._reading

    @property
    def idle(self) -> bool:
        """Attested with nothing in flight: what may be evicted at the connection limit."""
        return self.peer is not None and not self.inflight

    def refuse(self, code: ErrorCodeValue, message: str) -> None:
        """Answer ``code`` without a request id and close (connection-level errors)."""
        self.write(encode_error(None, code, message))
        self.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Close after the answers already written are flushed."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close now, dropping unsent answers (limits, eviction, a peer that does not read)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def stop_reading(self) -> None:
        """Shutdown: take no further requests from this connection."""
        self._eof = True
        self._pause_reading()
        self._finish_if_done()

    def resume(self) -> None:
        """A reason to stop (in-flight bound, total bound) may be gone: look again."""
        self._schedule()

    # internals

    def _attested(self, attesting: asyncio.Future[PeerProcess]) -> None:
        if attesting.cancelled():
            self.abort()
            return
        error = attesting.exception()
        if error is None:
            if self.closed:
                attesting.result().close()
                return
            self.peer = attesting.result()
            identity = self.peer.identity
            logger.debug(
                "connection %d: pid %d uid %d %s",
                self.number,
                identity.pid,
                identity.uid,
                identity.exe,
            )
            self._schedule()
            return
        if isinstance(error, IdentityError):
            self.server.counters.identity_failures += 1
            logger.warning("caller refused: %s", error)
            self.refuse(ErrorCode.IDENTITY_UNVERIFIED, str(error))
            return
        logger.error("attesting connection %d failed unexpectedly: %r", self.number, error)
        self.refuse(ErrorCode.INTERNAL_ERROR, "the agent failed to identify the caller")

    def _schedule(self) -> None:
        if not self._scheduled and not self.closed:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        self._scheduled = False
        self._process()

    def _process(self) -> None:
        """Handle complete frames while this connection may start more work."""
        handled = 0
        while self._may_take_work():
            if handled == FRAMES_PER_TURN:
                self._schedule()
                break
            payload = self._next_frame()
            if payload is None:
                break
            handled += 1
            self.server.touch(self)
            self._handle(payload)
        if self.closed:
            return
        room = len(self.buffer) <= self._buffer_bound
        if room and not self._eof and self._may_take_work():
            self._resume_reading()
        else:
            self._pause_reading()
        self._finish_if_done()

    def _may_take_work(self) -> bool:
        if self.closed or self.peer is None or self.write_paused_at is not None:
            return False
        if self.server.closing:
            return False
        if len(self.inflight) >= self.server.limits.max_inflight_per_connection:
            return False
        return self.server.may_start(self)

    def _next_frame(self) -> bytes | None:
        buffer = self.buffer
        if len(buffer) < HEADER_BYTES:
            self._mark_partial(bool(buffer))
            return None
        try:
            length = frame_length(bytes(buffer[:HEADER_BYTES]), self.server.limits.max_frame_bytes)
        except ProtocolError as exc:
            self.server.counters.protocol_errors += 1
            self.refuse(exc.code, str(exc))
            return None
        end = HEADER_BYTES + length
        if len(buffer) < end:
            self._mark_partial(True)
            return None
        payload = bytes(buffer[HEADER_BYTES:end])
        del buffer[:end]
        self.frame_started = None
        self._mark_partial(bool(buffer))
        return payload

    def _mark_partial(self, partial: bool) -> None:
        if not partial:
            self.frame_started = None
        elif self.frame_started is None:
            self.frame_started = time.monotonic()

    def _handle(self, payload: bytes) -> None:
        try:
            request = self._requests.decode(payload)
        except ProtocolError as exc:
            self.server.counters.protocol_errors += 1
            self.write(encode_error(exc.request_id, exc.code, str(exc)))
            return
        if not self._still_the_same_process(request.id):
            return
        assert self.peer is not None
        if request.op == Op.IDENTIFY:
            self.write(encode_identity(request.id, self.peer.identity.as_result()))
            return
        self._decide(request)

    def _still_the_same_process(self, request_id: int) -> bool:
        assert self.peer is not None
        try:
            self.peer.check()
        except IdentityError as exc:
            self.server.counters.identity_failures += 1
            logger.warning("connection %d refused: %s", self.number, exc)
            self.write(encode_error(request_id, ErrorCode.IDENTITY_UNVERIFIED, str(exc)))
            self.close()
            return False
        return True

    def _decide(self, request: WireRequest) -> None:
        assert self.peer is not None
        identity = self.peer.identity
        asked = Request(
            subject=identity.subject,
            action=request.action,
            resource=request.resource,
            context=request.context,
            selectors=identity.selectors,
        )
        if request.parent is not None or request.want_receipt:
            # Only a BatchDecider (the agent, served by the responder) verifies parents
            # and makes receipts (docs/socket.md).
            self.write(
                encode_error(
                    request.id,
                    ErrorCode.BAD_REQUEST,
                    "this decider cannot verify parents or make receipts",
                )
            )
            return
        decider = self.server.sync_decider
        assert decider is not None
        deciding = asyncio.get_running_loop().run_in_executor(
            self.server.pool, decider.decide, asked, int(time.time())
        )
        self.inflight.add(deciding)
        self.server.started(self)
        deciding.add_done_callback(functools.partial(self._decided, request.id))

    def _decided(self, request_id: int, deciding: asyncio.Future[Decision]) -> None:
        self.inflight.discard(deciding)
        self.server.finished(self)
        if deciding.cancelled():
            return
        error = deciding.exception()
        if error is not None:
            logger.error("deciding request %d failed unexpectedly: %r", request_id, error)
            self.write(
                encode_error(request_id, ErrorCode.INTERNAL_ERROR, "the agent failed to decide")
            )
        else:
            self.server.counters.decisions += 1
            self.write(self._answers.encode(request_id, result_of(deciding.result())))
        self._schedule()

    def _finish_if_done(self) -> None:
        """After the client's EOF (or at shutdown): close once every answer is written and
        no complete request is left to handle."""
        if not self._eof or self.closed or self.inflight or self.peer is None:
            return
        if self.server.closing or not self._holds_complete_frame():
            self.close()

    def _holds_complete_frame(self) -> bool:
        if len(self.buffer) < HEADER_BYTES:
            return False
        return len(self.buffer) >= HEADER_BYTES + int.from_bytes(self.buffer[:HEADER_BYTES], "big")

    def _pause_reading(self) -> None:
        if self._reading and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self._reading = True
            if self.frame_started is not None:
                # The client could not send while we were not reading: its frame's
                # deadline starts again now.
                self.frame_started = time.monotonic()


def result_of(decision: Decision, receipt: bytes | None = None) -> DecisionResult:
    """The answer's fields for ``decision`` (and its ``receipt``)."""
    request = decision.request
    return DecisionResult(
        allowed=decision.allowed,
        reason=str(decision.reason),
        message=decision.message,
        rule=decision.rule_id,
        bundle_version=decision.bundle_version,
        bundle_digest=decision.bundle_digest,
        time=decision.time,
        subject=request.subject,
        selectors=request.selectors,
        receipt=receipt,
    )


class Timed(Protocol):
    """What the time limits look at on a connection (either server path's)."""

    @property
    def write_paused_at(self) -> float | None: ...
    @property
    def reading(self) -> bool: ...
    @property
    def frame_started(self) -> float | None: ...
    @property
    def idle(self) -> bool: ...
    @property
    def buffer(self) -> bytearray: ...
    @property
    def last_activity(self) -> float: ...


def expired(connection: Timed, now: float, limits: SocketLimits) -> str | None:
    """Why ``connection`` is past a time limit at ``now`` (unread answers, a stalled frame,
    idle), or ``None``."""
    if connection.write_paused_at is not None:
        if now - connection.write_paused_at > limits.write_timeout_s:
            return "it does not read its answers"
        return None
    if (
        connection.reading
        and connection.frame_started is not None
        and now - connection.frame_started > limits.frame_timeout_s
    ):
        return "a request frame stalled"
    if (
        connection.idle
        and not connection.buffer
        and now - connection.last_activity > limits.idle_timeout_s
    ):
        return "idle"
    return None

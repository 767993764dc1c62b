"""The decision server: an asyncio Unix-socket server, embeddable in the agent's event loop.

Each connection is attested once from the kernel (:mod:`edge_agent.socket.peer`), then every
request on it is re-checked against that identity, turned into a
:class:`~edge_agent.policy.engine.Request` whose subject and selectors come from the kernel
alone, and decided by the decider (the agent: gate, then durable lineage). A
:class:`BatchDecider` (the agent) is served off the event loop by
:mod:`edge_agent.socket.responder`: one ``epoll`` thread for every connection and one
thread committing each wake-up's decisions in one call. A :class:`Decider` (an embedding
program's own) is called in a bounded thread pool, its connections protocol objects on the
event loop (:mod:`edge_agent.socket._connection`), not a task per request. Either way,
concurrent decisions share one lineage commit (group commit).

Invariants:
- No answer but an allow from the decider is an allow: every failure (identity, protocol,
  decider error, shutdown) is an error answer or a closed connection, which clients treat as
  a deny.
- Everything is bounded (:class:`~edge_agent.socket.config.SocketLimits`): frame size
  (checked before the body is read), connections (at the limit the longest-idle one is
  evicted, or the newcomer refused ``busy``), decisions in flight per connection and in
  total (reading pauses, the client waits), and time (idle, partial frame, unread answers:
  enforced by one sweeper task).
- The server owns its task (one :class:`asyncio.TaskGroup`) and its thread pool. Leaving the
  ``async with`` block stops accepting, lets decisions in flight answer for
  ``shutdown_grace_s``, closes every connection and waits for every decision already started
  to finish (be durable) before returning, so the caller may close the lineage next.
- A server that stops serving on its own (a thread of the responder failed: a bug) says so:
  :meth:`DecisionServer.watch` raises, so that the program stops and its service manager
  restarts it, rather than keep a socket that answers nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import resource
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from edge_agent.socket._connection import Connection, Counters, expired
from edge_agent.socket.config import SocketConfig, SocketLimits
from edge_agent.socket.deciders import BatchDecider, Decider
from edge_agent.socket.errors import ErrorCode, SocketError
from edge_agent.socket.listen import ListeningSocket
from edge_agent.socket.peer import ExeHashCache
from edge_agent.socket.responder import Responder

__all__ = [
    "BatchDecider",
    "Decider",
    "DecisionServer",
    "ServerStats",
    "ensure_fd_headroom",
]

logger = logging.getLogger(__name__)

_FD_RESERVE = 256
"""Descriptors kept for everything else the agent opens (database, logs, MQTT)."""

_SWEEP_MIN_S, _SWEEP_MAX_S = 0.05, 1.0
"""Bounds of the sweeper's period (a quarter of the shortest timeout), in seconds."""


@dataclass(frozen=True, slots=True)
class ServerStats:
    """Counters since the server started (for status pages, logs and tests)."""

    open_connections: int
    accepted: int
    evicted: int
    refused_busy: int
    identity_failures: int
    protocol_errors: int
    timeouts: int
    decisions: int


class DecisionServer:
    """Serves decisions on a Unix socket while its ``async with`` block runs.

    Usage::

        async with DecisionServer(agent, SocketConfig(path=Path("/run/edge-agent/agent.sock"))):
            await stop.wait()
    """

    def __init__(self, decider: Decider | BatchDecider, config: SocketConfig | None = None) -> None:
        self.config = config or SocketConfig()
        self.batch_decider = decider if isinstance(decider, BatchDecider) else None
        self.sync_decider = None if isinstance(decider, BatchDecider) else decider
        self.limits: SocketLimits = self.config.limits
        self.cache = ExeHashCache()
        self.counters = Counters()
        self.closing = False
        self.pool = ThreadPoolExecutor(self.limits.decision_threads, "edge-agent-decide")
        self._connections: OrderedDict[Connection, None] = OrderedDict()
        self._waiting: OrderedDict[Connection, None] = OrderedDict()
        self._inflight = 0
        self._listener: ListeningSocket | None = None
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._responder: Responder | None = None
        self._failed: asyncio.Future[None] | None = None
        self._stack = AsyncExitStack()

    @property
    def path(self) -> Path:
        return self.config.path

    def stats(self) -> ServerStats:
        c = self.counters
        responder = self._responder
        return ServerStats(
            len(self._connections) if responder is None else responder.open_connections,
            c.accepted,
            c.evicted,
            c.refused_busy,
            c.identity_failures,
            c.protocol_errors,
            c.timeouts,
            c.decisions,
        )

    async def __aenter__(self) -> DecisionServer:
        """Bind the socket and start accepting.

        Raises:
            ConfigError: the socket cannot be created (path taken, too long, bad group).
        """
        try:
            self._listener = ListeningSocket(
                self.config.path,
                mode=self.config.mode,
                group=self.config.group,
                backlog=self.limits.backlog,
            )
            if self.batch_decider is not None:
                loop = asyncio.get_running_loop()
                failed = self._failed = loop.create_future()
                self._responder = Responder(
                    self.batch_decider,
                    self._listener.sock,
                    self.limits,
                    self.counters,
                    self.cache,
                    functools.partial(_set_soon, loop, failed),
                )
                self._responder.start()
                logger.info("decision socket serving on %s", self.config.path)
                return self
            tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
            loop = asyncio.get_running_loop()
            self._server = await loop.create_unix_server(
                self._new_connection, sock=self._listener.sock
            )
            self._sweeper = tasks.create_task(self._sweep(), name="edge-agent-socket-sweeper")
        except BaseException:
            await self._stack.aclose()
            self.pool.shutdown(wait=False)
            if self._listener is not None:
                self._listener.close()
            raise
        logger.info("decision socket serving on %s", self.config.path)
        return self

    async def watch(self) -> None:
        """Wait as long as the server serves: forever, unless it stops on its own.

        Raises:
            SocketError: the server stopped serving (its responder or committer thread
                failed, as logged): the program should exit non-zero to be restarted.
        """
        if self._failed is None:
            await asyncio.get_running_loop().create_future()
        else:
            await asyncio.shield(self._failed)
        raise SocketError(
            f"the decision socket on {self.config.path} stopped answering (a thread of the "
            "server failed, see the log above); stopping the agent so that it is restarted"
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._listener is not None
        self.closing = True
        if self._responder is not None:
            self._responder.stop()
            try:
                joined = asyncio.get_running_loop().run_in_executor(None, self._responder.join)
                await asyncio.shield(joined)
            finally:
                self._listener.close()
                logger.info("decision socket on %s closed", self.config.path)
            return
        assert self._server is not None
        self._server.close()
        try:
            await self._drain()
        finally:
            if self._sweeper is not None:
                self._sweeper.cancel()
            try:
                await self._stack.__aexit__(exc_type, exc, tb)
            finally:
                loop = asyncio.get_running_loop()
                await asyncio.shield(loop.run_in_executor(None, self.pool.shutdown))
                self._listener.close()
                logger.info("decision socket on %s closed", self.config.path)

    async def _drain(self) -> None:
        """Shutdown: no new requests; answers in flight get the grace period; then close."""
        connections = list(self._connections)
        for connection in connections:
            connection.stop_reading()
        inflight = [future for c in connections for future in c.inflight]
        if inflight:
            _, late = await asyncio.wait(inflight, timeout=self.limits.shutdown_grace_s)
            for future in late:
                future.cancel()
            # Cancelling a thread's future does not stop the thread: the pool shutdown
            # below waits for it. A cancelled decision may still have been logged.
            await asyncio.gather(*late, return_exceptions=True)
        for connection in connections:
            transport = connection.transport
            if connection.inflight or (transport is not None and transport.get_write_buffer_size()):
                connection.abort()
            else:
                connection.close()

    # the connections' view of the server

    def _new_connection(self) -> Connection:
        self.counters.accepted += 1
        return Connection(self, self.counters.accepted)

    def admit(self, connection: Connection) -> bool:
        """Register a new connection, or refuse it (shutting down, or at the limit with no
        idle connection to evict)."""
        if self.closing:
            connection.refuse(ErrorCode.SHUTTING_DOWN, "the agent is shutting down")
            return False
        if len(self._connections) >= self.limits.max_connections and not self._evict_idle():
            self.counters.refused_busy += 1
            connection.refuse(
                ErrorCode.BUSY,
                f"the agent is serving its limit of {self.limits.max_connections} connections, "
                "all busy; try again",
            )
            return False
        self._connections[connection] = None
        return True

    def _evict_idle(self) -> bool:
        for connection in self._connections:
            if connection.idle:
                logger.info(
                    "connection limit reached: evicting idle connection %d", connection.number
                )
                self.counters.evicted += 1
                self.forget(connection)
                connection.abort()
                return True
        return False

    def forget(self, connection: Connection) -> None:
        self._connections.pop(connection, None)
        self._waiting.pop(connection, None)

    def touch(self, connection: Connection) -> None:
        """``connection`` just sent a request: it is now the most recently active."""
        if connection in self._connections:
            self._connections.move_to_end(connection)

    def may_start(self, connection: Connection) -> bool:
        """Whether a decision may start now; if not, ``connection`` waits its turn."""
        if self._inflight < self.limits.max_inflight_total:
            return True
        self._waiting[connection] = None
        return False

    def started(self, connection: Connection) -> None:
        self._inflight += 1

    def finished(self, connection: Connection) -> None:
        self._inflight -= 1
        if self._waiting:
            waiting, _ = self._waiting.popitem(last=False)
            waiting.resume()

    async def _sweep(self) -> None:
        """Enforce the time limits: idle connections, stalled frames, unread answers."""
        limits = self.limits
        shortest = min(limits.idle_timeout_s, limits.frame_timeout_s, limits.write_timeout_s)
        period = min(_SWEEP_MAX_S, max(_SWEEP_MIN_S, shortest / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for connection in list(self._connections):
                why = expired(connection, now, limits)
                if why is not None:
                    self.counters.timeouts += 1
                    logger.info("closing connection %d: %s", connection.number, why)
                    self.forget(connection)
                    connection.abort()


def ensure_fd_headroom(limits: SocketLimits) -> int:
    """Raise this process's soft open-file limit towards what ``limits`` can use (two
    descriptors per connection: the socket and the peer's pidfd, plus a reserve); return it.

    Process-wide, so the embedding program calls it, not :class:`DecisionServer`.
    """
    wanted = 2 * limits.max_connections + _FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    if soft != resource.RLIM_INFINITY and soft < wanted:
        logger.warning(
            "open-file limit %d is below the %d that %d connections need; lower "
            "max_connections or raise LimitNOFILE",
            soft,
            wanted,
            limits.max_connections,
        )
    return soft


def _set_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    """From another thread: mark ``future`` done on ``loop`` (if that loop still runs)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_set, future)


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

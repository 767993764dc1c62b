"""The asyncio client of the decision socket (``edge_agent.client.AsyncClient``).

One connection, reused and shared by every coroutine of the client: requests are pipelined
and matched to answers by ``id``, so many concurrent ``decide`` calls need one socket (the
agent decides up to its per-connection limit at once and reads further requests as those
finish). A reader task per connection delivers the answers; it ends with the connection
and is cancelled by :meth:`AsyncClient.aclose`. A reused connection found closed before
an answer arrived is reopened once, as in the blocking client.

Fail closed: every failure raises a :class:`~edge_agent.socket.errors.SocketError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections.abc import Mapping
from types import TracebackType

from edge_agent.socket.blocking import DEFAULT_TIMEOUT_S, connect_failure, default_socket_path
from edge_agent.socket.errors import (
    AgentRequestError,
    AgentUnavailableError,
    ProtocolError,
    SocketError,
)
from edge_agent.socket.wire import (
    HEADER_BYTES,
    MAX_RESPONSE_BYTES,
    DecisionResult,
    IdentityResult,
    Op,
    WireRequest,
    decode_response,
    encode_request,
)

__all__ = ["AsyncClient"]

_Answer = DecisionResult | IdentityResult
_CONNECT_RETRY_S = 0.002


class _LinkLost(AgentUnavailableError):
    """The connection ended before this request's answer arrived."""


class _Link:
    """One open connection: its streams, the requests awaiting answers, its reader task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending: dict[int, asyncio.Future[_Answer]] = {}
        self.dead: SocketError | None = None
        self.used = False
        self.task = asyncio.create_task(self._read_answers(), name="edge-agent-client-reader")

    async def _read_answers(self) -> None:
        try:
            while True:
                header = await self.reader.readexactly(HEADER_BYTES)
                length = int.from_bytes(header, "big")
                if not 0 < length <= MAX_RESPONSE_BYTES:
                    raise ProtocolError(f"the agent sent a frame of {length} bytes")
                self._deliver(await self.reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._fail(_LinkLost(f"the agent closed the connection: {exc}"))
        except SocketError as exc:
            self._fail(exc)
        finally:
            self._fail(_LinkLost("the connection to the agent was closed"))
            self.writer.transport.abort()

    def _deliver(self, payload: bytes) -> None:
        try:
            answered, result = decode_response(payload)
        except AgentRequestError as exc:
            if exc.request_id is None:
                raise
            future = self.pending.pop(exc.request_id, None)
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        future = self.pending.pop(answered, None) if answered is not None else None
        if future is not None and not future.done():
            future.set_result(result)

    def _fail(self, error: SocketError) -> None:
        if self.dead is None:
            self.dead = error
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        self.pending.clear()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class AsyncClient:
    """A reusable asyncio connection to the agent's decision socket.

    Use as ``async with AsyncClient() as client:`` (or call :meth:`aclose`).
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.path = os.fspath(path) if path is not None else default_socket_path()
        self.timeout = timeout
        self._link: _Link | None = None
        self._connecting = asyncio.Lock()
        self._ids = itertools.count(1)

    async def decide(
        self,
        action: str,
        resource: str,
        context: Mapping[str, str] | None = None,
        *,
        parent: bytes | None = None,
        want_receipt: bool = False,
    ) -> DecisionResult:
        """Ask whether this process may do ``action`` on ``resource``; ``parent`` and
        ``want_receipt`` as :meth:`edge_agent.socket.blocking.Client.decide`.

        Raises:
            AgentUnavailableError: the agent cannot be reached or did not answer in time.
            AgentRequestError: the agent refused the request (``code`` says why).
            ProtocolError: the agent's answer is malformed.
            ValueError: a field is empty, too long or holds control characters.
        """
        pairs = tuple(sorted((context or {}).items()))
        request = WireRequest(
            next(self._ids), Op.DECIDE, action, resource, pairs, parent, want_receipt
        )
        result = await self._call(request)
        if not isinstance(result, DecisionResult):
            raise ProtocolError("the agent answered a decide request with another op")
        return result

    async def identify(self) -> IdentityResult:
        """Who the agent sees at this end of the socket.

        Raises:
            AgentUnavailableError, AgentRequestError, ProtocolError: as :meth:`decide`.
        """
        result = await self._call(WireRequest(next(self._ids), Op.IDENTIFY))
        if not isinstance(result, IdentityResult):
            raise ProtocolError("the agent answered an identify request with another op")
        return result

    async def aclose(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _call(self, request: WireRequest) -> _Answer:
        data = encode_request(request)
        try:
            async with asyncio.timeout(self.timeout):
                for attempt in (1, 2):
                    link = await self._current_link()
                    reused, link.used = link.used, True
                    future: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
                    link.pending[request.id] = future
                    try:
                        link.writer.write(data)
                        await link.writer.drain()
                        return await future
                    except (_LinkLost, ConnectionError) as exc:
                        if reused and attempt == 1:
                            continue
                        raise AgentUnavailableError(
                            f"lost the connection to the agent at {self.path}: {exc}"
                        ) from exc
                    finally:
                        link.pending.pop(request.id, None)
        except TimeoutError as exc:
            raise AgentUnavailableError(
                f"the agent at {self.path} did not answer within {self.timeout} s"
            ) from exc
        raise AssertionError("unreachable")

    async def _current_link(self) -> _Link:
        async with self._connecting:
            link = self._link
            if link is not None and link.dead is None:
                return link
            if link is not None:
                await link.close()
            try:
                sock = await _connect(self.path)
                reader, writer = await asyncio.open_unix_connection(
                    sock=sock, limit=MAX_RESPONSE_BYTES
                )
            except OSError as exc:
                self._link = None
                raise AgentUnavailableError(connect_failure(self.path, exc)) from exc
            self._link = _Link(reader, writer)
            return self._link


async def _connect(path: str) -> socket.socket:
    """A connected non-blocking Unix socket. A full accept queue refuses a non-blocking
    connect at once (EAGAIN; asyncio's ``sock_connect`` would then wrongly report success):
    wait and retry, within the caller's deadline."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    try:
        while True:
            try:
                sock.connect(path)
                return sock
            except BlockingIOError:
                await asyncio.sleep(_CONNECT_RETRY_S)
    except BaseException:
        sock.close()
        raise

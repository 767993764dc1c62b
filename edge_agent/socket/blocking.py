"""The blocking client of the decision socket (``edge_agent.client.Client`` and ``decide``).

One connection per :class:`Client`, opened on first use and reused; one request at a time
(a lock makes a client safe to share between threads). Every call has one deadline covering
connect, send and receive. A reused connection that the agent has meanwhile closed (idle
timeout, or evicted at its connection limit) is reopened once, transparently, when it fails
before any byte of the answer arrived.

Fail closed: every failure raises a :class:`~edge_agent.socket.errors.SocketError`; nothing
here ever turns a failure into an allow.

``edge-agent exec`` imports this module before every gated program starts, so it keeps to
the cheapest imports: no asyncio, and the low-level ``_socket`` and ``_thread`` modules
rather than ``socket`` and ``threading``, whose enums and selectors cost the gate several
milliseconds of start-up (the objects are the same: ``socket.socket`` subclasses
``_socket.socket``, and ``threading.Lock`` is ``_thread.allocate_lock``); :mod:`typing` and
:mod:`collections` are imported only by type checkers.
"""

from __future__ import annotations

import _socket
import _thread
import itertools
import os
import time

from edge_agent.socket.errors import AgentRequestError, AgentUnavailableError, ProtocolError
from edge_agent.socket.wire import (
    DEFAULT_SOCKET_PATH,
    HEADER_BYTES,
    MAX_RESPONSE_BYTES,
    SOCKET_PATH_ENV,
    DecisionResult,
    IdentityResult,
    Op,
    WireRequest,
    closes_connection,
    decode_response,
    encode_request,
)

TYPE_CHECKING = False
"""Not :data:`typing.TYPE_CHECKING`: see the module docstring."""
if TYPE_CHECKING:
    from collections.abc import Mapping  # at run time: collections, about 1.5 ms

__all__ = ["DEFAULT_TIMEOUT_S", "Client", "connect_failure", "decide", "default_socket_path"]

DEFAULT_TIMEOUT_S = 2.0
"""Default deadline of one call (connect, send, answer), in seconds."""


def default_socket_path() -> str:
    """``$EDGE_AGENT_SOCKET`` if set, else ``/run/edge-agent/agent.sock``."""
    return os.environ.get(SOCKET_PATH_ENV) or DEFAULT_SOCKET_PATH


_CONNECT_RETRY_S = 0.002
"""Pause before retrying a connect the agent's full accept queue refused, in seconds."""


class _LostBeforeAnswer(Exception):
    """The connection closed before any byte of the answer: safe to retry once."""


class Client:
    """A reusable, thread-safe, blocking connection to the agent's decision socket."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.path = os.fspath(path) if path is not None else default_socket_path()
        self.timeout = timeout
        self._sock: _socket.socket | None = None
        self._lock = _thread.allocate_lock()
        self._ids = itertools.count(1)

    def decide(
        self,
        action: str,
        resource: str,
        context: Mapping[str, str] | None = None,
        *,
        parent: bytes | None = None,
        want_receipt: bool = False,
    ) -> DecisionResult:
        """Ask whether this process may do ``action`` on ``resource``; ``parent`` cites the
        receipt of the decision that caused this one (policy may require it), and
        ``want_receipt`` asks for this decision's receipt (``result.receipt``; ``None`` when
        the agent could not make one), to hand to the next hop as its parent.

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
        result = self._call(request)
        if not isinstance(result, DecisionResult):
            raise ProtocolError("the agent answered a decide request with another op")
        return result

    def identify(self) -> IdentityResult:
        """Who the agent sees at this end of the socket (kernel credentials and selectors).

        Raises:
            AgentUnavailableError, AgentRequestError, ProtocolError: as :meth:`decide`.
        """
        result = self._call(WireRequest(next(self._ids), Op.IDENTIFY))
        if not isinstance(result, IdentityResult):
            raise ProtocolError("the agent answered an identify request with another op")
        return result

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, request: WireRequest) -> DecisionResult | IdentityResult:
        data = encode_request(request)
        deadline = time.monotonic() + self.timeout
        with self._lock:
            payload = self._exchange(data, deadline)
            try:
                answered, result = decode_response(payload)
            except AgentRequestError as exc:
                if exc.request_id is None or closes_connection(exc.code):
                    self._disconnect()
                raise
            except ProtocolError:
                self._disconnect()
                raise
            if answered != request.id:
                self._disconnect()
                raise ProtocolError(f"the agent answered request {answered}, not {request.id}")
            return result

    def _exchange(self, data: bytes, deadline: float) -> bytes:
        for attempt in (1, 2):
            reused = self._sock is not None
            sock = self._sock if self._sock is not None else self._connect(deadline)
            try:
                _send_all(sock, data, deadline)
                return _receive_frame(sock, deadline)
            except _LostBeforeAnswer as exc:
                self._disconnect()
                if reused and attempt == 1:
                    continue
                raise AgentUnavailableError(
                    f"the agent at {self.path} closed the connection without answering"
                ) from exc
            except TimeoutError as exc:
                self._disconnect()
                raise AgentUnavailableError(
                    f"the agent at {self.path} did not answer within {self.timeout} s"
                ) from exc
            except OSError as exc:
                self._disconnect()
                if (
                    reused
                    and attempt == 1
                    and isinstance(exc, BrokenPipeError | ConnectionResetError)
                ):
                    continue
                raise AgentUnavailableError(
                    f"lost the connection to the agent at {self.path}: {exc.strerror or exc}"
                ) from exc
            except (ProtocolError, AgentUnavailableError):
                self._disconnect()
                raise
        raise AssertionError("unreachable")

    def _connect(self, deadline: float) -> _socket.socket:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            _connect_before(sock, self.path, deadline)
        except TimeoutError as exc:
            sock.close()
            raise AgentUnavailableError(
                f"the agent at {self.path} did not accept the connection within {self.timeout} s"
            ) from exc
        except OSError as exc:
            sock.close()
            raise AgentUnavailableError(connect_failure(self.path, exc)) from exc
        self._sock = sock
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def connect_failure(path: str, exc: OSError) -> str:
    """One sentence saying why connecting to ``path`` failed and what to check."""
    if isinstance(exc, FileNotFoundError):
        return f"no agent socket at {path} (is the agent running?)"
    if isinstance(exc, ConnectionRefusedError):
        return f"the agent at {path} is not accepting connections (is it running?)"
    if isinstance(exc, PermissionError):
        return (
            f"permission denied on {path}: the socket admits its owner and group only; "
            "run this program in the socket's group"
        )
    return f"cannot connect to the agent at {path}: {exc.strerror or exc}"


def _connect_before(sock: _socket.socket, path: str, deadline: float) -> None:
    """Connect by ``deadline``. A Unix socket whose accept queue is full refuses a
    connect with a timeout at once (EAGAIN) instead of waiting: wait and retry, briefly."""
    while True:
        sock.settimeout(_remaining(deadline))
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            time.sleep(min(_CONNECT_RETRY_S, _remaining(deadline)))


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _send_all(sock: _socket.socket, data: bytes, deadline: float) -> None:
    sock.settimeout(_remaining(deadline))
    sock.sendall(data)


def _receive_frame(sock: _socket.socket, deadline: float) -> bytes:
    header = _receive_exactly(sock, HEADER_BYTES, deadline, first=True)
    length = int.from_bytes(header, "big")
    if not 0 < length <= MAX_RESPONSE_BYTES:
        raise ProtocolError(
            f"the agent sent a frame of {length} bytes (limit {MAX_RESPONSE_BYTES})"
        )
    return _receive_exactly(sock, length, deadline, first=False)


def _receive_exactly(sock: _socket.socket, size: int, deadline: float, *, first: bool) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        sock.settimeout(_remaining(deadline))
        try:
            count = sock.recv_into(view[received:])
        except ConnectionResetError:
            count = 0
        if count == 0:
            if first and received == 0:
                raise _LostBeforeAnswer
            raise AgentUnavailableError(
                "the agent closed the connection in the middle of an answer"
            )
        received += count
    return bytes(buffer)


_shared: dict[tuple[int, str, float], Client] = {}
_shared_lock = _thread.allocate_lock()


def decide(
    action: str,
    resource: str,
    context: Mapping[str, str] | None = None,
    *,
    parent: bytes | None = None,
    want_receipt: bool = False,
    path: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> DecisionResult:
    """Ask the agent once, through a connection shared by this process (per path and
    timeout; a forked child opens its own).

    Raises:
        AgentUnavailableError, AgentRequestError, ProtocolError, ValueError: as
        :meth:`Client.decide`. Treat every one of them as a deny.
    """
    where = os.fspath(path) if path is not None else default_socket_path()
    key = (os.getpid(), where, timeout)
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            for stale in [k for k in _shared if k[0] != key[0]]:
                del _shared[stale]
            client = _shared[key] = Client(where, timeout=timeout)
    return client.decide(action, resource, context, parent=parent, want_receipt=want_receipt)

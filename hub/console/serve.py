"""Serving the console inside ``edge-hub serve``: uvicorn on the hub's own event loop.

Where it listens is a :class:`~hub.console.listen.ConsoleListen` (loopback, or TLS).
:class:`ConsoleServer` binds the socket itself (so an address in use is a clear
:class:`ConfigError`, not uvicorn's ``sys.exit``) and runs a uvicorn ``Server`` whose signal
capture is turned off: the hub keeps its own SIGTERM/SIGINT handling and stops the console
as it stops everything else.

The console shares the hub's process, event loop and file descriptors, so it must never be
able to starve the hub (:class:`ConsoleLimits`): it holds at most ``max_connections`` open
connections (well below ``RLIMIT_NOFILE``, so the hub keeps descriptors for its broker,
registry and keys) and closes any connection beyond that at once; a connection must send
its request head within ``header_timeout_s`` (TLS handshake included) or it is dropped; every
response closes its connection (no keep-alive to hold idle); the accept backlog is small; and
the event loop's "socket.accept() out of system resource" report is logged at most once a
minute, so a descriptor shortage cannot flood the hub's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import resource
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from cryptography import x509

from edge_agent.errors import ConfigError
from hub.console.app import create_app
from hub.console.context import ConsoleContext
from hub.console.listen import ConsoleListen

__all__ = ["ConsoleLimits", "ConsoleServer"]

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_GRACE_S = 2


ACCEPT_ERROR_LOG_EVERY_S = 60.0
"""The loop's accept-failure report is logged at most once in this many seconds."""
_ACCEPT_ERROR = "socket.accept() out of system resource"


@dataclass(frozen=True, slots=True)
class ConsoleLimits:
    """How much of the hub's process the console may hold.

    ``max_connections``: open connections at once (capped further to a quarter of the
    process's ``RLIMIT_NOFILE``); one more is closed as soon as it is accepted.
    ``header_timeout_s``: time from connecting (TLS handshake included) to the end of the
    request head; a connection still sending its head then is dropped. ``backlog``: the
    listening socket's accept queue.
    """

    max_connections: int = 64
    header_timeout_s: float = 5.0
    backlog: int = 16

    def connection_cap(self) -> int:
        """``max_connections``, at most a quarter of the soft ``RLIMIT_NOFILE``."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft // 4))


class _Gate:
    """The console's open connections, counted against a cap."""

    def __init__(self, cap: int, header_timeout_s: float) -> None:
        self.cap = cap
        self.header_timeout_s = header_timeout_s
        self.open = 0
        self.refused = 0


class _GuardedConnection(asyncio.Protocol):
    """Wraps uvicorn's protocol for one connection: refused at once when the console is at
    its cap, dropped when its request head is not complete within the header timeout."""

    def __init__(self, inner: asyncio.Protocol, gate: _Gate) -> None:
        self._inner = inner
        self._gate = gate
        self._admitted = False
        self._transport: asyncio.BaseTransport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        gate = self._gate
        if gate.open >= gate.cap:
            gate.refused += 1
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            return
        gate.open += 1
        self._admitted = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(gate.header_timeout_s, self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if self._deadline is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._deadline.cancel()
                self._deadline = None
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._gate.open -= 1
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _expire(self) -> None:
        self._deadline = None
        transport = self._transport
        if isinstance(transport, asyncio.Transport) and not transport.is_closing():
            transport.abort()


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the hub and guards every connection
    (:class:`_GuardedConnection`)."""

    def __init__(self, config: uvicorn.Config, limits: ConsoleLimits) -> None:
        super().__init__(config)
        self.limits = limits
        self.gate = _Gate(limits.connection_cap(), limits.header_timeout_s)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve ``sockets`` (the console binds its own) with guarded connections, a small
        backlog and a TLS handshake bounded by the header timeout."""
        config = self.config
        loop = asyncio.get_running_loop()
        protocol_class: Callable[..., asyncio.Protocol] = config.http_protocol_class

        def create_protocol() -> asyncio.Protocol:
            inner = protocol_class(
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            return _GuardedConnection(inner, self.gate)

        self.servers = [
            await loop.create_server(
                create_protocol,
                sock=sock,
                ssl=config.ssl,
                backlog=self.limits.backlog,
                ssl_handshake_timeout=self.limits.header_timeout_s if config.ssl else None,
            )
            for sock in sockets or []
        ]
        self.started = True


class _AcceptErrorLog:
    """An event-loop exception handler that lets the loop's accept-failure report through
    at most once every :data:`ACCEPT_ERROR_LOG_EVERY_S` (with how many were held back) and
    hands everything else to the handler it replaced."""

    def __init__(
        self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None
    ) -> None:
        self.previous = previous
        self._last = -ACCEPT_ERROR_LOG_EVERY_S
        self._held = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith(_ACCEPT_ERROR):
            now = time.monotonic()
            if now - self._last < ACCEPT_ERROR_LOG_EVERY_S:
                self._held += 1
                return
            self._last = now
            held, self._held = self._held, 0
            logger.error(
                "%s: %s (%d more in the last minute not logged); the process is out of file "
                "descriptors: raise its limit (LimitNOFILE) or find who holds them",
                _ACCEPT_ERROR,
                context.get("exception"),
                held,
            )
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


class ConsoleServer:
    """The console on ``listen``, run on the current event loop: ``async with``."""

    def __init__(
        self, context: ConsoleContext, listen: ConsoleListen, limits: ConsoleLimits | None = None
    ) -> None:
        self._listen = listen
        context.hosts = context.hosts | served_names(listen)
        self._limits = ConsoleLimits() if limits is None else limits
        self._context = context
        self._accept_log: _AcceptErrorLog | None = None
        self._socket: socket.socket | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = listen.port

    @property
    def url(self) -> str:
        return self._listen.url(self.port)

    async def __aenter__(self) -> ConsoleServer:
        """Bind and start serving.

        Raises:
            ConfigError: the address cannot be bound, the TLS files cannot be read, or the
                server did not start.
        """
        listen = self._listen
        sock = _bind(listen, self._limits.backlog)
        self.port = sock.getsockname()[1]
        try:
            config = uvicorn.Config(
                create_app(self._context),
                lifespan="off",
                log_config=None,
                access_log=False,
                proxy_headers=False,
                server_header=False,
                ssl_certfile=None if listen.cert is None else str(listen.cert),
                ssl_keyfile=None if listen.key is None else str(listen.key),
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            )
            config.load()
        except (OSError, ValueError) as exc:
            sock.close()
            raise ConfigError(
                f"the console's TLS certificate or key is not usable (give PEM files of one "
                f"pair: --console-cert, --console-key): {exc}"
            ) from exc
        server = _EmbeddedServer(config, self._limits)
        self._server, self._socket = server, sock
        loop = asyncio.get_running_loop()
        self._accept_log = _AcceptErrorLog(loop.get_exception_handler())
        loop.set_exception_handler(self._accept_log)
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="edge-hub-console")
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                while not server.started:
                    if self._task.done():
                        break
                    await asyncio.sleep(0.01)
        except TimeoutError:
            pass
        if not server.started:
            await self._stop()
            raise ConfigError(f"the console did not start on {self.url}")
        logger.info("console serving on %s", self.url)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            try:
                await self._task
            except (Exception, SystemExit) as exc:
                logger.warning("the console stopped with an error: %s", exc)
        if self._socket is not None:
            self._socket.close()
        if self._accept_log is not None:
            asyncio.get_running_loop().set_exception_handler(self._accept_log.previous)
            self._accept_log = None

    @property
    def open_connections(self) -> int:
        """Connections the console holds now."""
        return 0 if self._server is None else self._server.gate.open

    @property
    def refused_connections(self) -> int:
        """Connections closed at once because the console was at its cap."""
        return 0 if self._server is None else self._server.gate.refused


def served_names(listen: ConsoleListen) -> frozenset[str]:
    """The ``Host`` names ``listen`` serves besides loopback: its bind address (unless a
    wildcard) and, under TLS, the DNS names and addresses its certificate is for.
    Lowercase, IPv6 addresses in brackets as they appear in a ``Host`` header."""
    names = set()
    if not (_is_ip(listen.host) and ipaddress.ip_address(listen.host).is_unspecified):
        names.add(listen.host)
    if listen.cert is not None:
        with contextlib.suppress(OSError, ValueError):
            cert = x509.load_pem_x509_certificate(listen.cert.read_bytes())
            with contextlib.suppress(x509.ExtensionNotFound):
                san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                names.update(san.get_values_for_type(x509.DNSName))
                names.update(str(a) for a in san.get_values_for_type(x509.IPAddress))
    return frozenset(f"[{n}]" if ":" in n else n.lower() for n in names)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _bind(listen: ConsoleListen, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"the console cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}"
        ) from exc
    return sock

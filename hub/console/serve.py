"""Serving the console inside ``edge-hub serve``: uvicorn on the hub's own event loop.

:func:`parse_listen` checks ``--console HOST:PORT`` (with ``--console-cert/--console-key``):
the console binds loopback unless told otherwise, and any other address needs TLS.
:class:`ConsoleServer` binds the socket itself (so an address in use is a clear
:class:`ConfigError`, not uvicorn's ``sys.exit``) and runs a uvicorn ``Server`` whose signal
capture is turned off: the hub keeps its own SIGTERM/SIGINT handling and stops the console
as it stops everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from edge_agent.errors import ConfigError
from hub.console.app import create_app
from hub.console.context import ConsoleContext

__all__ = ["ConsoleListen", "ConsoleServer", "parse_listen"]

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_GRACE_S = 2


@dataclass(frozen=True, slots=True)
class ConsoleListen:
    """Where the console listens; ``cert``/``key`` (PEM files) serve it over TLS."""

    host: str
    port: int
    cert: Path | None = None
    key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.cert is not None

    def url(self, port: int | None = None) -> str:
        """The console's URL (with ``port``: the port actually bound, for port 0)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port if port is None else port}/"


def parse_listen(text: str, cert: Path | None = None, key: Path | None = None) -> ConsoleListen:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a :class:`ConsoleListen`.

    Raises:
        ConfigError: not ``HOST:PORT``, a port outside 0-65535, only one of ``cert`` and
            ``key``, or an address other than 127.0.0.1/::1 without TLS.
    """
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            f"--console {text!r}: give HOST:PORT, e.g. 127.0.0.1:8080 (or [::1]:8080)"
        )
    if (cert is None) != (key is None):
        raise ConfigError("--console-cert and --console-key go together: give both or neither")
    listen = ConsoleListen(host, int(port_text), cert, key)
    if not listen.tls and not _loopback(host):
        raise ConfigError(
            f"--console {text}: the console serves login tokens and session cookies, so an "
            "address other than 127.0.0.1 or ::1 needs TLS: add --console-cert FILE "
            "--console-key FILE (PEM), or bind 127.0.0.1 and reach it through an SSH tunnel"
        )
    return listen


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the hub."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ConsoleServer:
    """The console on ``listen``, run on the current event loop: ``async with``."""

    def __init__(self, context: ConsoleContext, listen: ConsoleListen) -> None:
        self._listen = listen
        self._context = context
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
        sock = _bind(listen)
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
        server = _EmbeddedServer(config)
        self._server, self._socket = server, sock
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


def _bind(listen: ConsoleListen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"the console cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}"
        ) from exc
    return sock

"""Where the console listens: ``--console HOST:PORT`` with ``--console-cert/--console-key``.

The console binds loopback unless told otherwise, and refuses any other address without TLS:
it carries login tokens and session cookies. Kept apart from :mod:`hub.console.serve` so that
reading the option imports no web stack.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import ConfigError

__all__ = ["LOOPBACK", "ConsoleListen", "parse_listen"]

LOOPBACK = "127.0.0.1"
"""The address a bare ``--console PORT`` binds."""


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
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; a bare ``PORT`` is on :data:`LOOPBACK`) as
    a :class:`ConsoleListen`.

    Raises:
        ConfigError: not ``HOST:PORT``, a port outside 0-65535, only one of ``cert`` and
            ``key``, or an address other than 127.0.0.1/::1 without TLS.
    """
    host, sep, port_text = text.rpartition(":") if ":" in text else (LOOPBACK, ":", text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            f"--console {text!r}: give HOST:PORT, e.g. 127.0.0.1:8080 (or [::1]:8080, or a "
            "port alone for 127.0.0.1)"
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

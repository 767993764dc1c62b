"""Configuration of the decision socket: where it listens, who may connect, its limits.

Validated once at start (strict, frozen: :mod:`edge_agent.protocol.settings`) and passed
down. Every limit is named with its unit. docs/socket.md section 6 explains what each bound
protects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.protocol.settings import Section, setting
from edge_agent.socket.wire import DEFAULT_SOCKET_PATH, MAX_FRAME_BYTES

__all__ = ["SocketConfig", "SocketLimits"]


@dataclass(frozen=True, slots=True)
class SocketLimits(Section):
    """Bounds that keep one misbehaving client from starving the others."""

    max_frame_bytes: int = setting(MAX_FRAME_BYTES, ge=256, le=1024 * 1024)
    """Largest request body read; a larger declared length is refused before reading it."""
    max_connections: int = setting(1024, ge=1, le=65536)
    """Open connections; at the limit a new one evicts the longest-idle connection, or is
    refused with ``busy`` when every connection has a request in flight."""
    max_inflight_per_connection: int = setting(8, ge=1, le=1024)
    """Pipelined requests decided at once for one connection; the next frame is not read
    until one finishes (back-pressure, not an error)."""
    max_inflight_total: int = setting(256, ge=1, le=65536)
    """Requests queued for or in the decision threads, over all connections."""
    decision_threads: int = setting(64, ge=1, le=512)
    """Threads running decisions: concurrent decisions share one lineage commit (group
    commit), so this is also the largest batch one fsync can carry."""
    idle_timeout_s: float = setting(60.0, gt=0, le=86400)
    """A connection with no new request for this long is closed."""
    frame_timeout_s: float = setting(5.0, gt=0, le=600)
    """Once a frame has started, all of it must arrive within this time."""
    write_timeout_s: float = setting(5.0, gt=0, le=600)
    """A response the client does not read within this time closes the connection."""
    shutdown_grace_s: float = setting(2.0, ge=0, le=600)
    """On shutdown, how long requests already being decided get to send their answer."""
    backlog: int = setting(512, ge=1, le=65535)
    """Pending connections the kernel queues before the agent accepts them."""


@dataclass(frozen=True, slots=True)
class SocketConfig(Section):
    """Where the socket is and who may use it (mode and group of the socket file)."""

    path: Path = Path(DEFAULT_SOCKET_PATH)
    mode: int = setting(0o660, ge=0, le=0o777)
    group: str | int | None = None
    """Group that owns the socket file (name or gid); ``None`` keeps the agent's group."""
    limits: SocketLimits = field(default_factory=SocketLimits)

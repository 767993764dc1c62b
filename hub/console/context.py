"""What every console handler reads: :class:`ConsoleContext`, one per console application.

The console reads the registry through its typed interface only, reads the time from
``clock`` (tests hand in a fixed one) and holds its sessions and login rate limit in memory
(a restart logs everyone out).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hub.console.operations import HubActions
from hub.console.previews import Previews
from hub.console.sessions import LoginLimit, Sessions
from hub.core.liveness import STALE_AFTER_S
from hub.hubdir.layout import HubDir, HubKeys
from hub.registry import Registry
from hub.registry.gateway import RegistryGateway

__all__ = ["Clock", "ConsoleContext", "wall_clock"]

Clock = Callable[[], int]
"""Integer Unix seconds now."""


def wall_clock() -> int:
    """The wall-clock time in whole seconds."""
    return int(time.time())


@dataclass(slots=True, eq=False)
class ConsoleContext:
    """The hub state the console's handlers share.

    ``keys`` reads the hub's keys as its keys directory holds them now (the newest trust
    root included). ``secure``: the console is served under TLS, so the session cookie is
    ``Secure``. ``stale_after_s``: a device not heard from for this long is shown
    stale/unknown, never its last reported state.
    """

    registry: Registry
    hub_dir: HubDir
    keys: Callable[[], HubKeys]
    clock: Clock = wall_clock
    actions: HubActions | None = None
    """The running hub's governance actions (``None`` without a hub: the actions pages
    say so and change nothing)."""
    secure: bool = False
    stale_after_s: int = STALE_AFTER_S
    refresh_s: int = 10
    """Seconds between the dashboard's live refreshes (htmx)."""
    hosts: frozenset[str] = frozenset()
    """``Host`` names this console answers to besides loopback (``127.0.0.1``, ``[::1]``,
    ``localhost``, any port): its bind address and TLS certificate names. Any other
    ``Host`` is refused before any route, so a DNS-rebound page is never same-origin."""
    login_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    """Signs the login form's CSRF values (per process: a restart invalidates open forms)."""
    sessions: Sessions = field(default_factory=Sessions)
    login_limit: LoginLimit = field(default_factory=LoginLimit)
    previews: Previews = field(default_factory=Previews)
    """Each governance preview's one-shot confirmation nonce."""
    db: RegistryGateway = field(default_factory=lambda: RegistryGateway("console-registry"))
    """Runs the handlers' registry reads and writes off the event loop (the hub's loop: the
    console is served on it), one at a time; closed before :attr:`registry` is."""

"""What every console handler reads: :class:`ConsoleContext`, one per console application.

The console reads the registry through its typed interface only, reads the time from
``clock`` (tests hand in a fixed one) and holds its sessions and login rate limit in memory
(a restart logs everyone out). Governance actions publish through ``publish``: the running
hub's own connection, so what the console publishes is what ``edge-hub bundle push`` and
``revoke`` publish; ``None`` when the console runs without a hub (tests), and the actions
then only record.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from hub.console.operations import HubActions
from hub.console.sessions import LoginLimit, Sessions
from hub.core.liveness import STALE_AFTER_S
from hub.core.publications import Publication
from hub.hubdir.layout import HubDir, HubKeys
from hub.registry import Registry

__all__ = ["Clock", "ConsoleContext", "Publish", "wall_clock"]

Clock = Callable[[], int]
"""Integer Unix seconds now."""

Publish = Callable[[Sequence[Publication]], Awaitable[None]]
"""Publish on the hub's broker connection (raises TransportError when not connected)."""


def wall_clock() -> int:
    """The wall-clock time in whole seconds."""
    return int(time.time())


@dataclass(slots=True, eq=False)
class ConsoleContext:
    """The hub state the console's handlers share.

    ``keys`` returns the hub's keys as the running hub last read them (its current trust
    root). ``secure``: the console is served under TLS, so the session cookie is ``Secure``.
    ``stale_after_s``: a device not heard from for this long is shown stale/unknown, never
    its last reported state.
    """

    registry: Registry
    hub_dir: HubDir
    keys: Callable[[], HubKeys]
    clock: Clock = wall_clock
    publish: Publish | None = None
    actions: HubActions | None = None
    """The running hub's governance actions (``None`` without a hub: the actions pages
    say so and change nothing)."""
    secure: bool = False
    stale_after_s: int = STALE_AFTER_S
    refresh_s: int = 10
    """Seconds between the dashboard's live refreshes (htmx)."""
    sessions: Sessions = field(default_factory=Sessions)
    login_limit: LoginLimit = field(default_factory=LoginLimit)

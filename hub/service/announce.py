"""The status lines ``edge-hub serve`` prints for its operator (not logs: stdout, one line
each, unless ``-q``).

- One line when the hub connects to its broker, when it loses it (or cannot reach it at
  start), and when it has it again, saying how long it was without: a broker that is down
  is said once per outage, not once per retry (each retry is a debug log, ``-v``).
- One line when the hub gains or loses the schedule lease, or cannot reach the registry to
  claim it (:mod:`hub.service.lease`).
- Every ``summary_interval_s`` one summary line: devices online (heard from within
  :data:`~hub.core.liveness.STALE_AFTER_S`, status online) of those registered, messages
  received per second since the last summary, and the ingest lag (how long the oldest
  message waiting to be stored has waited; 0 when nothing waits).

Nothing here decides anything: it reads the counters (:class:`~hub.service.config.HubStats`)
and the registry's fleet summary, and calls ``emit``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edge_agent.support.cli import format_duration
from hub.core.liveness import STALE_AFTER_S
from hub.registry import Registry, RegistryError
from hub.registry.gateway import RegistryGateway
from hub.service.config import HubStats

__all__ = ["PREFIX", "ServeAnnouncer", "run_summaries", "summary_text"]

logger = logging.getLogger(__name__)

PREFIX = "edge-hub serve: "
_NOT_ONLINE = ("never_seen", "stale", "offline")


class ServeAnnouncer:
    """Says when the broker comes and goes, and summarises the hub now and then."""

    def __init__(
        self,
        url: str,
        emit: Callable[[str], None],
        stats: HubStats,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._emit = emit
        self._stats = stats
        self._clock = clock
        self._ever_connected = False
        self._down_since: float | None = None
        self._counted = (clock(), stats.messages)

    def connected(self, shared: bool) -> None:
        """The hub is connected, subscribed and has republished what it retains."""
        how = f"{'shared' if shared else 'direct'} lineage subscriptions"
        away = (
            None
            if self._down_since is None
            else format_duration(round(self._clock() - self._down_since))
        )
        if not self._ever_connected:
            waited = "" if away is None else f" after {away} trying"
            self._say(f"connected to the broker {self._url}{waited} ({how})")
        elif away is not None:
            self._say(f"reconnected to the broker {self._url} after {away} without it")
        self._ever_connected = True
        self._down_since = None

    def lost(self, reason: str) -> None:
        """A connection attempt failed or the connection was lost (said once an outage)."""
        if self._down_since is not None:
            return
        self._down_since = self._clock()
        reason = reason.removeprefix(f"broker {self._url}: ")
        if self._ever_connected:
            self._say(f"lost the broker {self._url}: {reason}; reconnecting")
        else:
            self._say(f"cannot reach the broker {self._url}: {reason}; retrying")

    def note(self, line: str) -> None:
        """Say one line of another part's (the schedule lease gained, lost, unreachable)."""
        self._say(line)

    def summary(self, registry: Registry, now: int) -> None:
        """Emit the summary line for the time since the last one."""
        at, messages = self._clock(), self._stats.messages
        then, before = self._counted
        self._counted = (at, messages)
        rate = (messages - before) / max(at - then, 1e-9)
        backlog = self._stats.backlog_since
        lag = 0.0 if backlog is None else max(0.0, at - backlog)
        try:
            states = registry.fleet_summary(now, STALE_AFTER_S).states
        except RegistryError as exc:
            logger.warning("summary: the registry cannot be read: %s", exc)
            return
        registered = sum(c.count for c in states.values())
        online = registered - sum(states[s].count for s in _NOT_ONLINE if s in states)
        self._say(summary_text(online, registered, rate, lag, connected=self._down_since is None))

    def _say(self, line: str) -> None:
        self._emit(PREFIX + line)


def summary_text(online: int, registered: int, rate: float, lag: float, *, connected: bool) -> str:
    """The summary line's text (after :data:`PREFIX`)."""
    broker = "" if connected else ", broker unreachable"
    return (
        f"{online} of {registered} device{'' if registered == 1 else 's'} online, "
        f"{rate:.1f} messages/s, ingest lag {lag:.1f}s{broker}"
    )


async def run_summaries(
    announcer: ServeAnnouncer,
    registry: Registry,
    db: RegistryGateway,
    interval_s: float,
    stop: asyncio.Event,
    wall: Callable[[], float] = time.time,
) -> None:
    """Emit a summary every ``interval_s`` until ``stop`` is set, each one (it reads the
    registry) on the registry gateway's worker ``db``."""
    while not stop.is_set():
        try:
            async with asyncio.timeout(interval_s):
                await stop.wait()
        except TimeoutError:
            await db(announcer.summary, registry, int(wall()))

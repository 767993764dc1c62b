"""Count, log and record the device messages the hub refuses.

A refusal is counted against the registered device whose topic it came on (one counter per
code per device), or per code only when it names no registered device, never a row per
made-up id (:class:`~hub.core.limits.RejectionCounter`). Warnings are rate limited per
device and code, and codes anyone reaching the broker can cause at will
(:data:`~hub.core.codes.FLOOD_CODES`) are logged at debug level only; every refusal is
counted all the same. Counters reach the registry when a warning is logged, on every round
of the schedule and when the service stops.
"""

from __future__ import annotations

import logging
import time

from edge_agent.errors import EdgeGovError
from hub.core.codes import FLOOD_CODES, RejectCode
from hub.core.limits import RateLimiter, RejectionCounter
from hub.core.routing import Reject
from hub.registry import UNREGISTERED, Registry, RejectionCount
from hub.service.config import HubStats

__all__ = ["WARNINGS_PER_MINUTE", "Rejections"]

logger = logging.getLogger(__name__)

WARNINGS_PER_MINUTE = 6.0
"""Warnings logged per (device, code) a minute at most (after a burst of 3); the rest at
debug level, counted all the same."""


class Rejections:
    """The rejection counters of one running hub and the warnings they log."""

    def __init__(self, registry: Registry, stats: HubStats) -> None:
        self._registry = registry
        self._stats = stats
        self._counter = RejectionCounter()
        self._warnings = RateLimiter(WARNINGS_PER_MINUTE / 60, 3)

    def count(self, reject: Reject) -> None:
        """Count a refusal the router decided (:class:`~hub.core.routing.Reject`)."""
        if reject.device is None:
            self.reject_unregistered(reject.claimed, reject.code, reject.detail)
        else:
            self.reject(reject.device, reject.code, reject.detail)

    def reject(self, device: str, code: RejectCode, detail: str) -> None:
        """Count a rejection of a message from the registered ``device``; warn (a few a
        minute per device and code) and record at once unless anyone could flood it."""
        self._counter.add(device, code, detail)
        self._log(device, code, detail)

    def reject_unregistered(self, claimed: str | None, code: RejectCode, detail: str) -> None:
        """Count a rejection of a message naming no registered device (``claimed``: the id
        it named): per code only, never a row per made-up id."""
        self._counter.add_unregistered(claimed, code, detail)
        self._log(UNREGISTERED, code, detail)

    def warning_allowed(self, key: str) -> bool:
        """Whether a warning about ``key`` may be logged now (the same few a minute)."""
        return self._warnings.allow(key, time.monotonic())

    def drain(self) -> list[RejectionCount]:
        """Take the counts not yet recorded (see :meth:`RejectionCounter.drain`)."""
        return self._counter.drain()

    def flush(self) -> None:
        """Record the counts taken so far in the registry (an error there is logged)."""
        counts = self.drain()
        if not counts:
            return
        try:
            self._registry.add_rejections(counts, int(time.time()))
        except EdgeGovError as exc:
            logger.error("rejection counters not recorded: %s", exc)

    def _log(self, device: str, code: RejectCode, detail: str) -> None:
        self._stats.rejections[str(code)] = self._stats.rejections.get(code, 0) + 1
        if code in FLOOD_CODES or not self.warning_allowed(f"{device}/{code}"):
            logger.debug("rejected (%s) from %s: %s", code, device, detail)
            return
        logger.warning("rejected (%s) from %s: %s", code, device, detail)
        self.flush()

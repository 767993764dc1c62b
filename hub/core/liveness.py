"""When the hub counts a device as heard from: the heartbeat agents report at, and how long
without a fresh signed status makes a device stale (``edge-hub fleet``, the console).

A device not heard from for :data:`STALE_AFTER_S` is shown stale/unknown, never as the state
its last status claimed: a device that lost power, or whose broker link is gone, cannot say it
went offline, and its retained "online yes" would otherwise stand.
"""

from __future__ import annotations

__all__ = ["HEARTBEAT_S", "STALE_AFTER_HEARTBEATS", "STALE_AFTER_S", "is_stale"]

HEARTBEAT_S = 30
"""The heartbeat agents publish their signed status at by default (``[sync]
status_interval_s`` and the firmware profiles' ``heartbeat_interval_s``)."""
STALE_AFTER_HEARTBEATS = 3
STALE_AFTER_S = HEARTBEAT_S * STALE_AFTER_HEARTBEATS
"""Seconds without a fresh signed status after which a device is shown stale."""


def is_stale(last_seen: int | None, now: int, stale_after_s: int = STALE_AFTER_S) -> bool:
    """Whether a device last heard from at ``last_seen`` (``None``: never) is stale at ``now``."""
    return last_seen is None or now - last_seen > stale_after_s

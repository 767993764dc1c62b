"""Bounds on what devices can make the hub do: per-device rate limits and rejection counters.

A device (or anything publishing on its topics) gets a token bucket; messages over it are
dropped before any parsing or signature check and only counted, in memory, so a flood costs
the hub neither CPU nor disk writes. The counters are flushed to the registry in batches.
Time is a parameter (monotonic seconds), so the buckets are tested without sleeping.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["RateLimiter", "RejectionCounter"]

MAX_TRACKED_KEYS = 100_000
"""Buckets kept at most (least recently used beyond are forgotten, i.e. start full)."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets of ``burst`` messages refilled at ``rate`` per second, one per key."""

    def __init__(self, rate: float, burst: int, max_keys: int = MAX_TRACKED_KEYS) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("a rate limit needs rate > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        """Take one token from ``key``'s bucket at monotonic time ``now``; ``False`` if empty."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


class RejectionCounter:
    """Rejections counted per (device, code) with the last detail, until drained."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], tuple[int, str]] = {}
        self.total = 0

    def add(self, device: str, code: str, detail: str) -> None:
        count, _ = self._counts.get((device, code), (0, ""))
        self._counts[(device, code)] = (count + 1, detail)
        self.total += 1

    def drain(self) -> dict[tuple[str, str], tuple[int, str]]:
        """The counts since the last drain (and forget them)."""
        counts, self._counts = self._counts, {}
        return counts

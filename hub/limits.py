"""Bounds on what devices can make the hub do: per-device rate limits, rejection counters,
and the embedded broker's limits.

A device (or anything publishing on its topics) gets a token bucket; messages over it are
dropped before any parsing or signature check and only counted, in memory, so a flood costs
the hub neither CPU nor disk writes. The counters are flushed to the registry in batches.
Time is a parameter (monotonic seconds), so the buckets are tested without sleeping.

The embedded broker's limits (:class:`BrokerLimits`, enforced by ``hub/broker.py``) are sized
from the largest object edgegov sends: docs/mqtt.md ("Embedded broker limits") gives the
figures and what each limit protects against.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from edge_agent.protocol.limits import MAX_BUNDLE_BYTES

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_RETAINED_BYTES",
    "MAX_RETAINED_MESSAGES",
    "MAX_TOPIC_BYTES",
    "MAX_TOPIC_LEVELS",
    "REFUSAL_LOG_BURST",
    "REFUSAL_LOG_INTERVAL_S",
    "BrokerLimits",
    "RateLimiter",
    "RejectionCounter",
]

MAX_TOPIC_BYTES = 256
"""Longest topic name or filter, UTF-8 bytes (AWS IoT's limit). edgegov's longest is 159:
``edgegov/v1/{region}/device/{id}/attestation`` with a 64-byte region and device id."""

MAX_TOPIC_LEVELS = 8
"""Most levels in a topic name or filter (7 slashes, AWS IoT's limit). edgegov's deepest topic
has 6 levels; a shared subscription (``$share/{group}/`` in front) to it has 8."""

MAX_MESSAGE_BYTES = MAX_BUNDLE_BYTES + 2 + MAX_TOPIC_BYTES + 2
"""Largest MQTT packet the embedded broker reads, as its fixed header's remaining length:
the largest bundle any agent accepts (8 MiB, 7.6 times a measured 10,000-rule bundle of
1.06 MiB) with its topic (length prefix and name) and packet id. A lineage batch, the
largest message a device sends, is at most 1 MiB."""

MAX_RETAINED_MESSAGES = 50_000
"""Retained messages held at once: 10 per device for 5,000 devices (a device has 3 of its
own, status, ack and attestation, and at most 2 on its device channel), 5 times the largest
fleet the embedded broker carries well (bench/fleet.py: 1,000 agents)."""

MAX_RETAINED_BYTES = 128 * 1024 * 1024
"""Retained topic and payload bytes held at once: 5,000 devices' own retained objects (about
9 KiB each, 45 MiB) beside ten bundles of the largest size (80 MiB)."""

REFUSAL_LOG_INTERVAL_S = 10.0
REFUSAL_LOG_BURST = 3
"""The broker logs each kind of refusal at most ``REFUSAL_LOG_BURST`` times in a row, then
once per ``REFUSAL_LOG_INTERVAL_S`` with the number left unlogged meanwhile."""


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """What the embedded broker holds at most (the defaults above; tests pass smaller ones)."""

    message_bytes: int = MAX_MESSAGE_BYTES
    topic_bytes: int = MAX_TOPIC_BYTES
    topic_levels: int = MAX_TOPIC_LEVELS
    retained_messages: int = MAX_RETAINED_MESSAGES
    retained_bytes: int = MAX_RETAINED_BYTES

    def __post_init__(self) -> None:
        if (
            min(
                self.message_bytes,
                self.topic_bytes,
                self.topic_levels,
                self.retained_messages,
                self.retained_bytes,
            )
            < 1
        ):
            raise ValueError("every broker limit must be at least 1")


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

"""Bounds on what anyone publishing on device topics can make the hub do.

Four bounds, each in memory, each with time as a parameter (monotonic seconds) so they are
tested without sleeping:

- :class:`RateLimiter`: a token bucket per key. The hub charges a device's bucket only for
  messages that verified under the device's registered key, so traffic that is not the
  device's never spends the device's budget.
- :class:`VerificationBudget`: what signature checks of messages that turn out *not* to
  verify may cost, per topic and in total, in bytes (plus a fixed cost per message). A
  message is verified while its topic's share or the shared total can pay for it; a message
  that verifies is refunded. So junk on one device's topic cannot starve the verification
  of every other device's messages, and a device's own topic keeps its share for it.
- :class:`FairQueue`: messages wait per device and are handled one device at a time in
  turn, so a device flooding its own topics (a compromised one, signing for real) delays
  only itself: every other device's next message is at most one round away, and what one
  device sends beyond :data:`MAX_QUEUED_PER_KEY` is dropped on arrival, unread.
- :class:`RejectionCounter`: rejections counted until flushed to the registry. Messages
  naming a registered device are counted per (device, code): a bounded number of rows, one
  per code and device. Messages naming no registered device are counted per code only,
  whatever id they name, with the last :data:`MAX_UNREGISTERED_IDS` such ids kept in memory
  (for logs): a flood of made-up ids costs the hub neither rows nor memory without bound.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from edge_agent.protocol.shipping import MAX_BATCH_BYTES
from hub.registry.interface import UNREGISTERED
from hub.registry.records import RejectionCount

__all__ = ["FairQueue", "RateLimiter", "RejectionCounter", "VerificationBudget"]

T = TypeVar("T")

MAX_QUEUED_PER_KEY = 32
"""Messages waiting per device before the hub handles them; more from the same device are
dropped on arrival, unread (an honest agent has one or two in flight)."""
MAX_QUEUED_KEYS = 100_000
"""Devices with messages waiting at once; messages for more are dropped on arrival."""
MAX_TRACKED_KEYS = 100_000
"""Buckets kept at most (least recently used beyond are forgotten, i.e. start full)."""
MAX_UNREGISTERED_IDS = 1000
"""Unregistered device ids remembered (least recently named beyond are forgotten)."""
VERIFY_COST_BYTES = 32 * 1024
"""What one signature check costs beyond hashing its bytes, in bytes of hashing (an Ed25519
verification and a COSE parse take about as long as hashing 32 KiB)."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets of ``burst`` tokens refilled at ``rate`` per second, one per key."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_TRACKED_KEYS) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("a rate limit needs rate > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket at monotonic time ``now``; ``False``
        (taking nothing) if it holds fewer."""
        bucket = self._bucket(key, now)
        if bucket.tokens < cost:
            return False
        bucket.tokens -= cost
        return True

    def refund(self, key: str, cost: float) -> None:
        """Give ``cost`` tokens back to ``key``'s bucket (never above ``burst``)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(float(self.burst), bucket.tokens + cost)

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
            return bucket
        self._buckets.move_to_end(key)
        elapsed = max(0.0, now - bucket.stamp)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
        bucket.stamp = now
        return bucket


class VerificationBudget:
    """Bytes per second that signature checks of unverified messages may cost: ``topic_rate``
    for each topic, and ``total_rate`` shared by all. Each may spend four seconds' worth at
    once, and always at least the check of one largest message (``max_message`` bytes): a
    topic nobody floods can always have its device's message checked."""

    def __init__(
        self, topic_rate: float, total_rate: float, max_message: int = MAX_BATCH_BYTES
    ) -> None:
        least = float(max_message + VERIFY_COST_BYTES)
        self._topics = RateLimiter(topic_rate, max(4 * topic_rate, least))
        self._total = RateLimiter(total_rate, max(4 * total_rate, least))

    @staticmethod
    def cost(payload: bytes) -> float:
        return float(len(payload) + VERIFY_COST_BYTES)

    def take(self, topic: str, payload: bytes, now: float) -> str | None:
        """Charge checking ``payload`` on ``topic`` to the topic's share, or else to the
        total; the name of the bucket charged (``None``: neither can pay, do not verify)."""
        cost = self.cost(payload)
        if self._topics.allow(topic, now, cost):
            return topic
        if self._total.allow("", now, cost):
            return ""
        return None

    def refund(self, charged: str, payload: bytes) -> None:
        """Give back what :meth:`take` charged to ``charged``: the message verified."""
        limiter = self._total if charged == "" else self._topics
        limiter.refund(charged, self.cost(payload))


class RejectionCounter:
    """Rejections per (device, code) with the last detail, until drained; messages naming no
    registered device under (:data:`~hub.registry.interface.UNREGISTERED`, code)."""

    def __init__(self, max_ids: int = MAX_UNREGISTERED_IDS) -> None:
        self._counts: dict[tuple[str, str], tuple[int, str]] = {}
        self._max_ids = max_ids
        self.unregistered_ids: OrderedDict[str, int] = OrderedDict()
        """The last ids named by messages for no registered device, with how often."""
        self.total = 0

    def add(self, device: str, code: str, detail: str) -> None:
        """Count a rejection against the registered ``device``."""
        count, _ = self._counts.get((device, code), (0, ""))
        self._counts[(device, code)] = (count + 1, detail)
        self.total += 1

    def add_unregistered(self, claimed: str | None, code: str, detail: str) -> None:
        """Count a rejection of a message naming ``claimed`` (no registered device, or no
        device id at all): per code only, the id in the bounded recent list."""
        self.add(UNREGISTERED, code, detail)
        if claimed is None:
            return
        self.unregistered_ids[claimed] = self.unregistered_ids.pop(claimed, 0) + 1
        while len(self.unregistered_ids) > self._max_ids:
            self.unregistered_ids.popitem(last=False)

    def drain(self) -> list[RejectionCount]:
        """The counts since the last drain, in the order first counted (and forget them)."""
        counts, self._counts = self._counts, {}
        return [
            RejectionCount(device, code, count, detail)
            for (device, code), (count, detail) in counts.items()
        ]


class FairQueue(Generic[T]):
    """Items queued per key, taken one key at a time in turn (round robin).

    At most ``max_per_key`` items wait per key and at most ``max_keys`` keys at once; an
    item beyond either is refused by :meth:`put`. Order is kept within a key.
    """

    def __init__(self, max_per_key: int = MAX_QUEUED_PER_KEY, max_keys: int = MAX_QUEUED_KEYS):
        if max_per_key < 1 or max_keys < 1:
            raise ValueError("a fair queue needs max_per_key >= 1 and max_keys >= 1")
        self._max_per_key = max_per_key
        self._max_keys = max_keys
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def put(self, key: str, item: T) -> bool:
        """Queue ``item`` behind ``key``'s others; ``False`` (queuing nothing) when full."""
        queue = self._queues.get(key)
        if queue is None:
            if len(self._queues) >= self._max_keys:
                return False
            queue = self._queues[key] = deque()
        elif len(queue) >= self._max_per_key:
            return False
        queue.append(item)
        self._size += 1
        return True

    def take(self, limit: int) -> deque[T]:
        """Up to ``limit`` items, one per key in turn: each round takes the oldest item of
        every key that has one, starting after the key served last."""
        taken: deque[T] = deque()
        while self._queues and len(taken) < limit:
            key, queue = next(iter(self._queues.items()))
            taken.append(queue.popleft())
            self._size -= 1
            if queue:
                self._queues.move_to_end(key)
            else:
                del self._queues[key]
        return taken

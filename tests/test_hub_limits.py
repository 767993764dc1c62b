"""Per-device rate limits at the hub: token buckets with time as a parameter."""

from __future__ import annotations

from hub.core.limits import FairQueue, RateLimiter, RejectionCounter, VerificationBudget
from hub.registry import UNREGISTERED, RejectionCount


def test_a_device_gets_its_burst_then_the_sustained_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.allow("gw-001", 100.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("gw-001", 100.5)  # one token back after 0.5 s at 2/s
    assert not limiter.allow("gw-001", 100.5)
    assert limiter.allow("gw-002", 100.5), "each device has its own bucket"
    assert [limiter.allow("gw-001", 1000.0) for _ in range(4)] == [True, True, True, False]


def test_a_clock_step_backwards_never_refills() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.allow("gw-001", 50.0)
    assert not limiter.allow("gw-001", 10.0)


def test_tracked_devices_are_bounded_forgetting_the_least_recent() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=2)
    for device in ("a", "b", "c"):
        assert limiter.allow(device, 0.0)
    assert limiter.allow("a", 0.0), "a was forgotten, so it starts with a full bucket"
    assert not limiter.allow("c", 0.0)


def test_rejection_counts_drain_once() -> None:
    counter = RejectionCounter()
    counter.add("gw-001", "rate_limited", "first")
    counter.add("gw-001", "rate_limited", "second")
    assert counter.drain() == [RejectionCount("gw-001", "rate_limited", 2, "second")]
    assert counter.drain() == []
    assert counter.total == 2


def test_rejections_naming_no_registered_device_are_one_count_per_code_whatever_the_id() -> None:
    counter = RejectionCounter(max_ids=100)
    for n in range(10_000):
        counter.add_unregistered(f"fake-{n}", "oversize", f"4096 bytes for fake-{n}")
    counter.add("gw-001", "oversize", "4096 bytes on status")
    assert counter.drain() == [
        RejectionCount(UNREGISTERED, "oversize", 10_000, "4096 bytes for fake-9999"),
        RejectionCount("gw-001", "oversize", 1, "4096 bytes on status"),
    ]
    assert list(counter.unregistered_ids) == [f"fake-{n}" for n in range(9_900, 10_000)]


def test_a_spent_token_can_be_refunded_up_to_the_burst() -> None:
    limiter = RateLimiter(rate=1.0, burst=10)
    assert limiter.allow("t", 0.0, cost=10.0)
    assert not limiter.allow("t", 0.0, cost=1.0)
    limiter.refund("t", 25.0)
    assert limiter.allow("t", 0.0, cost=10.0) and not limiter.allow("t", 0.0)


def test_checks_are_paid_by_the_topic_then_the_shared_budget_then_refused() -> None:
    budget = VerificationBudget(topic_rate=1.0, total_rate=1.0, max_message=100)
    junk = b"\x00" * 100
    assert budget.take("a", junk, 0.0) == "a", "a topic can always pay one largest message"
    assert budget.take("a", junk, 0.0) == "", "then the shared budget pays"
    assert budget.take("a", junk, 0.0) is None
    assert budget.take("b", junk, 0.0) == "b", "another topic still has its own share"
    budget.refund("", junk)
    assert budget.take("a", junk, 0.0) == "", "what verified was given back"


def test_a_fair_queue_serves_every_key_in_turn_whatever_one_key_floods() -> None:
    queue: FairQueue[str] = FairQueue(max_per_key=100)
    for n in range(100):
        queue.put("gw-evil", f"evil-{n}")
    queue.put("gw-001", "honest-batch")
    queue.put("gw-002", "honest-status")

    first = list(queue.take(3))

    assert first == ["evil-0", "honest-batch", "honest-status"]
    assert len(queue) == 99


def test_a_fair_queue_keeps_order_within_a_key_and_refuses_past_its_share() -> None:
    queue: FairQueue[int] = FairQueue(max_per_key=3, max_keys=2)
    assert [queue.put("a", n) for n in range(5)] == [True, True, True, False, False]
    assert queue.put("b", 10)
    assert not queue.put("c", 20)

    assert list(queue.take(10)) == [0, 10, 1, 2]
    assert len(queue) == 0
    assert queue.put("c", 20)

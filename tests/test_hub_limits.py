"""Per-device rate limits at the hub: token buckets with time as a parameter."""

from __future__ import annotations

from hub.limits import RateLimiter, RejectionCounter


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
    assert counter.drain() == {("gw-001", "rate_limited"): (2, "second")}
    assert counter.drain() == {}
    assert counter.total == 2

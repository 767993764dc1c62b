"""The aiomqtt wrapper: broker URLs, reconnect delays, and stopping a task that is mid-publish."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from itertools import islice
from typing import Any

import pytest

from edge_agent.errors import ConfigError, TransportError
from edge_agent.support.mqtt import BrokerSettings, Connection, backoff_delays, stay_connected


class _SwallowingClient:
    """Behaves as aiomqtt does on Python 3.11 when a PUBACK or SUBACK races a cancel:
    ``asyncio.wait_for`` returns the result and the cancellation is lost (CPython gh-86296)."""

    async def _acknowledged_while_cancelled(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        await self._acknowledged_while_cancelled()

    async def subscribe(self, filters: list[tuple[str, int]], **kwargs: Any) -> list[int]:
        await self._acknowledged_while_cancelled()
        return [1 for _ in filters]


async def _stopped_within(task: asyncio.Task[Any], seconds: float) -> bool:
    await asyncio.wait({task}, timeout=seconds)
    return task.cancelled()


@pytest.mark.asyncio
async def test_a_cancellation_swallowed_inside_publish_still_stops_the_task() -> None:
    connection = Connection(_SwallowingClient())  # type: ignore[arg-type]
    published_after_cancel = []

    async def publish_three_times() -> None:
        for _ in range(3):
            await connection.publish("edgegov/v1/eu-1/device/gw-001/status", b"x")
            published_after_cancel.append(1)

    assert await _stopped_within(asyncio.create_task(publish_three_times()), 5)
    assert published_after_cancel == []


@pytest.mark.asyncio
async def test_a_cancellation_swallowed_inside_subscribe_still_stops_the_task() -> None:
    connection = Connection(_SwallowingClient())  # type: ignore[arg-type]
    task = asyncio.create_task(connection.subscribe(["edgegov/v1/eu-1/bundle/all/#"]))
    assert await _stopped_within(task, 5)


class _AcknowledgingClient:
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_a_publish_after_a_cancellation_left_counted_by_a_taskgroup_goes_through() -> None:
    """Python 3.11's TaskGroup leaves its parent's cancel count raised when a child fails
    while the group is exiting: the reconnect loop must still publish afterwards."""
    connection = Connection(_AcknowledgingClient())  # type: ignore[arg-type]

    async def reconnect_after_a_lost_session() -> int:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)
        await connection.publish("edgegov/v1/eu-1/device/gw-001/status", b"x")
        return task.cancelling()

    assert await asyncio.wait_for(reconnect_after_a_lost_session(), timeout=5) == 1


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("mqtt://hub.example", "hub.example", 1883, False),
        ("mqtts://hub.example", "hub.example", 8883, True),
        ("mqtt://127.0.0.1:18830", "127.0.0.1", 18830, False),
    ],
)
def test_broker_urls_give_host_port_and_tls(url: str, host: str, port: int, tls: bool) -> None:
    settings = BrokerSettings.from_url(url)
    assert (settings.host, settings.port, settings.tls) == (host, port, tls)


def test_credentials_in_the_url_are_used_but_never_printed() -> None:
    settings = BrokerSettings.from_url("mqtt://gw%2D001:s3cret@hub.example:1883")
    assert (settings.username, settings.password) == ("gw-001", "s3cret")
    assert "s3cret" not in settings.url


@pytest.mark.parametrize(
    "url", ["http://hub.example", "mqtt://", "mqtt://hub.example:99999", "hub.example:1883"]
)
def test_bad_broker_urls_are_refused_with_the_expected_shape(url: str) -> None:
    with pytest.raises(ConfigError, match=r"mqtt://host:1883|malformed"):
        BrokerSettings.from_url(url)


def test_reconnect_delays_grow_to_the_cap_with_full_jitter() -> None:
    delays = list(islice(backoff_delays(0.5, 8.0, random.Random(7)), 50))
    ceilings = [min(8.0, 0.5 * 2**n) for n in range(50)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[10:]) > 4.0


class _Ceiling(random.Random):
    """Jitter that always draws the ceiling, so the delays are the backoff's ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.mark.asyncio
async def test_stay_connected_retries_lost_sessions_and_restarts_the_backoff_once_connected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    lost: list[str] = []
    sessions = 0

    async def session(connected: Callable[[], None]) -> None:
        nonlocal sessions
        sessions += 1
        if sessions == 3:
            connected()
        if sessions == 5:
            stop.set()
            return
        raise TransportError(f"lost {sessions}")

    with caplog.at_level(logging.INFO, logger="edge_agent.support.mqtt"):
        await stay_connected(
            session,
            url="mqtt://broker:1883",
            initial_s=0.001,
            maximum_s=0.004,
            on_lost=lambda exc: lost.append(str(exc)),
            stop=stop,
            rng=_Ceiling(),
        )
    delays = [r.args[1] for r in caplog.records if r.msg.startswith("reconnecting to")]  # type: ignore[index]
    assert lost == ["lost 1", "lost 2", "lost 3", "lost 4"]
    assert delays == [0.001, 0.002, 0.001, 0.002, 0.004]


@pytest.mark.asyncio
async def test_stay_connected_ends_when_its_caller_will_not_retry_a_failure() -> None:
    attempts = 0

    async def session(connected: Callable[[], None]) -> None:
        nonlocal attempts
        attempts += 1
        raise ConfigError("cannot load the TLS files")

    def on_lost(exc: Exception) -> None:
        raise exc

    with pytest.raises(ConfigError):
        await stay_connected(
            session, url="mqtts://broker:8883", initial_s=0.0, maximum_s=0.0, on_lost=on_lost
        )
    assert attempts == 1

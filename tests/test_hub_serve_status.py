"""The status lines ``edge-hub serve`` prints: one when the broker comes, goes (once per
outage, not once per retry) and comes back, and a periodic summary; none with ``-q``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hub.cli import fabric
from hub.cli.main import main as hub_main
from hub.registry.backends import open_registry
from hub.service.announce import ServeAnnouncer, summary_text
from hub.service.config import HubStats
from hub.service.server import HubService
from tests.brokers import amqtt_broker
from tests.hub_support import HubSetup, hub_config, make_hub_dir, wait_for

URL = "mqtt://127.0.0.1:1883"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _broker_lines(lines: list[str]) -> list[str]:
    """The lines but those of the schedule lease (said as it is gained, not in order with
    the broker's)."""
    return [line for line in lines if "schedule" not in line]


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    return make_hub_dir(tmp_path / "hub")


def _announcer() -> tuple[ServeAnnouncer, list[str], Clock, HubStats]:
    lines: list[str] = []
    clock, stats = Clock(), HubStats()
    return ServeAnnouncer(URL, lines.append, stats, clock=clock), lines, clock, stats


def test_the_broker_coming_going_and_coming_back_is_one_line_each() -> None:
    announcer, lines, clock, _ = _announcer()
    announcer.connected(shared=False)
    announcer.lost(f"broker {URL}: connection refused")
    clock.now += 5
    announcer.lost("connection refused")
    clock.now += 7
    announcer.connected(shared=True)
    assert lines == [
        f"edge-hub serve: connected to the broker {URL} (direct lineage subscriptions)",
        f"edge-hub serve: lost the broker {URL}: connection refused; reconnecting",
        f"edge-hub serve: reconnected to the broker {URL} after 12s without it",
    ]


def test_a_broker_unreachable_at_start_is_said_once_then_when_it_is_reached() -> None:
    announcer, lines, clock, _ = _announcer()
    for _ in range(3):
        announcer.lost("connection refused")
        clock.now += 1
    announcer.connected(shared=False)
    assert lines == [
        f"edge-hub serve: cannot reach the broker {URL}: connection refused; retrying",
        f"edge-hub serve: connected to the broker {URL} after 3s trying (direct lineage "
        "subscriptions)",
    ]


def test_the_summary_counts_devices_online_messages_per_second_and_the_ingest_lag(
    setup: HubSetup,
) -> None:
    announcer, lines, clock, stats = _announcer()
    stats.messages += 50
    clock.now += 10
    stats.backlog_since = clock.now - 1.5
    with open_registry(setup.registry) as registry:
        announcer.summary(registry, 1_800_000_000)
    assert lines == ["edge-hub serve: 0 of 2 devices online, 5.0 messages/s, ingest lag 1.5s"]


@pytest.mark.parametrize(
    ("online", "registered", "connected", "text"),
    [
        (1, 1, True, "1 of 1 device online, 2.5 messages/s, ingest lag 0.0s"),
        (0, 3, False, "0 of 3 devices online, 2.5 messages/s, ingest lag 0.0s, broker unreachable"),
    ],
    ids=["one", "unreachable"],
)
def test_the_summary_line_reads_as_a_sentence(
    online: int, registered: int, connected: bool, text: str
) -> None:
    assert summary_text(online, registered, 2.5, 0.0, connected=connected) == text


@pytest.mark.asyncio
async def test_serve_says_once_that_the_broker_is_unreachable_then_that_it_came_back(
    setup: HubSetup,
) -> None:
    lines: list[str] = []
    async with amqtt_broker() as broker:
        await broker.stop()
        config = hub_config(setup, broker, status_lines=lines.append, write_serve_file=False)
        async with HubService(config) as hub:
            await wait_for(lambda: hub.stats.connections == 0 and len(lines) == 1)
            await asyncio.sleep(0.3)  # several retries
            assert len(lines) == 1 and "cannot reach the broker" in lines[0]
            await broker.start()
            await hub.wait_ready()
            await wait_for(lambda: len(_broker_lines(lines)) == 2)
    said = _broker_lines(lines)[-1]
    assert "connected to the broker" in said and "trying" in said
    assert "edge-hub serve: leads the schedule (fencing token 1): publishes freshness" in lines


@pytest.mark.asyncio
async def test_serve_prints_a_summary_every_interval(setup: HubSetup) -> None:
    lines: list[str] = []
    async with amqtt_broker() as broker:
        config = hub_config(
            setup,
            broker,
            status_lines=lines.append,
            summary_interval_s=0.1,
            write_serve_file=False,
        )
        async with HubService(config) as hub:
            await hub.wait_ready()
            await wait_for(lambda: any("devices online" in line for line in lines))
    # A summary may come first: the interval (0.1 s) can run out while the hub connects.
    said = [line for line in _broker_lines(lines) if "devices online" not in line]
    assert said[0].startswith("edge-hub serve: connected to the broker")
    assert "0 of 2 devices online" in next(line for line in lines if "online" in line)


def test_serve_q_makes_no_status_lines(setup: HubSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    async def fake_serve(config: object, status_lines: object, *, quiet: bool) -> int:
        seen.append((config, quiet))
        return 0

    monkeypatch.setattr(fabric, "_serve", fake_serve)
    assert hub_main(["serve", "-q", "--hub-dir", str(setup.path), "--port", "0"]) == 0
    assert hub_main(["serve", "--hub-dir", str(setup.path), "--port", "0"]) == 0
    (quiet_config, quiet), (loud_config, loud) = seen
    assert (quiet_config.status_lines, quiet) == (None, True)  # type: ignore[attr-defined]
    assert loud_config.status_lines is not None and not loud  # type: ignore[attr-defined]

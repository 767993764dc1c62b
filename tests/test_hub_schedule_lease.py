"""One scheduler at a time: of several hubs on one registry only the holder of the schedule
lease publishes freshness (and the rest the schedule signs), another takes over within one
freshness interval when it dies, and one that lost the lease publishes nothing of the round
it was in. Schedule-level tests run on both registry backends; the process-level test runs
two ``edge-hub serve`` on one ``hub.db`` and a Mosquitto broker (serve opens only the hub
directory's SQLite registry)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import psycopg
import pytest

from edge_agent.protocol import topics
from edge_agent.support.mqtt import Connection, Incoming
from hub.cli.fabric import prepare_push
from hub.core.publications import parse_channel
from hub.hubdir.layout import HubDir
from hub.registry import (
    PublishedBundle,
    Registry,
    RegistryError,
    ScheduleLeaseClaim,
    ScheduleLeaseExhausted,
    ScheduleLeaseHolder,
)
from hub.registry.backends import open_registry
from hub.registry.lease_sql import MAX_TOKEN
from hub.registry.search_months import months_ahead
from hub.service import schedule as schedule_module
from hub.service.config import HubConfig, HubStats
from hub.service.connection import Subscriptions
from hub.service.context import ServiceContext, wall
from hub.service.lease import MIN_LEASE_TTL_S, LeaseTiming, ScheduleLease, lease_timing
from hub.service.schedule import Schedule
from tests.brokers import mosquitto_broker
from tests.hub_support import WAIT_S, HubSetup, make_bundle, make_hub_dir, wait_for, watching

LINE_A = parse_channel("group/line-a")
FRESHNESS = topics.freshness_topic("eu-1", LINE_A)


@dataclass
class RecordingConnection:
    """Records every (topic, payload) published; subscriptions are accepted and ignored."""

    published: list[tuple[str, bytes]] = field(default_factory=list)

    async def publish(self, topic: str, payload: bytes, **options: object) -> None:
        self.published.append((topic, payload))

    async def subscribe(self, filters: object, **options: object) -> None:
        return None

    def freshness(self) -> int:
        return sum(1 for topic, _ in self.published if topic == FRESHNESS)


@dataclass
class ScheduledHub:
    """One hub's schedule on its own registry handle, publishing on its own connection."""

    schedule: Schedule
    conn: RecordingConnection
    lines: list[str]

    @property
    def lease(self) -> ScheduleLease:
        return self.schedule.lease

    async def tick(self) -> None:
        await self.schedule.tick(cast(Connection, self.conn))


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    return make_hub_dir(tmp_path / "hub")


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, setup: HubSetup) -> Path | str:
    """Where the hubs' registry is: the hub directory's ``hub.db``, or a PostgreSQL one."""
    if request.param == "sqlite":
        return setup.registry
    url: str = request.getfixturevalue("postgres_url")
    return url


@contextlib.contextmanager
def _hub(
    setup: HubSetup, location: Path | str, holder: str, interval_s: float = 10.0
) -> Iterator[ScheduledHub]:
    config = HubConfig(setup.path, registry=setup.url, freshness_interval_s=interval_s)
    hub_dir = HubDir(setup.path, setup.url)
    with open_registry(location) as registry:
        context = ServiceContext.start(
            config, hub_dir, registry, hub_dir.load_keys(), HubStats(), None
        )
        lines: list[str] = []
        lease = ScheduleLease(registry, holder, lease_timing(interval_s), lines.append)
        try:
            yield ScheduledHub(
                Schedule(context, Subscriptions(registry, context.db, context.stats), lease),
                RecordingConnection(),
                lines,
            )
        finally:
            context.db.close()


def _push(setup: HubSetup, location: Path | str) -> None:
    """A bundle current on eu-1's line-a channel (its freshness token is what is counted)."""
    if isinstance(location, Path):
        prepare_push(HubDir(setup.path, setup.url), make_bundle(setup.keys, 1), now=wall())
        return
    with open_registry(location) as registry:
        bundle = PublishedBundle("eu-1", str(LINE_A), 1, b"\x01" * 32, b"b", wall() + 3600, None, 0)
        registry.record_bundle(
            bundle=bundle,
            issued_at=wall(),
            target={},
            channels=[str(LINE_A)],
        )


@pytest.mark.asyncio
async def test_of_two_hubs_on_one_registry_only_the_lease_holder_publishes_each_round(
    setup: HubSetup, location: Path | str
) -> None:
    _push(setup, location)
    with _hub(setup, location, "hub-a") as a, _hub(setup, location, "hub-b") as b:
        await a.schedule.publish_all(cast(Connection, a.conn))
        await b.schedule.publish_all(cast(Connection, b.conn))
        for _ in range(3):
            await a.tick()
            await b.tick()
        assert a.conn.freshness() == 4 and b.conn.freshness() == 0
        assert b.conn.published == []
        assert a.lines == ["leads the schedule (fencing token 1): publishes freshness"]
        assert len(b.lines) == 1
        assert b.lines[0].startswith("another hub leads the schedule (hub-a, its lease ending 2")
        assert b.lines[0].endswith("Z): this one ingests and stands by")


@pytest.mark.asyncio
async def test_when_the_leader_stops_renewing_another_publishes_within_one_interval(
    setup: HubSetup, location: Path | str
) -> None:
    interval = 6.0  # a lease of 3 s, claimed every second: a handover within 4 s
    _push(setup, location)
    with (
        _hub(setup, location, "hub-a", interval) as a,
        _hub(setup, location, "hub-b", interval) as b,
    ):
        await a.tick()
        led = a.lease.token
        assert led is not None and a.conn.freshness() == 1
        # hub-a dies here: it renews nothing more and releases nothing.
        stop = asyncio.Event()
        standby = asyncio.create_task(b.schedule.run(lambda: cast(Connection, b.conn), stop))
        try:
            await wait_for(lambda: b.conn.freshness() > 0, timeout=interval)
        finally:
            stop.set()
            await standby
        assert b.lines[-2:] == [
            f"leads the schedule (fencing token {led + 1}): publishes freshness",
            "released the schedule lease",
        ]
        assert (a.lease.claim(wall()) or 0) > led + 1


@pytest.mark.asyncio
async def test_a_leader_that_loses_the_lease_during_its_round_publishes_none_of_it(
    setup: HubSetup, location: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _push(setup, location)
    with _hub(setup, location, "hub-a") as a, _hub(setup, location, "hub-b") as b:
        await a.tick()
        sign = schedule_module.issue_freshness

        def paused_while_signing(registry: Registry, **options: object) -> object:
            # hub-a pauses here until its lease ran out and hub-b took it.
            ttl = a.lease.timing.ttl_s
            assert b.lease.claim(wall() + ttl) is not None
            return sign(registry, **options)  # type: ignore[arg-type]

        monkeypatch.setattr(schedule_module, "issue_freshness", paused_while_signing)
        await a.tick()
        assert a.conn.freshness() == 1 and not a.lease.leading
        # The claim that found the lease lost names who took it (the claim returns it).
        assert a.lines[-1].startswith("another hub leads the schedule (hub-b, its lease ending ")
        assert a.lines[-1].endswith("): this one ingests and stands by")


@pytest.mark.asyncio
async def test_a_leader_that_lost_and_regained_the_lease_publishes_nothing_signed_before(
    setup: HubSetup, location: Path | str
) -> None:
    with _hub(setup, location, "hub-a") as a, _hub(setup, location, "hub-b") as b:
        first = a.lease.claim(wall())
        assert first is not None
        taken = b.lease.claim(wall() + a.lease.timing.ttl_s)
        b.lease.release()
        assert taken == first + 1
        assert not a.lease.holds(first, wall())
        assert a.lease.token == first + 2 and a.lease.holds(first + 2, wall())


@pytest.mark.asyncio
async def test_a_leader_without_its_broker_leaves_the_lease_to_run_out_and_reclaims_it(
    setup: HubSetup, location: Path | str
) -> None:
    with _hub(setup, location, "hub-a", 0.3) as a, _hub(setup, location, "hub-b", 0.3) as b:
        # b and a ask at the moment a claimed: the lease was left to run out, not released,
        # whatever time the run below takes on a loaded machine.
        claimed_at = wall()
        await a.tick()
        led = a.lease.token
        stop = asyncio.Event()
        offline = asyncio.create_task(a.schedule.run(lambda: None, stop))
        try:
            await wait_for(lambda: not a.lease.leading)
        finally:
            stop.set()
            await offline
        assert a.lines[-1] == "without the broker: leaves the schedule lease to run out"
        assert b.lease.claim(claimed_at) is None
        assert a.lease.claim(claimed_at) == led


class UnreachableRegistry:
    """A registry whose server is away until ``back`` is set (only the lease is asked)."""

    def __init__(self) -> None:
        self.back = False

    def claim_schedule_lease(self, holder: str, now: int, ttl_s: int) -> ScheduleLeaseClaim:
        if not self.back:
            raise RegistryError("cannot connect to the hub registry: connection refused")
        return ScheduleLeaseClaim(7, None)

    def schedule_lease(self) -> ScheduleLeaseHolder | None:
        if not self.back:
            raise RegistryError("cannot connect to the hub registry: connection refused")
        return None

    def release_schedule_lease(self, holder: str) -> None:
        return None


class ClaimOnlyRegistry:
    """A registry answering claims only: reading the lease on its own fails the test."""

    def __init__(self, claim: ScheduleLeaseClaim) -> None:
        self.claim = claim

    def claim_schedule_lease(self, holder: str, now: int, ttl_s: int) -> ScheduleLeaseClaim:
        return self.claim

    def schedule_lease(self) -> ScheduleLeaseHolder | None:
        raise AssertionError("the lease was read apart from the claim")


def test_a_standby_names_the_leader_from_its_claim_alone() -> None:
    held = ScheduleLeaseHolder("hub-a", 4, 1_800_000_000)
    lines: list[str] = []
    registry = ClaimOnlyRegistry(ScheduleLeaseClaim(None, held))
    lease = ScheduleLease(cast(Registry, registry), "hub-b", lease_timing(10), lines.append)
    assert lease.claim(1_799_999_990) is None
    assert lines == [
        "another hub leads the schedule (hub-a, its lease ending 2027-01-15T08:00:00Z): "
        "this one ingests and stands by"
    ]


def test_a_hub_that_cannot_reach_the_registry_stops_scheduling_and_says_so_once() -> None:
    registry = UnreachableRegistry()
    lines: list[str] = []
    lease = ScheduleLease(cast(Registry, registry), "hub-a", lease_timing(10), lines.append)
    assert lease.claim(wall()) is None and lease.claim(wall()) is None and not lease.leading
    assert lines == [
        "registry unreachable: not scheduling (agents keep their last freshness until max_offline)"
    ]
    registry.back = True
    assert lease.claim(wall()) == 7
    assert lines[1:] == [
        "registry reachable again",
        "leads the schedule (fencing token 7): publishes freshness",
    ]


@pytest.mark.parametrize("interval", [2.7, 3, 4, 5, 10, 30, 60, 600])
def test_a_dead_leaders_lease_is_taken_within_one_freshness_interval(interval: float) -> None:
    timing = lease_timing(interval)
    assert timing.handover_s < interval
    assert timing.ttl_s >= MIN_LEASE_TTL_S and timing.check_s * 3 == timing.ttl_s


def test_under_three_seconds_the_shortest_lease_sets_the_handover() -> None:
    assert lease_timing(0.3) == LeaseTiming(MIN_LEASE_TTL_S, MIN_LEASE_TTL_S / 3)


# Two edge-hub serve processes on one hub directory and one broker.


@dataclass
class ServeProcess:
    """An ``edge-hub serve`` subprocess and the status lines it printed so far."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def leads(self) -> bool:
        return any("leads the schedule (fencing" in line for line in self.lines)

    def stands_by(self) -> bool:
        return any("another hub leads the schedule" in line for line in self.lines)


def _read_lines(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


@contextlib.contextmanager
def _serve(setup: HubSetup, broker_url: str, interval: float) -> Iterator[ServeProcess]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub.cli.main",
            "serve",
            "--hub-dir",
            str(setup.path),
            "--broker",
            broker_url,
            "--freshness-interval",
            f"{interval:g}s",
            "--token-ttl",
            "60s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    serve = ServeProcess(process)
    assert process.stdout is not None
    reader = threading.Thread(target=_read_lines, args=(process.stdout, serve.lines), daemon=True)
    reader.start()
    try:
        yield serve
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        reader.join(timeout=5)


async def _arrivals(messages: asyncio.Queue[Incoming], seconds: float) -> int:
    """How many messages arrive within ``seconds`` (the queue drained first)."""
    while not messages.empty():
        messages.get_nowait()
    await asyncio.sleep(seconds)
    return messages.qsize()


@contextlib.asynccontextmanager
async def _two_serves(
    setup: HubSetup, broker_url: str, interval: float
) -> AsyncIterator[tuple[ServeProcess, ServeProcess]]:
    with _serve(setup, broker_url, interval) as first:
        await wait_for(first.leads, timeout=WAIT_S)
        with _serve(setup, broker_url, interval) as second:
            await wait_for(second.stands_by, timeout=WAIT_S)
            yield first, second


@pytest.mark.asyncio
async def test_of_two_serves_one_publishes_freshness_and_the_other_within_an_interval_of_its_kill(
    setup: HubSetup,
) -> None:
    interval = 6.0  # a lease of 3 s, claimed every second: a handover within 4 s
    prepare_push(HubDir(setup.path, setup.url), make_bundle(setup.keys, 1), now=wall())
    async with (
        mosquitto_broker() as broker,
        _two_serves(setup, broker.url, interval) as (leader, standby),
        watching(broker.settings, [FRESHNESS]) as watcher,
    ):
        rounds = 2
        arrived = await _arrivals(watcher.queue, rounds * interval)
        assert rounds - 1 <= arrived <= rounds + 1
        os.kill(leader.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        await _arrivals(watcher.queue, 0)
        await watcher.next(FRESHNESS, timeout=interval)
        assert time.monotonic() - killed < interval
        await wait_for(standby.leads)


def test_a_lease_a_clock_far_ahead_wrote_is_taken_over_with_a_warning_naming_its_holder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines: list[str] = []
    now = int(wall())
    with open_registry(tmp_path / "hub.db") as registry:
        forged = registry.claim_schedule_lease("hub-ahead", now + 10 * 365 * 86400, 5).token
        lease = ScheduleLease(registry, "hub-a", lease_timing(10), lines.append)
        with caplog.at_level("WARNING", logger="hub.service.lease"):
            token = lease.claim(now)
    assert token is not None and forged is not None and token > forged
    assert lines == [f"leads the schedule (fencing token {token}): publishes freshness"]
    warning = next(r.getMessage() for r in caplog.records if "took over" in r.getMessage())
    assert (
        "hub-ahead" in warning
        and time.strftime("%Y", time.gmtime(now + 10 * 365 * 86400)) in warning
    )


def _tamper(location: Path | str, sql: str) -> None:
    """Change the schedule lease row behind every hub's back."""
    if isinstance(location, Path):
        with contextlib.closing(sqlite3.connect(location)) as db, db:
            db.execute(sql)
    else:
        with psycopg.connect(location, autocommit=True) as db:
            db.execute(sql)


@pytest.mark.parametrize("released", [False, True], ids=["expired", "released"])
def test_a_lease_row_at_the_largest_token_is_refused_by_name_and_the_hub_does_not_schedule(
    setup: HubSetup,
    location: Path | str,
    released: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = int(wall())
    holder = "" if released else "hub-x"
    with open_registry(location) as registry:
        assert registry.claim_schedule_lease("hub-x", now - 100, 5).token == 1
        _tamper(
            location,
            f"UPDATE schedule_lease SET token = {MAX_TOKEN}, holder = '{holder}', "
            f"expires_at = {0 if released else now - 50}",
        )
        with pytest.raises(ScheduleLeaseExhausted, match="table schedule_lease, name 'schedule'"):
            registry.claim_schedule_lease("hub-b", now, 5)
        assert registry.schedule_lease() == ScheduleLeaseHolder(
            holder, MAX_TOKEN, 0 if released else now - 50
        )
        lines: list[str] = []
        lease = ScheduleLease(registry, "hub-b", lease_timing(10), lines.append)
        with caplog.at_level("DEBUG", logger="hub.service.lease"):
            assert lease.claim(now) is None and lease.claim(now + 1) is None
        assert not lease.leading
        assert lines == [
            "schedule lease row unusable (fencing token at its largest): not scheduling; "
            "stop every hub on this registry and reset the row (see the log)"
        ]
        (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert f"holds fencing token {MAX_TOKEN}" in error and "DELETE FROM schedule_lease" in error
        assert "unreachable" not in " ".join(r.getMessage() for r in caplog.records)
        _tamper(location, "DELETE FROM schedule_lease WHERE name = 'schedule'")
        assert lease.claim(now + 2) == 1
        assert lines[-1] == "leads the schedule (fencing token 1): publishes freshness"


def test_the_holder_of_a_lease_at_the_largest_token_keeps_renewing_it(
    location: Path | str,
) -> None:
    now = int(wall())
    with open_registry(location) as registry:
        assert registry.claim_schedule_lease("hub-x", now, 5).token == 1
        _tamper(location, f"UPDATE schedule_lease SET token = {MAX_TOKEN}")
        assert registry.claim_schedule_lease("hub-x", now + 1, 5).token == MAX_TOKEN
        assert registry.claim_schedule_lease("hub-b", now + 2, 5).token is None


def _holds_table(url: str, name: str) -> bool:
    """Whether the database holds ``name`` (read without opening the registry, which
    would make the months)."""
    with psycopg.connect(url) as db:
        return db.execute("SELECT to_regclass(%s)", (name,)).fetchone() != (None,)


@pytest.mark.asyncio
async def test_the_leader_makes_the_coming_months_of_the_lineage_search_and_a_standby_not(
    setup: HubSetup, postgres_url: str
) -> None:
    ahead = months_ahead(wall())[-1].partition("lineage_search")
    with _hub(setup, postgres_url, "hub-a") as a, _hub(setup, postgres_url, "hub-b") as b:
        await a.schedule.publish_all(cast(Connection, a.conn))
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute(f"DROP TABLE {ahead}")
        await b.tick()
        assert not _holds_table(postgres_url, ahead)
        await a.tick()
        assert _holds_table(postgres_url, ahead)

"""The hub stores incoming messages in bursts: one transaction, nothing awaited inside it,
and what a burst publishes goes out only once it is committed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edge_agent.protocol import topics
from edge_agent.protocol.topics import DeviceLeaf
from edge_agent.support.mqtt import Incoming
from hub.registry import RegistryError
from hub.service import intake
from hub.service.server import HubService
from tests.hub_support import HubSetup, make_hub_dir
from tests.witness_support import RecordingConnection, started_hub

pytestmark = pytest.mark.asyncio


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    hub = make_hub_dir(tmp_path / "hub")
    for sim in hub.devices.values():
        sim.add(30)
    return hub


@pytest.fixture
def service(setup: HubSetup) -> Iterator[HubService]:
    with started_hub(setup) as started:
        yield started.service


async def _consume(service: HubService, connection: RecordingConnection) -> None:
    await service._started.intake.consume(connection)  # type: ignore[arg-type]


def _topic(device_id: str, leaf: DeviceLeaf) -> str:
    return topics.device_topic("eu-1", device_id, leaf)


def _batches(setup: HubSetup) -> list[Incoming]:
    return [
        Incoming(_topic(device_id, DeviceLeaf.LINEAGE), sim.batch(start, stop), False)
        for device_id, sim in setup.devices.items()
        for start, stop in ((0, 10), (10, 30))
    ]


async def test_a_burst_is_stored_in_one_transaction_and_acked_after_it(
    service: HubService, setup: HubSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A group is cut after GROUP_MAX_S (0.2 s): a CI machine storing these four batches on
    # PostgreSQL took longer once and made two groups. The cut is not what this pins.
    monkeypatch.setattr(intake, "GROUP_MAX_S", 60.0)
    connection = RecordingConnection(_batches(setup))
    groups = 0
    write_group = service.registry.write_group

    @contextmanager
    def counted() -> Iterator[None]:
        nonlocal groups
        groups += 1
        with write_group():
            yield

    service.registry.write_group = counted  # type: ignore[method-assign]
    await _consume(service, connection)
    assert groups == 1
    assert sorted(connection.published_topics) == [
        _topic(device_id, DeviceLeaf.ACK) for device_id in sorted(setup.devices)
    ]
    assert {d: service.registry.lineage_state(d).size for d in setup.devices} == {
        "gw-001": 30,
        "gw-002": 30,
    }


async def test_a_burst_whose_commit_fails_publishes_nothing_and_stores_nothing(
    service: HubService, setup: HubSetup
) -> None:
    connection = RecordingConnection(_batches(setup))
    write_group = service.registry.write_group

    @contextmanager
    def failing_commit() -> Iterator[None]:
        with write_group():
            yield
            raise RegistryError("database or disk is full")

    service.registry.write_group = failing_commit  # type: ignore[method-assign]
    await _consume(service, connection)
    assert connection.published == []
    assert service.registry.lineage_state("gw-001").size == 0
    service.registry.write_group = write_group  # type: ignore[method-assign]
    retry = RecordingConnection(_batches(setup)[:1])
    await _consume(service, retry)
    assert retry.published_topics == [_topic("gw-001", DeviceLeaf.ACK)]


@pytest.mark.sqlite_only("watches the SQLite registry's write lock (SqliteRegistry._grouped)")
async def test_no_other_registry_operation_runs_while_a_burst_holds_the_write_lock(
    service: HubService, setup: HubSetup
) -> None:
    """Other tasks run on the loop meanwhile (the burst is on the registry gateway's
    worker), but what they ask of the registry waits for the burst to commit."""
    seen_grouped: list[bool] = []
    db = service._started.context.db

    def grouped() -> bool:
        return bool(service.registry._grouped)  # type: ignore[attr-defined]

    async def other_task() -> None:
        for _ in range(50):
            seen_grouped.append(await db(grouped))
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await _consume(service, RecordingConnection(_batches(setup) * 3))
    await other
    assert seen_grouped and not any(seen_grouped)

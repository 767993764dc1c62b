"""A round clearing strays reads only the devices its stray acks name: it runs after every
push or revocation published by another command, on the registry worker the intake uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.protocol import topics
from edge_agent.protocol.shipping import verify_ack
from edge_agent.protocol.topics import DeviceLeaf
from edge_agent.support.mqtt import Incoming
from hub.registry import DeviceRecord
from hub.service.context import Devices
from hub.service.schedule import MAX_STRAY_LOOKUPS
from hub.service.server import HubService
from tests.hub_support import HubSetup, make_hub_dir
from tests.witness_support import RecordingConnection, started_hub

pytestmark = pytest.mark.asyncio


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    hub = make_hub_dir(tmp_path / "hub")
    hub.devices["gw-001"].add(5)
    return hub


@pytest.fixture
def service(setup: HubSetup) -> Iterator[HubService]:
    with started_hub(setup) as started:
        yield started.service


async def _ship_five_entries(service: HubService, setup: HubSetup) -> None:
    """gw-001's first five entries, stored and acked by the hub."""
    lineage = topics.device_topic("eu-1", "gw-001", DeviceLeaf.LINEAGE)
    batch = Incoming(lineage, setup.devices["gw-001"].batch(0, 5), False)
    await service._started.intake.consume(RecordingConnection([batch]))  # type: ignore[arg-type]


async def test_a_stray_round_restores_a_registered_devices_ack_without_the_device_table(
    service: HubService, setup: HubSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _ship_five_entries(service, setup)

    def unused(self: Devices, *args: object) -> None:
        raise AssertionError("a stray round read the devices known in memory or all of them")

    monkeypatch.setattr(Devices, "refresh", unused)
    monkeypatch.setattr(Devices, "cached", unused)
    ack_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.ACK)
    ack_ghost = topics.device_topic("eu-1", "gw-999", DeviceLeaf.ACK)
    ack_elsewhere = topics.device_topic("us-1", "gw-001", DeviceLeaf.ACK)
    challenge_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.CHALLENGE)
    schedule = service._started.schedule
    foreign, publications = await service._started.context.db(
        schedule._replacements, {ack_1, ack_ghost, ack_elsewhere, challenge_1}
    )
    assert foreign == sorted({ack_1, ack_ghost, ack_elsewhere, challenge_1})
    replaced = {p.topic: p.payload for p in publications}
    assert verify_ack(replaced.pop(ack_1), root=setup.root, device="gw-001").acked == 5
    assert replaced == {ack_ghost: b"", ack_elsewhere: b"", challenge_1: b""}


async def test_a_flood_of_stray_acks_naming_made_up_devices_costs_a_bounded_number_of_reads(
    service: HubService, setup: HubSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _ship_five_entries(service, setup)
    registry = service._started.context.registry
    reads: list[str] = []
    device, devices = registry.device, registry.devices

    def counted_device(device_id: str) -> DeviceRecord | None:
        reads.append(device_id)
        return device(device_id)

    def counted_devices() -> list[DeviceRecord]:
        reads.append("*")
        return devices()

    monkeypatch.setattr(registry, "device", counted_device)
    monkeypatch.setattr(registry, "devices", counted_devices)
    ack_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.ACK)
    made_up = {
        topics.device_topic("eu-1", f"ghost-{n:05}", DeviceLeaf.ACK)
        for n in range(MAX_STRAY_LOOKUPS + 1)
    }
    foreign, publications = await service._started.context.db(
        service._started.schedule._replacements, {ack_1, *made_up}
    )
    assert len(reads) <= MAX_STRAY_LOOKUPS
    assert foreign == sorted({ack_1, *made_up})
    replaced = {p.topic: p.payload for p in publications}
    assert verify_ack(replaced.pop(ack_1), root=setup.root, device="gw-001").acked == 5
    assert set(replaced.values()) == {b""}

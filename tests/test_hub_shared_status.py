"""Statuses through shared subscriptions (real Mosquitto): several hub processes divide the
verification of device statuses between them, and a hub that connects reads what the broker
retained meanwhile (every device's last status, a dead device's last will) through a direct
subscription it holds only until the retained burst is over. On the embedded broker, which
has no shared subscriptions, every hub subscribes to status directly, as before."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edge_agent.protocol import topics
from edge_agent.protocol.shipping import DeviceStatus, sign_status
from edge_agent.protocol.topics import DeviceLeaf
from edge_agent.support.mqtt import BrokerSettings, connect
from hub.service import connection
from hub.service.config import HubStats
from hub.service.connection import Subscriptions
from hub.service.server import HubService
from tests.brokers import amqtt_broker, mosquitto_broker
from tests.hub_support import HubSetup, hub_config, make_hub_dir, wait_for, watching

DEVICES = 40
REGION = "eu-1"
STATUS_FILTER = f"{topics.PREFIX}/{REGION}/device/+/{DeviceLeaf.STATUS}"


def _ids(count: int) -> list[str]:
    return [f"gw-{n:03d}" for n in range(count)]


def _status_topic(device_id: str) -> str:
    return topics.device_topic(REGION, device_id, DeviceLeaf.STATUS)


def _status(
    setup: HubSetup, device_id: str, at: int, *, online: bool = True, gate: str = "ok"
) -> bytes:
    status = DeviceStatus(device_id, at, online, 1, at + 3600, gate, 0, 0)
    return sign_status(status, setup.devices[device_id].key)


def _verified(hub: HubService) -> int:
    """Statuses this hub verified: recorded, or not newer than the one held."""
    return hub.stats.statuses + hub.stats.stale_statuses


def _mqtt_string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def _remaining_length(length: int) -> bytes:
    encoded = bytearray()
    while True:
        length, digit = length >> 7, length & 0x7F
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


async def _die_leaving_a_will(settings: BrokerSettings, device_id: str, will: bytes) -> None:
    """Connect as ``device_id`` with a retained QoS 1 last will, then drop the TCP connection
    without a DISCONNECT: the broker publishes the will (as a device losing power)."""
    flags = 0x02 | 0x04 | 0x08 | 0x20  # clean session, will, will QoS 1, will retained
    body = (
        _mqtt_string("MQTT")
        + bytes([4, flags])
        + (60).to_bytes(2, "big")
        + _mqtt_string(device_id)
        + _mqtt_string(_status_topic(device_id))
        + _mqtt_string(will)
    )
    reader, writer = await asyncio.open_connection(settings.host, settings.port)
    writer.write(bytes([0x10]) + _remaining_length(len(body)) + body)
    assert (await reader.readexactly(4))[3] == 0, "the broker refused the device"
    writer.transport.abort()


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    return make_hub_dir(tmp_path / "hub", [(d, "line-a") for d in _ids(DEVICES)])


@pytest.mark.asyncio
async def test_two_hubs_with_shared_subscriptions_verify_each_status_once_between_them(
    setup: HubSetup,
) -> None:
    now = int(time.time())
    failed = _ids(DEVICES)[-1]
    async with mosquitto_broker() as broker:
        first = HubService(hub_config(setup, broker, client_id="hub-a", write_serve_file=False))
        second = HubService(hub_config(setup, broker, client_id="hub-b", write_serve_file=False))
        async with first, second:
            await first.wait_ready()
            await second.wait_ready()
            assert first.shared and second.shared
            await wait_for(lambda: first.stats.status_reads == second.stats.status_reads == 1)
            async with connect(broker.settings, client_id="fleet") as fleet:
                for device_id in _ids(DEVICES):
                    gate = "attestation_failed" if device_id == failed else "ok"
                    payload = _status(setup, device_id, now, gate=gate)
                    await fleet.publish(_status_topic(device_id), payload, retain=True)
                await wait_for(lambda: first.stats.statuses + second.stats.statuses == DEVICES)
                await wait_for(
                    lambda: first.stats.challenges_sent + second.stats.challenges_sent == 1
                )
                await asyncio.sleep(0.3)
            assert _verified(first) + _verified(second) == DEVICES, "each status verified once"
            assert _verified(first) > 0 and _verified(second) > 0, "each hub verified a share"
            assert first.stats.challenges_sent + second.stats.challenges_sent == 1
            fleet_rows = {row.device_id: row.online for row in first.registry.fleet()}
            assert fleet_rows == dict.fromkeys(_ids(DEVICES), True)


@pytest.mark.asyncio
async def test_a_hub_connecting_later_records_the_retained_statuses_and_a_last_will(
    setup: HubSetup,
) -> None:
    now = int(time.time())
    *alive, dead = _ids(DEVICES)
    async with mosquitto_broker() as broker:
        async with connect(broker.settings, client_id="fleet") as fleet:
            for device_id in alive:
                await fleet.publish(
                    _status_topic(device_id), _status(setup, device_id, now), retain=True
                )
        will = _status(setup, dead, now, online=False)
        await _die_leaving_a_will(broker.settings, dead, will)
        async with watching(broker.settings, [_status_topic(dead)], "watcher") as watcher:
            assert (await watcher.next(_status_topic(dead))).payload == will
        first = HubService(hub_config(setup, broker, client_id="hub-a", write_serve_file=False))
        async with first:
            await first.wait_ready()
            assert first.shared
            await wait_for(lambda: first.stats.status_reads == 1)
            assert first.stats.statuses == DEVICES
            online = {row.device_id: row.online for row in first.registry.fleet()}
            assert online == {**dict.fromkeys(alive, True), dead: False}
            second = HubService(
                hub_config(setup, broker, client_id="hub-b", write_serve_file=False)
            )
            async with second:
                await second.wait_ready()
                await wait_for(lambda: second.stats.status_reads == 1)
                # Read again (Mosquitto 2.0.11 also sends retained messages to a new shared
                # subscription, against MQTT 5 section 4.8.2): nothing newer, nothing recorded.
                assert second.stats.statuses == 0 and second.stats.stale_statuses >= DEVICES
                before = _verified(first) + _verified(second)
                async with connect(broker.settings, client_id="fleet") as fleet:
                    for device_id in alive:
                        payload = _status(setup, device_id, now + 1)
                        await fleet.publish(_status_topic(device_id), payload, retain=True)
                    await wait_for(
                        lambda: first.stats.statuses + second.stats.statuses == 2 * DEVICES - 1
                    )
                await asyncio.sleep(0.3)
                assert _verified(first) + _verified(second) - before == len(alive)


@pytest.mark.asyncio
async def test_on_the_embedded_broker_every_hub_subscribes_to_status_directly(
    setup: HubSetup,
) -> None:
    assert topics.hub_status_reads(REGION, False) == ()
    assert STATUS_FILTER in topics.hub_subscriptions(REGION, False)
    now = int(time.time())
    device_id = _ids(1)[0]
    async with amqtt_broker() as broker:
        async with connect(broker.settings, client_id=device_id) as device:
            await device.publish(
                _status_topic(device_id), _status(setup, device_id, now), retain=True
            )
        first = HubService(hub_config(setup, broker, client_id="hub-a", write_serve_file=False))
        second = HubService(hub_config(setup, broker, client_id="hub-b", write_serve_file=False))
        async with first, second:
            await first.wait_ready()
            await second.wait_ready()
            assert not first.shared and not second.shared
            await wait_for(lambda: _verified(first) == _verified(second) == 1)
            assert first.stats.statuses + second.stats.statuses == 1
            async with connect(broker.settings, client_id=device_id) as device:
                await device.publish(_status_topic(device_id), _status(setup, device_id, now + 1))
            await wait_for(lambda: _verified(first) == _verified(second) == 2)
            assert first.stats.status_reads == second.stats.status_reads == 0


def test_with_sharing_status_is_shared_and_read_directly_only_for_what_is_retained() -> None:
    shared = topics.hub_subscriptions(REGION, True)
    direct = STATUS_FILTER
    assert f"$share/{topics.SHARED_GROUP}/{direct}" in shared
    assert direct not in shared
    assert topics.hub_status_reads(REGION, True) == (direct,)


class _Connection:
    """What :class:`Subscriptions` uses of a connection, recording what it asks for; the
    test moves ``retained_at`` as a broker's retained burst would."""

    def __init__(self) -> None:
        self.subscribed: list[str] = []
        self.unsubscribed: list[str] = []
        self.retained_at = 0.0

    async def subscribe(self, filters: list[str]) -> None:
        self.subscribed += filters

    async def unsubscribe(self, filters: list[str]) -> None:
        self.unsubscribed += filters


class _Regions:
    def regions(self) -> list[str]:
        return [REGION]


async def _run(operation: object, *args: object) -> object:
    return operation(*args)  # type: ignore[operator]


@pytest.mark.asyncio
async def test_the_direct_status_read_ends_only_once_no_retained_message_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "RETAINED_QUIET_S", 0.2)
    stats = HubStats()
    subscriptions = Subscriptions(_Regions(), _run, stats)  # type: ignore[arg-type]
    subscriptions.shared = True
    conn = _Connection()
    await subscriptions.update(conn)  # type: ignore[arg-type]
    assert STATUS_FILTER in conn.subscribed
    assert f"$share/{topics.SHARED_GROUP}/{STATUS_FILTER}" in conn.subscribed
    reads = asyncio.create_task(subscriptions.end_reads(conn))  # type: ignore[arg-type]
    try:
        burst_ends = time.monotonic() + 0.6
        while time.monotonic() < burst_ends:
            conn.retained_at = time.monotonic()
            await asyncio.sleep(0.05)
            assert conn.unsubscribed == [], "dropped while retained messages still arrive"
        await wait_for(lambda: conn.unsubscribed == [STATUS_FILTER])
        assert time.monotonic() - conn.retained_at >= 0.2
        assert stats.status_reads == 1
        subscriptions.forget()  # a new connection reads again
        await subscriptions.update(conn)  # type: ignore[arg-type]
        await wait_for(lambda: conn.unsubscribed == [STATUS_FILTER] * 2)
    finally:
        reads.cancel()
        await asyncio.wait([reads])


@pytest.mark.asyncio
async def test_a_connection_notes_retained_arrivals_and_hears_nothing_once_unsubscribed() -> None:
    topic = _status_topic("gw-000")
    async with mosquitto_broker() as broker, connect(broker.settings, client_id="pub") as pub:
        await pub.publish(topic, b"held", retain=True)
        async with watching(broker.settings, [STATUS_FILTER], "reader") as reader:
            assert (await reader.next(topic)).retain
            noted = reader.connection.retained_at
            assert noted > 0.0
            await pub.publish(topic, b"live")
            assert not (await reader.next(topic)).retain
            assert reader.connection.retained_at == noted, "a live message is not retained"
            await reader.connection.unsubscribe([STATUS_FILTER])
            await pub.publish(topic, b"after")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await reader.next(topic)

"""The shipped Mosquitto config (packaging/mosquitto/) on a real Mosquitto, with the ACL that
``edge-hub device acl`` writes: each device is confined to its own topics in its own region,
a login cannot take another's session over, sizes and retained messages are bounded, and the
hub works through it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from edge_agent.errors import TransportError
from edge_agent.protocol import topics
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import verify_ack
from edge_agent.protocol.topics import Channel, ChannelKind, DeviceLeaf
from edge_agent.support.mqtt import MAX_MESSAGE_BYTES, MAX_PACKET_BYTES, BrokerSettings, connect
from hub.cli.mosquitto_acl import render_acl
from hub.registry import DeviceRecord
from hub.service.config import HubConfig
from hub.service.server import HubService
from tests.brokers import MosquittoBroker, shipped_mosquitto
from tests.hub_support import make_hub_dir, wait_for, watching

pytestmark = pytest.mark.asyncio

PASSWORDS = {
    "hub": "hub-secret",
    "hub-2": "hub-2-secret",
    "gw-001": "one-secret",
    "gw-002": "two-secret",
}
HUB_USERS = ("hub", "hub-2")


def _topic(device: str, leaf: DeviceLeaf, region: str = "eu-1") -> str:
    return topics.device_topic(region, device, leaf)


def _device(device_id: str, region: str = "eu-1") -> DeviceRecord:
    return DeviceRecord(
        device_id, region, ("line-a",), "generic-x86_64", PrivateKey.generate().public
    )


@pytest_asyncio.fixture
async def broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    acl = tmp_path / "edgegov.acl"
    acl.write_text(render_acl([_device("gw-001"), _device("gw-002")], HUB_USERS))
    async with shipped_mosquitto(acl, PASSWORDS) as handle:
        yield handle


def _login(broker: MosquittoBroker, user: str) -> BrokerSettings:
    return broker.settings_for(user, PASSWORDS[user])


async def _retained(broker: MosquittoBroker) -> dict[str, int]:
    """Every retained message the broker holds under edgegov/: topic -> payload size. A
    marker published after subscribing arrives after every retained message."""
    marker = f"{topics.PREFIX}/_probe/retained-marker"
    held: dict[str, int] = {}
    async with watching(_login(broker, "hub-2"), [f"{topics.PREFIX}/#"], "hub-2") as watcher:
        await watcher.connection.publish(marker, b"end")
        while (message := await watcher.next(lambda m: True)).topic != marker:
            assert message.retain
            held[message.topic] = len(message.payload)
    return held


async def test_a_device_cannot_publish_on_another_devices_or_the_hubs_topics(
    broker: MosquittoBroker,
) -> None:
    hub = broker.settings_for("hub", PASSWORDS["hub"])
    everything = [f"{topics.PREFIX}/#"]
    async with (
        watching(hub, everything, "hub") as watcher,
        connect(broker.settings_for("gw-002", PASSWORDS["gw-002"]), client_id="gw-002") as gw2,
    ):
        await gw2.publish(_topic("gw-001", DeviceLeaf.LINEAGE), b"as gw-001")
        await gw2.publish(_topic("gw-001", DeviceLeaf.STATUS), b"as gw-001", retain=True)
        forged_bundle = topics.bundle_topic("eu-1", Channel(ChannelKind.GROUP, "line-a"))
        await gw2.publish(forged_bundle, b"forged bundle", retain=True)
        await gw2.publish(topics.revocation_topic("eu-1", "device", "gw-001"), b"forged")
        await gw2.publish(_topic("gw-001", DeviceLeaf.ACK), b"forged ack", retain=True)
        await gw2.publish(_topic("gw-002", DeviceLeaf.LINEAGE), b"own lineage")
        first = await watcher.next(lambda m: True)
    assert (first.topic, first.payload) == (_topic("gw-002", DeviceLeaf.LINEAGE), b"own lineage")
    assert watcher.queue.empty()


async def test_a_device_cannot_read_another_devices_acks_or_log_in_with_a_wrong_password(
    broker: MosquittoBroker,
) -> None:
    hub = broker.settings_for("hub", PASSWORDS["hub"])
    async with connect(hub, client_id="hub") as conn:
        for device in ("gw-001", "gw-002"):
            await conn.publish(_topic(device, DeviceLeaf.ACK), device.encode(), retain=True)
    gw2 = broker.settings_for("gw-002", PASSWORDS["gw-002"])
    acks = [_topic("gw-001", DeviceLeaf.ACK), _topic("gw-002", DeviceLeaf.ACK)]
    async with watching(gw2, acks, "gw-002") as watcher:
        first = await watcher.next(lambda m: True)
        assert (first.topic, first.payload) == (acks[1], b"gw-002")
        assert watcher.queue.empty()
    with pytest.raises(TransportError):
        async with connect(broker.settings_for("gw-002", "wrong"), client_id="gw-002"):
            pass
    with pytest.raises(TransportError):
        async with connect(broker.settings, client_id="anonymous"):
            pass


async def test_the_hub_works_through_the_acl_and_never_sees_a_neighbours_forgery(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    setup = make_hub_dir(tmp_path / "hub")
    victim, intruder = setup.devices["gw-001"], setup.devices["gw-002"]
    victim.add(4)
    intruder.add(4)
    config = HubConfig(
        setup.path,
        registry=setup.url,
        broker=broker.settings_for("hub", PASSWORDS["hub"]),
        freshness_interval_s=0.5,
        token_ttl_s=5,
    )
    own_ack = _topic("gw-002", DeviceLeaf.ACK)
    async with HubService(config) as hub:
        await hub.wait_ready()
        assert hub.shared
        gw2 = broker.settings_for("gw-002", PASSWORDS["gw-002"])
        async with watching(gw2, [own_ack], "gw-002") as watcher:
            await watcher.connection.publish(
                _topic("gw-001", DeviceLeaf.LINEAGE), victim.batch(0, 4, key=intruder.key)
            )
            await watcher.connection.publish(
                _topic("gw-002", DeviceLeaf.LINEAGE), intruder.batch(0, 4)
            )
            ack = verify_ack(
                (await watcher.next(own_ack)).payload, root=setup.root, device="gw-002"
            )
        assert ack.acked == 4
        await wait_for(lambda: hub.stats.batches_accepted == 1)
        assert hub.stats.rejections == {}
        assert hub.registry.lineage_state("gw-001").size == 0


async def test_a_login_cannot_take_over_another_devices_session_with_its_client_id(
    broker: MosquittoBroker,
) -> None:
    lineage = [_topic("gw-001", DeviceLeaf.LINEAGE), _topic("gw-002", DeviceLeaf.LINEAGE)]
    async with (
        watching(_login(broker, "hub"), lineage, "hub") as watcher,
        connect(_login(broker, "gw-001"), client_id="gw-001") as victim,
    ):
        async with connect(_login(broker, "gw-002"), client_id="gw-001") as intruder:
            await intruder.publish(lineage[1], b"intruder")
        await victim.publish(lineage[0], b"victim still connected")
        assert (await watcher.next(lineage[1])).payload == b"intruder"
        assert (await watcher.next(lineage[0])).payload == b"victim still connected"


async def test_a_hub_process_under_its_own_username_does_not_displace_another(
    broker: MosquittoBroker,
) -> None:
    probe = f"{topics.PREFIX}/_probe/two-hubs"
    async with (
        watching(_login(broker, "hub"), [probe], "edge-hub-a") as first,
        watching(_login(broker, "hub-2"), [probe], "edge-hub-a") as second,
    ):
        await first.connection.publish(probe, b"from the first hub")
        assert (await second.next(probe)).payload == b"from the first hub"
        assert (await first.next(probe)).payload == b"from the first hub"


async def test_a_device_cannot_publish_retained_status_under_another_region(
    broker: MosquittoBroker,
) -> None:
    async with connect(_login(broker, "gw-002"), client_id="gw-002") as gw2:
        for region in ("eu-2", "us-1", "ap-9"):
            await gw2.publish(
                _topic("gw-002", DeviceLeaf.STATUS, region), b"elsewhere", retain=True
            )
        await gw2.publish(_topic("gw-002", DeviceLeaf.STATUS), b"home", retain=True)
    assert await _retained(broker) == {_topic("gw-002", DeviceLeaf.STATUS): 4}


async def test_a_publish_over_the_packet_limit_is_refused_and_a_10000_rule_bundle_fits(
    broker: MosquittoBroker,
) -> None:
    bundle_topic = topics.bundle_topic("eu-1", Channel(ChannelKind.GROUP, "line-a"))
    async with connect(_login(broker, "hub"), client_id="hub") as hub:
        await hub.publish(bundle_topic, b"b" * MAX_MESSAGE_BYTES, retain=True)
    with pytest.raises(TransportError):
        async with connect(_login(broker, "gw-002"), client_id="gw-002") as gw2:
            await gw2.publish(
                _topic("gw-002", DeviceLeaf.STATUS), b"s" * (MAX_PACKET_BYTES + 1), retain=True
            )
    assert await _retained(broker) == {bundle_topic: MAX_MESSAGE_BYTES}


async def test_a_retained_flood_from_a_device_leaves_at_most_its_own_three_topics(
    broker: MosquittoBroker,
) -> None:
    payload = b"f" * (256 * 1024)
    own = {
        _topic("gw-002", leaf)
        for leaf in (DeviceLeaf.STATUS, DeviceLeaf.LINEAGE, DeviceLeaf.EVIDENCE)
    }
    async with connect(_login(broker, "gw-002"), client_id="gw-002") as gw2:
        for region in (f"r-{n}" for n in range(20)):
            await gw2.publish(_topic("gw-002", DeviceLeaf.STATUS, region), payload, retain=True)
        for leaf in DeviceLeaf:
            await gw2.publish(_topic("gw-002", leaf), payload, retain=True)
            await gw2.publish(_topic("gw-001", leaf), payload, retain=True)
        for _ in range(3):
            for topic in own:
                await gw2.publish(topic, payload, retain=True)
    assert await _retained(broker) == dict.fromkeys(own, len(payload))


async def test_a_device_reads_the_shadows_of_its_channels_only_and_cannot_forge_one(
    broker: MosquittoBroker,
) -> None:
    own = topics.shadow_topic("eu-1", Channel(ChannelKind.DEVICE, "gw-002"))
    group = topics.shadow_topic("eu-1", Channel(ChannelKind.GROUP, "line-a"))
    region = topics.shadow_topic("eu-1", Channel(ChannelKind.ALL))
    neighbour = topics.shadow_topic("eu-1", Channel(ChannelKind.DEVICE, "gw-001"))
    async with connect(_login(broker, "hub"), client_id="hub") as conn:
        for topic in (neighbour, own, group, region):
            await conn.publish(topic, topic.encode(), retain=True)
    async with connect(_login(broker, "gw-002"), client_id="gw-002") as gw2:
        await gw2.publish(own, b"forged shadow", retain=True)
    gw2_settings = _login(broker, "gw-002")
    async with watching(gw2_settings, [neighbour, own, group, region], "gw-002") as watcher:
        seen = {(await watcher.next(lambda m: True)).topic for _ in range(3)}
    held = await _retained(broker)
    assert seen == {own, group, region}
    assert held[own] == len(own.encode())

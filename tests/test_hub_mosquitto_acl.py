"""packaging/mosquitto/edgegov.acl on a real Mosquitto with a password file: each device is
confined to its own topics, and the hub works through it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from edge_agent.errors import TransportError
from edge_agent.protocol import topics
from edge_agent.protocol.shipping import verify_ack
from edge_agent.protocol.topics import Channel, ChannelKind, DeviceLeaf
from edge_agent.sync.mqtt import connect
from hub.service import HubConfig, HubService
from tests.brokers import MosquittoBroker, mosquitto_broker
from tests.hub_support import make_hub_dir, wait_for, watching

pytestmark = pytest.mark.asyncio

ACL = Path(__file__).parent.parent / "packaging" / "mosquitto" / "edgegov.acl"
PASSWORDS = {"hub": "hub-secret", "gw-001": "one-secret", "gw-002": "two-secret"}


def _topic(device: str, leaf: DeviceLeaf) -> str:
    return topics.device_topic("eu-1", device, leaf)


@pytest_asyncio.fixture
async def broker() -> AsyncIterator[MosquittoBroker]:
    async with mosquitto_broker(acl=ACL, passwords=PASSWORDS) as handle:
        yield handle


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

"""The hub attacked from the network side, by any client that reaches the broker (or a
device with stolen broker credentials), against real brokers: what it costs the hub, and
that it never turns into a deny for devices nobody attacked or a lie about liveness."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from edge_agent.protocol import topics
from edge_agent.protocol.freshness import verify_freshness
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import DeviceStatus, sign_status, verify_ack
from edge_agent.protocol.topics import Channel, ChannelKind, DeviceLeaf
from edge_agent.support.mqtt import Incoming, connect
from hub.registry import UNREGISTERED, RegistryError
from hub.service.broker_limits import BrokerLimits
from hub.service.server import HubService
from tests.brokers import AmqttHandle, amqtt_broker, mosquitto_broker
from tests.hub_support import (
    HubSetup,
    edit_registry,
    hub_config,
    make_bundle,
    make_hub_dir,
    run_cli,
    wait_for,
    watching,
)

pytestmark = pytest.mark.asyncio

GROUP = Channel(ChannelKind.GROUP, "line-a")
FRESH = topics.freshness_topic("eu-1", GROUP)
LINEAGE_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.LINEAGE)
ACK_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.ACK)
STATUS_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.STATUS)


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    return make_hub_dir(tmp_path / "hub")


FLOOD_THROUGH = BrokerLimits(device_publish_rate=1e6, device_publish_burst=1_000_000)
"""The embedded broker without its per-connection device-topic budget: these tests send a
flood through to see what the hub does with it (the budget has its own tests)."""


@pytest_asyncio.fixture
async def broker() -> AsyncIterator[AmqttHandle]:
    async with amqtt_broker(FLOOD_THROUGH) as handle:
        yield handle


async def _push(setup: HubSetup, version: int) -> bytes:
    path = setup.path / f"bundle-v{version}.cbor"
    path.write_bytes(make_bundle(setup.keys, version, max_offline="30s"))
    assert await run_cli("bundle", "push", str(path), "--hub-dir", str(setup.path)) == 0
    return path.read_bytes()


def _status(setup: HubSetup, at: int, online: bool = True) -> bytes:
    status = DeviceStatus("gw-001", at, online, 1, None, "ok", 0, 0)
    return sign_status(status, setup.devices["gw-001"].key)


# 1. Rejections of made-up devices are counted per code, never a row per id.


async def test_oversize_messages_naming_made_up_devices_add_no_row_per_id(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    fakes = 300
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        async with connect(broker.settings, client_id="intruder") as conn:
            for n in range(fakes):
                topic = topics.device_topic("eu-1", f"fake-{n}", DeviceLeaf.STATUS)
                await conn.publish(topic, b"\x00" * 4096)
            await conn.publish(STATUS_1, b"\x00" * 4096)
        await wait_for(lambda: hub.stats.rejections.get("oversize", 0) == fakes + 1)
        await hub.tick()
        rows = hub.registry.rejections()
    assert [(r.device, r.code, r.count) for r in rows] == [
        (UNREGISTERED, "oversize", fakes),
        ("gw-001", "oversize", 1),
    ]


async def test_freshness_tokens_still_go_out_when_the_registry_cannot_be_written(
    broker: AmqttHandle, setup: HubSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise RegistryError("cannot write hub.db: database or disk is full")

    await _push(setup, 1)
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        monkeypatch.setattr(hub.registry, "record_freshness", disk_full)
        monkeypatch.setattr(hub.registry, "add_rejections", disk_full)
        full_since = int(time.time())
        async with watching(broker.settings, [FRESH]) as watcher:
            await watcher.connection.publish(STATUS_1, b"\x00" * 4096)  # a rejection to flush
            tokens = []
            while len(tokens) < 2:
                message = await watcher.next(FRESH)
                token = verify_freshness(
                    message.payload, root=setup.root, region="eu-1", now=int(time.time())
                )
                if token.hub_time > full_since:
                    tokens.append(token)
        assert hub.stats.rejections == {"oversize": 1}


# 2. Traffic that does not verify never spends a device's rate budget.


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(b"\x00" * 512, id="unsigned"),
        pytest.param(b"\xd2\x84" + b"\x00" * 510, id="cose-shaped"),
    ],
)
async def test_junk_on_a_device_topic_does_not_spend_its_rate_budget(
    broker: AmqttHandle, setup: HubSetup, junk: bytes
) -> None:
    device, intruder = setup.devices["gw-001"], PrivateKey.generate()
    device.add(5)
    forged = device.batch(0, 5, key=intruder)
    async with HubService(hub_config(setup, broker, device_rate=0.01, device_burst=2)) as hub:
        await hub.wait_ready()
        async with watching(broker.settings, [ACK_1], "gw-001") as watcher:
            for _ in range(20):
                await watcher.connection.publish(LINEAGE_1, junk)
                await watcher.connection.publish(LINEAGE_1, forged)
            # All 40 handled first: refused, or dropped unread past the device's share of
            # the queue on a loaded machine, where the genuine batch behind them would be
            # dropped too (a device resends it; this test sends it once).
            await wait_for(
                lambda: sum(hub.stats.rejections.values()) + hub.stats.queue_dropped == 40
            )
            await watcher.connection.publish(LINEAGE_1, device.batch(0, 5))
            ack = verify_ack((await watcher.next(ACK_1)).payload, root=setup.root, device="gw-001")
        assert ack.acked == 5
        assert "rate_limited" not in hub.stats.rejections


async def test_junk_that_only_starts_like_a_cose_sign1_is_malformed_a_forged_batch_not(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    """The same code for junk on the lineage and status topics, whether or not its first
    bytes look like a COSE_Sign1; ``impersonation`` only for a batch another key signed."""
    device = setup.devices["gw-001"]
    device.add(1)
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        async with watching(broker.settings, [ACK_1], "gw-001") as watcher:
            for topic in (LINEAGE_1, STATUS_1):
                await watcher.connection.publish(topic, b"\xd2\x84" + b"\x9f" * 64)
                await watcher.connection.publish(topic, b"\xff\x00 junk")
            await watcher.connection.publish(
                LINEAGE_1, device.batch(0, 1, key=PrivateKey.generate())
            )
            await wait_for(lambda: sum(hub.stats.rejections.values()) == 5)
    assert hub.stats.rejections == {"malformed": 4, "impersonation": 1}


async def test_past_the_verification_budget_junk_is_dropped_unchecked_and_others_still_verify(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    victim, other = setup.devices["gw-001"], setup.devices["gw-002"]
    victim.add(1)
    other.add(3)
    forged = victim.batch(0, 1, key=PrivateKey.generate())
    config = hub_config(setup, broker, unverified_topic_rate=1.0, unverified_total_rate=1.0)
    ack_2 = topics.device_topic("eu-1", "gw-002", DeviceLeaf.ACK)
    async with HubService(config) as hub:
        await hub.wait_ready()
        async with watching(broker.settings, [ack_2], "gw-002") as watcher:
            for _ in range(100):
                await watcher.connection.publish(LINEAGE_1, forged)
            # Each forged batch is refused, or (on a loaded machine, past the device's
            # share of the queue) dropped unread: either way never verified.
            await wait_for(
                lambda: sum(hub.stats.rejections.values()) + hub.stats.queue_dropped == 100
            )
            await watcher.connection.publish(
                topics.device_topic("eu-1", "gw-002", DeviceLeaf.LINEAGE), other.batch(0, 3)
            )
            ack = verify_ack((await watcher.next(ack_2)).payload, root=setup.root, device="gw-002")
        assert ack.acked == 3
        assert hub.stats.rejections["unverified_flood"] > 0


# 3. Liveness comes only from fresh signed status.


async def test_a_replayed_batch_is_acknowledged_again_but_does_not_make_the_device_look_alive(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    device = setup.devices["gw-001"]
    device.add(5)
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        async with watching(broker.settings, [ACK_1], "replayer") as watcher:
            for _ in range(2):
                await watcher.connection.publish(LINEAGE_1, device.batch(0, 5))
                ack = verify_ack(
                    (await watcher.next(ACK_1)).payload, root=setup.root, device="gw-001"
                )
                assert ack.acked == 5
        assert hub.stats.duplicates == 1
        assert hub.registry.fleet()[0].last_seen is None


@pytest.mark.parametrize("age_s", [-3600, 3600], ids=["an-hour-old", "an-hour-ahead"])
async def test_a_signed_status_far_from_hub_time_is_not_recorded(
    broker: AmqttHandle, setup: HubSetup, age_s: int
) -> None:
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        async with connect(broker.settings, client_id="replayer") as conn:
            await conn.publish(STATUS_1, _status(setup, int(time.time()) + age_s, online=False))
            await wait_for(lambda: hub.stats.stale_statuses == 1)
        row = hub.registry.fleet()[0]
        assert (row.online, row.last_seen) == (None, None)


async def test_a_fresh_status_moves_last_seen_and_a_replay_of_an_older_one_does_not(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    now = int(time.time())
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        async with connect(broker.settings, client_id="gw-001") as conn:
            await conn.publish(STATUS_1, _status(setup, now - 10))
            await wait_for(lambda: hub.stats.statuses == 1)
            # heard from long ago
            edit_registry(setup.registry, "UPDATE activity SET last_seen = 1")
            await conn.publish(STATUS_1, _status(setup, now - 20, online=False))
            await wait_for(lambda: hub.stats.stale_statuses == 1)
        row = hub.registry.fleet()[0]
        assert (row.online, row.last_seen) == (True, 1)


# 4. Retained objects on trust topics the hub does not own are cleared.


@pytest_asyncio.fixture(params=["amqtt", "mosquitto"])
async def any_broker(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    context = amqtt_broker(FLOOD_THROUGH) if request.param == "amqtt" else mosquitto_broker()
    async with context as handle:
        yield handle


async def test_retained_garbage_on_trust_topics_is_cleared_and_what_the_hub_owns_is_kept(
    any_broker: object, setup: HubSetup
) -> None:
    settings = any_broker.settings  # type: ignore[attr-defined]
    base = f"{topics.PREFIX}/eu-1"
    before = [f"{base}/revoke/device/ghost-{n}" for n in range(20)]
    after = [f"{base}/root/2", f"{base}/bundle/group/ghost", f"{base}/revoke/x/y/z"]
    trust = [f"{base}/root/+", f"{base}/bundle/#", f"{base}/revoke/#"]
    async with connect(settings, client_id="intruder") as conn:
        for topic in before:
            await conn.publish(topic, b"garbage", retain=True)
    bundle = await _push(setup, 1)
    async with HubService(hub_config(setup, any_broker)) as hub:
        await hub.wait_ready()
        await wait_for(lambda: hub.stats.strays_cleared == len(before))
        async with connect(settings, client_id="intruder") as conn:
            for topic in after:
                await conn.publish(topic, b"garbage", retain=True)
        await wait_for(lambda: hub.stats.strays_cleared == len(before) + len(after))
    held: dict[str, bytes] = {}
    marker = f"{topics.PREFIX}/test/marker"

    def collect(message: Incoming) -> bool:
        held[message.topic] = message.payload
        return message.topic == marker

    async with watching(settings, [*trust, marker], "late-agent") as late:
        await late.connection.publish(marker, b"after the retained ones")
        await late.next(collect)
    assert held[topics.bundle_topic("eu-1", GROUP)] == bundle
    assert not set(held) & set(before + after)


async def test_retained_garbage_on_tokens_and_on_device_topics_the_hub_publishes_is_cleared(
    any_broker: object, setup: HubSetup
) -> None:
    settings = any_broker.settings  # type: ignore[attr-defined]
    base = f"{topics.PREFIX}/eu-1"
    attestation_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.ATTESTATION)
    junk = [
        f"{base}/fresh/group/no-such-group",
        f"{base}/fresh/device/gw-777",
        ACK_1,
        attestation_1,
        topics.device_topic("eu-1", "gw-999", DeviceLeaf.ACK),
        topics.device_topic("eu-1", "gw-999", DeviceLeaf.CHALLENGE),
        topics.device_topic("eu-1", "gw-002", DeviceLeaf.ATTESTATION),
    ]
    watched = [f"{base}/fresh/#", f"{base}/device/+/ack", f"{base}/device/+/attestation"]
    watched.append(f"{base}/device/+/challenge")
    device = setup.devices["gw-001"]
    device.add(5)
    await _push(setup, 1)
    async with HubService(hub_config(setup, any_broker)) as hub:
        await hub.wait_ready()
        async with watching(settings, [ACK_1], "gw-001") as gw1:
            await gw1.connection.publish(LINEAGE_1, device.batch(0, 5))
            await gw1.next(ACK_1)
        async with connect(settings, client_id="intruder") as conn:
            for topic in junk:
                await conn.publish(topic, b"garbage", retain=True)
        await wait_for(lambda: hub.stats.strays_cleared >= len(junk))
    held: dict[str, bytes] = {}
    marker = f"{topics.PREFIX}/test/marker"

    def collect(message: Incoming) -> bool:
        held[message.topic] = message.payload
        return message.topic == marker

    async with watching(settings, [*watched, marker], "late-agent") as late:
        await late.connection.publish(marker, b"after the retained ones")
        await late.next(collect)
    assert {t for t, p in held.items() if p == b"garbage"} == set()
    assert verify_ack(held[ACK_1], root=setup.root, device="gw-001").acked == 5
    assert topics.freshness_topic("eu-1", GROUP) in held

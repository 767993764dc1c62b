"""The hub service against real brokers (amqtt in-process and Mosquitto): what it publishes
retained and on its schedule, what it acknowledges, refuses and counts."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import pytest_asyncio

from edge_agent.policy.bundle import compile_for_device
from edge_agent.protocol import topics
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.freshness import verify_freshness
from edge_agent.protocol.revocation import RevocationKind, verify_revocation
from edge_agent.protocol.shipping import DeviceStatus, sign_status, verify_ack
from edge_agent.protocol.topics import Channel, ChannelKind, DeviceLeaf
from edge_agent.support.mqtt import connect
from hub.registry.backends import open_registry
from hub.service.broker_limits import BrokerLimits
from hub.service.config import HubConfig
from hub.service.server import HubService
from tests.brokers import amqtt_broker, mosquitto_broker
from tests.hub_support import (
    HubSetup,
    hub_config,
    make_bundle,
    make_hub_dir,
    run_cli,
    wait_for,
    watching,
)

pytestmark = pytest.mark.asyncio

GROUP = Channel(ChannelKind.GROUP, "line-a")
GW1 = DeviceIdentity("gw-001", "eu-1", ("line-a",), "generic-x86_64")
LINEAGE_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.LINEAGE)
ACK_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.ACK)
STATUS_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.STATUS)


def _broker(kind: str) -> AbstractAsyncContextManager[object]:
    return amqtt_broker() if kind == "amqtt" else mosquitto_broker()


@pytest_asyncio.fixture(params=["amqtt", "mosquitto"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    async with _broker(request.param) as handle:
        yield handle


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    return make_hub_dir(tmp_path / "hub")


async def _push(setup: HubSetup, version: int, *extra: str, **bundle: object) -> bytes:
    path = setup.path / f"bundle-v{version}.cbor"
    path.write_bytes(make_bundle(setup.keys, version, **bundle))  # type: ignore[arg-type]
    assert await run_cli("bundle", "push", str(path), "--hub-dir", str(setup.path), *extra) == 0
    return path.read_bytes()


async def test_a_pushed_bundle_stays_retained_for_a_device_that_connects_after_the_hub_stopped(
    broker: object, setup: HubSetup
) -> None:
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        data = await _push(setup, 1)
    settings = broker.settings  # type: ignore[attr-defined]
    async with watching(settings, [topics.bundle_topic("eu-1", GROUP)], "late-device") as late:
        message = await late.next(topics.bundle_topic("eu-1", GROUP))
    assert message.retain and message.payload == data
    bundle = compile_for_device(
        message.payload, root=setup.root, device=GW1, installed=None, now=int(time.time())
    )
    assert bundle.version == 1


async def test_freshness_tokens_keep_coming_and_pin_the_current_bundle(
    broker: object, setup: HubSetup
) -> None:
    fresh = topics.freshness_topic("eu-1", GROUP)
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        data = await _push(setup, 1)
        settings = broker.settings  # type: ignore[attr-defined]
        async with watching(settings, [fresh]) as watcher:
            tokens = []
            while len({t.hub_time for t in tokens}) < 3:
                message = await watcher.next(fresh)
                now = int(time.time())
                tokens.append(
                    verify_freshness(message.payload, root=setup.root, region="eu-1", now=now)
                )
    digest = compile_for_device(data, root=setup.root, device=GW1, installed=None, now=now).digest
    assert {t.bundle_digest for t in tokens} == {digest}
    assert all(t.channel == "group/line-a" and t.kill_epoch == 0 for t in tokens)
    assert [t.hub_time for t in tokens] == sorted(t.hub_time for t in tokens)
    assert all(t.expires_at == t.hub_time + 5 for t in tokens)


async def test_revocations_are_published_with_increasing_epochs_and_the_kill_epoch_follows(
    broker: object, setup: HubSetup
) -> None:
    fresh = topics.freshness_topic("eu-1", GROUP)
    settings = broker.settings  # type: ignore[attr-defined]
    async with HubService(
        hub_config(setup, broker, freshness_interval_s=30, token_ttl_s=60)
    ) as hub:
        await hub.wait_ready()
        await _push(setup, 1)
        async with watching(settings, [f"{topics.PREFIX}/eu-1/revoke/#", fresh]) as watcher:
            await watcher.next(fresh)
            hub_dir = ["--hub-dir", str(setup.path)]
            assert (
                await run_cli("revoke", "--device", "gw-001", "--reason", "stolen", *hub_dir) == 0
            )
            first = await watcher.next(topics.revocation_topic("eu-1", "device", "gw-001"))
            token = await watcher.next(fresh)
            assert await run_cli("revoke", "--group", "line-a", *hub_dir) == 0
            second = await watcher.next(topics.revocation_topic("eu-1", "group", "line-a"))
            token2 = await watcher.next(fresh)
    one = verify_revocation(first.payload, root=setup.root, region="eu-1")
    two = verify_revocation(second.payload, root=setup.root, region="eu-1")
    assert (one.epoch, one.kind, one.value, one.reason) == (
        1,
        RevocationKind.DEVICE,
        "gw-001",
        "stolen",
    )
    assert (two.epoch, two.kind, two.value) == (2, RevocationKind.GROUP, "line-a")
    now = int(time.time())
    assert verify_freshness(token.payload, root=setup.root, region="eu-1", now=now).kill_epoch == 1
    assert verify_freshness(token2.payload, root=setup.root, region="eu-1", now=now).kill_epoch == 2


async def test_what_edge_hub_revoke_published_is_not_sent_to_every_device_again_by_the_schedule(
    broker: object, setup: HubSetup
) -> None:
    revoked = topics.revocation_topic("eu-1", "device", "gw-001")
    sentinel = f"{topics.PREFIX}/eu-1/revoke/test/sentinel"
    settings = broker.settings  # type: ignore[attr-defined]
    async with HubService(
        hub_config(setup, broker, freshness_interval_s=60, token_ttl_s=120)
    ) as hub:
        await hub.wait_ready()
        await _push(setup, 1)
        async with watching(settings, [f"{topics.PREFIX}/eu-1/revoke/#"]) as watcher:
            assert await run_cli("revoke", "--device", "gw-001", "--hub-dir", str(setup.path)) == 0
            await watcher.next(revoked)
            await wait_for(
                lambda: revoked in hub._started.context.retained.published
            )  # seen on the broker
            for _ in range(3):
                await hub.tick()
            await watcher.connection.publish(sentinel, b"after the rounds")
            later = []
            while not later or later[-1] != sentinel:
                later.append((await watcher.next(lambda m: True)).topic)
    assert later == [sentinel]


async def test_a_retained_bundle_overwritten_by_another_client_is_restored_by_the_schedule(
    broker: object, setup: HubSetup
) -> None:
    bundle_topic = topics.bundle_topic("eu-1", GROUP)
    settings = broker.settings  # type: ignore[attr-defined]
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        data = await _push(setup, 1)
        rounds = hub.stats.freshness_published
        await wait_for(lambda: hub.stats.freshness_published >= rounds + 3)
        async with watching(settings, [bundle_topic], "rogue") as watcher:
            assert (await watcher.next(bundle_topic)).payload == data
            await watcher.connection.publish(bundle_topic, b"not a bundle", retain=True)
            await watcher.next(lambda m: m.payload == b"not a bundle")
            await watcher.next(lambda m: m.topic == bundle_topic and m.payload == data)


async def test_a_lineage_batch_gets_a_signed_ack_after_it_is_stored(
    broker: object, setup: HubSetup
) -> None:
    device = setup.devices["gw-001"]
    device.add(30)
    settings = broker.settings  # type: ignore[attr-defined]
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        async with watching(settings, [ACK_1], "gw-001") as watcher:
            await watcher.connection.publish(LINEAGE_1, device.batch(0, 20))
            ack = verify_ack((await watcher.next(ACK_1)).payload, root=setup.root, device="gw-001")
            assert (ack.acked, ack.root) == (20, device.root(20))
            assert [e.seq for e in hub.registry.iter_entries("gw-001")] == list(range(20))
            await watcher.connection.publish(LINEAGE_1, device.batch(0, 10))  # duplicate
            again = verify_ack(
                (await watcher.next(ACK_1)).payload, root=setup.root, device="gw-001"
            )
            await watcher.connection.publish(LINEAGE_1, device.batch(25, 30))  # gap
            reack = verify_ack(
                (await watcher.next(ACK_1)).payload, root=setup.root, device="gw-001"
            )
            await watcher.connection.publish(LINEAGE_1, device.batch(20, 30))
            last = verify_ack((await watcher.next(ACK_1)).payload, root=setup.root, device="gw-001")
        assert (again.acked, reack.acked, last.acked) == (20, 20, 30)
        assert last.root == device.root(30)
        assert hub.stats.entries_stored == 30 and hub.stats.duplicates == 1
        first = hub.registry.rejections("gw-001")[0]
        assert (first.code, first.count) == ("gap", 1)


async def test_impersonation_is_refused_unacknowledged_and_counted_in_fleet(
    broker: object, setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    victim, intruder = setup.devices["gw-001"], setup.devices["gw-002"]
    victim.add(5)
    intruder.add(5)
    settings = broker.settings  # type: ignore[attr-defined]
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        async with watching(settings, [ACK_1], "gw-002") as watcher:
            # Its own valid batch, on the victim's topic; then the victim's batch signed by it.
            await watcher.connection.publish(LINEAGE_1, intruder.batch(0, 5))
            await watcher.connection.publish(LINEAGE_1, victim.batch(0, 5, key=intruder.key))
            status = DeviceStatus("gw-001", int(time.time()), True, 1, None, "ok", 5, 0)
            await watcher.connection.publish(STATUS_1, sign_status(status, intruder.key))
            await wait_for(lambda: hub.stats.rejections.get("impersonation", 0) == 3)
            assert watcher.queue.empty()
        assert hub.registry.lineage_state("gw-001").size == 0
    capsys.readouterr()
    assert await run_cli("fleet", "--json", "--hub-dir", str(setup.path)) == 0
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)["devices"]}
    assert rows["gw-001"]["rejections"] == {"impersonation": 3}
    assert rows["gw-001"]["online"] is None and rows["gw-002"]["rejections"] == {}


async def test_a_newer_signed_status_shows_in_fleet_and_a_last_will_older_than_it_does_not(
    broker: object, setup: HubSetup
) -> None:
    device = setup.devices["gw-001"]
    settings = broker.settings  # type: ignore[attr-defined]
    now = int(time.time())

    def status(at: int, online: bool) -> bytes:
        return sign_status(
            DeviceStatus("gw-001", at, online, 1, now + 3600, "ok", 12, 10), device.key
        )

    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        async with connect(settings, client_id="gw-001") as conn:
            await conn.publish(STATUS_1, status(now, True), retain=True)
            await wait_for(lambda: hub.stats.statuses == 1)
            row = hub.registry.fleet()[0]
            assert (row.online, row.bundle_version, row.device_lineage_size) == (True, 1, 12)
            # The will, signed at connect, delivered after a newer heartbeat: stale.
            await conn.publish(STATUS_1, status(now + 5, True), retain=True)
            await conn.publish(STATUS_1, status(now, False), retain=True)
            await wait_for(lambda: hub.stats.statuses + hub.stats.stale_statuses == 3)
            assert (hub.stats.statuses, hub.registry.fleet()[0].online) == (2, True)
            # A clean stop: a signed offline status newer than the last heartbeat.
            await conn.publish(STATUS_1, status(now + 6, False), retain=True)
            await wait_for(lambda: hub.stats.statuses == 3)
        assert hub.registry.fleet()[0].online is False


async def test_the_hub_republishes_retained_messages_after_the_broker_restarts(
    setup: HubSetup,
) -> None:
    async with amqtt_broker() as broker, HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        data = await _push(setup, 1, "--broker", broker.url)
        await broker.stop()  # amqtt keeps retained messages in memory only
        await broker.start()
        await wait_for(lambda: hub.stats.connections == 2)
        await hub.wait_ready()
        async with watching(broker.settings, [topics.bundle_topic("eu-1", GROUP)]) as late:
            message = await late.next(topics.bundle_topic("eu-1", GROUP))
        assert message.payload == data


async def test_over_limit_and_oversize_messages_are_dropped_and_counted(
    setup: HubSetup,
) -> None:
    device = setup.devices["gw-001"]
    status = sign_status(
        DeviceStatus("gw-001", int(time.time()), True, None, None, "ok", 0, 0), device.key
    )
    async with amqtt_broker() as broker:
        config = hub_config(setup, broker, device_rate=0.01, device_burst=5)
        async with HubService(config) as hub:
            await hub.wait_ready()
            async with connect(broker.settings, client_id="gw-001") as conn:
                for _ in range(20):
                    await conn.publish(STATUS_1, status)
                await conn.publish(STATUS_1, b"\x00" * 4096)
                await wait_for(
                    lambda: (
                        sum(hub.stats.rejections.values())
                        + hub.stats.statuses
                        + hub.stats.stale_statuses
                        == 21
                    )
                )
            assert (hub.stats.statuses, hub.stats.stale_statuses) == (1, 4)
            assert hub.stats.rejections == {"rate_limited": 15, "oversize": 1}
        with open_registry(setup.registry) as registry:
            counts = {r.code: r.count for r in registry.rejections("gw-001")}
        assert counts == {"rate_limited": 15, "oversize": 1}


async def test_the_embedded_broker_serves_and_the_serve_file_points_at_it(setup: HubSetup) -> None:
    async with HubService(
        HubConfig(setup.path, registry=setup.url, port=0, freshness_interval_s=1, token_ttl_s=5)
    ) as hub:
        await hub.wait_ready()
        info = json.loads((setup.path / "serve.json").read_text())
        assert info["broker"] == hub.url and info["embedded"] is True
        assert info["shared_subscriptions"] is False and not hub.shared
        data = await _push(setup, 1)  # published through serve.json's broker
        async with watching(hub.settings, [topics.bundle_topic("eu-1", GROUP)]) as watcher:
            assert (await watcher.next(topics.bundle_topic("eu-1", GROUP))).payload == data
    assert not (setup.path / "serve.json").exists()


async def test_a_second_serve_on_one_hub_dir_leaves_the_first_ones_serve_file_alone(
    setup: HubSetup,
) -> None:
    async with HubService(HubConfig(setup.path, registry=setup.url, port=0)) as first:
        await first.wait_ready()
        written = (setup.path / "serve.json").read_bytes()
        async with HubService(HubConfig(setup.path, registry=setup.url, port=0)) as second:
            await second.wait_ready()
            assert (setup.path / "serve.json").read_bytes() == written
        assert (setup.path / "serve.json").read_bytes() == written
        assert json.loads(written)["broker"] == first.url
    assert not (setup.path / "serve.json").exists()
    async with HubService(HubConfig(setup.path, registry=setup.url, port=0)) as again:
        await again.wait_ready()
        assert json.loads((setup.path / "serve.json").read_text())["broker"] == again.url


async def test_the_hub_uses_shared_subscriptions_where_the_broker_delivers_them(
    setup: HubSetup,
) -> None:
    device = setup.devices["gw-001"]
    device.add(8)
    async with mosquitto_broker() as broker:
        first = HubService(hub_config(setup, broker, client_id="hub-a", write_serve_file=False))
        second = HubService(hub_config(setup, broker, client_id="hub-b", write_serve_file=False))
        async with first, second:
            await first.wait_ready()
            await second.wait_ready()
            assert first.shared and second.shared
            async with watching(broker.settings, [ACK_1], "gw-001") as watcher:
                for start in range(0, 8, 2):
                    await watcher.connection.publish(LINEAGE_1, device.batch(start, start + 2))
                    assert (
                        verify_ack(
                            (await watcher.next(ACK_1)).payload, root=setup.root, device="gw-001"
                        ).acked
                        == start + 2
                    )
            assert first.stats.batches_accepted + second.stats.batches_accepted == 4
            assert first.stats.duplicates + second.stats.duplicates == 0
        with open_registry(setup.registry) as registry:
            assert [e.seq for e in registry.iter_entries("gw-001")] == list(range(8))


async def test_the_hub_probes_and_subscribes_directly_where_shared_subscriptions_do_nothing(
    setup: HubSetup,
) -> None:
    device = setup.devices["gw-001"]
    device.add(3)
    async with amqtt_broker() as broker:
        config = hub_config(setup, broker, shared_subscriptions=None)
        async with HubService(config) as hub, watching(broker.settings, [ACK_1]) as watcher:
            await hub.wait_ready()
            assert not hub.shared
            await watcher.connection.publish(LINEAGE_1, device.batch(0, 3))
            ack = verify_ack((await watcher.next(ACK_1)).payload, root=setup.root, device="gw-001")
            assert ack.acked == 3


async def test_what_was_recorded_while_the_hub_was_down_is_published_when_it_starts(
    broker: object, setup: HubSetup
) -> None:
    data = await _push(setup, 1)  # no serve running: recorded only
    assert await run_cli("revoke", "--device", "gw-002", "--hub-dir", str(setup.path)) == 0
    wanted = {
        topics.root_topic("eu-1", 1): setup.root.raw,
        topics.bundle_topic("eu-1", GROUP): data,
        topics.revocation_topic("eu-1", "device", "gw-002"): None,
        topics.freshness_topic("eu-1", GROUP): None,
    }
    async with HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        settings = broker.settings  # type: ignore[attr-defined]
        async with watching(settings, list(wanted), "late-device") as late:
            got = {}
            while len(got) < len(wanted):
                message = await late.next(lambda m: m.topic in wanted)
                got[message.topic] = message.payload
    assert got[topics.root_topic("eu-1", 1)] == setup.root.raw
    assert got[topics.bundle_topic("eu-1", GROUP)] == data
    revocation = got[topics.revocation_topic("eu-1", "device", "gw-002")]
    assert verify_revocation(revocation, root=setup.root, region="eu-1").epoch == 1
    token = got[topics.freshness_topic("eu-1", GROUP)]
    assert (
        verify_freshness(token, root=setup.root, region="eu-1", now=int(time.time())).kill_epoch
        == 1
    )


async def test_a_push_the_broker_missed_is_published_by_the_running_hub_on_its_next_round(
    setup: HubSetup,
) -> None:
    async with amqtt_broker() as broker, HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        path = setup.path / "bundle.cbor"
        path.write_bytes(make_bundle(setup.keys, 1))
        unreachable = "mqtt://127.0.0.1:1"
        hub_dir = ["--hub-dir", str(setup.path)]
        # 3: unavailable (the broker); what was recorded stays recorded.
        assert await run_cli("bundle", "push", str(path), "--broker", unreachable, *hub_dir) == 3
        async with watching(broker.settings, [topics.bundle_topic("eu-1", GROUP)]) as watcher:
            message = await watcher.next(topics.bundle_topic("eu-1", GROUP))
        assert message.payload == path.read_bytes()


async def test_a_push_the_full_embedded_broker_did_not_retain_is_retained_by_the_hubs_next_round(
    setup: HubSetup,
) -> None:
    limits = BrokerLimits(retained_messages=10)
    config = HubConfig(
        setup.path,
        registry=setup.url,
        freshness_interval_s=600,
        token_ttl_s=1200,
        broker_limits=limits,
    )
    bundle_topic = topics.bundle_topic("eu-1", GROUP)
    async with HubService(config) as hub:
        await hub.wait_ready()
        async with connect(hub.settings, client_id="filler") as filler:
            for n in range(limits.retained_messages):
                junk = topics.device_topic("xx-9", f"junk-{n}", DeviceLeaf.STATUS)
                await filler.publish(junk, b"junk", retain=True)
        bundle = await _push(setup, 1)
        async with connect(hub.settings, client_id="gw-001") as device:
            status = DeviceStatus("gw-001", int(time.time()), True, 1, None, "ok", 0, 0)
            await device.publish(STATUS_1, sign_status(status, setup.devices["gw-001"].key))
        # The hub handles messages in broker order: the push's echo was noted before this.
        await wait_for(lambda: hub.stats.statuses == 1)
        assert hub.embedded_broker is not None
        assert not hub.embedded_broker.retains(bundle_topic, bundle)
        await hub.tick()
        async with watching(hub.settings, [bundle_topic], "late-agent") as late:
            assert (await late.next(bundle_topic)).payload == bundle

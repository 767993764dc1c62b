"""The governance actions on a running hub (:class:`hub.service.governance.Governance`, what
the console acts through): each is recorded and published on the hub's own connection at
once, with no ``edge-hub`` command and no wait for the schedule."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import pytest_asyncio

from edge_agent.errors import BundleError, ConfigError
from edge_agent.protocol import topics
from edge_agent.protocol.attestation import verify_challenge
from edge_agent.protocol.directory import DirectoryDevice, verify_directory
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.revocation import RevocationKind
from edge_agent.protocol.topics import Channel, ChannelKind, DeviceLeaf
from hub.service.server import HubService
from tests.brokers import AmqttHandle, amqtt_broker
from tests.hub_support import HubSetup, hub_config, make_bundle, make_hub_dir, watching

pytestmark = pytest.mark.asyncio

SLOW_SCHEDULE = 3600.0
"""A schedule round far away: whatever arrives was published by the action itself."""


@pytest_asyncio.fixture
async def broker() -> AsyncIterator[AmqttHandle]:
    async with amqtt_broker() as handle:
        yield handle


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    return make_hub_dir(tmp_path / "hub")


async def test_a_revocation_is_published_on_the_hubs_connection_at_once(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    config = hub_config(setup, broker, freshness_interval_s=SLOW_SCHEDULE, token_ttl_s=2 * 3600)
    topic = topics.revocation_topic("eu-1", "device", "gw-002")
    async with HubService(config) as hub, watching(broker.settings, [topic]) as watcher:
        await hub.wait_ready()
        issued, published = await hub.governance.revoke(
            (RevocationKind.DEVICE, "gw-002"), region=None, reason="stolen"
        )
        message = await watcher.next(topic)
        assert hub.registry.current_revocations() == [issued]
    assert message.payload == issued.data
    assert published.error is None and published.count >= 1


async def test_a_pushed_bundle_is_verified_recorded_and_published_at_once(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    config = hub_config(setup, broker, freshness_interval_s=SLOW_SCHEDULE, token_ttl_s=2 * 3600)
    topic = topics.bundle_topic("eu-1", Channel(ChannelKind.GROUP, "line-a"))
    data = make_bundle(setup.keys, 1)
    async with HubService(config) as hub, watching(broker.settings, [topic]) as watcher:
        await hub.wait_ready()
        preview = await hub.governance.preview_push(data)
        assert hub.registry.current_bundles() == []
        plan, published = await hub.governance.push(data)
        message = await watcher.next(topic)
        assert [b.digest for b in hub.registry.current_bundles()] == [plan.bundle.digest]
    assert message.payload == data and published.error is None
    assert preview.targeted == plan.targeted == ("gw-001", "gw-002")


async def test_a_challenge_goes_out_signed_by_the_verifier_key_on_the_hubs_connection(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    config = hub_config(setup, broker, attest_interval_s=SLOW_SCHEDULE, attest_ttl_s=2 * 3600)
    topic = topics.device_topic("eu-1", "gw-001", DeviceLeaf.CHALLENGE)
    async with HubService(config) as hub, watching(broker.settings, [topic]) as watcher:
        await hub.wait_ready()
        sent = await hub.governance.challenge("gw-001")
        message = await watcher.next(topic)
        with pytest.raises(ConfigError, match="not registered"):
            await hub.governance.challenge("gw-404")
    challenge = verify_challenge(
        message.payload, root=setup.root, device="gw-001", now=sent.issued_at
    )
    assert challenge.nonce == sent.nonce


async def test_a_registered_device_is_known_to_the_running_hub_at_once(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    config = hub_config(setup, broker, freshness_interval_s=SLOW_SCHEDULE, token_ttl_s=2 * 3600)
    pem = PrivateKey.generate().public.to_pem()
    async with HubService(config) as hub:
        await hub.wait_ready()
        record = await hub.governance.register(
            "gw-010", region="eu-2", groups=["line-c"], profile="generic-x86_64", public_key_pem=pem
        )
        assert hub.registry.device("gw-010") == record
        assert "eu-2" in hub.registry.regions()
        with pytest.raises(ConfigError, match="already"):
            await hub.governance.register(
                "gw-010", region="eu-2", groups=[], profile="generic-x86_64", public_key_pem=pem
            )


async def test_registering_refuses_a_firmware_profile_no_device_can_be_enrolled_with(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    config = hub_config(setup, broker, freshness_interval_s=SLOW_SCHEDULE, token_ttl_s=2 * 3600)
    pem = PrivateKey.generate().public.to_pem()
    async with HubService(config) as hub:
        await hub.wait_ready()
        with pytest.raises(ConfigError, match="unknown firmware profile 'rpi4'"):
            await hub.governance.register(
                "gw-010", region="eu-1", groups=[], profile="rpi4", public_key_pem=pem
            )
        assert hub.registry.device("gw-010") is None


async def test_a_shadow_is_verified_published_retained_and_cleared_on_the_hubs_connection(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    config = hub_config(setup, broker, freshness_interval_s=SLOW_SCHEDULE, token_ttl_s=2 * 3600)
    channel = Channel(ChannelKind.DEVICE, "gw-001")
    topic = topics.shadow_topic("eu-1", channel)
    data = make_bundle(setup.keys, 2)
    async with HubService(config) as hub:
        await hub.wait_ready()
        await hub.governance.publish_shadow("eu-1", channel, data)
        async with watching(broker.settings, [topic], client_id="late") as watcher:
            held = await watcher.next(topic)
        with pytest.raises(BundleError) as refused:
            await hub.governance.publish_shadow("eu-2", channel, data)
        with pytest.raises(BundleError) as garbage:
            await hub.governance.publish_shadow("eu-1", channel, b"not a bundle")
        async with watching(broker.settings, [topic], client_id="clearing") as watcher:
            await hub.governance.publish_shadow("eu-1", channel, None)
            cleared = await watcher.next(lambda m: m.topic == topic and not m.payload)
        assert hub.registry.current_bundles() == []
    assert held.payload == data and held.retain
    assert refused.value.code == "bundle_target" and garbage.value.code == "bundle_format"
    assert cleared.payload == b""


async def test_a_device_registered_on_the_running_hub_is_in_a_new_directory_version_at_once(
    broker: AmqttHandle, setup: HubSetup
) -> None:
    config = hub_config(setup, broker, freshness_interval_s=SLOW_SCHEDULE, token_ttl_s=2 * 3600)
    key = PrivateKey.generate().public
    async with HubService(config) as hub:
        await hub.wait_ready()
        before = hub.registry.directory("eu-1")
        assert before is not None and "gw-010" not in _listed(before.data, setup)
        async with watching(broker.settings, [topics.directory_topic("eu-1")]) as watcher:
            await hub.governance.register(
                "gw-010",
                region="eu-1",
                groups=["line-c"],
                profile="generic-x86_64",
                public_key_pem=key.to_pem(),
            )
            after = hub.registry.directory("eu-1")
            assert after is not None and after.version == before.version + 1
            listed = _listed(after.data, setup)
            assert listed["gw-010"].key.raw == key.raw
            assert listed["gw-010"].groups == ("line-c",)
            await watcher.next(
                lambda m: m.topic == topics.directory_topic("eu-1") and m.payload == after.data
            )


async def test_a_device_registered_while_the_broker_is_away_gets_its_directory_at_once(
    setup: HubSetup,
) -> None:
    """The version is recorded with the device, as ``edge-hub device add`` does; the hub
    publishes it when it reconnects."""
    async with amqtt_broker() as gone:
        pass
    config = hub_config(setup, gone, freshness_interval_s=SLOW_SCHEDULE, token_ttl_s=2 * 3600)
    key = PrivateKey.generate().public
    async with HubService(config) as hub:
        assert hub.registry.directory("eu-2") is None
        await hub.governance.register(
            "gw-011",
            region="eu-2",
            groups=[],
            profile="generic-x86_64",
            public_key_pem=key.to_pem(),
        )
        held = hub.registry.directory("eu-2")
        assert held is not None and held.version == 1
        assert list(_listed(held.data, setup, region="eu-2")) == ["gw-011"]


def _listed(data: bytes, setup: HubSetup, region: str = "eu-1") -> Mapping[str, DirectoryDevice]:
    return verify_directory(data, root=setup.root, region=region).devices

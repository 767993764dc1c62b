"""The hub's publications as values: records in, topics and signed payloads out, no broker."""

from __future__ import annotations

import hashlib

import pytest

from edge_agent.protocol import cose, dcbor, topics
from edge_agent.protocol._device_scoped import device_aad
from edge_agent.protocol.checkpoint import MAX_NOTE_BYTES
from edge_agent.protocol.freshness import FreshnessToken, verify_freshness
from edge_agent.protocol.roles import Role
from edge_agent.protocol.shipping import (
    ACK_CONTENT_TYPE,
    Ack,
    ShippingError,
    sign_ack,
    verify_ack,
)
from edge_agent.protocol.topics import Channel, ChannelKind, DeviceLeaf
from hub.core.publications import (
    Publication,
    ack_publication,
    bundle_publications,
    freshness_publication,
    parse_channel,
    revocation_publications,
    root_publications,
    shadow_publication,
)
from hub.registry.records import IssuedRevocation, PublishedBundle
from tests.factory import NOW, HubSim

HUB = HubSim()
COSIGNED_NOTE = (
    "edgegov/gw-001/1\n7\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n"
    "\u2014 edgegov/gw-001/1 c2lnbmF0dXJl\n\u2014 edgegov/v1/witness d2l0bmVzcw==\n"
)
DATA = HUB.bundle(3)
BUNDLE = PublishedBundle(
    "eu-1", "group/line-a", 3, hashlib.sha256(DATA).digest(), DATA, NOW + 86400, None, NOW
)


@pytest.mark.parametrize(
    "channel", [Channel(ChannelKind.GROUP, "line-a"), Channel(ChannelKind.DEVICE, "gw-001")]
)
def test_a_channel_as_the_registry_stores_it_parses_back(channel: Channel) -> None:
    assert parse_channel(str(channel)) == channel


def test_a_stored_name_that_is_no_channel_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_channel("fleet/line-a")


def test_retained_objects_go_to_their_topics_with_their_exact_bytes() -> None:
    revocation = IssuedRevocation("eu-1", 2, "device", "gw-001", "stolen", b"signed", NOW)
    root = HUB.root()
    assert bundle_publications([BUNDLE]) == [
        Publication(topics.bundle_topic("eu-1", Channel(ChannelKind.GROUP, "line-a")), DATA)
    ]
    assert revocation_publications([revocation]) == [
        Publication(topics.revocation_topic("eu-1", "device", "gw-001"), b"signed")
    ]
    assert root_publications([root], ["eu-1", "us-1"]) == [
        Publication(topics.root_topic(region, root.version), root.raw)
        for region in ("eu-1", "us-1")
    ]


def test_a_shadow_bundle_goes_retained_to_its_channels_shadow_topic_and_none_clears_it() -> None:
    channel = Channel(ChannelKind.DEVICE, "gw-001")
    topic = "edgegov/v1/eu-1/shadow/device/gw-001"
    assert topics.shadow_topic("eu-1", channel) == topic
    assert topics.is_trust_topic(topic)
    assert topic in topics.agent_subscriptions("eu-1", "gw-001", ["line-a"])
    assert topic not in topics.agent_subscriptions("eu-1", "gw-002", ["line-a"])
    assert shadow_publication("eu-1", channel, DATA) == Publication(topic, DATA, retain=True)
    assert shadow_publication("eu-1", channel, None) == Publication(topic, b"", retain=True)
    with pytest.raises(ValueError, match="pass None"):
        shadow_publication("eu-1", channel, b"")


def test_a_freshness_token_pins_the_channels_bundle_and_the_kill_epoch() -> None:
    key = HUB.online_keys[Role.FRESHNESS][0]
    publication = freshness_publication(BUNDLE, kill_epoch=4, key=key, now=NOW, ttl_s=60)
    channel = Channel(ChannelKind.GROUP, "line-a")
    assert (publication.topic, publication.retain, publication.qos) == (
        topics.freshness_topic("eu-1", channel),
        True,
        1,
    )
    token = verify_freshness(publication.payload, root=HUB.root(), region="eu-1", now=NOW)
    assert token == FreshnessToken(
        region="eu-1",
        channel="group/line-a",
        bundle_digest=BUNDLE.digest,
        bundle_version=3,
        hub_time=NOW,
        expires_at=NOW + 60,
        kill_epoch=4,
        raw=publication.payload,
    )


def test_an_ack_is_signed_and_retained_on_the_devices_ack_topic() -> None:
    key = HUB.online_keys[Role.FRESHNESS][0]
    root = hashlib.sha256(b"tree").digest()
    publication = ack_publication(
        region="eu-1", device="gw-001", acked=7, root=root, key=key, now=NOW
    )
    assert publication.topic == topics.device_topic("eu-1", "gw-001", DeviceLeaf.ACK)
    assert publication.retain
    ack = verify_ack(publication.payload, root=HUB.root(), device="gw-001")
    assert ack == Ack("gw-001", 7, root, NOW)


@pytest.mark.parametrize("checkpoint", [None, COSIGNED_NOTE, "n" * MAX_NOTE_BYTES])
def test_an_ack_round_trips_with_or_without_its_cosigned_checkpoint(
    checkpoint: str | None,
) -> None:
    key = HUB.online_keys[Role.FRESHNESS][0]
    root = hashlib.sha256(b"tree").digest()
    publication = ack_publication(
        region="eu-1", device="gw-001", acked=7, root=root, key=key, now=NOW, checkpoint=checkpoint
    )
    ack = verify_ack(publication.payload, root=HUB.root(), device="gw-001")
    assert ack == Ack("gw-001", 7, root, NOW, checkpoint)


def test_the_hub_refuses_to_sign_an_ack_with_an_oversize_checkpoint() -> None:
    ack = Ack("gw-001", 7, bytes(32), NOW, "n" * (MAX_NOTE_BYTES + 1))
    with pytest.raises(ValueError, match="at most"):
        sign_ack(ack, key=HUB.online_keys[Role.FRESHNESS][0])


@pytest.mark.parametrize(
    "checkpoint",
    ["n" * (MAX_NOTE_BYTES + 1), "é" * (MAX_NOTE_BYTES // 2 + 1), b"note", 7, None],
    ids=["oversize", "oversize-utf8", "bytes", "integer", "null"],
)
def test_an_ack_whose_checkpoint_is_oversize_or_not_text_is_refused(checkpoint: object) -> None:
    payload = dcbor.encode(
        {
            "device": "gw-001",
            "acked": 7,
            "root": bytes(32),
            "hub_time": NOW,
            "checkpoint": checkpoint,
        }
    )
    data = cose.sign1(
        payload,
        key=HUB.online_keys[Role.FRESHNESS][0],
        content_type=ACK_CONTENT_TYPE,
        external_aad=device_aad(Role.FRESHNESS, "ack", "gw-001"),
    )
    with pytest.raises(ShippingError, match="checkpoint"):
        verify_ack(data, root=HUB.root(), device="gw-001")

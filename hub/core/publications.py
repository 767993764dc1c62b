"""What the hub publishes, as values: retained bundles, shadow bundles, roots, revocations,
tokens and acks.

Builders turn registry records into :class:`Publication` values (topic, exact payload bytes,
retained, QoS 1), signing what must be signed with the key handed in. They read no registry
and no clock and publish nothing: :mod:`hub.service.publish` reads the registry and
connects, ``edge-hub serve`` publishes on every (re)connect and on its schedule. Every
payload is signed end to end: the broker only routes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_agent.protocol import topics
from edge_agent.protocol.freshness import FreshnessToken, freshness_payload, sign_freshness
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.root import TrustRoot
from edge_agent.protocol.shipping import Ack, sign_ack
from edge_agent.protocol.topics import Channel, ChannelKind, DeviceLeaf
from hub.registry.records import IssuedRevocation, PublishedBundle

__all__ = [
    "Publication",
    "ack_publication",
    "bundle_publications",
    "freshness_publication",
    "parse_channel",
    "revocation_publications",
    "root_publications",
    "shadow_publication",
]


@dataclass(frozen=True, slots=True)
class Publication:
    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1


def parse_channel(text: str) -> Channel:
    """The :class:`Channel` whose ``str`` is ``text`` (as the registry stores it).

    Raises:
        ValueError: not a channel.
    """
    kind, _, name = text.partition("/")
    return Channel(ChannelKind(kind), name)


def bundle_publications(bundles: Iterable[PublishedBundle]) -> list[Publication]:
    return [
        Publication(topics.bundle_topic(b.region, parse_channel(b.channel)), b.data)
        for b in bundles
    ]


def shadow_publication(region: str, channel: Channel, data: bytes | None) -> Publication:
    """The retained shadow bundle of ``channel`` in ``region``: ``data`` (a signed bundle,
    published as is: agents verify it exactly as a real one), or, for ``None``, the empty
    retained message that clears the channel's shadow.

    Raises:
        ValueError: ``data`` is empty (an empty payload is the clearing message: pass
            ``None`` to clear).
    """
    if data is not None and not data:
        raise ValueError("a shadow bundle cannot be empty: pass None to clear the shadow")
    return Publication(topics.shadow_topic(region, channel), b"" if data is None else data)


def revocation_publications(revocations: Iterable[IssuedRevocation]) -> list[Publication]:
    return [
        Publication(topics.revocation_topic(r.region, r.kind, r.value), r.data) for r in revocations
    ]


def root_publications(roots: Sequence[TrustRoot], regions: Iterable[str]) -> list[Publication]:
    """Every root version on every region's ``root/{version}``: a device pinned to an old
    root walks the chain up one version at a time."""
    return [
        Publication(topics.root_topic(region, root.version), root.raw)
        for region in regions
        for root in roots
    ]


def ack_publication(
    *,
    region: str,
    device: str,
    acked: int,
    root: bytes,
    key: PrivateKey,
    now: int,
    checkpoint: str | None = None,
) -> Publication:
    """The signed, retained ack of ``device``'s log at size ``acked`` with tree ``root``,
    carrying ``checkpoint``, the cosigned note the hub holds at that size, when there is one."""
    payload = sign_ack(Ack(device, acked, root, now, checkpoint), key=key)
    return Publication(topics.device_topic(region, device, DeviceLeaf.ACK), payload)


def freshness_publication(
    bundle: PublishedBundle, *, kill_epoch: int, key: PrivateKey, now: int, ttl_s: int
) -> Publication:
    """The signed freshness token of ``bundle``'s channel: it pins the bundle's digest, the
    hub time ``now`` and the region's ``kill_epoch`` (the highest revocation epoch issued),
    valid for ``ttl_s`` seconds."""
    token = FreshnessToken(
        region=bundle.region,
        channel=bundle.channel,
        bundle_digest=bundle.digest,
        bundle_version=bundle.version,
        hub_time=now,
        expires_at=now + ttl_s,
        kill_epoch=kill_epoch,
    )
    data = sign_freshness(freshness_payload(token), region=bundle.region, key=key)
    return Publication(topics.freshness_topic(bundle.region, parse_channel(bundle.channel)), data)

"""What the hub publishes: retained bundles, roots, revocations, freshness tokens and acks.

Builders turn registry records into :class:`Publication` values (topic, exact payload bytes,
retained, QoS 1); :func:`issue_freshness` and :func:`retained_snapshot` read the registry and
sign what must be signed now. ``edge-hub serve`` publishes them on every (re)connect and on
its schedule; ``edge-hub bundle push`` and ``edge-hub revoke`` publish theirs at once with
:func:`publish_once`. Every payload is signed end to end: the broker only routes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_agent.protocol import topics
from edge_agent.protocol.freshness import FreshnessToken, freshness_payload, sign_freshness
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.root import TrustRoot
from edge_agent.protocol.shipping import Ack, sign_ack
from edge_agent.protocol.topics import Channel, ChannelKind, DeviceLeaf
from edge_agent.support.mqtt import BrokerSettings, connect
from hub.registry import IssuedFreshness, IssuedRevocation, PublishedBundle, Registry, RegistryError

__all__ = [
    "Publication",
    "ack_publication",
    "ack_snapshot",
    "bundle_publications",
    "issue_freshness",
    "parse_channel",
    "publish_once",
    "retained_snapshot",
    "revocation_publications",
    "root_publications",
]

logger = logging.getLogger(__name__)


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
    *, region: str, device: str, acked: int, root: bytes, key: PrivateKey, now: int
) -> Publication:
    """The signed, retained ack of ``device``'s log at size ``acked`` with tree ``root``."""
    payload = sign_ack(Ack(device, acked, root, now), key=key)
    return Publication(topics.device_topic(region, device, DeviceLeaf.ACK), payload)


def issue_freshness(
    registry: Registry,
    *,
    key: PrivateKey,
    now: int,
    ttl_s: int,
    region: str | None = None,
    channels: Iterable[str] | None = None,
) -> list[Publication]:
    """Sign a freshness token for each channel with a current bundle (of ``region``, and
    only ``channels`` when given), record them if the registry can, and return their
    publications.

    Each token pins the channel's bundle digest, the hub time ``now`` and the region's kill
    epoch (the highest revocation epoch issued), valid for ``ttl_s`` seconds.

    A token states only what the registry already holds (bundle, kill epoch) at a new
    time, and the recorded copy is a convenience that nothing decides on: so a registry
    that cannot be written (a full disk) costs that copy, never the tokens. Were the tokens
    to wait for it, every device with ``max_offline`` would deny ``freshness_expired``.

    Raises:
        RegistryError: the registry cannot be read.
    """
    wanted = None if channels is None else set(channels)
    epochs: dict[str, int] = {}
    publications, records = [], []
    for bundle in registry.current_bundles(region):
        if wanted is not None and bundle.channel not in wanted:
            continue
        if bundle.region not in epochs:
            epochs[bundle.region] = registry.kill_epoch(bundle.region)
        token = FreshnessToken(
            region=bundle.region,
            channel=bundle.channel,
            bundle_digest=bundle.digest,
            bundle_version=bundle.version,
            hub_time=now,
            expires_at=now + ttl_s,
            kill_epoch=epochs[bundle.region],
        )
        data = sign_freshness(freshness_payload(token), region=bundle.region, key=key)
        channel = parse_channel(bundle.channel)
        publications.append(Publication(topics.freshness_topic(bundle.region, channel), data))
        records.append(
            IssuedFreshness(
                region=bundle.region,
                channel=bundle.channel,
                data=data,
                hub_time=now,
                expires_at=now + ttl_s,
                kill_epoch=epochs[bundle.region],
            )
        )
    if records:
        try:
            registry.record_freshness(records)
        except RegistryError as exc:
            logger.error("freshness tokens published but not recorded: %s", exc)
    return publications


def retained_snapshot(registry: Registry, *, roots: Sequence[TrustRoot]) -> list[Publication]:
    """Everything retained the hub is the source of, apart from acks: every root version,
    the current bundle of each channel and the newest revocation of each revocation topic.

    Raises:
        RegistryError: the registry cannot be read.
    """
    publications = root_publications(roots, registry.regions())
    publications += bundle_publications(registry.current_bundles())
    publications += revocation_publications(registry.current_revocations())
    return publications


def ack_snapshot(registry: Registry, *, key: PrivateKey, now: int) -> list[Publication]:
    """A fresh signed ack of every device's stored log (a restarted broker lost them).

    Raises:
        RegistryError: the registry cannot be read.
    """
    publications = []
    for device in registry.devices():
        log = registry.lineage_state(device.device_id)
        if log.size:
            publications.append(
                ack_publication(
                    region=device.region,
                    device=device.device_id,
                    acked=log.size,
                    root=log.root,
                    key=key,
                    now=now,
                )
            )
    return publications


async def publish_once(settings: BrokerSettings, publications: Sequence[Publication]) -> None:
    """Connect, publish every publication in order (QoS 1: each PUBACKed), disconnect.

    Raises:
        TransportError: the broker is unreachable or dropped the connection.
    """
    async with connect(settings, client_id=f"edge-hub-cli-{os.getpid()}") as connection:
        for publication in publications:
            await connection.publish(
                publication.topic,
                publication.payload,
                qos=publication.qos,
                retain=publication.retain,
            )

"""Publishing what the hub is the source of: read the registry, sign now, connect.

:func:`issue_freshness`, :func:`issue_directories`, :func:`retained_snapshot` and
:func:`ack_snapshot` read the registry and build :class:`~hub.core.publications.Publication`
values with the pure builders of :mod:`hub.core.publications` and :mod:`hub.core.directory`.
``edge-hub serve`` publishes them on every (re)connect and on its schedule; ``edge-hub bundle
push`` and ``edge-hub revoke`` publish theirs at once with :func:`publish_once`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.root import TrustRoot
from edge_agent.support.mqtt import BrokerSettings, connect
from hub.core.directory import directory_publication, issue_directory, next_directory
from hub.core.publications import (
    Publication,
    ack_publication,
    bundle_publications,
    freshness_publication,
    revocation_publications,
    root_publications,
)
from hub.registry import IssuedFreshness, PublishedBundle, Registry, RegistryError
from hub.registry.channel_rows import channel_row_problem

__all__ = [
    "DIRECTORY_ATTEMPTS",
    "ack_snapshot",
    "issue_directories",
    "issue_freshness",
    "publish_once",
    "publishable_bundles",
    "retained_snapshot",
]

logger = logging.getLogger(__name__)

DIRECTORY_ATTEMPTS = 3
"""Times one region's directory is planned again after another process recorded a version
first (each attempt re-reads what it recorded)."""

_reported: set[tuple[str, str, str]] = set()
"""The unpublishable ``channels`` rows already logged as warnings by this process (then
at debug level: the schedule reads them every round)."""


def publishable_bundles(registry: Registry, region: str | None = None) -> list[PublishedBundle]:
    """The current bundles (of ``region``; every region for ``None``) whose ``channels``
    row can be published. Each other row is logged, naming its region, channel and what is
    wrong, and skipped: its devices get neither its bundle nor a freshness token from it
    (fail closed: without fresh tokens they deny once ``max_offline`` runs out) until the
    row is fixed, and every other channel is published as before. ``edge-hub registry
    check`` reports it too.

    Raises:
        RegistryError: the registry cannot be read.
    """
    bundles = []
    for bundle in registry.current_bundles(region):
        problem = channel_row_problem(bundle.region, bundle.channel)
        if problem is None:
            bundles.append(bundle)
            continue
        seen = (bundle.region, bundle.channel, problem)
        logger.log(
            logging.DEBUG if seen in _reported else logging.WARNING,
            "channels row of region %r, channel %r (bundle version %d) skipped: %s; its "
            "devices get no bundle or freshness token from it until the row is fixed "
            "('edge-hub registry check' lists it)",
            bundle.region,
            bundle.channel,
            bundle.version,
            problem,
        )
        _reported.add(seen)
    return bundles


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
    for bundle in publishable_bundles(registry, region):
        if wanted is not None and bundle.channel not in wanted:
            continue
        if bundle.region not in epochs:
            epochs[bundle.region] = registry.kill_epoch(bundle.region)
        epoch = epochs[bundle.region]
        publication = freshness_publication(bundle, kill_epoch=epoch, key=key, now=now, ttl_s=ttl_s)
        publications.append(publication)
        records.append(
            IssuedFreshness(
                region=bundle.region,
                channel=bundle.channel,
                data=publication.payload,
                hub_time=now,
                expires_at=now + ttl_s,
                kill_epoch=epoch,
            )
        )
    if records:
        try:
            registry.record_freshness(records)
        except RegistryError as exc:
            logger.error("freshness tokens published but not recorded: %s", exc)
    return publications


def issue_directories(
    registry: Registry, *, key: PrivateKey, now: int, ttl_s: int
) -> list[Publication]:
    """The current signed device directory of every region, issuing a new version first
    where one is due (:func:`hub.core.directory.next_directory`: devices changed, or less
    than half its validity left).

    A new version is recorded (compare-and-set on the version) before it is published, so
    versions only go up across restarts and several hub processes: when another process
    recorded one first, this one plans again from it.

    Raises:
        RegistryError: the registry cannot be read or written (nothing new is published).
    """
    devices = registry.devices()
    publications = []
    for region in registry.regions():
        held = registry.directory(region)
        for _ in range(DIRECTORY_ATTEMPTS):
            planned = next_directory(held, devices, region=region, now=now, ttl_s=ttl_s)
            if planned is None:
                break
            issued = issue_directory(planned, key)
            if registry.record_directory(issued):
                logger.info(
                    "device directory of %s: version %d, %d devices",
                    region,
                    issued.version,
                    len(planned.devices),
                )
                held = issued
                break
            held = registry.directory(region)
        if held is not None:
            publications.append(directory_publication(held))
    return publications


def retained_snapshot(registry: Registry, *, roots: Sequence[TrustRoot]) -> list[Publication]:
    """Everything retained the hub is the source of, apart from acks: every root version,
    the current bundle of each channel and the newest revocation of each revocation topic.

    Raises:
        RegistryError: the registry cannot be read.
    """
    publications = root_publications(roots, registry.regions())
    publications += bundle_publications(publishable_bundles(registry))
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

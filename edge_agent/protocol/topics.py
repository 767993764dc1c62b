"""MQTT topic names (DESIGN.md section 5): one place builds and parses them.

Layout under ``edgegov/v1/{region}/`` (at most 7 levels; docs/mqtt.md is the long form)::

    root/{version}                  hub -> devices  retained  trust roots, one per version
    bundle/{channel}/{name}         hub -> devices  retained  the current bundle of a channel
    shadow/{channel}/{name}         hub -> devices  retained  a candidate evaluated beside it
    fresh/{channel}/{name}          hub -> devices  retained  freshness token of that channel
    revoke/{kind}/{value}           hub -> devices  retained  revocations
    trust/directory                 hub -> devices  retained  the signed device directory
    device/{id}/status              device -> hub   retained  signed status; last will "offline"
    device/{id}/lineage             device -> hub   QoS 1     signed lineage batches
    device/{id}/ack                 hub -> device   retained  signed acknowledgements
    device/{id}/challenge           hub -> device   QoS 1     attestation challenge (nonce)
    device/{id}/evidence            device -> hub   QoS 1     signed attestation evidence
    device/{id}/attestation         hub -> device   retained  signed attestation result

A *channel* is who a bundle is addressed to: ``all`` (name ``_``, every device of the
region), ``group`` (a device group) or ``device`` (one device id).

Names that go into a topic must be topic-safe (:func:`check_topic_name`): no ``/``, ``+``,
``#``, spaces or control characters, so one device can never address another's topics.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "PREFIX",
    "SHARED_GROUP",
    "Channel",
    "ChannelKind",
    "DeviceLeaf",
    "DeviceTopic",
    "agent_channels",
    "agent_subscriptions",
    "bundle_topic",
    "channels_for_target",
    "check_topic_name",
    "device_topic",
    "directory_topic",
    "freshness_topic",
    "hub_status_reads",
    "hub_subscriptions",
    "is_trust_topic",
    "parse_device_topic",
    "revocation_topic",
    "root_topic",
    "shadow_topic",
]

PREFIX = "edgegov/v1"
SHARED_GROUP = "edgegov-hub"
"""The shared-subscription group hubs consume device topics through."""

_NAME = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
_ALL_NAME = "_"
_TRUST_KINDS = frozenset({"root", "bundle", "shadow", "revoke", "fresh", "trust"})


class ChannelKind(StrEnum):
    ALL = "all"
    GROUP = "group"
    DEVICE = "device"


class DeviceLeaf(StrEnum):
    STATUS = "status"
    LINEAGE = "lineage"
    ACK = "ack"
    CHALLENGE = "challenge"
    EVIDENCE = "evidence"
    ATTESTATION = "attestation"


@dataclass(frozen=True, slots=True)
class Channel:
    """Who a bundle (and the freshness token that pins it) is addressed to."""

    kind: ChannelKind
    name: str = _ALL_NAME

    def __post_init__(self) -> None:
        if self.kind is ChannelKind.ALL:
            if self.name != _ALL_NAME:
                raise ValueError("the 'all' channel has no name")
        else:
            check_topic_name(self.name, f"{self.kind} name")

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    region: str
    device_id: str
    leaf: DeviceLeaf


def check_topic_name(value: str, what: str) -> str:
    """Return ``value`` if it can be one topic level; raise ``ValueError`` otherwise."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value == _ALL_NAME:
        raise ValueError(
            f"{what} {value!r} cannot be used in MQTT topics: use 1-64 of A-Z a-z 0-9 . _ : @ -"
        )
    return value


def _region(region: str) -> str:
    return f"{PREFIX}/{check_topic_name(region, 'region')}"


def root_topic(region: str, version: int) -> str:
    return f"{_region(region)}/root/{version}"


def bundle_topic(region: str, channel: Channel) -> str:
    return f"{_region(region)}/bundle/{channel}"


def shadow_topic(region: str, channel: Channel) -> str:
    """The retained topic of ``channel``'s shadow bundle: a signed bundle exactly as on
    :func:`bundle_topic`, which agents verify the same way and evaluate beside the active
    bundle without letting it decide (docs/rollout.md, "Shadow mode"); an empty retained
    message clears it."""
    return f"{_region(region)}/shadow/{channel}"


def freshness_topic(region: str, channel: Channel) -> str:
    return f"{_region(region)}/fresh/{channel}"


def revocation_topic(region: str, kind: str, value: str) -> str:
    return f"{_region(region)}/revoke/{check_topic_name(kind, 'revocation kind')}/" + (
        check_topic_name(value, "revocation value")
    )


def directory_topic(region: str) -> str:
    """The retained topic of the region's signed device directory (``protocol.directory``)."""
    return f"{_region(region)}/trust/directory"


def device_topic(region: str, device_id: str, leaf: DeviceLeaf) -> str:
    return f"{_region(region)}/device/{check_topic_name(device_id, 'device id')}/{leaf}"


def parse_device_topic(topic: str) -> DeviceTopic:
    """The parts of a device topic; raise ``ValueError`` for anything else."""
    parts = topic.split("/")
    if len(parts) != 6 or f"{parts[0]}/{parts[1]}" != PREFIX or parts[3] != "device":
        raise ValueError(f"{topic!r} is not an edgegov device topic")
    region, device_id = check_topic_name(parts[2], "region"), check_topic_name(parts[4], "id")
    try:
        leaf = DeviceLeaf(parts[5])
    except ValueError as exc:
        raise ValueError(f"{topic!r} has an unknown device topic leaf") from exc
    return DeviceTopic(region, device_id, leaf)


def channels_for_target(devices: Sequence[str], groups: Sequence[str]) -> tuple[Channel, ...]:
    """The channels a bundle with this target is published on.

    Device-addressed bundles go to each device's channel, group-addressed ones to each
    group's, and a bundle for the whole region to ``all``. The agent verifies the target
    itself: the channel only routes.
    """
    if devices:
        return tuple(Channel(ChannelKind.DEVICE, d) for d in sorted(devices))
    if groups:
        return tuple(Channel(ChannelKind.GROUP, g) for g in sorted(groups))
    return (Channel(ChannelKind.ALL),)


def agent_channels(device_id: str, groups: Sequence[str]) -> tuple[Channel, ...]:
    """Every channel a device listens on: its own, each of its groups', and ``all``."""
    return (
        Channel(ChannelKind.DEVICE, device_id),
        *(Channel(ChannelKind.GROUP, g) for g in sorted(groups)),
        Channel(ChannelKind.ALL),
    )


def agent_subscriptions(region: str, device_id: str, groups: Sequence[str]) -> tuple[str, ...]:
    """The topic filters an agent subscribes to (directly: retained messages must arrive)."""
    base = _region(region)
    filters = [
        f"{base}/root/+",
        f"{base}/revoke/#",
        directory_topic(region),
        device_topic(region, device_id, DeviceLeaf.ACK),
        device_topic(region, device_id, DeviceLeaf.CHALLENGE),
        device_topic(region, device_id, DeviceLeaf.ATTESTATION),
    ]
    for channel in agent_channels(device_id, groups):
        filters.append(bundle_topic(region, channel))
        filters.append(shadow_topic(region, channel))
        filters.append(freshness_topic(region, channel))
    return tuple(filters)


def hub_subscriptions(region: str, shared: bool) -> tuple[str, ...]:
    """The filters a hub subscribes to.

    Lineage, status and attestation evidence go through a shared subscription when several
    hubs run, so each batch is stored once, each nonce is spent by one hub and each status
    is verified by one hub. Shared subscriptions do not deliver retained messages, so a hub
    also reads the statuses the broker holds through :func:`hub_status_reads` when it
    connects. The retained trust topics (roots, bundles, revocations, the device directory)
    are subscribed directly, so that the hub knows what the broker holds already: what
    ``edge-hub bundle push`` or ``revoke`` published (or another hub process's directory) is
    not sent to every device a second time.
    """
    base = _region(region)
    consumed = [
        f"{base}/device/+/{leaf}"
        for leaf in (DeviceLeaf.LINEAGE, DeviceLeaf.STATUS, DeviceLeaf.EVIDENCE)
    ]
    if shared:
        consumed = [f"$share/{SHARED_GROUP}/{topic}" for topic in consumed]
    retained = (f"{base}/root/+", f"{base}/bundle/#", f"{base}/revoke/#", directory_topic(region))
    return (*consumed, *retained)


def hub_status_reads(region: str, shared: bool) -> tuple[str, ...]:
    """The direct status filter a hub with shared subscriptions holds only while it reads
    the statuses the broker has retained (every device's last, a dead device's last will
    among them), which a shared subscription never delivers; none without sharing, where
    :func:`hub_subscriptions` subscribes to status directly for good."""
    return (f"{_region(region)}/device/+/{DeviceLeaf.STATUS}",) if shared else ()


def is_trust_topic(topic: str) -> bool:
    """Whether ``topic`` is one the hub publishes retained trust objects on (a root, a
    channel's bundle or shadow bundle, a revocation, a channel's freshness token, the device
    directory)."""
    parts = topic.split("/")
    return len(parts) >= 5 and f"{parts[0]}/{parts[1]}" == PREFIX and parts[3] in _TRUST_KINDS

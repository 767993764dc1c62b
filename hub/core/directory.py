"""The signed device directory a hub issues per region: when a new version is due, and what
it holds.

Agents verify other devices' decisions (a parent receipt) offline with the keys the
directory lists (``edge_agent.protocol.directory``), so the hub issues a new version, always
one above the last it recorded:

- when none was issued for the region yet;
- when what it lists changed: a device added, removed or re-keyed, or its groups changed
  (compared by :func:`directory_content`, the SHA-256 of the listed devices);
- before it expires: once less than half its validity is left (:func:`next_directory`), so
  a hub that runs its schedule never lets agents hold an expired one.

Versions only go up: the registry records each issued directory with a compare-and-set on
its version, before it is published, so two hub processes or a restarted one never publish
one version twice with different contents. This module reads no registry and no clock:
``now`` and the recorded directory are parameters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor, topics
from edge_agent.protocol.directory import (
    MAX_DIRECTORY_BYTES,
    DirectoryDevice,
    directory_payload,
    sign_directory,
)
from edge_agent.protocol.keys import PrivateKey
from hub.core.publications import Publication
from hub.registry.records import DeviceRecord, IssuedDirectory

__all__ = [
    "DEFAULT_DIRECTORY_TTL_S",
    "PlannedDirectory",
    "directory_content",
    "directory_devices",
    "directory_publication",
    "issue_directory",
    "listed_groups",
    "next_directory",
]

DEFAULT_DIRECTORY_TTL_S = 7 * 24 * 3600
"""Seconds a directory is valid; a new version is issued once less than half is left."""


@dataclass(frozen=True, slots=True)
class PlannedDirectory:
    """A directory version to sign: the region's devices at ``issued_at``."""

    region: str
    version: int
    issued_at: int
    expires_at: int
    devices: tuple[DirectoryDevice, ...]


def directory_devices(devices: Iterable[DeviceRecord], region: str) -> tuple[DirectoryDevice, ...]:
    """The entries of ``region``'s registered devices, sorted by device id."""
    return tuple(
        DirectoryDevice(id=d.device_id, key=d.public_key, epoch=d.key_epoch, groups=d.groups)
        for d in sorted(devices, key=lambda d: d.device_id)
        if d.region == region
    )


def directory_content(devices: Iterable[DirectoryDevice]) -> bytes:
    """SHA-256 of the listed devices (id, key, epoch, sorted groups): equal exactly when two
    directories list the same devices the same way."""
    listed = [
        [d.id, d.key.raw, d.epoch, sorted(d.groups)] for d in sorted(devices, key=lambda d: d.id)
    ]
    return hashlib.sha256(dcbor.encode(listed)).digest()


def next_directory(
    held: IssuedDirectory | None,
    devices: Iterable[DeviceRecord],
    *,
    region: str,
    now: int,
    ttl_s: int,
) -> PlannedDirectory | None:
    """The directory to issue for ``region`` now, or ``None`` when ``held`` (the one last
    recorded) lists the same devices and has at least half of ``ttl_s`` left.

    Raises:
        ValueError: ``ttl_s`` is not positive.
    """
    if ttl_s <= 0:
        raise ValueError("a directory's validity must be positive")
    listed = directory_devices(devices, region)
    if (
        held is not None
        and held.content == directory_content(listed)
        and held.expires_at - now >= ttl_s // 2
    ):
        return None
    version = 1 if held is None else held.version + 1
    return PlannedDirectory(
        region=region, version=version, issued_at=now, expires_at=now + ttl_s, devices=listed
    )


def issue_directory(directory: PlannedDirectory, key: PrivateKey) -> IssuedDirectory:
    """``directory`` signed with ``key`` (the hub's verifier role key), as the registry
    records it."""
    payload = directory_payload(
        region=directory.region,
        version=directory.version,
        issued_at=directory.issued_at,
        expires_at=directory.expires_at,
        devices=directory.devices,
    )
    return IssuedDirectory(
        region=directory.region,
        version=directory.version,
        content=directory_content(directory.devices),
        data=sign_directory(payload, region=directory.region, key=key),
        issued_at=directory.issued_at,
        expires_at=directory.expires_at,
    )


def directory_publication(issued: IssuedDirectory) -> Publication:
    """The retained publication of ``issued`` on its region's directory topic."""
    return Publication(topics.directory_topic(issued.region), issued.data)


def listed_groups(data: bytes, device_id: str) -> tuple[int, tuple[str, ...] | None] | None:
    """The version of the directory ``data`` this hub issued (as its registry recorded it,
    so not verified again) and the groups it lists for ``device_id`` (``None``: not
    listed); ``None`` when the bytes are not a directory."""
    value: object
    try:
        value = dcbor.decode(
            cose.peek_payload(data, max_bytes=MAX_DIRECTORY_BYTES),
            max_bytes=MAX_DIRECTORY_BYTES,
            what="device directory",
        )
    except EnvelopeError:
        return None
    if not isinstance(value, dict):
        return None
    version, devices = value.get("version"), value.get("devices")
    if not isinstance(version, int) or not isinstance(devices, list):
        return None
    for device in devices:
        if isinstance(device, dict) and device.get("id") == device_id:
            groups = device.get("groups")
            if isinstance(groups, list) and all(isinstance(g, str) for g in groups):
                return version, tuple(g for g in groups if isinstance(g, str))
            return None
    return version, None

"""The device directory: the hub's signed list of every registered device of a region.

An agent verifies a decision receipt made on another device (a *parent*, docs/policy.md)
with that device's key, and must do so with no network call at decision time: the hub
publishes the region's directory, retained, on ``edgegov/v1/<region>/trust/directory``, and
every agent keeps the newest one it verified. The object is a ``COSE_Sign1`` by a verifier
role key of the trust root (the hub's online key, already its witness), content type
``application/edgegov-device-directory+cbor``, ``external_aad`` = ``["edgegov/v1",
"verifier", region]``, whose payload is::

    {"region": tstr, "version": uint >= 1, "issued_at": uint, "expires_at": uint,
     "devices": [{"id": tstr, "key": bstr .size 32, "epoch": uint >= 1,
                  "groups": [tstr]}]}          ; sorted by id, each id and key once

Rules: the signature is checked over the exact bytes before anything is decoded; sizes and
counts are bounded before and during parsing (:data:`MAX_DIRECTORY_BYTES`,
:data:`MAX_DIRECTORY_DEVICES`); :func:`check_directory_update` refuses a lower version than
the one held (rollback), keeps the held one at an equal version, and refuses an expired one.
A directory that expires while held is judged by whoever reads it, at their own ``now``
(:meth:`Directory.expired_at`). This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol._schema import Fields, check_name
from edge_agent.protocol.checkpoint import origin_for
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.limits import MAX_MESSAGE_BYTES
from edge_agent.protocol.roles import Role, external_aad
from edge_agent.protocol.root import TrustRoot

__all__ = [
    "CONTENT_TYPE",
    "MAX_DEVICE_GROUPS",
    "MAX_DIRECTORY_BYTES",
    "MAX_DIRECTORY_DEVICES",
    "Directory",
    "DirectoryDevice",
    "DirectoryError",
    "check_directory_update",
    "directory_payload",
    "sign_directory",
    "verify_directory",
]

CONTENT_TYPE = "application/edgegov-device-directory+cbor"

MAX_DIRECTORY_BYTES = MAX_MESSAGE_BYTES
"""Largest signed directory accepted, in bytes: the largest MQTT message edgegov sends
(2 MiB). A device with a 12-character id and two groups takes about 90 bytes, so this holds
about 23,000 such devices; :data:`MAX_DIRECTORY_DEVICES` is the count bound behind it."""

MAX_DIRECTORY_DEVICES = 100_000
"""Devices in one region's directory."""

MAX_DEVICE_GROUPS = 64
"""Groups one device of the directory may be in."""

_PAYLOAD_KEYS = frozenset({"region", "version", "issued_at", "expires_at", "devices"})
_DEVICE_KEYS = frozenset({"id", "key", "epoch", "groups"})


class DirectoryError(EnvelopeError):
    """A device directory was refused: too large, malformed, badly signed, for another
    region, older than the one held, or expired."""

    code = "directory_rejected"
    codes = ("directory_expired", "directory_rollback")


@dataclass(frozen=True, slots=True)
class DirectoryDevice:
    """One registered device: its id, its current device key and key epoch, its groups."""

    id: str
    key: PublicKey
    epoch: int
    groups: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        """The origin of this device's lineage log under its current key epoch."""
        return origin_for(self.id, self.epoch)


@dataclass(frozen=True, slots=True)
class Directory:
    """A verified device directory, with the exact bytes it was verified from."""

    region: str
    version: int
    issued_at: int
    expires_at: int
    devices: Mapping[str, DirectoryDevice] = field(repr=False)
    """Device id -> device."""
    raw: bytes = field(default=b"", compare=False, repr=False)
    by_origin: Mapping[str, DirectoryDevice] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Log origin (:attr:`DirectoryDevice.origin`) -> device: how a receipt's checkpoint
    names the device that signed it."""

    def expired_at(self, now: int) -> bool:
        """Whether the directory is past its ``expires_at`` at ``now``."""
        return now >= self.expires_at


def directory_payload(
    *,
    region: str,
    version: int,
    issued_at: int,
    expires_at: int,
    devices: Sequence[DirectoryDevice],
) -> bytes:
    """The deterministic CBOR payload of a directory (devices sorted by id, groups sorted).

    Raises:
        ValueError: a device id appears twice.
    """
    ordered = sorted(devices, key=lambda d: d.id)
    if len({d.id for d in ordered}) != len(ordered):
        raise ValueError("a device id appears twice in the directory")
    return dcbor.encode(
        {
            "region": region,
            "version": version,
            "issued_at": issued_at,
            "expires_at": expires_at,
            "devices": [
                {"id": d.id, "key": d.key.raw, "epoch": d.epoch, "groups": sorted(d.groups)}
                for d in ordered
            ],
        }
    )


def sign_directory(payload: bytes, *, region: str, key: PrivateKey) -> bytes:
    """The hub's ``COSE_Sign1`` of a directory payload for ``region`` (a verifier-role key)."""
    return cose.sign1(
        payload,
        key=key,
        content_type=CONTENT_TYPE,
        external_aad=external_aad(Role.VERIFIER, region),
        kid=key.public.key_id,
    )


def verify_directory(data: bytes, *, root: TrustRoot, region: str) -> Directory:
    """Verify a directory for ``region`` signed by a verifier key of ``root``, and parse it.

    Steps: 1. size cap; 2. the signature, over the exact bytes, by a verifier key for this
    region; 3. strict decode; 4. schema: the region it names, version and times, then every
    device (id, 32-byte key, epoch, groups), ids strictly ascending, no key twice. Expiry and
    version are not judged here (:func:`check_directory_update`).

    Raises:
        DirectoryError: any step fails.
    """
    if not isinstance(data, bytes) or len(data) > MAX_DIRECTORY_BYTES:
        raise DirectoryError(f"a device directory is at most {MAX_DIRECTORY_BYTES} bytes")
    try:
        verified = cose.verify_sign1(
            data,
            keys=root.role(Role.VERIFIER).keys,
            content_type=CONTENT_TYPE,
            external_aad=external_aad(Role.VERIFIER, region),
            max_bytes=MAX_DIRECTORY_BYTES,
        )
        value = dcbor.decode(
            verified.payload, max_bytes=MAX_DIRECTORY_BYTES, what="device directory"
        )
    except EnvelopeError as exc:
        raise DirectoryError(f"device directory refused: {exc.message}") from exc
    return _parse(value, region, data)


def _parse(value: object, region: str, raw: bytes) -> Directory:
    fields = Fields(value, "device directory", DirectoryError, required=_PAYLOAD_KEYS)
    named = fields.name("region")
    if named != region:
        raise DirectoryError(f"the device directory is for region {named!r}, not {region!r}")
    version = fields.integer("version", minimum=1)
    issued_at, expires_at = fields.integer("issued_at"), fields.integer("expires_at")
    if expires_at <= issued_at:
        raise DirectoryError("the device directory expires before it was issued")
    listed = fields.raw("devices")
    if not isinstance(listed, list) or len(listed) > MAX_DIRECTORY_DEVICES:
        raise DirectoryError(
            f"device directory.devices must be a list of at most {MAX_DIRECTORY_DEVICES}"
        )
    devices: dict[str, DirectoryDevice] = {}
    by_origin: dict[str, DirectoryDevice] = {}
    keys: set[bytes] = set()
    previous = ""
    for item in listed:
        device = _device(item)
        if device.id <= previous:
            raise DirectoryError(
                f"device directory lists {device.id!r} out of order or twice (sorted by id)"
            )
        if device.key.raw in keys:
            raise DirectoryError(f"device directory gives {device.id!r} another device's key")
        previous = device.id
        keys.add(device.key.raw)
        devices[device.id] = device
        by_origin[device.origin] = device
    return Directory(named, version, issued_at, expires_at, devices, raw, by_origin)


def _device(value: object) -> DirectoryDevice:
    fields = Fields(value, "device directory entry", DirectoryError, required=_DEVICE_KEYS)
    device_id = fields.name("id")
    groups = fields.raw("groups")
    if not isinstance(groups, list) or len(groups) > MAX_DEVICE_GROUPS:
        raise DirectoryError(
            f"device {device_id!r}: groups must be a list of at most {MAX_DEVICE_GROUPS} names"
        )
    names = tuple(check_name(g, f"device {device_id!r} group", DirectoryError) for g in groups)
    if list(names) != sorted(set(names)):
        raise DirectoryError(f"device {device_id!r}: groups must be sorted, each once")
    return DirectoryDevice(
        device_id,
        PublicKey(fields.byte_string("key", length=32)),
        fields.integer("epoch", minimum=1),
        names,
    )


def check_directory_update(held: Directory | None, offered: Directory, now: int) -> Directory:
    """The directory to keep after ``offered`` (verified) arrives while ``held`` is kept.

    TUF's order: a lower version than the one held is a rollback; an equal version changes
    nothing (the held one is kept); then a newer one must not be expired at ``now``.

    Raises:
        DirectoryError: rollback (code ``directory_rollback``) or expired
            (``directory_expired``).
    """
    if held is not None:
        if offered.version < held.version:
            raise DirectoryError(
                f"device directory version {offered.version} is older than the held version "
                f"{held.version}: refused as a rollback",
                code="directory_rollback",
            )
        if offered.version == held.version:
            return held
    if offered.expired_at(now):
        raise DirectoryError(
            f"device directory version {offered.version} expired {now - offered.expires_at} s ago",
            code="directory_expired",
        )
    return offered

"""What a device and its hub exchange about one device: lineage batches, acks and status.

All three are ``COSE_Sign1`` objects, each with its own content type and ``external_aad``
(``["edgegov/v1", role, "<kind>/<device id>"]``) so none can pass as another or as another
device's::

    lineage batch (device key):
      {"device": tstr, "first_seq": uint, "entries": [+ bstr],  ; entries as stored, in order
       "checkpoint": tstr}     ; signed note over tree size first_seq + len(entries)
    ack (hub freshness key):
      {"device": tstr, "acked": uint,      ; entries 0 .. acked-1 are stored and verified
       "root": bstr .size 32,              ; the tree root at size ``acked`` the hub recomputed
       "hub_time": uint,
       ? "checkpoint": tstr}   ; the device's note at size ``acked`` with the hub's
                               ; cosignature/v1 line; absent when the hub holds none there
    status (device key):
      {"device": tstr, "time": uint, "online": bool, "bundle_version": uint / null,
       "expires_at": uint / null, "gate": tstr, "lineage_size": uint, "acked": uint}
                               ; gate: "open" or the reason code decisions deny with,
                               ; 1-64 of [a-z0-9_]

The ack states, signed, the tree root the hub verified at that size, and carries the
device's checkpoint note there cosigned by the hub's witness key (DESIGN.md section 4, the
hub as witness; docs/receipts.md): the device keeps that note so its own receipts carry the
witness's cosignature. The ack only carries the note; whoever relies on the cosignature
checks it (the note is bounded here, not verified). The status is informational only;
nothing decides on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol._device_scoped import device_aad, open_sign1, same_device
from edge_agent.protocol._schema import Fields
from edge_agent.protocol.checkpoint import MAX_NOTE_BYTES
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import TrustRoot

__all__ = [
    "ACK_CONTENT_TYPE",
    "BATCH_CONTENT_TYPE",
    "MAX_ACK_BYTES",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ENTRIES",
    "MAX_STATUS_BYTES",
    "STATUS_CONTENT_TYPE",
    "Ack",
    "DeviceStatus",
    "LineageBatch",
    "ShippingError",
    "sign_ack",
    "sign_batch",
    "sign_status",
    "verify_ack",
    "verify_batch",
    "verify_status",
]

BATCH_CONTENT_TYPE = "application/edgegov-lineage-batch+cbor"
ACK_CONTENT_TYPE = "application/edgegov-lineage-ack+cbor"
STATUS_CONTENT_TYPE = "application/edgegov-status+cbor"

MAX_BATCH_ENTRIES = 512
MAX_BATCH_BYTES = 1024 * 1024
"""A batch of 512 typical entries (about 300 bytes each) is about 160 KiB; 1 MiB bounds it."""
MAX_ACK_BYTES = 1024 + MAX_NOTE_BYTES
"""The ack's fixed fields fit in 1 KiB with room to spare; its optional checkpoint note is at
most :data:`MAX_NOTE_BYTES` of UTF-8."""
MAX_STATUS_BYTES = 2048
_GATE = re.compile(r"[a-z0-9_]{1,64}\Z")
"""A status gate: ``open`` or a reason code, a token any store and screen shows as it is."""
_ROOT_BYTES = 32


class ShippingError(EnvelopeError):
    """A lineage batch, ack or status was refused: malformed, badly signed or misaddressed."""

    code = "shipping_rejected"


@dataclass(frozen=True, slots=True)
class LineageBatch:
    device: str
    first_seq: int
    entries: tuple[bytes, ...]
    checkpoint: str


@dataclass(frozen=True, slots=True)
class Ack:
    device: str
    acked: int
    root: bytes
    hub_time: int
    checkpoint: str | None = None
    """The cosigned checkpoint note at size ``acked``, when the hub holds one."""


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device: str
    time: int
    online: bool
    bundle_version: int | None
    expires_at: int | None
    gate: str
    lineage_size: int
    acked: int


def sign_batch(batch: LineageBatch, key: PrivateKey) -> bytes:
    """The device-signed ``COSE_Sign1`` of ``batch``."""
    payload = dcbor.encode(
        {
            "device": batch.device,
            "first_seq": batch.first_seq,
            "entries": list(batch.entries),
            "checkpoint": batch.checkpoint,
        }
    )
    return cose.sign1(
        payload,
        key=key,
        content_type=BATCH_CONTENT_TYPE,
        external_aad=device_aad(Role.DEVICE, "lineage", batch.device),
    )


def verify_batch(data: bytes, *, device: str, key: PublicKey) -> LineageBatch:
    """Verify a batch that claims to come from ``device``, signed by its registered ``key``.

    Only the envelope and schema are checked here; the hub checks the chain, the tree and
    the checkpoint against what it already holds.

    Raises:
        ShippingError: too large, badly signed (another device's key included), malformed,
            empty, over ``MAX_BATCH_ENTRIES``, or naming another device.
    """
    value = open_sign1(
        data,
        keys={key.key_id: key},
        content_type=BATCH_CONTENT_TYPE,
        aad=device_aad(Role.DEVICE, "lineage", device),
        max_bytes=MAX_BATCH_BYTES,
        what=f"lineage from {device!r}",
        error=ShippingError,
    )
    fields = Fields(
        value,
        "lineage batch",
        ShippingError,
        required=frozenset({"device", "first_seq", "entries", "checkpoint"}),
    )
    entries = fields.raw("entries")
    if (
        not isinstance(entries, list)
        or not entries
        or len(entries) > MAX_BATCH_ENTRIES
        or not all(isinstance(e, bytes) for e in entries)
    ):
        raise ShippingError(f"lineage batch must hold 1 to {MAX_BATCH_ENTRIES} byte strings")
    checkpoint = fields.raw("checkpoint")
    if not isinstance(checkpoint, str):
        raise ShippingError("lineage batch checkpoint must be a signed note")
    return LineageBatch(
        same_device(fields, device, ShippingError),
        fields.integer("first_seq"),
        tuple(entries),
        checkpoint,
    )


def sign_ack(ack: Ack, *, key: PrivateKey) -> bytes:
    """The hub-signed ``COSE_Sign1`` of ``ack`` (freshness role key).

    Raises:
        ValueError: the checkpoint note is over :data:`MAX_NOTE_BYTES`.
    """
    fields: dict[str, object] = {
        "device": ack.device,
        "acked": ack.acked,
        "root": ack.root,
        "hub_time": ack.hub_time,
    }
    if ack.checkpoint is not None:
        if len(ack.checkpoint.encode("utf-8")) > MAX_NOTE_BYTES:
            raise ValueError(f"an ack's checkpoint note is at most {MAX_NOTE_BYTES} bytes")
        fields["checkpoint"] = ack.checkpoint
    payload = dcbor.encode(fields)
    return cose.sign1(
        payload,
        key=key,
        content_type=ACK_CONTENT_TYPE,
        external_aad=device_aad(Role.FRESHNESS, "ack", ack.device),
        kid=key.public.key_id,
    )


def verify_ack(data: bytes, *, root: TrustRoot, device: str) -> Ack:
    """Verify an ack for ``device`` signed by a freshness key of ``root``.

    Raises:
        ShippingError: too large, not signed by a freshness key, malformed (a checkpoint
            that is not text of at most :data:`MAX_NOTE_BYTES` bytes included), or for
            another device.
    """
    value = open_sign1(
        data,
        keys=root.role(Role.FRESHNESS).keys,
        content_type=ACK_CONTENT_TYPE,
        aad=device_aad(Role.FRESHNESS, "ack", device),
        max_bytes=MAX_ACK_BYTES,
        what=f"ack from {device!r}",
        error=ShippingError,
    )
    fields = Fields(
        value,
        "ack",
        ShippingError,
        required=frozenset({"device", "acked", "root", "hub_time"}),
        optional=frozenset({"checkpoint"}),
    )
    return Ack(
        same_device(fields, device, ShippingError),
        fields.integer("acked"),
        fields.byte_string("root", length=_ROOT_BYTES),
        fields.integer("hub_time"),
        _ack_checkpoint(fields),
    )


def _ack_checkpoint(fields: Fields) -> str | None:
    if not fields.has("checkpoint"):
        return None
    note = fields.raw("checkpoint")
    if not isinstance(note, str) or len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise ShippingError(f"ack checkpoint must be a note of at most {MAX_NOTE_BYTES} bytes")
    return note


def sign_status(status: DeviceStatus, key: PrivateKey) -> bytes:
    """The device-signed ``COSE_Sign1`` of ``status``."""
    payload = dcbor.encode(
        {
            "device": status.device,
            "time": status.time,
            "online": status.online,
            "bundle_version": status.bundle_version,
            "expires_at": status.expires_at,
            "gate": status.gate,
            "lineage_size": status.lineage_size,
            "acked": status.acked,
        }
    )
    return cose.sign1(
        payload,
        key=key,
        content_type=STATUS_CONTENT_TYPE,
        external_aad=device_aad(Role.DEVICE, "status", status.device),
    )


def verify_status(data: bytes, *, device: str, key: PublicKey) -> DeviceStatus:
    """Verify a status that claims to come from ``device``, signed by its ``key``.

    Raises:
        ShippingError: too large, badly signed, malformed, or naming another device.
    """
    value = open_sign1(
        data,
        keys={key.key_id: key},
        content_type=STATUS_CONTENT_TYPE,
        aad=device_aad(Role.DEVICE, "status", device),
        max_bytes=MAX_STATUS_BYTES,
        what=f"status from {device!r}",
        error=ShippingError,
    )
    fields = Fields(
        value,
        "status",
        ShippingError,
        required=frozenset(
            {
                "device",
                "time",
                "online",
                "bundle_version",
                "expires_at",
                "gate",
                "lineage_size",
                "acked",
            }
        ),
    )
    online, gate = fields.raw("online"), fields.raw("gate")
    if not isinstance(online, bool) or not isinstance(gate, str) or not _GATE.match(gate):
        raise ShippingError(
            "status.online must be a bool and status.gate 'open' or a reason code "
            "(1-64 of a-z, 0-9, _)"
        )
    return DeviceStatus(
        same_device(fields, device, ShippingError),
        fields.integer("time"),
        online,
        fields.optional_integer("bundle_version"),
        fields.optional_integer("expires_at"),
        gate,
        fields.integer("lineage_size"),
        fields.integer("acked"),
    )

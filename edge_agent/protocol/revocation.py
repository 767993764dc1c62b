"""Revocations (the kill switch): signed by the revoke role, they can only ever deny.

A revocation is a COSE_Sign object (role ``revoke``, scope = region) whose payload is::

    {"epoch": uint >= 1, "issued_at": uint,
     "kind": "device" | "group" | "region" | "key" | "bundle",
     "value": tstr,          ; device id, group, region, key id (hex) or bundle version (decimal)
     "reason": tstr}

Epochs only go up. This module verifies the envelope and parses; what a verified revocation
does to a device (applied, only its epoch recorded, or nothing) is decided in one place, by
:func:`edge_agent.trust.state.revocation_effect`. A device/group/region revocation denies
everything in that scope until a policy bundle issued after it is installed; a key
revocation stops that key counting towards thresholds; a bundle revocation denies that
bundle version and every older one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol._schema import Fields, check_counter
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.limits import MAX_REVOCATION_BYTES
from edge_agent.protocol.roles import Role, content_type, external_aad
from edge_agent.protocol.root import TrustRoot

__all__ = [
    "Revocation",
    "RevocationError",
    "RevocationKind",
    "revocation_payload",
    "sign_revocation",
    "verify_revocation",
]

MAX_REASON_CHARS = 512


class RevocationError(EnvelopeError):
    """A revocation was refused: too large, malformed, or badly signed."""

    code = "revocation_rejected"


class RevocationKind(StrEnum):
    DEVICE = "device"
    GROUP = "group"
    REGION = "region"
    KEY = "key"
    BUNDLE = "bundle"


@dataclass(frozen=True, slots=True)
class Revocation:
    """A verified revocation."""

    epoch: int
    issued_at: int
    kind: RevocationKind
    value: str
    reason: str
    raw: bytes = field(default=b"", compare=False, repr=False)
    """The exact bytes it was verified from (empty when built to be signed), so a root
    rotation can verify it again under the new revoke keys."""

    def denies_device(self, device: DeviceIdentity) -> bool:
        """True when this revocation switches off every decision on ``device``."""
        return (
            (self.kind is RevocationKind.DEVICE and self.value == device.device_id)
            or (self.kind is RevocationKind.GROUP and self.value in device.groups)
            or (self.kind is RevocationKind.REGION and self.value == device.region)
        )

    def denies_bundle(self, version: int, signer_ids: frozenset[bytes], threshold: int) -> bool:
        """True when this revocation voids a bundle of ``version`` signed by ``signer_ids``."""
        if self.kind is RevocationKind.BUNDLE:
            return version <= int(self.value)
        if self.kind is RevocationKind.KEY:
            remaining = {k for k in signer_ids if k.hex() != self.value}
            return len(remaining) < threshold
        return False


def verify_revocation(data: bytes, *, root: TrustRoot, region: str) -> Revocation:
    """Verify a revocation for ``region`` against the revoke role of ``root`` and parse it.

    Its epoch is not judged here (:func:`edge_agent.trust.state.revocation_effect`).

    Raises:
        RevocationError: too large, malformed, or under threshold.
    """
    role = root.role(Role.REVOKE)
    try:
        verified = cose.verify_sign(
            data,
            keys=role.keys,
            content_type=content_type(Role.REVOKE),
            external_aad=external_aad(Role.REVOKE, region),
            max_bytes=MAX_REVOCATION_BYTES,
        )
        value = dcbor.decode(verified.payload, max_bytes=MAX_REVOCATION_BYTES, what="revocation")
    except EnvelopeError as exc:
        raise RevocationError(f"revocation refused: {exc.message}") from exc
    if len(verified.signer_ids) < role.threshold:
        raise RevocationError(
            f"revocation signed by {len(verified.signer_ids)} revoke key(s), "
            f"{role.threshold} required"
        )
    return _parse(value, data)


def _parse(value: object, raw: bytes) -> Revocation:
    fields = Fields(
        value,
        "revocation",
        RevocationError,
        required=frozenset({"epoch", "issued_at", "kind", "value", "reason"}),
    )
    kind_text = fields.raw("kind")
    try:
        kind = RevocationKind(str(kind_text) if isinstance(kind_text, str) else "")
    except ValueError as exc:
        raise RevocationError(f"revocation.kind {kind_text!r} is unknown") from exc
    target = fields.name("value")
    if kind is RevocationKind.BUNDLE:
        _check_bundle_version(target)
    reason = fields.raw("reason")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise RevocationError(f"revocation.reason must be text of at most {MAX_REASON_CHARS}")
    return Revocation(
        fields.integer("epoch", minimum=1),
        fields.integer("issued_at"),
        kind,
        target,
        reason,
        raw,
    )


def _check_bundle_version(text: str) -> None:
    """A bundle revocation names a version in plain decimal digits (no sign, no leading zero,
    no non-ASCII digit ``int`` would read differently) within the counter bound."""
    if not (text.isascii() and text.isdigit()) or text != str(int(text)):
        raise RevocationError("a bundle revocation's value must be a version number")
    check_counter(int(text), "a bundle revocation's version", RevocationError, minimum=1)


def revocation_payload(revocation: Revocation) -> bytes:
    """The deterministic CBOR payload of ``revocation``."""
    return dcbor.encode(
        {
            "epoch": revocation.epoch,
            "issued_at": revocation.issued_at,
            "kind": str(revocation.kind),
            "value": revocation.value,
            "reason": revocation.reason,
        }
    )


def sign_revocation(payload: bytes, *, region: str, signers: list[PrivateKey]) -> bytes:
    """A COSE_Sign revocation over ``payload`` for ``region``."""
    return cose.sign(
        payload,
        keys=signers,
        content_type=content_type(Role.REVOKE),
        external_aad=external_aad(Role.REVOKE, region),
    )

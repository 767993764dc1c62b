"""What the ``COSE_Sign1`` objects scoped to one device share: lineage batches, acks and
status (:mod:`shipping`), attestation challenges, evidence and results (:mod:`attestation`).

Each binds its signature to a role, a kind and the device through ``external_aad``
(``["edgegov/v1", role, "<kind>/<device>"]``), is verified over the exact received bytes
before it is decoded, and must name in its payload the device it was verified for.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol._schema import Fields
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.roles import Role, external_aad

__all__ = ["device_aad", "open_sign1", "same_device"]


def device_aad(role: Role, kind: str, device: str) -> bytes:
    """The ``external_aad`` binding an object of ``kind`` by ``role`` to ``device``."""
    return external_aad(role, f"{kind}/{device}")


def open_sign1(
    data: bytes,
    *,
    keys: Mapping[bytes, PublicKey],
    content_type: str,
    aad: bytes,
    max_bytes: int,
    what: str,
    error: type[EnvelopeError],
) -> object:
    """Verify a ``COSE_Sign1`` by one of ``keys``, then strictly decode its payload.

    Raises:
        EnvelopeError: of class ``error``, naming ``what``: too large, badly signed for this
            content type and aad, or not deterministic CBOR.
    """
    try:
        verified = cose.verify_sign1(
            data, keys=keys, content_type=content_type, external_aad=aad, max_bytes=max_bytes
        )
        return dcbor.decode(verified.payload, max_bytes=max_bytes, what=what)
    except EnvelopeError as exc:
        raise error(f"{what} refused: {exc.message}") from exc


def same_device(fields: Fields, device: str, error: type[EnvelopeError]) -> str:
    """The payload's ``device`` field, which must be the device it was verified for."""
    named = fields.name("device")
    if named != device:
        raise error(f"payload names device {named!r}, not {device!r}")
    return named

"""Break-glass: a hub-signed, device-bound, time-limited token that puts exec enforcement in
``audit`` for a while, so a technician can recover a device whose workloads are all denied.

A token is a ``COSE_Sign`` by a threshold of the trust root's **verifier** role, content type
``application/edgegov-break-glass+cbor``, ``external_aad`` = ``["edgegov/v1", "verifier",
"break-glass/<device id>"]``, over::

    {"type": "break-glass", "device": tstr, "id": bstr .size 16,
     "issued_at": uint, "expires_at": uint,      ; Unix seconds; the window is N minutes
     "mode": "audit", "reason": tstr}

Why the verifier role. The revoke role must stay deny-only: a stolen revoke key may switch
devices off, never open one, and a token that relaxes enforcement signed by it would break
that. The verifier role already vouches for a single device's condition (attestation
results: per device, short-lived, issued by the hub after it has checked something), and a
break-glass token is the same kind of statement: "this device is under supervised
recovery now". The policy role grants, but its keys are kept for bundle builds and may be
offline; the root role is offline by design, useless in an incident.

What bounds it: the device id is in the payload and in the signature's scope (a token for
one device never opens another, and it cannot pass as an attestation result: its content
type differs); the window is at most :data:`MAX_WINDOW_S`; it is honoured only from
``issued_at`` (minus :data:`MAX_CLOCK_SKEW_S`) to ``expires_at`` as the agent's trusted time
judges (never earlier than its signed time floor, so setting the clock back cannot revive
an old token); keys revoked by a key revocation do not count; and while a revocation denies
this device no token is honoured (the kill switch outranks recovery). Audit still decides
and logs every exec: nothing runs unrecorded, and each entry names the token.

This module is the signed-object format, shared by the hub (which signs) and the agent:
:func:`verify_break_glass_token` checks everything a token says about itself, given the
verifier keys, the device id, the revoked key ids and trusted ``now``.
``edge_agent.trust.breakglass`` adds what the device's trust state decides (its time floor,
revocations of the device).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol._schema import Fields
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.limits import MAX_BREAK_GLASS_WINDOW_S as MAX_WINDOW_S
from edge_agent.protocol.roles import Role, external_aad
from edge_agent.protocol.root import TrustRoot

__all__ = [
    "CONTENT_TYPE",
    "MAX_BREAK_GLASS_BYTES",
    "MAX_CLOCK_SKEW_S",
    "MAX_REASON_CHARS",
    "MAX_WINDOW_S",
    "TOKEN_ID_BYTES",
    "BreakGlassError",
    "BreakGlassToken",
    "break_glass_payload",
    "sign_break_glass",
    "verify_break_glass_token",
]

CONTENT_TYPE = "application/edgegov-break-glass+cbor"
MAX_BREAK_GLASS_BYTES = 8192
MAX_CLOCK_SKEW_S = 300
"""How far ahead of the device's clock a token's ``issued_at`` may be."""
MAX_REASON_CHARS = 512
TOKEN_ID_BYTES = 16
_TYPE = "break-glass"
_MODE = "audit"


class BreakGlassError(EnvelopeError):
    """A break-glass recovery token was refused: malformed, badly signed, for another device,
    or outside its validity window."""

    code = "break_glass_rejected"


@dataclass(frozen=True, slots=True)
class BreakGlassToken:
    """A verified token."""

    device: str
    token_id: bytes
    issued_at: int
    expires_at: int
    reason: str

    @property
    def name(self) -> str:
        """A short name for logs and lineage entries."""
        return self.token_id.hex()[:16]


def _scope(device_id: str) -> str:
    return f"break-glass/{device_id}"


def break_glass_payload(token: BreakGlassToken) -> bytes:
    """The deterministic CBOR payload the hub signs."""
    return dcbor.encode(
        {
            "type": _TYPE,
            "device": token.device,
            "id": token.token_id,
            "issued_at": token.issued_at,
            "expires_at": token.expires_at,
            "mode": _MODE,
            "reason": token.reason,
        }
    )


def sign_break_glass(payload: bytes, *, device_id: str, signers: list[PrivateKey]) -> bytes:
    """A ``COSE_Sign`` break-glass token over ``payload`` by the verifier keys ``signers``."""
    return cose.sign(
        payload,
        keys=signers,
        content_type=CONTENT_TYPE,
        external_aad=external_aad(Role.VERIFIER, _scope(device_id)),
    )


def verify_break_glass_token(
    data: bytes, *, root: TrustRoot, device_id: str, revoked_keys: frozenset[str], now: int
) -> BreakGlassToken:
    """Verify a token for ``device_id`` under ``root`` at trusted time ``now``.

    ``revoked_keys`` are the hex key ids a key revocation has revoked: their signatures do
    not count towards the verifier threshold.

    Raises:
        BreakGlassError: too large, malformed, under the verifier threshold (revoked keys
            not counted), for another device, or outside its window.
    """
    role = root.role(Role.VERIFIER)
    try:
        verified = cose.verify_sign(
            data,
            keys=role.keys,
            content_type=CONTENT_TYPE,
            external_aad=external_aad(Role.VERIFIER, _scope(device_id)),
            max_bytes=MAX_BREAK_GLASS_BYTES,
        )
        value = dcbor.decode(verified.payload, max_bytes=MAX_BREAK_GLASS_BYTES, what="break-glass")
    except cose.UnverifiedEnvelopeError as exc:
        raise BreakGlassError(
            f"break-glass token signatures do not verify for device {device_id!r}: {exc.message}"
        ) from exc
    except EnvelopeError as exc:
        raise BreakGlassError(f"break-glass token refused: {exc.message}") from exc
    signers = [k for k in verified.signer_ids if k.hex() not in revoked_keys]
    if len(signers) < role.threshold:
        raise BreakGlassError(
            f"break-glass token signed by {len(signers)} valid verifier key(s), "
            f"{role.threshold} required"
        )
    token = _parse(value)
    if token.device != device_id:
        raise BreakGlassError(
            f"break-glass token is for device {token.device!r}, not {device_id!r}"
        )
    _check_window(token, now)
    return token


def _check_window(token: BreakGlassToken, now: int) -> None:
    if not 0 < token.expires_at - token.issued_at <= MAX_WINDOW_S:
        raise BreakGlassError(
            f"break-glass window must be between 1 s and {MAX_WINDOW_S} s "
            f"(token: {token.expires_at - token.issued_at} s)"
        )
    if now >= token.expires_at:
        raise BreakGlassError(f"break-glass token expired {now - token.expires_at} s ago")
    if token.issued_at - MAX_CLOCK_SKEW_S > now:
        raise BreakGlassError(
            f"break-glass token is issued {token.issued_at - now} s ahead of this device's "
            "clock; check the device time"
        )


def _parse(value: object) -> BreakGlassToken:
    fields = Fields(
        value,
        "break-glass",
        BreakGlassError,
        required=frozenset({"type", "device", "id", "issued_at", "expires_at", "mode", "reason"}),
    )
    if fields.raw("type") != _TYPE:
        raise BreakGlassError("not a break-glass token (type must be 'break-glass')")
    if fields.raw("mode") != _MODE:
        raise BreakGlassError("break-glass mode must be 'audit'")
    reason = fields.raw("reason")
    if not isinstance(reason, str) or not reason.isprintable() or len(reason) > MAX_REASON_CHARS:
        raise BreakGlassError(
            f"break-glass.reason must be printable text of at most {MAX_REASON_CHARS} chars"
        )
    return BreakGlassToken(
        device=fields.name("device"),
        token_id=fields.byte_string("id", length=TOKEN_ID_BYTES),
        issued_at=fields.integer("issued_at"),
        expires_at=fields.integer("expires_at"),
        reason=reason,
    )

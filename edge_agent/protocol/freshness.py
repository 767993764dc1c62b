"""Freshness tokens (TUF's timestamp role): the hub's signed word that a bundle is current.

A token is a ``COSE_Sign1`` by a key of the root's ``freshness`` role (scope = region)::

    {"region": tstr, "channel": tstr,          ; e.g. "group/line-a"
     "bundle_digest": bstr .size 32,           ; the bundle currently published on the channel
     "bundle_version": uint,
     "hub_time": uint, "expires_at": uint,     ; Unix seconds
     "kill_epoch": uint}                       ; highest revocation epoch the hub has issued

The agent uses a token in two ways: its ``hub_time`` is signed time (it advances the trusted
floor), and when it pins the installed bundle's digest it restarts that bundle's
``max_offline`` clock. A token for another digest says a newer bundle exists: it refreshes
nothing, so a device kept from its new bundle (a freeze) still fails closed at
``max_offline``. The freshness role is online and can only narrow: nothing in a token allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol._schema import Fields
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.roles import Role, content_type, external_aad
from edge_agent.protocol.root import TrustRoot

__all__ = [
    "MAX_FRESHNESS_BYTES",
    "FreshnessError",
    "FreshnessToken",
    "freshness_payload",
    "sign_freshness",
    "verify_freshness",
]

MAX_FRESHNESS_BYTES = 4096
_DIGEST_BYTES = 32


class FreshnessError(EnvelopeError):
    """A freshness token was refused: malformed, badly signed, for another region, or its
    validity window does not hold."""

    code = "freshness_rejected"


@dataclass(frozen=True, slots=True)
class FreshnessToken:
    """A verified freshness token, and its exact bytes (persisted so a restart keeps it)."""

    region: str
    channel: str
    bundle_digest: bytes
    bundle_version: int
    hub_time: int
    expires_at: int
    kill_epoch: int
    raw: bytes = b""


def freshness_payload(token: FreshnessToken) -> bytes:
    """The deterministic CBOR payload of ``token`` (``raw`` is not part of it)."""
    return dcbor.encode(
        {
            "region": token.region,
            "channel": token.channel,
            "bundle_digest": token.bundle_digest,
            "bundle_version": token.bundle_version,
            "hub_time": token.hub_time,
            "expires_at": token.expires_at,
            "kill_epoch": token.kill_epoch,
        }
    )


def sign_freshness(payload: bytes, *, region: str, key: PrivateKey) -> bytes:
    """A ``COSE_Sign1`` freshness token over ``payload`` for ``region``."""
    return cose.sign1(
        payload,
        key=key,
        content_type=content_type(Role.FRESHNESS),
        external_aad=external_aad(Role.FRESHNESS, region),
        kid=key.public.key_id,
    )


def verify_freshness(data: bytes, *, root: TrustRoot, region: str, now: int) -> FreshnessToken:
    """Verify a token for ``region`` signed by the freshness role of ``root``, valid at ``now``.

    A token whose ``hub_time`` is ahead of ``now`` is accepted (the device clock may be
    behind: signed time is how it learns); one past ``expires_at`` is refused.

    Raises:
        FreshnessError: too large, malformed, not signed by a freshness key, for another
            region, or expired.
    """
    role = root.role(Role.FRESHNESS)
    try:
        verified = cose.verify_sign1(
            data,
            keys=role.keys,
            content_type=content_type(Role.FRESHNESS),
            external_aad=external_aad(Role.FRESHNESS, region),
            max_bytes=MAX_FRESHNESS_BYTES,
        )
        value = dcbor.decode(verified.payload, max_bytes=MAX_FRESHNESS_BYTES, what="freshness")
    except EnvelopeError as exc:
        raise FreshnessError(f"freshness token refused: {exc.message}") from exc
    token = _parse(value, data)
    if token.region != region:
        raise FreshnessError(f"freshness token is for region {token.region!r}, not {region!r}")
    if token.expires_at <= token.hub_time:
        raise FreshnessError("freshness token expires before it was issued")
    if now >= token.expires_at:
        raise FreshnessError(f"freshness token expired {now - token.expires_at} s ago")
    return token


def _parse(value: object, raw: bytes) -> FreshnessToken:
    fields = Fields(
        value,
        "freshness",
        FreshnessError,
        required=frozenset(
            {
                "region",
                "channel",
                "bundle_digest",
                "bundle_version",
                "hub_time",
                "expires_at",
                "kill_epoch",
            }
        ),
    )
    channel = fields.raw("channel")
    if not isinstance(channel, str) or not channel.isprintable() or len(channel) > 200:
        raise FreshnessError("freshness.channel must be short printable text")
    return FreshnessToken(
        region=fields.name("region"),
        channel=channel,
        bundle_digest=fields.byte_string("bundle_digest", length=_DIGEST_BYTES),
        bundle_version=fields.integer("bundle_version", minimum=1),
        hub_time=fields.integer("hub_time"),
        expires_at=fields.integer("expires_at"),
        kill_epoch=fields.integer("kill_epoch"),
        raw=raw,
    )

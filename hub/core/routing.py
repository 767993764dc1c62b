"""Route one incoming MQTT message to a handler family, or refuse it with a reject code.

Pure: the MQTT service reads the registry, the clock and its rate limiters and hands the
answers in as values; nothing here verifies a signature, counts or logs. The checks run
cheapest first, each a function the service calls in this order:

1. :func:`claim`: the topic (a device topic of a family devices send on) and the size cap of
   that family, read from the payload's length before anything is parsed;
2. :func:`route`: a registered device (the service looks an oversize message's device up
   in its cache only: an oversize message is never worth a registry lookup), then the
   device's region, then the payload's shape (a ``COSE_Sign1`` envelope);
3. the signature, checked by the service from its verification budget: :func:`flooded`
   when the budget is spent, :func:`refused` when the message does not verify (or, past
   its first bytes, is no well-formed envelope at all);
4. :func:`admit`: only for what verified, the device's rate budget, so that what is not
   the device's never spends it.

A :class:`Reject` names the registered device it is counted against, or (``device``
``None``) the id the message claimed, counted per code only. Messages on topics the hub
publishes on itself (retained trust objects and freshness tokens, a device's ack,
challenge and attestation topics) are not routed here: :func:`hub_device_leaf` and
:func:`edge_agent.protocol.topics.is_trust_topic` tell them apart so the service can note them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from edge_agent.protocol import topics
from edge_agent.protocol.attestation import MAX_EVIDENCE_BYTES
from edge_agent.protocol.shipping import MAX_BATCH_BYTES, MAX_STATUS_BYTES
from edge_agent.protocol.topics import DeviceLeaf
from hub.core.codes import RejectCode

__all__ = [
    "HUB_DEVICE_LEAVES",
    "MAX_PAYLOAD_BYTES",
    "SIGN1_HEAD",
    "Claim",
    "RegisteredDevice",
    "Reject",
    "Route",
    "admit",
    "claim",
    "flooded",
    "hub_device_leaf",
    "queue_key",
    "refused",
    "route",
]

SIGN1_HEAD = b"\xd2\x84"
"""What every device-signed message starts with: CBOR tag 18 (COSE_Sign1), an array of 4."""
MAX_PAYLOAD_BYTES: Mapping[DeviceLeaf, int] = {
    DeviceLeaf.LINEAGE: MAX_BATCH_BYTES,
    DeviceLeaf.STATUS: MAX_STATUS_BYTES,
    DeviceLeaf.EVIDENCE: MAX_EVIDENCE_BYTES,
}
"""The device topic leaves the hub handles (one handler family each) and their size caps."""
HUB_DEVICE_LEAVES = (DeviceLeaf.ACK, DeviceLeaf.CHALLENGE, DeviceLeaf.ATTESTATION)
"""Device topics only the hub publishes on."""
_PROBE_PREFIX = f"{topics.PREFIX}/_probe/"
"""The hub's own shared-subscription probe (never a rejection)."""


class RegisteredDevice(Protocol):
    """What routing reads of a registered device (the registry's device record)."""

    @property
    def device_id(self) -> str: ...

    @property
    def region(self) -> str: ...


D = TypeVar("D", bound=RegisteredDevice)


@dataclass(frozen=True, slots=True)
class Claim:
    """A message on a device topic of a family the hub handles, before its device is known."""

    region: str
    device_id: str
    """The device the topic names (not yet known to be registered)."""
    leaf: DeviceLeaf
    size: int
    sign1_shaped: bool
    """Whether the payload is shaped as a ``COSE_Sign1`` envelope."""

    @property
    def oversize(self) -> bool:
        return self.size > MAX_PAYLOAD_BYTES[self.leaf]


@dataclass(frozen=True, slots=True)
class Route(Generic[D]):
    """Hand the message to the ``leaf`` family's handler, as ``device``'s."""

    device: D
    leaf: DeviceLeaf


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the message: count ``code`` against the registered ``device``, or per code
    only (``device`` ``None``) with the id the message ``claimed``, if it named one."""

    code: RejectCode
    detail: str
    device: str | None = None
    claimed: str | None = None


def claim(topic: str, payload: bytes) -> Claim | Reject | None:
    """Step 1: what the message claims to be, from its topic and length alone.

    ``None`` for what is not refused and not handled: an empty payload (a cleared retained
    message), a device topic the hub does not handle (those it publishes on itself), the
    hub's own probe. A topic that is no device topic is ``bad_topic``.
    """
    try:
        parsed = topics.parse_device_topic(topic)
    except ValueError:
        if topic.startswith(_PROBE_PREFIX):
            return None
        return Reject(RejectCode.BAD_TOPIC, f"message on {topic[:200]!r}")
    if not payload or parsed.leaf not in MAX_PAYLOAD_BYTES:
        return None
    return Claim(
        parsed.region, parsed.device_id, parsed.leaf, len(payload), payload[:2] == SIGN1_HEAD
    )


def route(claim: Claim, device: D | None) -> Route[D] | Reject:
    """Step 2: the size cap, the device (``None``: the registry does not know it), its
    region, the envelope's shape. An oversize message is counted against its device when
    that is known, never looked up for it."""
    if claim.oversize:
        detail = f"{claim.size} bytes on {claim.leaf}"
        if device is None:
            return Reject(RejectCode.OVERSIZE, detail, claimed=claim.device_id)
        return Reject(RejectCode.OVERSIZE, detail, device=device.device_id)
    if device is None:
        return Reject(
            RejectCode.UNKNOWN_DEVICE, f"message for {claim.device_id!r}", claimed=claim.device_id
        )
    if claim.region != device.region:
        return Reject(
            RejectCode.IMPERSONATION,
            f"message on region {claim.region}, device is registered in {device.region}",
            device=device.device_id,
        )
    if not claim.sign1_shaped:
        return Reject(
            RejectCode.MALFORMED,
            f"{claim.leaf} is not a COSE_Sign1 envelope",
            device=device.device_id,
        )
    return Route(device, claim.leaf)


def flooded(route: Route[D]) -> Reject:
    """Step 3, the verification budget spent: dropped before its signature is checked."""
    return Reject(
        RejectCode.UNVERIFIED_FLOOD,
        f"{route.leaf} dropped before its check",
        device=route.device.device_id,
    )


def refused(route: Route[D], reason: str, *, malformed: bool = False) -> Reject:
    """Step 3, the message did not verify (``reason``): ``malformed`` when its bytes, past
    the first two :func:`route` looked at, are no well-formed ``COSE_Sign1`` envelope (as a
    payload that does not even start like one), else ``impersonation``; on the evidence
    topic ``evidence_rejected`` either way (as attestation counts its refusals)."""
    if route.leaf is DeviceLeaf.EVIDENCE:
        code = RejectCode.EVIDENCE_REJECTED
    elif malformed:
        code = RejectCode.MALFORMED
    else:
        code = RejectCode.IMPERSONATION
    return Reject(code, f"{route.leaf} refused: {reason}", device=route.device.device_id)


def admit(route: Route[D], *, rate_allowed: bool) -> Route[D] | Reject:
    """Step 4, for a verified message: the device's rate limiter's verdict."""
    if rate_allowed:
        return route
    return Reject(
        RejectCode.RATE_LIMITED,
        f"{route.leaf} over the rate limit",
        device=route.device.device_id,
    )


def queue_key(topic: str) -> str:
    """Whose share of the intake queue a message takes: the device its topic names, or
    ``""`` for a message on no device topic."""
    parts = topic.split("/", 5)
    return parts[4] if len(parts) > 4 and parts[3] == "device" else ""


def hub_device_leaf(topic: str) -> DeviceLeaf | None:
    """The leaf of a device topic only the hub publishes on (ack, challenge, attestation)."""
    try:
        leaf = topics.parse_device_topic(topic).leaf
    except ValueError:
        return None
    return leaf if leaf in HUB_DEVICE_LEAVES else None

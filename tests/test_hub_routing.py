"""The hub's message router: topic, size, device, region, shape and rate decide a route or a
reject code, cheapest check first. No broker, no SQLite, no clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edge_agent.protocol import topics
from edge_agent.protocol.topics import DeviceLeaf, is_trust_topic
from hub.core.codes import FLOOD_CODES, RejectCode
from hub.core.routing import (
    MAX_PAYLOAD_BYTES,
    SIGN1_HEAD,
    Claim,
    Reject,
    Route,
    admit,
    claim,
    flooded,
    hub_device_leaf,
    queue_key,
    refused,
    route,
)

LINEAGE_CAP = MAX_PAYLOAD_BYTES[DeviceLeaf.LINEAGE]
STATUS_CAP = MAX_PAYLOAD_BYTES[DeviceLeaf.STATUS]


@dataclass(frozen=True)
class Device:
    device_id: str
    region: str


GW1 = Device("gw-001", "eu-1")
SIGNED = SIGN1_HEAD + b"\x00" * 30


def _topic(leaf: str, device: str = "gw-001", region: str = "eu-1") -> str:
    return f"{topics.PREFIX}/{region}/device/{device}/{leaf}"


@dataclass(frozen=True)
class Message:
    name: str
    topic: str
    payload: bytes
    registered: Device | None
    """What the registry says about the device the topic names."""
    outcome: Route[Device] | Reject | None


MESSAGES = [
    Message("a signed batch of a registered device", _topic("lineage"), SIGNED, GW1,
            Route(GW1, DeviceLeaf.LINEAGE)),
    Message("a signed status", _topic("status"), SIGNED, GW1, Route(GW1, DeviceLeaf.STATUS)),
    Message("signed evidence", _topic("evidence"), SIGNED, GW1, Route(GW1, DeviceLeaf.EVIDENCE)),
    Message("a topic outside the device tree", f"{topics.PREFIX}/eu-1/nothing", SIGNED, None,
            Reject(RejectCode.BAD_TOPIC, f"message on {topics.PREFIX + '/eu-1/nothing'!r}")),
    Message("an unknown device leaf", _topic("diary"), SIGNED, GW1,
            Reject(RejectCode.BAD_TOPIC, f"message on {_topic('diary')!r}")),
    Message("the hub's own shared-subscription probe", f"{topics.PREFIX}/_probe/hub-1",
            b"probe", None, None),
    Message("an empty (cleared) status", _topic("status"), b"", GW1, None),
    Message("a leaf only the hub publishes on", _topic("ack"), SIGNED, GW1, None),
    Message("an oversize batch of a registered device", _topic("lineage"),
            SIGN1_HEAD + bytes(LINEAGE_CAP), GW1,
            Reject(RejectCode.OVERSIZE, f"{LINEAGE_CAP + 2} bytes on lineage",
                   device="gw-001")),
    Message("an oversize status naming no registered device", _topic("status", "gw-404"),
            bytes(STATUS_CAP + 1), None,
            Reject(RejectCode.OVERSIZE, f"{STATUS_CAP + 1} bytes on status",
                   claimed="gw-404")),
    Message("a status exactly at the cap", _topic("status"),
            SIGN1_HEAD + bytes(STATUS_CAP - 2), GW1,
            Route(GW1, DeviceLeaf.STATUS)),
    Message("a device the registry does not know", _topic("status", "gw-404"), SIGNED, None,
            Reject(RejectCode.UNKNOWN_DEVICE, "message for 'gw-404'", claimed="gw-404")),
    Message("a registered device on another region's topic", _topic("lineage", region="us-2"),
            SIGNED, GW1,
            Reject(RejectCode.IMPERSONATION, "message on region us-2, device is registered in eu-1",
                   device="gw-001")),
    Message("a payload that is no COSE_Sign1 envelope", _topic("evidence"), b"{json}", GW1,
            Reject(RejectCode.MALFORMED, "evidence is not a COSE_Sign1 envelope",
                   device="gw-001")),
]  # fmt: skip


@pytest.mark.parametrize("row", MESSAGES, ids=lambda row: row.name)
def test_a_message_is_routed_or_rejected_by_topic_size_device_region_and_shape(
    row: Message,
) -> None:
    claimed = claim(row.topic, row.payload)
    outcome = route(claimed, row.registered) if isinstance(claimed, Claim) else claimed
    assert outcome == row.outcome


def test_an_oversize_message_is_refused_before_its_region_or_shape_is_looked_at() -> None:
    claimed = claim(_topic("status", region="us-2"), bytes(STATUS_CAP + 1))
    assert isinstance(claimed, Claim) and claimed.oversize
    assert route(claimed, GW1) == Reject(
        RejectCode.OVERSIZE, f"{claimed.size} bytes on status", device="gw-001"
    )


@dataclass(frozen=True)
class Verification:
    name: str
    leaf: DeviceLeaf
    outcome: Reject
    malformed: bool = False
    """Whether the bytes past their first two are no well-formed ``COSE_Sign1``."""


VERIFICATIONS = [
    Verification("a batch not signed by the device's key", DeviceLeaf.LINEAGE,
                 Reject(RejectCode.IMPERSONATION, "lineage refused: bad signature",
                        device="gw-001")),
    Verification("a status not signed by the device's key", DeviceLeaf.STATUS,
                 Reject(RejectCode.IMPERSONATION, "status refused: bad signature",
                        device="gw-001")),
    Verification("evidence that does not verify", DeviceLeaf.EVIDENCE,
                 Reject(RejectCode.EVIDENCE_REJECTED, "evidence refused: bad signature",
                        device="gw-001")),
    Verification("lineage that is no COSE_Sign1 past its first bytes", DeviceLeaf.LINEAGE,
                 Reject(RejectCode.MALFORMED, "lineage refused: bad signature",
                        device="gw-001"), malformed=True),
    Verification("a status that is no COSE_Sign1 past its first bytes", DeviceLeaf.STATUS,
                 Reject(RejectCode.MALFORMED, "status refused: bad signature",
                        device="gw-001"), malformed=True),
    Verification("evidence that is no COSE_Sign1 past its first bytes", DeviceLeaf.EVIDENCE,
                 Reject(RejectCode.EVIDENCE_REJECTED, "evidence refused: bad signature",
                        device="gw-001"), malformed=True),
]  # fmt: skip


@pytest.mark.parametrize("row", VERIFICATIONS, ids=lambda row: row.name)
def test_a_signature_that_does_not_verify_is_counted_against_the_topic_family(
    row: Verification,
) -> None:
    assert refused(Route(GW1, row.leaf), "bad signature", malformed=row.malformed) == row.outcome


@pytest.mark.parametrize("leaf", list(MAX_PAYLOAD_BYTES), ids=str)
def test_a_message_past_the_verification_budget_is_dropped_unchecked(leaf: DeviceLeaf) -> None:
    assert flooded(Route(GW1, leaf)) == Reject(
        RejectCode.UNVERIFIED_FLOOD, f"{leaf} dropped before its check", device="gw-001"
    )


@pytest.mark.parametrize("leaf", list(MAX_PAYLOAD_BYTES), ids=str)
def test_only_a_verified_message_within_the_device_rate_is_handed_on(leaf: DeviceLeaf) -> None:
    verified = Route(GW1, leaf)
    assert admit(verified, rate_allowed=True) is verified
    assert admit(verified, rate_allowed=False) == Reject(
        RejectCode.RATE_LIMITED, f"{leaf} over the rate limit", device="gw-001"
    )


@pytest.mark.parametrize(
    ("topic", "trust", "hub_leaf", "key"),
    [
        (topics.root_topic("eu-1", 3), True, None, ""),
        (topics.revocation_topic("eu-1", "device", "gw-001"), True, None, ""),
        (f"{topics.PREFIX}/eu-1/fresh/all", True, None, ""),
        (_topic("ack"), False, DeviceLeaf.ACK, "gw-001"),
        (_topic("challenge"), False, DeviceLeaf.CHALLENGE, "gw-001"),
        (_topic("attestation"), False, DeviceLeaf.ATTESTATION, "gw-001"),
        (_topic("lineage"), False, None, "gw-001"),
        ("elsewhere/x", False, None, ""),
    ],
)
def test_topics_the_hub_publishes_on_are_told_apart_from_what_devices_send(
    topic: str, trust: bool, hub_leaf: DeviceLeaf | None, key: str
) -> None:
    assert is_trust_topic(topic) is trust
    assert hub_device_leaf(topic) == hub_leaf
    assert queue_key(topic) == key


def test_reject_codes_keep_the_strings_the_registry_stores() -> None:
    assert {str(code) for code in RejectCode} == {
        "bad_topic",
        "oversize",
        "unknown_device",
        "impersonation",
        "malformed",
        "unverified_flood",
        "rate_limited",
        "gap",
        "chain_break",
        "bad_checkpoint",
        "fork",
        "evidence_rejected",
        "evidence_replay",
        "internal_error",
    }
    assert {
        "rate_limited",
        "oversize",
        "unknown_device",
        "bad_topic",
        "malformed",
        "unverified_flood",
    } == FLOOD_CODES

"""Challenge, evidence and result on the wire, and the expectations a bundle carries.

Each object verifies only as itself, for its own device, under its own role's keys; the
expectations parser refuses every malformed shape with a sentence naming the field.
"""

from __future__ import annotations

import hashlib

import pytest

from edge_agent.protocol.attestation import (
    AttestationError,
    AttestationResult,
    Challenge,
    Evidence,
    LineageHead,
    Verdict,
    sign_challenge,
    sign_evidence,
    sign_result,
    verify_challenge,
    verify_evidence,
    verify_result,
)
from edge_agent.protocol.expectations import (
    ExpectationsError,
    compare,
    expectations_value,
    measured_digest,
    parse_expectations,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.roles import Role
from tests.factory import NOW, HubSim

D1 = hashlib.sha256(b"one").digest()
D2 = hashlib.sha256(b"two").digest()
NONCE = bytes(range(32))


@pytest.fixture
def hub() -> HubSim:
    return HubSim()


def _verifier(hub: HubSim) -> PrivateKey:
    return hub.online_keys[Role.VERIFIER][0]


def _result(device: str = "gw-001", **changes: object) -> AttestationResult:
    values: dict[str, object] = {
        "device": device,
        "nonce": NONCE,
        "verdict": Verdict.PASS,
        "measured": D1,
        "issued_at": NOW,
        "expires_at": NOW + 60,
        "detail": "ok",
    }
    values.update(changes)
    return AttestationResult(**values)  # type: ignore[arg-type]


def _evidence(device: str = "gw-001") -> Evidence:
    return Evidence(device, NONCE, NOW, D2, {"os-release": D1}, LineageHead(3, D2))


def test_each_object_round_trips(hub: HubSim) -> None:
    root, key = hub.root(), _verifier(hub)
    challenge = Challenge("gw-001", NONCE, NOW, NOW + 60)
    assert (
        verify_challenge(sign_challenge(challenge, key=key), root=root, device="gw-001", now=NOW)
        == challenge
    )
    device_key = PrivateKey.generate()
    data = sign_evidence(_evidence(), device_key)
    assert verify_evidence(data, device="gw-001", key=device_key.public) == _evidence()
    signed = sign_result(_result(), key=key)
    assert verify_result(signed, root=root, device="gw-001") == _result(raw=signed)


def test_a_result_signed_by_a_key_that_is_not_the_verifiers_is_refused(hub: HubSim) -> None:
    for key in (hub.online_keys[Role.FRESHNESS][0], PrivateKey.generate(), hub.policy_keys[0]):
        with pytest.raises(AttestationError, match="refused"):
            verify_result(sign_result(_result(), key=key), root=hub.root(), device="gw-001")


def test_a_result_for_another_device_is_refused(hub: HubSim) -> None:
    other = sign_result(_result("gw-002"), key=_verifier(hub))
    with pytest.raises(AttestationError):
        verify_result(other, root=hub.root(), device="gw-001")


def test_a_challenge_for_another_device_or_expired_is_refused(hub: HubSim) -> None:
    root, key = hub.root(), _verifier(hub)
    other = sign_challenge(Challenge("gw-002", NONCE, NOW, NOW + 60), key=key)
    with pytest.raises(AttestationError):
        verify_challenge(other, root=root, device="gw-001", now=NOW)
    mine = sign_challenge(Challenge("gw-001", NONCE, NOW, NOW + 60), key=key)
    with pytest.raises(AttestationError, match="expired"):
        verify_challenge(mine, root=root, device="gw-001", now=NOW + 60)


def test_no_object_passes_as_another(hub: HubSim) -> None:
    root, key = hub.root(), _verifier(hub)
    challenge = sign_challenge(Challenge("gw-001", NONCE, NOW, NOW + 60), key=key)
    result = sign_result(_result(), key=key)
    with pytest.raises(AttestationError):
        verify_result(challenge, root=root, device="gw-001")
    with pytest.raises(AttestationError):
        verify_challenge(result, root=root, device="gw-001", now=NOW)
    token = hub.freshness(hub.bundle(1))
    with pytest.raises(AttestationError):
        verify_result(token, root=root, device="gw-001")


def test_evidence_signed_by_another_devices_key_is_refused() -> None:
    mine, theirs = PrivateKey.generate(), PrivateKey.generate()
    with pytest.raises(AttestationError):
        verify_evidence(sign_evidence(_evidence(), theirs), device="gw-001", key=mine.public)
    with pytest.raises(AttestationError):
        verify_evidence(sign_evidence(_evidence("gw-002"), mine), device="gw-001", key=mine.public)


def test_expectations_compare_class_values_and_device_overrides() -> None:
    value = {
        "profiles": {
            "generic-x86_64": {
                "measurements": {"os-release": [D1, D2], "kernel": [D1]},
                "devices": {"gw-001": {"machine-id": [D2]}},
            }
        }
    }
    expectations = parse_expectations(value)
    assert expectations_value(expectations) == {
        "profiles": {
            "generic-x86_64": {
                "measurements": {"kernel": [D1], "os-release": sorted([D1, D2])},
                "devices": {"gw-001": {"machine-id": [D2]}},
            }
        }
    }
    mine = expectations.for_device("generic-x86_64", "gw-001")
    assert mine is not None
    assert compare(mine, {"os-release": D2, "kernel": D1, "machine-id": D2}) == ()
    assert compare(mine, {"os-release": D2, "kernel": D2}) == (
        f"kernel: measured sha256:{D2.hex()[:16]}, not an expected value",
        "machine-id: not measured",
    )
    assert expectations.for_device("raspberry-pi-4", "gw-001") is None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({}, "lacks field(s) profiles"),
        ({"profiles": {}, "extra": 1}, "unknown field"),
        ({"profiles": {}}, "1 to 64 profile names"),
        ({"profiles": {"p": []}}, "must be a map"),
        ({"profiles": {"p": {}}}, "lacks field(s) measurements"),
        ({"profiles": {"p": {"measurements": {}, "x": 1}}}, "unknown field"),
        ({"profiles": {"p": {"measurements": {"a": []}}}}, "1 to 16 SHA-256"),
        ({"profiles": {"p": {"measurements": {"a": [b"short"]}}}}, "1 to 16 SHA-256"),
        ({"profiles": {"p": {"measurements": {"a": [D1] * 17}}}}, "1 to 16 SHA-256"),
        ({"profiles": {"p": {"measurements": {"": [D1]}}}}, "printable name"),
        ({"profiles": {"p": {"measurements": {}, "devices": []}}}, "devices must map"),
    ],
)
def test_malformed_expectations_are_refused_naming_the_field(value: object, words: str) -> None:
    assert isinstance(value, dict)
    with pytest.raises(ExpectationsError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_expectations(value)


def test_the_measured_digest_does_not_depend_on_insertion_order() -> None:
    assert measured_digest({"a": D1, "b": D2}) == measured_digest({"b": D2, "a": D1})
    assert measured_digest({"a": D1}) != measured_digest({"a": D2})

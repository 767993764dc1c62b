"""The hub's verifier against a real registry: nonces spent once, replays refused, verdicts.

Evidence is signed with real device keys; the result is verified as a device would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.errors import EdgeGovError
from edge_agent.protocol.attestation import (
    AttestationError,
    Challenge,
    Evidence,
    LineageHead,
    Verdict,
    sign_evidence,
    verify_result,
)
from edge_agent.protocol.bundle import BundleTarget
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import sign_root, verify_root_update
from hub.core.attestation_judging import read_evidence
from hub.registry import DeviceRecord, PublishedBundle
from hub.registry.backends import open_registry
from hub.service.verifier import Verifier
from tests.factory import NOW, HubSim
from tests.hub_support import hub_registry

GOOD = hashlib.sha256(b"os-release v1").digest()
BAD = hashlib.sha256(b"os-release tampered").digest()
ROOT = hashlib.sha256(b"lineage root").digest()
EXPECT = {"profiles": {"generic-x86_64": {"measurements": {"os-release": [GOOD]}}}}
TTL = 300
HEAD = LineageHead(0, ROOT)


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.hub = HubSim()
        self.registry = open_registry(hub_registry(tmp_path))
        self.keys = {d: PrivateKey.generate() for d in ("gw-001", "gw-002")}
        self.devices = {
            d: DeviceRecord(d, "eu-1", ("line-a",), "generic-x86_64", k.public)
            for d, k in self.keys.items()
        }
        for record in self.devices.values():
            self.registry.add_device(record)
        self.root = self.hub.root()
        self.verifier = Verifier(
            self.registry, self.hub.online_keys[Role.VERIFIER][0], root=lambda: self.root
        )
        self.bundle = self.record_bundle(EXPECT)

    def record_bundle(
        self, attestation: dict[str, object], version: int = 1, **kw: object
    ) -> bytes:
        data = self.hub.bundle(version, attestation=attestation, **kw)  # type: ignore[arg-type]
        digest = hashlib.sha256(data).digest()
        published = PublishedBundle(
            "eu-1", "group/line-a", version, digest, data, NOW + 86400, None, NOW
        )
        self.registry.record_bundle(
            bundle=published, issued_at=NOW, target={}, channels=["group/line-a"]
        )
        return digest

    def challenge(self, device: str = "gw-001", now: int = NOW) -> Challenge:
        return self.verifier.challenge(self.devices[device], now=now, ttl_s=60).challenge

    def evidence(
        self,
        nonce: bytes,
        *,
        device: str = "gw-001",
        signer: str | None = None,
        measured: bytes = GOOD,
        bundle: bytes | None = None,
        lineage: LineageHead = HEAD,
    ) -> bytes:
        evidence = Evidence(
            device, nonce, NOW, bundle or self.bundle, {"os-release": measured}, lineage
        )
        return sign_evidence(evidence, self.keys[signer or device])

    def verify(self, payload: bytes, device: str = "gw-001", now: int = NOW) -> Verdict:
        """Verify the envelope as the intake does, then have the verifier judge it."""
        record = self.devices[device]
        issued = self.verifier.verify(record, read_evidence(payload, record), now=now, ttl_s=TTL)
        result, publication = issued.result, issued.publication
        assert publication.retain and publication.topic.endswith(f"/device/{device}/attestation")
        verified = verify_result(publication.payload, root=self.hub.root(), device=device)
        assert verified.verdict is result.verdict and verified.expires_at == now + TTL
        return result.verdict


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    try:
        yield s
    finally:
        s.registry.close()


def test_fresh_evidence_matching_the_bundle_passes_and_is_recorded(setup: Setup) -> None:
    challenge = setup.challenge()
    assert setup.verify(setup.evidence(challenge.nonce)) is Verdict.PASS
    record = setup.registry.attestation("gw-001")
    assert record is not None and (record.verdict, record.nonce) == ("pass", challenge.nonce)


def test_evidence_with_a_changed_measurement_fails(setup: Setup) -> None:
    challenge = setup.challenge()
    assert setup.verify(setup.evidence(challenge.nonce, measured=BAD)) is Verdict.FAIL
    record = setup.registry.attestation("gw-001")
    assert record is not None and "os-release" in record.detail


def _refused(setup: Setup, payload: bytes, code: str, words: str, now: int = NOW) -> None:
    with pytest.raises(AttestationError, match=words) as caught:
        setup.verify(payload, now=now)
    assert caught.value.code == code


def test_old_evidence_sent_again_is_refused(setup: Setup) -> None:
    challenge = setup.challenge()
    payload = setup.evidence(challenge.nonce)
    assert setup.verify(payload) is Verdict.PASS
    _refused(setup, payload, "evidence_replay", "already used")


def test_evidence_for_a_nonce_never_issued_is_refused(setup: Setup) -> None:
    setup.challenge()
    _refused(setup, setup.evidence(b"\x01" * 32), "evidence_replay", "never issued")


def test_evidence_for_another_devices_nonce_is_refused(setup: Setup) -> None:
    theirs = setup.challenge("gw-002")
    _refused(setup, setup.evidence(theirs.nonce), "evidence_replay", "never issued")


def test_evidence_after_its_challenge_expired_is_refused(setup: Setup) -> None:
    challenge = setup.challenge()
    _refused(setup, setup.evidence(challenge.nonce), "evidence_replay", "expired", now=NOW + 60)


def test_evidence_signed_by_another_device_or_naming_one_is_refused(setup: Setup) -> None:
    challenge = setup.challenge()
    _refused(
        setup, setup.evidence(challenge.nonce, signer="gw-002"), "evidence_rejected", "refused"
    )
    forged = setup.evidence(challenge.nonce, device="gw-002", signer="gw-001")
    _refused(setup, forged, "evidence_rejected", "refused")
    assert setup.verify(setup.evidence(challenge.nonce)) is Verdict.PASS


@pytest.mark.parametrize(
    ("bundle", "words"),
    [
        ("unknown", "no bundle this hub published"),
        ("other-group", "not for this device"),
        ("other-profile", "no expectations for profile"),
        ("untrusted", "not for this device"),
    ],
)
def test_evidence_naming_an_unusable_bundle_fails(setup: Setup, bundle: str, words: str) -> None:
    digest = {
        "unknown": hashlib.sha256(b"never pushed").digest(),
        "other-group": setup.record_bundle(
            EXPECT, 2, target=BundleTarget(region="eu-1", groups=("line-b",))
        ),
        "other-profile": setup.record_bundle(
            {"profiles": {"raspberry-pi-4": {"measurements": {"os-release": [GOOD]}}}}, 3
        ),
        "untrusted": setup.record_bundle(EXPECT, 4, signers=[PrivateKey.generate()]),
    }[bundle]
    challenge = setup.challenge()
    assert setup.verify(setup.evidence(challenge.nonce, bundle=digest)) is Verdict.FAIL
    record = setup.registry.attestation("gw-001")
    assert record is not None and words in record.detail


def test_nothing_a_device_sends_is_an_unexpected_exception(setup: Setup) -> None:
    for payload in (b"", b"\x00", b"\xd2" * 40, setup.hub.bundle(1)):
        with pytest.raises(EdgeGovError):
            setup.verify(payload)


@dataclass(frozen=True)
class Rotated:
    """A bundle recorded before ``edge-hub root rotate --role policy``, judged by one verifier
    under the root it reads before the rotation and then under the rotated root."""

    name: str
    signers: tuple[str, ...]
    before: Verdict
    after: Verdict


ROTATED = [
    Rotated("signed by the new policy key", ("new",), Verdict.FAIL, Verdict.PASS),
    Rotated("signed by the rotated-away policy key", ("old",), Verdict.PASS, Verdict.FAIL),
    Rotated("signed by both policy keys", ("old", "new"), Verdict.PASS, Verdict.PASS),
]


@pytest.mark.parametrize("row", ROTATED, ids=lambda r: r.name)
def test_evidence_is_judged_under_the_root_the_verifier_reads_now(
    setup: Setup, row: Rotated
) -> None:
    new_policy = [PrivateKey.generate()]
    keys = {"old": setup.hub.policy_keys[0], "new": new_policy[0]}
    digest = setup.record_bundle(EXPECT, 2, signers=[keys[s] for s in row.signers])
    before = setup.verify(setup.evidence(setup.challenge().nonce, bundle=digest))
    rotated = sign_root(setup.hub.root_payload(2, policy_keys=new_policy), setup.hub.root_keys)
    setup.root = verify_root_update(setup.root, rotated, now=NOW)
    after = setup.verify(setup.evidence(setup.challenge().nonce, bundle=digest))
    assert (before, after) == (row.before, row.after)

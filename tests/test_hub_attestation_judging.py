"""The hub's attestation judgement as values: no broker, no SQLite, no clock.

Each row hands :func:`hub.core.attestation_judging.judge_attestation` what the verifier would have
read (the registry's answer to spending the nonce, the named bundle, the hub's checkpoint
root, the registered TPM key) and names the verdict with words of its detail, or the
refusal code. Bundles and evidence are signed with real keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import pytest

from edge_agent.protocol.attestation import (
    AttestationError,
    AttestationResult,
    Evidence,
    LineageHead,
    TpmQuote,
    Verdict,
    sign_evidence,
)
from edge_agent.protocol.bundle import BundleTarget, claimed_region, verify_bundle
from edge_agent.protocol.expectations import measured_digest
from edge_agent.protocol.keys import PrivateKey
from hub.core.attestation_judging import (
    MAX_DETAIL_PROBLEMS,
    BundleView,
    bundle_view,
    judge_attestation,
    read_evidence,
    unusable_bundle,
)
from hub.registry.records import DeviceRecord
from tests.factory import NOW, TARGET, HubSim

GOOD = hashlib.sha256(b"os-release v1").digest()
BAD = hashlib.sha256(b"os-release tampered").digest()
ROOT = hashlib.sha256(b"lineage root").digest()
FORK = hashlib.sha256(b"fork").digest()
NONCE = b"n" * 32
HEAD = LineageHead(5, ROOT)
TTL = 300
PROFILE = "generic-x86_64"
EXPECT = {"profiles": {PROFILE: {"measurements": {"os-release": [GOOD]}}}}
MANY = [f"file-{i}" for i in range(MAX_DETAIL_PROBLEMS + 2)]

HUB = HubSim()
KEY = PrivateKey.generate()
DEVICE = DeviceRecord("gw-001", "eu-1", ("line-a",), PROFILE, KEY.public)


def _view(data: bytes) -> BundleView:
    """The view of a bundle the hub recorded, verified as the verifier does."""
    return bundle_view(verify_bundle(data, root=HUB.root(), region=claimed_region(data)))


EXPECTING = _view(HUB.bundle(1, attestation=EXPECT))
WITHOUT_EXPECTATIONS = _view(HUB.bundle(1))
OTHER_GROUP = _view(
    HUB.bundle(2, attestation=EXPECT, target=BundleTarget(region="eu-1", groups=("line-b",)))
)
OTHER_PROFILE = _view(
    HUB.bundle(3, attestation={"profiles": {"raspberry-pi-4": EXPECT["profiles"][PROFILE]}})
)
EXPECTING_MANY = _view(
    HUB.bundle(4, attestation={"profiles": {PROFILE: {"measurements": {m: [GOOD] for m in MANY}}}})
)
UNREADABLE = unusable_bundle("the bundle cannot be used: not a signed bundle")
MALFORMED = BundleView(TARGET, None, "the bundle's expectations are malformed: no profiles")
AK = hashlib.sha256(b"a registered attestation key").digest()
"""Bytes standing for a registered AK: the rows using it fail before the key is parsed."""


@dataclass(frozen=True)
class Row:
    name: str
    measurements: dict[str, bytes] = field(default_factory=lambda: {"os-release": GOOD})
    tpm: TpmQuote | None = None
    nonce_problem: str | None = None
    bundle: BundleView | None = EXPECTING
    hub_root: bytes | None = ROOT
    tpm_ak: bytes | None = None
    verdict: Verdict | None = Verdict.PASS
    """``None``: refused, with ``code``."""
    code: str | None = None
    words: str = ""


ROWS = [
    Row("measurements as expected", words="1 measurement(s) as expected"),
    Row("no checkpoint held at that size", hub_root=None, words="as expected"),
    Row("a bundle without expectations", bundle=WITHOUT_EXPECTATIONS, measurements={}),
    Row(
        "a changed measurement",
        measurements={"os-release": BAD},
        verdict=Verdict.FAIL,
        words="os-release: measured sha256:",
    ),
    Row(
        "a measurement missing",
        measurements={},
        verdict=Verdict.FAIL,
        words="os-release: not measured",
    ),
    Row(
        "a bundle the hub never recorded",
        bundle=None,
        verdict=Verdict.FAIL,
        words="names no bundle this hub published",
    ),
    Row(
        "a bundle for another group",
        bundle=OTHER_GROUP,
        verdict=Verdict.FAIL,
        words="is not for this device",
    ),
    Row(
        "a bundle the hub cannot read (it targets no region)",
        bundle=UNREADABLE,
        verdict=Verdict.FAIL,
        words="not for this device: it is for region '_'",
    ),
    Row(
        "a bundle whose expectations the hub cannot use",
        bundle=MALFORMED,
        verdict=Verdict.FAIL,
        words="the bundle's expectations are malformed",
    ),
    Row(
        "no expectations for the device's profile",
        bundle=OTHER_PROFILE,
        verdict=Verdict.FAIL,
        words=f"no expectations for profile '{PROFILE}'",
    ),
    Row(
        "a lineage head that contradicts the hub's copy",
        hub_root=FORK,
        verdict=Verdict.FAIL,
        words="the lineage root at size 5 differs from the hub's copy",
    ),
    Row(
        "a TPM quote with no attestation key registered",
        tpm=TpmQuote(b"a", b"s"),
        verdict=Verdict.FAIL,
        words="no attestation key is registered for gw-001",
    ),
    Row(
        "PCR values without a quote",
        measurements={"os-release": GOOD, "pcr:sha256:7": GOOD},
        verdict=Verdict.FAIL,
        words="PCR values without a quote",
    ),
    Row(
        "an attestation key registered but no quote",
        tpm_ak=AK,
        verdict=Verdict.FAIL,
        words="gw-001 has a TPM attestation key registered, but sent no quote",
    ),
    Row(
        "more problems than the detail names",
        bundle=EXPECTING_MANY,
        measurements={},
        verdict=Verdict.FAIL,
        words="file-3: not measured; and 2 more",
    ),
    Row(
        "a replayed nonce",
        nonce_problem="its nonce was already used (replayed evidence)",
        verdict=None,
        code="evidence_replay",
        words="already used",
    ),
    Row(
        "a nonce never issued to the device",
        nonce_problem="its nonce was never issued to this device (replayed or misaddressed)",
        verdict=None,
        code="evidence_replay",
        words="never issued",
    ),
    Row(
        "an expired challenge",
        nonce_problem="its nonce expired 3 s ago",
        verdict=None,
        code="evidence_replay",
        words="expired 3 s ago",
    ),
    Row(
        "a spent nonce with a failing measurement is still refused",
        measurements={"os-release": BAD},
        nonce_problem="its nonce expired 1 s ago",
        verdict=None,
        code="evidence_replay",
        words="expired",
    ),
]


def _evidence(row: Row) -> Evidence:
    return Evidence("gw-001", NONCE, NOW, b"d" * 32, row.measurements, HEAD, row.tpm)


def _judge(row: Row) -> AttestationResult:
    return judge_attestation(
        _evidence(row),
        DEVICE,
        nonce_problem=row.nonce_problem,
        bundle=row.bundle,
        hub_root=row.hub_root,
        tpm_ak=row.tpm_ak,
        now=NOW,
        ttl_s=TTL,
    )


@pytest.mark.parametrize("row", [r for r in ROWS if r.verdict is not None], ids=lambda r: r.name)
def test_the_verdict_on_fresh_evidence_names_its_reasons(row: Row) -> None:
    result = _judge(row)
    assert (result.device, result.nonce, result.verdict) == ("gw-001", NONCE, row.verdict)
    assert (result.issued_at, result.expires_at) == (NOW, NOW + TTL)
    assert result.measured == measured_digest(row.measurements)
    assert row.words in result.detail


@pytest.mark.parametrize("row", [r for r in ROWS if r.verdict is None], ids=lambda r: r.name)
def test_evidence_whose_nonce_was_not_spent_gets_no_result(row: Row) -> None:
    with pytest.raises(AttestationError, match=row.words) as caught:
        _judge(row)
    assert caught.value.code == row.code


def test_evidence_signed_and_named_by_the_device_is_read() -> None:
    evidence = _evidence(ROWS[0])
    assert read_evidence(sign_evidence(evidence, KEY), DEVICE) == evidence


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("signed by another key", sign_evidence(_evidence(ROWS[0]), PrivateKey.generate())),
        ("naming another device", sign_evidence(replace(_evidence(ROWS[0]), device="gw-2"), KEY)),
        ("not evidence", HUB.bundle(1)),
        ("empty", b""),
    ],
)
def test_evidence_that_is_not_the_devices_is_rejected(name: str, payload: bytes) -> None:
    with pytest.raises(AttestationError) as caught:
        read_evidence(payload, DEVICE)
    assert caught.value.code == "evidence_rejected"

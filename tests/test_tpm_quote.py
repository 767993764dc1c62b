"""The hub's TPM quote check, with no TPM: quotes are built and signed here as a TPM would.

:func:`build_attest` marshals a ``TPMS_ATTEST`` quote (TPM 2.0 part 2, 10.12) and
:func:`sign_quote` signs it as ``TPMT_SIGNATURE`` with an ECDSA P-256 or RSA key, so every
check of :func:`hub.core.tpm_quote.tpm_problem` can be driven to fail on its own. The parsers must
be total: any byte string gives a value or a ``QuoteError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import ConfigError
from edge_agent.protocol.attestation import (
    AttestationError,
    Evidence,
    LineageHead,
    TpmQuote,
    Verdict,
    quote_binding,
    sign_evidence,
    verify_evidence,
    with_quote,
)
from edge_agent.protocol.firmware_profile import parse_profile
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.roles import Role
from hub.cli.attest import build_expectations
from hub.core.attestation_judging import read_evidence
from hub.core.tpm_quote import (
    ALG_ECDSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    QuoteError,
    load_ak,
    parse_attest,
    parse_signature,
    tpm_problem,
)
from hub.registry import DeviceRecord, PublishedBundle, Registry
from hub.registry.backends import open_registry
from hub.service.verifier import Verifier
from tests.attest_support import PROFILE_TOML
from tests.factory import NOW, HubSim
from tests.hub_support import hub_registry

DEVICE = "gw-001"
NONCE = bytes(range(32))
PCRS = {0: hashlib.sha256(b"firmware").digest(), 7: hashlib.sha256(b"secure boot").digest()}
EC_KEY = ec.generate_private_key(ec.SECP256R1())
HEAD = LineageHead(0, b"\0" * 32)


def _der(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _sized(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def build_attest(
    *,
    pcrs: tuple[int, ...] = tuple(PCRS),
    values: dict[int, bytes] = PCRS,
    extra: bytes | None = None,
    magic: int = 0xFF544347,
    kind: int = 0x8018,
    bank: int = 0x000B,
    banks: int = 1,
) -> bytes:
    """A marshalled TPMS_ATTEST quote over ``pcrs`` of ``values``."""
    bitmap = bytearray(3)
    for pcr in pcrs:
        bitmap[pcr // 8] |= 1 << (pcr % 8)
    digest = hashlib.sha256(b"".join(values[p] for p in sorted(pcrs))).digest()
    selection = struct.pack(">I", banks) + (struct.pack(">HB", bank, 3) + bytes(bitmap)) * banks
    return (
        struct.pack(">IH", magic, kind)
        + _sized(b"\x00\x0b" + b"n" * 32)
        + _sized(quote_binding(DEVICE, NONCE) if extra is None else extra)
        + struct.pack(">QIIBQ", 12345, 1, 0, 1, 0x2023)
        + selection
        + _sized(digest)
    )


def sign_quote(
    attest: bytes,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = EC_KEY,
    scheme: int = ALG_ECDSA,
) -> TpmQuote:
    """``attest`` with a TPMT_SIGNATURE by ``key`` (ECDSA, RSASSA or RSAPSS over SHA-256)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(attest, ec.ECDSA(hashes.SHA256())))
        body = _sized(r.to_bytes(32, "big")) + _sized(s.to_bytes(32, "big"))
    elif scheme == ALG_RSASSA:
        body = _sized(key.sign(attest, padding.PKCS1v15(), hashes.SHA256()))
    else:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        body = _sized(key.sign(attest, pss, hashes.SHA256()))
    return TpmQuote(attest, struct.pack(">HH", scheme, 0x000B) + body)


def evidence(
    quote: TpmQuote | None, values: dict[int, bytes] = PCRS, nonce: bytes = NONCE
) -> Evidence:
    measurements = {"os-release": hashlib.sha256(b"os").digest()}
    measurements.update({f"pcr:sha256:{pcr}": value for pcr, value in values.items()})
    return Evidence(DEVICE, nonce, NOW, None, measurements, HEAD, quote)


GOOD = sign_quote(build_attest())


def test_a_quote_signed_by_the_registered_ak_over_the_evidences_pcrs_passes() -> None:
    assert tpm_problem(evidence(GOOD), _der(EC_KEY)) is None


@pytest.mark.parametrize("scheme", [ALG_RSASSA, ALG_RSAPSS])
def test_rsa_attestation_keys_verify_with_either_tpm_scheme(scheme: int) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert tpm_problem(evidence(sign_quote(build_attest(), key, scheme)), _der(key)) is None


@pytest.mark.parametrize(
    ("quote", "values", "nonce", "words"),
    [
        (
            sign_quote(build_attest(), ec.generate_private_key(ec.SECP256R1())),
            PCRS,
            NONCE,
            "does not verify",
        ),
        (
            sign_quote(build_attest(extra=quote_binding(DEVICE, b"\1" * 32))),
            PCRS,
            NONCE,
            "not made for this challenge",
        ),
        (
            sign_quote(build_attest(extra=quote_binding("gw-002", NONCE))),
            PCRS,
            NONCE,
            "not made for this challenge",
        ),
        (GOOD, PCRS, b"\2" * 32, "not made for this challenge"),
        (GOOD, {**PCRS, 7: hashlib.sha256(b"other").digest()}, NONCE, "not the ones the TPM"),
        (GOOD, {**PCRS, 8: PCRS[7]}, NONCE, "covers PCRs sha256:0, sha256:7"),
        (GOOD, {0: PCRS[0]}, NONCE, "the evidence carries sha256:0"),
        (sign_quote(build_attest(magic=0xFF544348)), PCRS, NONCE, "TPM_GENERATED"),
        (sign_quote(build_attest(kind=0x8017)), PCRS, NONCE, "not a quote"),
        (sign_quote(build_attest(bank=0x0004)), PCRS, NONCE, "other than sha256"),
        (sign_quote(build_attest(banks=2)), PCRS, NONCE, "exactly one bank"),
        (TpmQuote(GOOD.attest + b"\0", GOOD.signature), PCRS, NONCE, "does not verify"),
        (sign_quote(GOOD.attest + b"\0"), PCRS, NONCE, "trailing bytes"),
        (TpmQuote(GOOD.attest, GOOD.signature[:-1]), PCRS, NONCE, "truncated"),
    ],
)
def test_a_quote_that_does_not_fit_the_evidence_is_refused_with_its_reason(
    quote: TpmQuote, values: dict[int, bytes], nonce: bytes, words: str
) -> None:
    problem = tpm_problem(evidence(quote, values, nonce), _der(EC_KEY))
    assert problem is not None and words in problem


def test_an_ecdsa_quote_against_an_rsa_ak_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    problem = tpm_problem(evidence(GOOD), _der(key))
    assert problem is not None and "signed with ECDSA" in problem


def test_a_quote_without_a_registered_ak_is_refused() -> None:
    problem = tpm_problem(evidence(GOOD), None)
    assert problem is not None and "no attestation key is registered" in problem


def test_pcr_values_without_a_quote_count_for_nothing() -> None:
    problem = tpm_problem(evidence(None), None)
    assert problem is not None and "without a quote" in problem
    problem = tpm_problem(evidence(None), _der(EC_KEY))
    assert problem is not None and "sent no quote" in problem


def test_evidence_without_tpm_parts_is_judged_as_before() -> None:
    assert tpm_problem(evidence(None, {}), None) is None


@given(st.binary(max_size=400))
def test_the_attest_parser_returns_a_quote_or_refuses_never_crashes(data: bytes) -> None:
    with contextlib.suppress(QuoteError):
        parse_attest(data)


@given(st.binary(max_size=600))
def test_the_signature_parser_returns_a_signature_or_refuses_never_crashes(data: bytes) -> None:
    with contextlib.suppress(QuoteError):
        parse_signature(data)


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_garbled_quote_bytes_are_refused_with_a_reason(attest: bytes, signature: bytes) -> None:
    problem = tpm_problem(evidence(TpmQuote(attest, signature)), _der(EC_KEY))
    assert problem is not None and problem.startswith("TPM quote refused")


def test_every_truncation_of_a_quote_is_refused() -> None:
    for size in range(len(GOOD.attest)):
        with pytest.raises(QuoteError):
            parse_attest(GOOD.attest[:size])
    for size in range(len(GOOD.signature)):
        with pytest.raises(QuoteError):
            parse_signature(GOOD.signature[:size])
    info = parse_attest(GOOD.attest)
    assert info.pcrs == (0, 7) and info.extra_data == quote_binding(DEVICE, NONCE)


@pytest.mark.parametrize(
    "make",
    [
        lambda: b"not a key",
        lambda: _der(ec.generate_private_key(ec.SECP384R1())),
        lambda: _der(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
    ],
)
def test_an_unusable_attestation_key_is_refused_at_registration(make: object) -> None:
    with pytest.raises(ConfigError, match="attestation key"):
        load_ak(make())  # type: ignore[operator]


# --- the evidence wire format -------------------------------------------------------------


def test_evidence_carries_the_quote_and_without_one_is_unchanged() -> None:
    key = PrivateKey.generate()
    plain = sign_evidence(evidence(None), key)
    assert verify_evidence(plain, device=DEVICE, key=key.public).tpm is None
    quoted = with_quote(plain, GOOD, device=DEVICE, key=key)
    assert verify_evidence(quoted, device=DEVICE, key=key.public).tpm == GOOD
    assert sign_evidence(evidence(None), key) == plain


def test_a_quote_cannot_be_attached_to_evidence_of_another_key() -> None:
    plain = sign_evidence(evidence(None), PrivateKey.generate())
    with pytest.raises(AttestationError):
        with_quote(plain, GOOD, device=DEVICE, key=PrivateKey.generate())


def test_evidence_with_an_unknown_quote_format_or_oversized_quote_is_refused() -> None:
    from edge_agent.protocol import attestation

    key = PrivateKey.generate()
    original = attestation.TPM_QUOTE_FORMAT
    try:
        attestation.TPM_QUOTE_FORMAT = 2
        future = sign_evidence(evidence(GOOD), key)
    finally:
        attestation.TPM_QUOTE_FORMAT = original
    with pytest.raises(AttestationError, match="quote format 2"):
        verify_evidence(future, device=DEVICE, key=key.public)
    huge = sign_evidence(evidence(TpmQuote(b"\0" * 4096, GOOD.signature)), key)
    with pytest.raises(AttestationError):
        verify_evidence(huge, device=DEVICE, key=key.public)


# --- the verifier with a registered key ---------------------------------------------------


def _verifier(tmp_path: Path) -> tuple[Verifier, Registry, DeviceRecord, PrivateKey, bytes]:
    hub = HubSim()
    registry = open_registry(hub_registry(tmp_path))
    key = PrivateKey.generate()
    device = DeviceRecord(DEVICE, "eu-1", ("line-a",), "generic-x86_64", key.public)
    registry.add_device(device)
    measured = evidence(None).measurements
    attestation = {
        "profiles": {"generic-x86_64": {"measurements": {n: [d] for n, d in measured.items()}}}
    }
    data = hub.bundle(1, attestation=attestation)
    digest = hashlib.sha256(data).digest()
    registry.record_bundle(
        bundle=PublishedBundle("eu-1", "group/line-a", 1, digest, data, NOW + 86400, None, NOW),
        issued_at=NOW,
        target={},
        channels=["group/line-a"],
    )
    root = hub.root()
    verifier = Verifier(registry, hub.online_keys[Role.VERIFIER][0], root=lambda: root)
    return verifier, registry, device, key, digest


def _answer(
    verifier: Verifier, device: DeviceRecord, key: PrivateKey, bundle: bytes, quote: TpmQuote | None
) -> tuple[Verdict, str]:
    challenge = verifier.challenge(device, now=NOW).challenge
    attest = build_attest(extra=quote_binding(DEVICE, challenge.nonce))
    chosen = sign_quote(attest) if quote is GOOD else quote
    base = evidence(chosen, nonce=challenge.nonce)
    signed = sign_evidence(
        Evidence(DEVICE, challenge.nonce, NOW, bundle, base.measurements, HEAD, chosen), key
    )
    result = verifier.verify(device, read_evidence(signed, device), now=NOW, ttl_s=300).result
    return result.verdict, result.detail


def test_the_verifier_requires_a_quote_once_an_ak_is_registered(tmp_path: Path) -> None:
    verifier, registry, device, key, bundle = _verifier(tmp_path)
    with registry:
        assert _answer(verifier, device, key, bundle, GOOD)[0] is Verdict.FAIL
        registry.set_tpm_ak(DEVICE, _der(EC_KEY), NOW)
        assert _answer(verifier, device, key, bundle, GOOD) == (
            Verdict.PASS,
            "3 measurement(s) as expected, TPM quote verified",
        )
        verdict, detail = _answer(verifier, device, key, bundle, None)
        assert verdict is Verdict.FAIL and "sent no quote" in detail
        registry.set_tpm_ak(DEVICE, _der(ec.generate_private_key(ec.SECP256R1())), NOW)
        verdict, detail = _answer(verifier, device, key, bundle, GOOD)
        assert verdict is Verdict.FAIL and "does not verify" in detail
        registry.set_tpm_ak(DEVICE, None, NOW)
        assert registry.tpm_ak(DEVICE) is None


def test_expectations_from_a_report_include_the_pcrs_with_the_tpm_tables_scope() -> None:
    toml = PROFILE_TOML.format(name="generic-x86_64", interval=1)
    profile = parse_profile((toml + '[tpm]\npcrs = [7, 0]\nscope = "device"\n').encode(), "t")
    report = {n: hashlib.sha256(n.encode()).digest() for n in profile.scopes}
    expected = build_expectations(profile, [(DEVICE, report)]).profiles["generic-x86_64"]
    assert set(expected.devices[DEVICE]) == {"machine-id", "pcr:sha256:0", "pcr:sha256:7"}
    del report["pcr:sha256:7"]
    with pytest.raises(ConfigError, match="lack 'pcr:sha256:7'"):
        build_expectations(profile, [(DEVICE, report)])


@pytest.mark.sqlite_only(
    "a hub.db missing a table (from before TPM keys) gains it on open; PostgreSQL "
    "registries are upgraded by their schema version"
)
def test_a_registry_from_before_tpm_keys_gains_the_table_when_opened(tmp_path: Path) -> None:
    with open_registry(tmp_path / "hub.db") as registry:
        registry._db.execute("DROP TABLE tpm_keys")
    with open_registry(tmp_path / "hub.db") as registry:
        assert registry.tpm_ak(DEVICE) is None

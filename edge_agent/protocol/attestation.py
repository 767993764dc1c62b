"""Remote attestation on the wire: the hub's challenge, the device's evidence, the hub's result.

Three ``COSE_Sign1`` objects, each with its own content type and ``external_aad``
(``["edgegov/v1", role, "<kind>/<device id>"]``), so none passes as another, as another
device's, or as any other edgegov object::

    challenge (verifier key, hub -> device):
      {"device": tstr, "nonce": bstr .size 32, "issued_at": uint, "expires_at": uint}
    evidence (device key, device -> hub):
      {"device": tstr, "nonce": bstr .size 32,      ; the challenge answered
       "time": uint,                                ; device clock when measured
       "bundle_digest": bstr .size 32 / null,       ; the bundle whose expectations apply
       "measurements": {* tstr => bstr .size 32},   ; name -> SHA-256 (at most 64)
       "lineage": {"size": uint, "root": bstr .size 32},   ; the device's lineage head
       ? "tpm": {"v": 1,                            ; TPM 2.0 quote (evidence schema 2)
                 "attest": bstr,                    ; TPMS_ATTEST as the TPM marshalled it
                 "signature": bstr}}                ; TPMT_SIGNATURE by the device's AK
    result (verifier key, hub -> device):
      {"device": tstr, "nonce": bstr .size 32, "verdict": "pass" / "fail",
       "measured": bstr .size 32,                   ; measured_digest(evidence.measurements)
       "issued_at": uint, "expires_at": uint, "detail": tstr}

Evidence schema versions: 1 has no ``tpm`` field; 2 adds the optional ``tpm`` map, whose
``v`` names the quote format (only 1 is known; another is refused). A device whose profile
measures TPM PCRs (``pcr:sha256:N`` measurements) carries a quote over them whose
``extraData`` is :func:`quote_binding` of its device id and the challenge's nonce; the hub
parses and checks it (:mod:`hub.core.tpm_quote`), this module only carries its bytes.

Freshness: the nonce is random, single-use and expires with its challenge (the hub keeps
track); the agent accepts a result only for a nonce it answered and only with the digest it
sent. What this module does not do: track nonces, compare measurements with expectations
(:mod:`edge_agent.protocol.expectations`), or read any clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol._device_scoped import device_aad, open_sign1, same_device
from edge_agent.protocol._schema import Fields
from edge_agent.protocol.expectations import DIGEST_BYTES, MAX_MEASUREMENTS
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.roles import Role, content_type
from edge_agent.protocol.root import TrustRoot

__all__ = [
    "CHALLENGE_CONTENT_TYPE",
    "EVIDENCE_CONTENT_TYPE",
    "MAX_CHALLENGE_BYTES",
    "MAX_DETAIL_CHARS",
    "MAX_EVIDENCE_BYTES",
    "MAX_QUOTE_PART_BYTES",
    "MAX_RESULT_BYTES",
    "NONCE_BYTES",
    "REPORT_FORMAT",
    "RESULT_CONTENT_TYPE",
    "TPM_QUOTE_FORMAT",
    "AttestationError",
    "AttestationResult",
    "Challenge",
    "Evidence",
    "LineageHead",
    "TpmQuote",
    "Verdict",
    "quote_binding",
    "sign_challenge",
    "sign_evidence",
    "sign_result",
    "verify_challenge",
    "verify_evidence",
    "verify_result",
    "with_quote",
]

CHALLENGE_CONTENT_TYPE = "application/edgegov-attestation-challenge+cbor"
EVIDENCE_CONTENT_TYPE = "application/edgegov-attestation-evidence+cbor"
RESULT_CONTENT_TYPE = content_type(Role.VERIFIER)

NONCE_BYTES = 32
MAX_CHALLENGE_BYTES = 1024
MAX_EVIDENCE_BYTES = 16 * 1024
"""64 measurements of a 64-character name and a 32-byte digest are about 6.5 KiB."""
MAX_RESULT_BYTES = 2048
MAX_DETAIL_CHARS = 512
TPM_QUOTE_FORMAT = 1
REPORT_FORMAT = "edgegov-attestation-report/1"
"""The ``format`` of ``edge-agent attest --json`` reports, which ``edge-hub attest expect``
reads to build expectations from a known-good device."""
MAX_QUOTE_PART_BYTES = 2048
"""Bound on each of a quote's TPMS_ATTEST and TPMT_SIGNATURE (an RSA-4096 signature is 518
bytes; a quote over 24 PCRs well under 300)."""


class AttestationError(EnvelopeError):
    """A challenge, evidence or result was refused: malformed, badly signed, for another
    device, or outside its validity window."""

    code = "attestation_rejected"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Challenge:
    device: str
    nonce: bytes
    issued_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class LineageHead:
    """The device's lineage when it produced evidence: its size and tree root."""

    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class TpmQuote:
    """A TPM2_Quote as the TPM produced it: the marshalled ``TPMS_ATTEST`` and the
    marshalled ``TPMT_SIGNATURE`` over it by the device's attestation key."""

    attest: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Evidence:
    device: str
    nonce: bytes
    time: int
    bundle_digest: bytes | None
    measurements: Mapping[str, bytes]
    lineage: LineageHead
    tpm: TpmQuote | None = None


@dataclass(frozen=True, slots=True)
class AttestationResult:
    """A verified result, and its exact bytes (persisted so a restart keeps it)."""

    device: str
    nonce: bytes
    verdict: Verdict
    measured: bytes
    issued_at: int
    expires_at: int
    detail: str
    raw: bytes = b""

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS


# --- challenge -----------------------------------------------------------------------------


def sign_challenge(challenge: Challenge, *, key: PrivateKey) -> bytes:
    """The hub's ``COSE_Sign1`` challenge (a verifier-role key)."""
    payload = dcbor.encode(
        {
            "device": challenge.device,
            "nonce": challenge.nonce,
            "issued_at": challenge.issued_at,
            "expires_at": challenge.expires_at,
        }
    )
    return cose.sign1(
        payload,
        key=key,
        content_type=CHALLENGE_CONTENT_TYPE,
        external_aad=device_aad(Role.VERIFIER, "challenge", challenge.device),
        kid=key.public.key_id,
    )


def verify_challenge(data: bytes, *, root: TrustRoot, device: str, now: int) -> Challenge:
    """Verify a challenge for ``device`` signed by a verifier key of ``root``, valid at ``now``.

    Raises:
        AttestationError: too large, not signed by a verifier key, malformed, for another
            device, or expired.
    """
    value = open_sign1(
        data,
        keys=root.role(Role.VERIFIER).keys,
        content_type=CHALLENGE_CONTENT_TYPE,
        aad=device_aad(Role.VERIFIER, "challenge", device),
        max_bytes=MAX_CHALLENGE_BYTES,
        what="challenge",
        error=AttestationError,
    )
    fields = Fields(
        value,
        "challenge",
        AttestationError,
        required=frozenset({"device", "nonce", "issued_at", "expires_at"}),
    )
    challenge = Challenge(
        same_device(fields, device, AttestationError),
        fields.byte_string("nonce", length=NONCE_BYTES),
        fields.integer("issued_at"),
        fields.integer("expires_at"),
    )
    _window(challenge.issued_at, challenge.expires_at, now, "challenge")
    return challenge


# --- evidence ------------------------------------------------------------------------------


def quote_binding(device: str, nonce: bytes) -> bytes:
    """The ``qualifyingData`` a TPM quote answering ``nonce`` for ``device`` carries:
    SHA-256 of the deterministic CBOR ``["edgegov/v1", "tpm-quote", device, nonce]``, so a
    quote made for one challenge or one device never passes for another."""
    return hashlib.sha256(dcbor.encode(["edgegov/v1", "tpm-quote", device, nonce])).digest()


def sign_evidence(evidence: Evidence, key: PrivateKey) -> bytes:
    """The device-signed ``COSE_Sign1`` of ``evidence``."""
    body: dict[str, object] = {
        "device": evidence.device,
        "nonce": evidence.nonce,
        "time": evidence.time,
        "bundle_digest": evidence.bundle_digest,
        "measurements": dict(evidence.measurements),
        "lineage": {"size": evidence.lineage.size, "root": evidence.lineage.root},
    }
    if evidence.tpm is not None:
        body["tpm"] = {
            "v": TPM_QUOTE_FORMAT,
            "attest": evidence.tpm.attest,
            "signature": evidence.tpm.signature,
        }
    payload = dcbor.encode(body)
    return cose.sign1(
        payload,
        key=key,
        content_type=EVIDENCE_CONTENT_TYPE,
        external_aad=device_aad(Role.DEVICE, "evidence", evidence.device),
    )


def verify_evidence(data: bytes, *, device: str, key: PublicKey) -> Evidence:
    """Verify evidence that claims to come from ``device``, signed by its registered ``key``.

    Only the envelope and schema are checked here; the hub checks the nonce (single use, not
    expired) and compares the measurements with the bundle's expectations.

    Raises:
        AttestationError: too large, not signed by ``key``, malformed, or naming another
            device.
    """
    value = open_sign1(
        data,
        keys={key.key_id: key},
        content_type=EVIDENCE_CONTENT_TYPE,
        aad=device_aad(Role.DEVICE, "evidence", device),
        max_bytes=MAX_EVIDENCE_BYTES,
        what="evidence",
        error=AttestationError,
    )
    fields = Fields(
        value,
        "evidence",
        AttestationError,
        required=frozenset({"device", "nonce", "time", "bundle_digest", "measurements", "lineage"}),
        optional=frozenset({"tpm"}),
    )
    named = same_device(fields, device, AttestationError)
    bundle_digest = None
    if fields.raw("bundle_digest") is not None:
        bundle_digest = fields.byte_string("bundle_digest", length=DIGEST_BYTES)
    return Evidence(
        named,
        fields.byte_string("nonce", length=NONCE_BYTES),
        fields.integer("time"),
        bundle_digest,
        _measurements(fields.raw("measurements")),
        _lineage(fields.raw("lineage")),
        _quote(fields.raw("tpm")) if fields.has("tpm") else None,
    )


def with_quote(data: bytes, quote: TpmQuote, *, device: str, key: PrivateKey) -> bytes:
    """Evidence ``data`` of ``device`` (signed by ``key``) signed again carrying ``quote``.

    The agent builds its evidence first and quotes after it (the TPM is slow and the quote
    is bound to the same nonce); nothing else of the evidence changes.

    Raises:
        AttestationError: ``data`` is not evidence signed by ``key``.
    """
    evidence = verify_evidence(data, device=device, key=key.public)
    return sign_evidence(replace(evidence, tpm=quote), key)


def _quote(value: object) -> TpmQuote:
    fields = Fields(
        value, "evidence.tpm", AttestationError, required=frozenset({"v", "attest", "signature"})
    )
    if fields.integer("v") != TPM_QUOTE_FORMAT:
        raise AttestationError(
            f"evidence.tpm is quote format {fields.raw('v')}; this hub reads {TPM_QUOTE_FORMAT}"
        )
    attest, signature = fields.byte_string("attest"), fields.byte_string("signature")
    if not 0 < len(attest) <= MAX_QUOTE_PART_BYTES or not 0 < len(signature) <= (
        MAX_QUOTE_PART_BYTES
    ):
        raise AttestationError(
            f"evidence.tpm attest and signature must be 1 to {MAX_QUOTE_PART_BYTES} bytes"
        )
    return TpmQuote(attest, signature)


def _measurements(value: object) -> dict[str, bytes]:
    if not isinstance(value, dict) or len(value) > MAX_MEASUREMENTS:
        raise AttestationError(
            f"evidence.measurements must map at most {MAX_MEASUREMENTS} names to digests"
        )
    measurements = {}
    for name, digest in value.items():
        if not isinstance(name, str) or not name.isprintable() or not 1 <= len(name) <= 64:
            raise AttestationError("evidence.measurements names must be short printable text")
        if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
            raise AttestationError(f"evidence.measurements.{name} must be a SHA-256 digest")
        measurements[name] = digest
    return measurements


def _lineage(value: object) -> LineageHead:
    fields = Fields(
        value, "evidence.lineage", AttestationError, required=frozenset({"size", "root"})
    )
    return LineageHead(fields.integer("size"), fields.byte_string("root", length=DIGEST_BYTES))


# --- result --------------------------------------------------------------------------------


def sign_result(result: AttestationResult, *, key: PrivateKey) -> bytes:
    """The hub's ``COSE_Sign1`` attestation result (a verifier-role key)."""
    payload = dcbor.encode(
        {
            "device": result.device,
            "nonce": result.nonce,
            "verdict": str(result.verdict),
            "measured": result.measured,
            "issued_at": result.issued_at,
            "expires_at": result.expires_at,
            "detail": result.detail[:MAX_DETAIL_CHARS],
        }
    )
    return cose.sign1(
        payload,
        key=key,
        content_type=RESULT_CONTENT_TYPE,
        external_aad=device_aad(Role.VERIFIER, "attestation", result.device),
        kid=key.public.key_id,
    )


def verify_result(data: bytes, *, root: TrustRoot, device: str) -> AttestationResult:
    """Verify a result for ``device`` signed by a verifier key of ``root``.

    Expiry is not checked here: an expired result is still a valid statement about the past
    (a restart re-reads it), and the gate judges it stale at its own ``now``. Whether its
    nonce is one this device answered is the caller's check.

    Raises:
        AttestationError: too large, not signed by a verifier key, malformed, for another
            device, or expiring before it was issued.
    """
    value = open_sign1(
        data,
        keys=root.role(Role.VERIFIER).keys,
        content_type=RESULT_CONTENT_TYPE,
        aad=device_aad(Role.VERIFIER, "attestation", device),
        max_bytes=MAX_RESULT_BYTES,
        what="attestation result",
        error=AttestationError,
    )
    fields = Fields(
        value,
        "attestation result",
        AttestationError,
        required=frozenset(
            {"device", "nonce", "verdict", "measured", "issued_at", "expires_at", "detail"}
        ),
    )
    verdict_text, detail = fields.raw("verdict"), fields.raw("detail")
    if verdict_text not in ("pass", "fail") or not isinstance(verdict_text, str):
        raise AttestationError("attestation result verdict must be 'pass' or 'fail'")
    if not isinstance(detail, str) or len(detail) > MAX_DETAIL_CHARS:
        raise AttestationError(f"attestation result detail must be text of {MAX_DETAIL_CHARS}")
    result = AttestationResult(
        device=same_device(fields, device, AttestationError),
        nonce=fields.byte_string("nonce", length=NONCE_BYTES),
        verdict=Verdict(verdict_text),
        measured=fields.byte_string("measured", length=DIGEST_BYTES),
        issued_at=fields.integer("issued_at"),
        expires_at=fields.integer("expires_at"),
        detail=detail,
        raw=data,
    )
    if result.expires_at <= result.issued_at:
        raise AttestationError("attestation result expires before it was issued")
    return result


# --- shared --------------------------------------------------------------------------------


def _window(issued_at: int, expires_at: int, now: int, what: str) -> None:
    if expires_at <= issued_at:
        raise AttestationError(f"{what} expires before it was issued")
    if now >= expires_at:
        raise AttestationError(f"{what} expired {now - expires_at} s ago")

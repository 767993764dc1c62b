"""TPM 2.0 quotes at the hub: parse ``TPMS_ATTEST``/``TPMT_SIGNATURE`` and check a quote.

A device whose firmware profile has a ``[tpm]`` table measures PCRs (``pcr:sha256:N``) and
answers a challenge with a TPM2_Quote over them (:mod:`edge_agent.attest.tpm`). The hub
verifies it against the attestation key (AK) registered for the device (``edge-hub attest
tpm-ak``), with ``cryptography`` only: no TPM software at the hub.

:func:`tpm_problem` is the whole check, in this order (each failure is one sentence):

1. a device with an AK registered must send a quote; a device without one must send
   neither a quote nor PCR measurements (a PCR value counts only when a registered AK
   quoted it);
2. the signature over the exact ``TPMS_ATTEST`` bytes verifies under the AK (ECDSA P-256 or
   RSASSA/RSAPSS, SHA-256) -- before those bytes are parsed;
3. ``TPMS_ATTEST`` has the TPM's magic (``TPM_GENERATED``) and is a quote (``TPM_ST_ATTEST_QUOTE``);
   a restricted AK only signs such structures over data the TPM produced itself;
4. its ``extraData`` is :func:`~edge_agent.protocol.attestation.quote_binding` of the device
   and the nonce of the evidence (a quote for an old nonce or another device fails);
5. it selects exactly the sha256-bank PCRs the evidence carries as measurements;
6. its ``pcrDigest`` is the SHA-256 of those PCR values, in PCR order.

The values themselves are then compared with the bundle's expectations like any other
measurement. The parsers are pure and total: any byte string gives a value or a
:class:`QuoteError`, never another exception.

Not checked: that the AK is a restricted key resident in a genuine TPM (no EK certificate
chain, no credential activation); the operator vouches for that when registering the AK.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from edge_agent.errors import ConfigError
from edge_agent.protocol.attestation import (
    MAX_QUOTE_PART_BYTES,
    AttestationError,
    Evidence,
    TpmQuote,
    quote_binding,
)

__all__ = [
    "QuoteError",
    "QuoteInfo",
    "Signature",
    "load_ak",
    "parse_attest",
    "parse_signature",
    "tpm_problem",
    "verify_signature",
]

TPM_GENERATED = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
ALG_SHA256 = 0x000B
ALG_RSASSA = 0x0014
ALG_RSAPSS = 0x0016
ALG_ECDSA = 0x0018
PCR_PREFIX = "pcr:"
SHA256_PCR_PREFIX = "pcr:sha256:"
MAX_PCR_SELECT_BYTES = 4
"""``sizeofSelect`` of a PCR bank: 3 for 24 PCRs; more is refused."""
MIN_RSA_BITS = 2048
MAX_AK_PEM_BYTES = 8192

AkKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class QuoteError(AttestationError):
    """A TPM quote is malformed, badly signed, or does not match the evidence."""

    code = "tpm_quote_rejected"


@dataclass(frozen=True, slots=True)
class QuoteInfo:
    """The parts of a ``TPMS_ATTEST`` quote the hub checks."""

    signer_name: bytes
    extra_data: bytes
    pcrs: tuple[int, ...]
    pcr_digest: bytes
    reset_count: int
    restart_count: int


@dataclass(frozen=True, slots=True)
class Signature:
    """A parsed ``TPMT_SIGNATURE``: the scheme and its values (``s`` empty for RSA)."""

    scheme: int
    r: bytes
    s: bytes


class _Reader:
    """Big-endian TPM marshalling, bounds-checked: reading past the end is a QuoteError."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._at = 0
        self._what = what

    def take(self, count: int) -> bytes:
        if count > len(self._data) - self._at:
            raise QuoteError(f"the {self._what} is truncated")
        part = self._data[self._at : self._at + count]
        self._at += count
        return part

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def sized(self) -> bytes:
        """A ``TPM2B_*``: a 16-bit size, then that many bytes."""
        return self.take(self.u16())

    def end(self) -> None:
        if self._at != len(self._data):
            raise QuoteError(f"the {self._what} has {len(self._data) - self._at} trailing bytes")


def parse_attest(data: bytes) -> QuoteInfo:
    """Parse a marshalled ``TPMS_ATTEST`` that must be a quote.

    Raises:
        QuoteError: too long, truncated, trailing bytes, not ``TPM_GENERATED``, not a quote,
            or selecting PCRs of a bank other than sha256.
    """
    if len(data) > MAX_QUOTE_PART_BYTES:
        raise QuoteError(f"the quote is over {MAX_QUOTE_PART_BYTES} bytes")
    reader = _Reader(data, "quote")
    if reader.u32() != TPM_GENERATED:
        raise QuoteError("the quote does not start with TPM_GENERATED: the TPM did not make it")
    if reader.u16() != TPM_ST_ATTEST_QUOTE:
        raise QuoteError("the attestation structure is not a quote (TPM_ST_ATTEST_QUOTE)")
    signer_name = reader.sized()
    extra_data = reader.sized()
    reader.u64()  # clock
    reset_count, restart_count = reader.u32(), reader.u32()
    reader.u8()  # safe
    reader.u64()  # firmware version
    pcrs = _selection(reader)
    pcr_digest = reader.sized()
    reader.end()
    return QuoteInfo(signer_name, extra_data, pcrs, pcr_digest, reset_count, restart_count)


def _selection(reader: _Reader) -> tuple[int, ...]:
    """The PCRs of a ``TPML_PCR_SELECTION``: exactly one sha256 bank, in PCR order."""
    if reader.u32() != 1:
        raise QuoteError("the quote must select PCRs of exactly one bank")
    if reader.u16() != ALG_SHA256:
        raise QuoteError("the quote selects PCRs of a bank other than sha256")
    size = reader.u8()
    if size > MAX_PCR_SELECT_BYTES:
        raise QuoteError(f"the quote's PCR selection is {size} bytes, over {MAX_PCR_SELECT_BYTES}")
    bitmap = reader.take(size)
    return tuple(
        8 * i + bit for i, byte in enumerate(bitmap) for bit in range(8) if byte >> bit & 1
    )


def parse_signature(data: bytes) -> Signature:
    """Parse a marshalled ``TPMT_SIGNATURE`` (ECDSA, RSASSA or RSAPSS over SHA-256).

    Raises:
        QuoteError: too long, truncated, trailing bytes, or another scheme or hash.
    """
    if len(data) > MAX_QUOTE_PART_BYTES:
        raise QuoteError(f"the quote signature is over {MAX_QUOTE_PART_BYTES} bytes")
    reader = _Reader(data, "quote signature")
    scheme = reader.u16()
    if scheme not in (ALG_ECDSA, ALG_RSASSA, ALG_RSAPSS):
        raise QuoteError(
            f"the quote signature scheme 0x{scheme:04x} is not ECDSA, RSASSA or RSAPSS"
        )
    if reader.u16() != ALG_SHA256:
        raise QuoteError("the quote signature does not use SHA-256")
    first = reader.sized()
    second = reader.sized() if scheme == ALG_ECDSA else b""
    reader.end()
    if not first or (scheme == ALG_ECDSA and not second):
        raise QuoteError("the quote signature is empty")
    return Signature(scheme, first, second)


def load_ak(data: bytes) -> AkKey:
    """An attestation key from PEM or DER ``SubjectPublicKeyInfo``: ECDSA P-256 or RSA of
    at least 2048 bits.

    Raises:
        ConfigError: not such a public key.
    """
    if len(data) > MAX_AK_PEM_BYTES:
        raise ConfigError(f"the attestation key is over {MAX_AK_PEM_BYTES} bytes")
    try:
        key = (
            serialization.load_pem_public_key(data)
            if data.lstrip().startswith(b"-----")
            else serialization.load_der_public_key(data)
        )
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"the attestation key is not a PEM or DER public key: {exc}") from exc
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return key
    raise ConfigError(
        f"the attestation key must be ECDSA P-256 or RSA of at least {MIN_RSA_BITS} bits"
    )


def verify_signature(attest: bytes, signature: Signature, key: AkKey) -> None:
    """Check ``signature`` over the exact ``attest`` bytes under ``key``.

    Raises:
        QuoteError: the scheme does not fit the key, or the signature does not verify.
    """
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            if signature.scheme != ALG_ECDSA:
                raise QuoteError("the quote is not signed with ECDSA, but the AK is an EC key")
            der = encode_dss_signature(
                int.from_bytes(signature.r, "big"), int.from_bytes(signature.s, "big")
            )
            key.verify(der, attest, ec.ECDSA(hashes.SHA256()))
        elif signature.scheme == ALG_RSASSA:
            key.verify(signature.r, attest, padding.PKCS1v15(), hashes.SHA256())
        elif signature.scheme == ALG_RSAPSS:
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
            key.verify(signature.r, attest, pss, hashes.SHA256())
        else:
            raise QuoteError("the quote is signed with ECDSA, but the AK is an RSA key")
    except (InvalidSignature, ValueError) as exc:
        raise QuoteError(
            "the quote's signature does not verify under the registered attestation key"
        ) from exc


def tpm_problem(evidence: Evidence, ak: bytes | None) -> str | None:
    """Why ``evidence``'s TPM part fails (steps 1-6 of the module docstring), or ``None``.

    ``ak`` is the DER public key registered for the device, ``None`` when there is none.
    """
    pcr_values = {n: d for n, d in evidence.measurements.items() if n.startswith(PCR_PREFIX)}
    quote = evidence.tpm
    if ak is None:
        if quote is not None:
            return (
                f"the evidence carries a TPM quote, but no attestation key is registered for "
                f"{evidence.device} (edge-hub attest tpm-ak)"
            )
        if pcr_values:
            return "the evidence carries PCR values without a quote from a registered TPM key"
        return None
    if quote is None:
        return f"{evidence.device} has a TPM attestation key registered, but sent no quote"
    try:
        _check(quote, load_ak(ak), evidence.device, evidence.nonce, pcr_values)
    except QuoteError as exc:
        return f"TPM quote refused: {exc.message}"
    except ConfigError as exc:
        return f"the registered attestation key of {evidence.device} is unusable: {exc.message}"
    return None


def _check(
    quote: TpmQuote, key: AkKey, device: str, nonce: bytes, pcr_values: Mapping[str, bytes]
) -> None:
    verify_signature(quote.attest, parse_signature(quote.signature), key)
    info = parse_attest(quote.attest)
    if info.extra_data != quote_binding(device, nonce):
        raise QuoteError("it was not made for this challenge (its qualifying data differs)")
    quoted = [f"{SHA256_PCR_PREFIX}{pcr}" for pcr in info.pcrs]
    if set(quoted) != set(pcr_values):
        raise QuoteError(
            f"it covers PCRs {_pcr_list(quoted)}, the evidence carries {_pcr_list(pcr_values)}"
        )
    digest = hashlib.sha256(b"".join(pcr_values[name] for name in quoted)).digest()
    if info.pcr_digest != digest:
        raise QuoteError("the PCR values in the evidence are not the ones the TPM quoted")


def _pcr_list(names: Iterable[str]) -> str:
    return ", ".join(sorted((n.removeprefix(PCR_PREFIX) for n in names), key=_pcr_order)) or "none"


def _pcr_order(name: str) -> tuple[str, int]:
    bank, _, index = name.rpartition(":")
    return bank, int(index) if index.isdigit() else -1

"""The COSE working group's Ed25519 examples, reproduced byte for byte.

The vectors (tests/vectors/cose-wg/eddsa-examples, public domain, vendored: a missing file
fails the run, it never skips) sign with alg EdDSA
(-8) and content type 0 (a CoAP Content-Format number), so they go through the low-level
helpers (:func:`cose.sign1_with_headers`, :func:`cose.verify_sign1`, ...) with the key pinned
to -8; edgegov's own objects use the same code with -19 and media-type content types.

Any flipped bit fails, the unprotected ``kid`` included: RFC 9052 does not sign unprotected
headers, but a signature that names a kid is checked against that key only, so a changed kid
names no trusted key and the signature is not counted. The trusted key is therefore registered
under the vectors' own kid, ``"11"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose
from edge_agent.protocol.keys import ALG_ED25519, ALG_EDDSA, PrivateKey, PublicKey

VECTORS = Path(__file__).resolve().parent / "vectors" / "cose-wg" / "eddsa-examples"
VECTOR_FILES = ["eddsa-01.json", "eddsa-sig-01.json"]
MAX_BYTES = 4096
NO_AAD = b""


def _load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())  # type: ignore[no-any-return]


def _private(key: dict[str, str]) -> PrivateKey:
    private = PrivateKey(bytes.fromhex(key["d_hex"]), ALG_EDDSA)
    assert private.public.raw == bytes.fromhex(key["x_hex"])
    return private


VECTOR_KID = b"11"


def _trusted(key: PrivateKey, alg: int) -> dict[bytes, PublicKey]:
    return {VECTOR_KID: PublicKey(key.public.raw, alg)}


SIGN1 = _load("eddsa-sig-01.json")
SIGN = _load("eddsa-01.json")


def test_every_vendored_vector_file_is_there() -> None:
    assert sorted(p.name for p in VECTORS.glob("*.json")) == VECTOR_FILES


@pytest.fixture
def sign1_vector() -> tuple[PrivateKey, bytes, bytes]:
    """(key pinned to -8, payload, expected COSE_Sign1 bytes)."""
    return (
        _private(SIGN1["input"]["sign0"]["key"]),
        SIGN1["input"]["plaintext"].encode(),
        bytes.fromhex(SIGN1["output"]["cbor"]),
    )


@pytest.fixture
def sign_vector() -> tuple[PrivateKey, bytes, bytes]:
    """(key pinned to -8, payload, expected COSE_Sign bytes)."""
    return (
        _private(SIGN["input"]["sign"]["signers"][0]["key"]),
        SIGN["input"]["plaintext"].encode(),
        bytes.fromhex(SIGN["output"]["cbor"]),
    )


def _check_sign1(data: bytes, keys: dict[bytes, PublicKey]) -> tuple[bytes, frozenset[bytes]]:
    verified = cose.verify_sign1(
        data, keys=keys, content_type=0, external_aad=NO_AAD, max_bytes=MAX_BYTES
    )
    return verified.payload, verified.signer_ids


def _check_sign(data: bytes, keys: dict[bytes, PublicKey]) -> tuple[bytes, frozenset[bytes]]:
    verified = cose.verify_sign(
        data, keys=keys, content_type=0, external_aad=NO_AAD, max_bytes=MAX_BYTES
    )
    return verified.payload, verified.signer_ids


def test_sign1_sig_structure_matches_to_be_signed(
    sign1_vector: tuple[PrivateKey, bytes, bytes],
) -> None:
    key, payload, output = sign1_vector
    received_protected = cbor2.loads(output).value[0]
    to_be_signed = cose.sig_structure(
        body_protected=received_protected,
        sign_protected=None,
        external_aad=NO_AAD,
        payload=payload,
    )
    assert to_be_signed == bytes.fromhex(SIGN1["intermediates"]["ToBeSign_hex"])
    assert key.public.verify(to_be_signed, cbor2.loads(output).value[3])


def test_sign_sig_structure_matches_to_be_signed(
    sign_vector: tuple[PrivateKey, bytes, bytes],
) -> None:
    key, payload, output = sign_vector
    body = cbor2.loads(output).value
    to_be_signed = cose.sig_structure(
        body_protected=body[0],
        sign_protected=body[3][0][0],
        external_aad=NO_AAD,
        payload=payload,
    )
    assert to_be_signed == bytes.fromhex(SIGN["intermediates"]["signers"][0]["ToBeSign_hex"])
    assert key.public.verify(to_be_signed, body[3][0][2])


def test_signing_the_sign1_input_reproduces_the_output_bytes(
    sign1_vector: tuple[PrivateKey, bytes, bytes],
) -> None:
    key, payload, output = sign1_vector
    signed = cose.sign1_with_headers(
        payload,
        key=key,
        protected={cose.HEADER_ALG: ALG_EDDSA, cose.HEADER_CONTENT_TYPE: 0},
        unprotected={cose.HEADER_KID: b"11"},
        external_aad=NO_AAD,
    )
    assert signed == output


def test_signing_the_sign_input_reproduces_the_output_bytes(
    sign_vector: tuple[PrivateKey, bytes, bytes],
) -> None:
    key, payload, output = sign_vector
    signed = cose.sign_with_headers(
        payload,
        body_protected={cose.HEADER_CONTENT_TYPE: 0},
        body_unprotected={},
        signers=[cose.Signer(key, {cose.HEADER_ALG: ALG_EDDSA}, {cose.HEADER_KID: b"11"})],
        external_aad=NO_AAD,
    )
    assert signed == output


def test_sign1_output_verifies_with_the_key_pinned_to_eddsa(
    sign1_vector: tuple[PrivateKey, bytes, bytes],
) -> None:
    key, payload, output = sign1_vector
    keys = _trusted(key, ALG_EDDSA)
    assert _check_sign1(output, keys) == (payload, frozenset(keys))


def test_sign_output_verifies_with_the_key_pinned_to_eddsa(
    sign_vector: tuple[PrivateKey, bytes, bytes],
) -> None:
    key, payload, output = sign_vector
    keys = _trusted(key, ALG_EDDSA)
    assert _check_sign(output, keys) == (payload, frozenset(keys))


def test_sign1_output_is_refused_with_the_key_pinned_to_ed25519(
    sign1_vector: tuple[PrivateKey, bytes, bytes],
) -> None:
    key, _, output = sign1_vector
    with pytest.raises(EnvelopeError, match="pinned to Ed25519"):
        _check_sign1(output, _trusted(key, ALG_ED25519))


def test_sign_output_is_refused_with_the_key_pinned_to_ed25519(
    sign_vector: tuple[PrivateKey, bytes, bytes],
) -> None:
    key, _, output = sign_vector
    with pytest.raises(EnvelopeError, match="pinned to Ed25519"):
        _check_sign(output, _trusted(key, ALG_ED25519))


def _assert_every_flip_fails(
    output: bytes,
    keys: dict[bytes, PublicKey],
    check: Callable[[bytes, dict[bytes, PublicKey]], tuple[bytes, frozenset[bytes]]],
) -> None:
    check(output, keys)
    accepted = []
    for position in range(len(output)):
        for bit in range(8):
            mutated = bytearray(output)
            mutated[position] ^= 1 << bit
            try:
                result = check(bytes(mutated), keys)
            except EnvelopeError:
                continue
            accepted.append((position, bit, result))
    assert accepted == []


def test_every_flipped_bit_of_the_sign1_output_fails(
    sign1_vector: tuple[PrivateKey, bytes, bytes],
) -> None:
    key, _, output = sign1_vector
    _assert_every_flip_fails(output, _trusted(key, ALG_EDDSA), _check_sign1)


def test_every_flipped_bit_of_the_sign_output_fails(
    sign_vector: tuple[PrivateKey, bytes, bytes],
) -> None:
    key, _, output = sign_vector
    _assert_every_flip_fails(output, _trusted(key, ALG_EDDSA), _check_sign)

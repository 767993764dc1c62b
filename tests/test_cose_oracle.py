"""Interop with python-cwt, an independent COSE implementation (DESIGN.md section 2).

cwt 3.3.0 pins cbor2<6, so it runs in its own virtualenv (.venv-oracle, made by ``make test``
from tests/oracle/requirements.txt) and is driven through tests/oracle/cwt_oracle.py as a
subprocess, JSON over stdin/stdout. cwt 3.3.0 accepts alg -19 (Ed25519) for Ed25519 keys, so
both directions use -19, edgegov's default; -8 is exercised too, with a key pinned to it.

Note cwt does not tie the header alg to the key's alg when verifying; the oracle checks the
signature bytes and structure, and the tests check the alg it decoded.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol.keys import (
    ALG_ED25519,
    ALG_EDDSA,
    PrivateKey,
    PublicKey,
    private_key_from_pem,
)
from edge_agent.protocol.roles import Role, content_type, external_aad
from tests.system_tools import require

pytestmark = pytest.mark.oracle

REPO = Path(__file__).resolve().parents[1]
ORACLE_SCRIPT = REPO / "tests" / "oracle" / "cwt_oracle.py"

KEY_A = PrivateKey(bytes([11]) * 32)
KEY_B = PrivateKey(bytes([12]) * 32)
KEY_EDDSA = PrivateKey(bytes([13]) * 32, ALG_EDDSA)
CTYPE = content_type(Role.ROOT)
AAD = external_aad(Role.ROOT, "")
PAYLOAD = dcbor.encode({"version": 2, "roles": ["root", "policy"]})
MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def oracle_python() -> str:
    configured = os.environ.get("EDGEGOV_ORACLE_PYTHON")
    if configured:
        return configured
    fallback = REPO / ".venv-oracle" / "bin" / "python"
    if fallback.exists():
        return str(fallback)
    pytest.skip(
        "python-cwt oracle not available: set EDGEGOV_ORACLE_PYTHON or create .venv-oracle "
        "(make test does both)"
    )


def run_oracle(python: str, request: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(
        [python, str(ORACLE_SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


def public_spec(key: PrivateKey) -> dict[str, Any]:
    return {"x": key.public.raw.hex(), "alg": key.alg, "kid": key.public.key_id.hex()}


def private_spec(key: PrivateKey) -> dict[str, Any]:
    return {**public_spec(key), "d": key.seed.hex()}


def cwt_verify(
    python: str, data: bytes, keys: list[dict[str, Any]], aad: bytes = AAD
) -> dict[str, Any]:
    return run_oracle(
        python, {"op": "verify", "data": data.hex(), "keys": keys, "external_aad": aad.hex()}
    )


def trusted(*keys: PrivateKey) -> dict[bytes, PublicKey]:
    return {key.public.key_id: key.public for key in keys}


# --- (a) what we sign, cwt verifies --------------------------------------------------------


@pytest.mark.parametrize("kid", [None, KEY_A.public.key_id], ids=["no kid", "kid"])
def test_cwt_verifies_our_sign1(oracle_python: str, kid: bytes | None) -> None:
    signed = cose.sign1(PAYLOAD, key=KEY_A, content_type=CTYPE, external_aad=AAD, kid=kid)
    answer = cwt_verify(oracle_python, signed, [public_spec(KEY_A)])
    assert answer["verified_kids"] == [KEY_A.public.key_id.hex()]
    assert bytes.fromhex(answer["payload"]) == PAYLOAD
    assert (answer["alg"], answer["content_type"]) == (ALG_ED25519, CTYPE)


@pytest.mark.parametrize("signers", [[KEY_A], [KEY_A, KEY_B]], ids=["1 signature", "2 signatures"])
def test_cwt_verifies_every_signature_of_our_cose_sign(
    oracle_python: str, signers: list[PrivateKey]
) -> None:
    signed = cose.sign(PAYLOAD, keys=signers, content_type=CTYPE, external_aad=AAD)
    answer = cwt_verify(oracle_python, signed, [public_spec(key) for key in signers])
    assert answer["verified_kids"] == [key.public.key_id.hex() for key in signers]
    assert bytes.fromhex(answer["payload"]) == PAYLOAD
    assert answer["content_type"] == CTYPE


def test_cwt_refuses_our_sign1_under_another_external_aad(oracle_python: str) -> None:
    signed = cose.sign1(PAYLOAD, key=KEY_A, content_type=CTYPE, external_aad=AAD)
    other = external_aad(Role.POLICY, "")
    answer = cwt_verify(oracle_python, signed, [public_spec(KEY_A)], aad=other)
    assert answer["verified_kids"] == []


# --- (b) what cwt signs, we verify ---------------------------------------------------------


@pytest.mark.parametrize("key", [KEY_A, KEY_EDDSA], ids=["Ed25519 -19", "EdDSA -8 (pinned)"])
def test_we_verify_a_sign1_made_by_cwt(oracle_python: str, key: PrivateKey) -> None:
    request = {
        "op": "sign1",
        "payload": PAYLOAD.hex(),
        "external_aad": AAD.hex(),
        "content_type": CTYPE,
        "key": private_spec(key),
    }
    signed = bytes.fromhex(run_oracle(oracle_python, request)["data"])
    verified = cose.verify_sign1(
        signed, keys=trusted(key), content_type=CTYPE, external_aad=AAD, max_bytes=MAX_BYTES
    )
    assert verified == cose.Verified(PAYLOAD, frozenset([key.public.key_id]), CTYPE)


def test_we_verify_a_two_signature_cose_sign_made_by_cwt(oracle_python: str) -> None:
    request = {
        "op": "sign",
        "payload": PAYLOAD.hex(),
        "external_aad": AAD.hex(),
        "content_type": CTYPE,
        "keys": [private_spec(KEY_A), private_spec(KEY_B)],
    }
    signed = bytes.fromhex(run_oracle(oracle_python, request)["data"])
    verified = cose.verify_sign(
        signed,
        keys=trusted(KEY_A, KEY_B),
        content_type=CTYPE,
        external_aad=AAD,
        max_bytes=MAX_BYTES,
    )
    assert verified.payload == PAYLOAD
    assert verified.signer_ids == frozenset([KEY_A.public.key_id, KEY_B.public.key_id])
    assert signed == cose.sign(PAYLOAD, keys=[KEY_A, KEY_B], content_type=CTYPE, external_aad=AAD)


def test_we_refuse_a_cwt_sign1_under_another_external_aad(oracle_python: str) -> None:
    request = {
        "op": "sign1",
        "payload": PAYLOAD.hex(),
        "external_aad": AAD.hex(),
        "content_type": CTYPE,
        "key": private_spec(KEY_A),
    }
    signed = bytes.fromhex(run_oracle(oracle_python, request)["data"])
    with pytest.raises(EnvelopeError, match="for another scope"):
        cose.verify_sign1(
            signed,
            keys=trusted(KEY_A),
            content_type=CTYPE,
            external_aad=external_aad(Role.REVOKE, ""),
            max_bytes=MAX_BYTES,
        )


# --- (c) an openssl key, loaded from PEM, signs what cwt verifies --------------------------


def test_cwt_verifies_a_sign1_by_an_openssl_generated_key(
    oracle_python: str, tmp_path: Path
) -> None:
    openssl = require("openssl", "openssl")
    private_pem = tmp_path / "device.pem"
    subprocess.run(
        [openssl, "genpkey", "-algorithm", "ed25519", "-out", str(private_pem)],
        check=True,
        capture_output=True,
    )
    public_pem = subprocess.run(
        [openssl, "pkey", "-in", str(private_pem), "-pubout"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    key = private_key_from_pem(private_pem.read_text())
    signed = cose.sign1(PAYLOAD, key=key, content_type=CTYPE, external_aad=AAD)
    spec = {"pem": public_pem, "alg": ALG_ED25519, "kid": key.public.key_id.hex()}
    answer = cwt_verify(oracle_python, signed, [spec])
    assert answer["verified_kids"] == [key.public.key_id.hex()]
    assert bytes.fromhex(answer["payload"]) == PAYLOAD

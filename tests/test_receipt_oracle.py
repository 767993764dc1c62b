"""Interop with scitt-cose, an independent RFC 9942 receipt verifier (PyPI scitt-cose 0.5.0).

It runs in the oracle virtualenv (.venv-oracle, made by ``make test`` from
tests/oracle/requirements.txt) through tests/oracle/scitt_oracle.py, as a subprocess: it
takes the receipt from label 394 of our transparent statement and the entry from its payload,
and verifies the receipt (vds 1, detached root, EdDSA) for that entry under the signer's PEM.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import cbor2
import pytest

from edge_agent.protocol import dcbor
from edge_agent.protocol.keys import PrivateKey
from tests.receipt_support import ReceiptLog

pytestmark = pytest.mark.oracle

REPO = Path(__file__).resolve().parents[1]
ORACLE_SCRIPT = REPO / "tests" / "oracle" / "scitt_oracle.py"
LOG = ReceiptLog(size=23)


@pytest.fixture(scope="module")
def oracle_python() -> str:
    configured = os.environ.get("EDGEGOV_ORACLE_PYTHON")
    if configured:
        return configured
    fallback = REPO / ".venv-oracle" / "bin" / "python"
    if fallback.exists():
        return str(fallback)
    pytest.skip(
        "scitt-cose oracle not available: set EDGEGOV_ORACLE_PYTHON or create .venv-oracle "
        "(make test does both)"
    )


def run_oracle(python: str, statement: bytes, key: PrivateKey) -> dict[str, Any]:
    completed = subprocess.run(
        [python, str(ORACLE_SCRIPT)],
        input=json.dumps({"statement": statement.hex(), "pem": key.public.to_pem()}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("signer", ["device", "witness"])
@pytest.mark.parametrize("seq", [0, 4, 16, 22])
def test_scitt_cose_verifies_our_receipts(oracle_python: str, signer: str, seq: int) -> None:
    key = LOG.device if signer == "device" else LOG.witness
    answer = run_oracle(oracle_python, LOG.receipt(seq, signer=key), key)
    assert answer["ok"], answer["errors"]
    assert (answer["tree_size"], answer["leaf_index"]) == (LOG.size, seq)
    assert bytes.fromhex(answer["root"]) == LOG.root()
    assert bytes.fromhex(answer["entry"]) == LOG.entries[seq]


def _with_path_hash_flipped(statement: bytes) -> bytes:
    outer = cbor2.loads(statement).value
    receipt = cbor2.loads(outer[1][394][0]).value
    size, index, path = cbor2.loads(receipt[1][396][-1][0])
    path = [bytes([path[0][0] ^ 1]) + path[0][1:], *path[1:]]
    vdp = {-1: [dcbor.encode([size, index, path])]}
    inner = [receipt[0], {396: vdp, -65602: receipt[1][-65602]}, None, receipt[3]]
    new = dcbor.encode_tagged(18, inner, mixed_int_keys=True)
    return dcbor.encode_tagged(
        18, [outer[0], {394: [new]}, outer[2], outer[3]], mixed_int_keys=True
    )


def test_scitt_cose_refuses_a_receipt_with_a_changed_path(oracle_python: str) -> None:
    answer = run_oracle(oracle_python, _with_path_hash_flipped(LOG.receipt(4)), LOG.device)
    assert not answer["ok"]
    assert answer["failed_at"] == "signature"


def test_scitt_cose_refuses_a_receipt_under_another_key(oracle_python: str) -> None:
    answer = run_oracle(oracle_python, LOG.receipt(4), LOG.witness)
    assert not answer["ok"]

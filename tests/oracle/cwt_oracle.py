"""python-cwt as an independent COSE oracle, driven by tests/test_cose_oracle.py.

Runs in its own virtualenv (.venv-oracle: cwt pins cbor2<6, the agent needs cbor2 6), so it
imports nothing from edgegov. It reads one JSON request on stdin and writes one JSON answer
on stdout; every byte string travels as hex. Requests (``op``):

- ``verify``: ``data``, ``external_aad``, ``keys`` [{``x`` | ``pem``, ``alg``, ``kid``}].
  Tries each key on its own, so for a COSE_Sign the answer names every key whose signature
  cwt accepts. Answers ``verified_kids``, and from the last success ``payload``, ``alg``
  (protected label 1; of the body for Sign1, absent for Sign) and ``content_type`` (label 3).
- ``sign1``: ``payload``, ``external_aad``, ``content_type``, ``key`` {``x``, ``d``, ``alg``,
  ``kid``}.
- ``sign``: as ``sign1`` with ``keys`` (one COSE_Signature each, kid in the unprotected header).

The headers are those edgegov uses (DESIGN.md section 2): Sign1 protected {1: alg, 3: ctype},
unprotected {4: kid}; COSE_Sign body protected {3: ctype}, each signature protected {1: alg},
unprotected {4: kid}.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from cwt import COSE, COSEKey, Signer

# COSE_Key labels (RFC 9052 section 7, RFC 9053 section 7.2).
KTY, KID, ALG, CRV, X, D = 1, 2, 3, -1, -2, -4
KTY_OKP, CRV_ED25519 = 1, 6


def _key(spec: dict[str, Any], private: bool) -> Any:
    """A cwt key from hex ``x`` (and ``d`` when private), or from an openssl ``pem``."""
    kid = bytes.fromhex(spec["kid"])
    if "pem" in spec:
        return COSEKey.from_pem(spec["pem"], alg=spec["alg"], kid=kid)
    body = {X: bytes.fromhex(spec["x"])}
    if private:
        body[D] = bytes.fromhex(spec["d"])
    return COSEKey.new({KTY: KTY_OKP, CRV: CRV_ED25519, ALG: spec["alg"], KID: kid, **body})


def verify(request: dict[str, Any]) -> dict[str, Any]:
    data = bytes.fromhex(request["data"])
    aad = bytes.fromhex(request["external_aad"])
    answer: dict[str, Any] = {"verified_kids": [], "errors": []}
    for spec in request["keys"]:
        try:
            protected, _, payload = COSE.new().decode_with_headers(
                data, _key(spec, private=False), external_aad=aad
            )
        except Exception as exc:  # the oracle reports every refusal, whatever its type
            answer["errors"].append(f"{type(exc).__name__}: {exc}")
            continue
        answer["verified_kids"].append(spec["kid"])
        answer["payload"] = payload.hex()
        answer["alg"] = protected.get(1)
        answer["content_type"] = protected.get(3)
    return answer


def sign1(request: dict[str, Any]) -> dict[str, Any]:
    spec = request["key"]
    data = COSE.new(deterministic_header=True).encode_and_sign(
        bytes.fromhex(request["payload"]),
        _key(spec, private=True),
        protected={1: spec["alg"], 3: request["content_type"]},
        unprotected={4: bytes.fromhex(spec["kid"])},
        external_aad=bytes.fromhex(request["external_aad"]),
    )
    return {"data": data.hex()}


def sign(request: dict[str, Any]) -> dict[str, Any]:
    signers = [
        Signer.new(
            cose_key=_key(spec, private=True),
            protected={1: spec["alg"]},
            unprotected={4: bytes.fromhex(spec["kid"])},
        )
        for spec in request["keys"]
    ]
    data = COSE.new(deterministic_header=True).encode_and_sign(
        bytes.fromhex(request["payload"]),
        protected={3: request["content_type"]},
        signers=signers,
        external_aad=bytes.fromhex(request["external_aad"]),
    )
    return {"data": data.hex()}


def main() -> None:
    request = json.load(sys.stdin)
    operations = {"verify": verify, "sign1": sign1, "sign": sign}
    json.dump(operations[request["op"]](request), sys.stdout)


if __name__ == "__main__":
    main()

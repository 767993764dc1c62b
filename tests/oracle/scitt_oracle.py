"""scitt-cose as an independent RFC 9942 receipt oracle, driven by tests/test_receipt_oracle.py.

Runs in the oracle virtualenv (.venv-oracle) and imports nothing from edgegov. It reads one
JSON request on stdin and writes one JSON answer on stdout; bytes travel as hex. Request:
``statement`` (an edgegov transparent statement) and ``pem`` (the signer's public key). The
oracle takes the receipt from unprotected label 394 and the entry from the payload itself,
then asks ``scitt_cose.receipt.verify_receipt`` whether the receipt proves that entry.
Answer: ``ok``, ``tree_size``, ``leaf_index``, ``root``, ``errors``, ``failed_at``, ``entry``.
"""

from __future__ import annotations

import json
import sys

import cbor2
from scitt_cose.receipt import verify_receipt

RECEIPTS = 394


def main() -> None:
    request = json.load(sys.stdin)
    statement = cbor2.loads(bytes.fromhex(request["statement"]))
    _protected, unprotected, entry, _signature = statement.value
    receipt = unprotected[RECEIPTS][0]
    result = verify_receipt(
        bytes(receipt), leaf_entry_hex=bytes(entry).hex(), log_public_key_pem=request["pem"]
    )
    answer = {
        "ok": result.ok,
        "tree_size": result.tree_size,
        "leaf_index": result.leaf_index,
        "root": result.root,
        "errors": [str(error) for error in result.errors],
        "failed_at": result.failed_at,
        "entry": bytes(entry).hex(),
    }
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()

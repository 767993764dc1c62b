"""docs/receipts.md shows a real receipt: the example there is regenerated here from fixed
keys and must match byte for byte (as CBOR diagnostic notation), so the profile document
can never drift from the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cbor2

from edge_agent.protocol.checkpoint import Checkpoint, origin_for, sign_checkpoint
from edge_agent.protocol.cosignature import cosign_note
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Entry, Kind, encode_entry
from edge_agent.protocol.merkle import inclusion_proof, leaf_hash, root_from_leaf_hashes
from edge_agent.protocol.receipt import build_receipt, verify_receipt
from edge_agent.protocol.request import Request

DOC = Path(__file__).resolve().parents[1] / "docs" / "receipts.md"
DEVICE = PrivateKey(bytes(range(32)))
WITNESS = PrivateKey(bytes(range(32, 64)))
T = 1_800_000_000

_NAMES = {
    "statement": {1: "alg", 3: "content type", 4: "kid", 394: "receipts", -65603: "bundle"},
    "receipt": {
        1: "alg",
        4: "kid",
        15: "CWT claims",
        395: "vds",
        396: "vdp",
        -65600: "tree size (signed)",
        -65601: "leaf index (signed)",
        -65602: "checkpoint note",
    },
    "claims": {1: "iss: the log's origin", 6: "iat"},
    "vdp": {-1: "inclusion proofs"},
    "entry": {
        0: "seq",
        1: "time",
        2: "prev",
        3: "kind",
        4: "allowed",
        5: "reason",
        6: "rule",
        7: "bundle digest",
        8: "bundle version",
        9: "subject",
        10: "action",
        11: "resource",
        12: "context",
        13: "selectors",
        14: "detail",
    },
}


def example() -> tuple[bytes, bytes]:
    """The example log (three decisions), and the receipt of entry 1 cosigned by the hub."""
    digest = bytes.fromhex("5e" * 32)
    entries, prev = [], GENESIS_PREV
    for seq in range(3):
        entry = encode_entry(
            Entry(
                seq,
                T + seq,
                prev,
                Kind.DECISION,
                seq != 2,
                "allow" if seq != 2 else "deny",
                rule="camera-exec" if seq != 2 else None,
                bundle_digest=digest,
                bundle_version=7,
                request=Request("svc:camera", "exec", "/opt/camera/bin/capture"),
            )
        )
        entries.append(entry)
        prev = leaf_hash(entry)
    leaves = [leaf_hash(e) for e in entries]
    origin = origin_for("gw-017", 1)
    note = sign_checkpoint(Checkpoint(origin, 3, root_from_leaf_hashes(leaves)), DEVICE, origin)
    cosigned = cosign_note(note, WITNESS, time=T + 60)

    def node(level: int, index: int) -> bytes:
        return root_from_leaf_hashes(leaves[index << level : (index + 1) << level])

    receipt = build_receipt(
        entry=entries[1],
        seq=1,
        tree_size=3,
        path=inclusion_proof(1, 3, node),
        note=cosigned,
        signer=DEVICE,
        now=T + 120,
    )
    return entries[1], receipt


def diagnostic(data: bytes) -> str:
    """The statement as annotated CBOR diagnostic notation (RFC 8949 section 8, with
    ``<< >>`` for embedded CBOR and ``/ comments /``)."""
    statement = cbor2.loads(data)
    protected, unprotected, payload, signature = statement.value
    receipt = cbor2.loads(unprotected[394][0])
    r_protected, r_unprotected, _, r_signature = receipt.value
    proof = cbor2.loads(r_unprotected[396][-1][0])
    lines = [
        "18(  / COSE_Sign1: the transparent statement /",
        "  [",
        f"    << {_map(cbor2.loads(protected), 'statement', 4)} >>,",
        "    {",
        "      394: [  / receipts /",
        "        << 18(  / COSE_Sign1: the RFC 9942 receipt, in a byte string /",
        "          [",
        f"            << {_map(cbor2.loads(r_protected), 'receipt', 12)} >>,",
        "            {",
        "              396: {  / vdp /",
        "                -1: [  / inclusion proofs /",
        f"                  << [{proof[0]}, {proof[1]}, [  / tree size, leaf index, path /",
        *(f"                    h'{h.hex()}'," for h in proof[2]),
        "                  ]] >>",
        "                ]",
        "              },",
        f"              -65602: {_text(r_unprotected[-65602])}  / checkpoint note /",
        "            },",
        "            nil,  / detached payload: the Merkle root /",
        f"            h'{r_signature.hex()}'  / Ed25519 by the device key /",
        "          ]",
        "        ) >>",
        "      ]",
        "    },",
        f"    << {_map(cbor2.loads(payload), 'entry', 4)} >>,  / payload: the entry /",
        f"    h'{signature.hex()}'  / Ed25519 by the device key /",
        "  ]",
        ")",
    ]
    return "\n".join(lines)


def _map(value: dict[object, object], names: str, indent: int) -> str:
    pad = " " * (indent + 2)
    items = []
    for key, item in value.items():
        name = _NAMES[names].get(key)  # type: ignore[call-overload]
        if isinstance(item, dict):
            text = _map(item, "claims" if key == 15 else "vdp", indent + 2)
        else:
            text = _scalar(item)
        items.append(f"{pad}{key}: {text},{f'  / {name} /' if name else ''}")
    return "{\n" + "\n".join(items) + "\n" + " " * indent + "}"


def _scalar(value: object) -> str:
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return str(value)


def _text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def test_the_documented_example_is_what_the_code_makes_and_it_verifies() -> None:
    _entry, receipt = example()
    report = verify_receipt(receipt, device_key=DEVICE.public, witness_keys=[WITNESS.public])
    assert report.entry.seq == 1
    block = re.search(
        r"<!-- example:begin -->\n```\n(.*?)\n```\n<!-- example:end -->", DOC.read_text(), re.S
    )
    assert block is not None, "docs/receipts.md lost its example block"
    assert block.group(1) == diagnostic(receipt)
    assert f"{len(receipt)} bytes" in DOC.read_text()
    assert receipt.hex()[:64] in DOC.read_text()


def test_the_receipt_under_label_394_is_shown_as_the_byte_string_it_is() -> None:
    _entry, receipt = example()
    (held,) = cbor2.loads(receipt).value[1][394]
    assert isinstance(held, bytes) and cbor2.loads(held).tag == 18
    lines = diagnostic(receipt).splitlines()
    opening = lines.index("      394: [  / receipts /") + 1
    assert lines[opening].lstrip().startswith("<< 18(")
    assert "        ) >>" in lines[opening:]

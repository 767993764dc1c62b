"""Lineage entries that cite a parent: a 16th map key; every other entry keeps its bytes."""

from __future__ import annotations

import cbor2
import pytest

from edge_agent.errors import LineageError
from edge_agent.protocol.lineage_entries import (
    GENESIS_PREV,
    Entry,
    Kind,
    decode_entry,
    draft_of,
    encode_entry,
    place_draft,
)
from edge_agent.protocol.request import Parent, ParentFacts, Request

FACTS = ParentFacts(
    device="gw-cam-01",
    groups=("cameras",),
    seq=8811,
    leaf_hash=bytes(range(32)),
    subject="svc:vision",
    action="model.invoke",
    resource="model://vision/v3",
    time=1_800_000_000,
    depth=1,
)
VERIFIED = Parent(FACTS, 4)
REFUSED = Parent(None, None, "no device directory is held")
REQUEST = Request("svc:plc-bridge", "plc.write", "plc://line-a/valve-7", (("k", "v"),), ("uid:7",))

# Entry 5 of a log, a decision without a parent, as every release before issue 23 wrote it:
# these exact bytes must never change.
OLD_ENTRY = Entry(
    5, 1_800_000_001, bytes(32), Kind.DECISION, True, "allowed", "r1", b"\x5e" * 32, 7, REQUEST
)
OLD_ENTRY_HEX = (
    "af0005011a6b49d2010258200000000000000000000000000000000000000000000000000000000000000000"
    "03686465636973696f6e04f50567616c6c6f776564066272310758205e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"
    "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e0807096e7376633a706c632d6272696467650a69706c632e77726974"
    "650b74706c633a2f2f6c696e652d612f76616c76652d370c8182616b61760d81657569643a370e60"
)


def _cited(parent: Parent | None) -> Entry:
    request = Request(
        REQUEST.subject,
        REQUEST.action,
        REQUEST.resource,
        REQUEST.context,
        REQUEST.selectors,
        parent,
    )
    return Entry(
        9, 1_800_000_030, GENESIS_PREV, Kind.DECISION, True, "allowed", "r", None, None, request
    )


def test_an_entry_without_a_parent_keeps_its_exact_bytes() -> None:
    data = encode_entry(OLD_ENTRY)
    assert data == bytes.fromhex(OLD_ENTRY_HEX)
    assert data[0] == 0xAF
    assert decode_entry(data) == OLD_ENTRY


@pytest.mark.parametrize("parent", [VERIFIED, REFUSED], ids=["verified", "refused"])
def test_an_entry_with_a_parent_round_trips_with_a_sixteenth_key(parent: Parent) -> None:
    entry = _cited(parent)
    data = encode_entry(entry)
    assert data[0] == 0xB0
    assert list(cbor2.loads(data)) == list(range(16))
    assert decode_entry(data) == entry
    assert place_draft(draft_of(entry), 9, GENESIS_PREV) == data


def test_the_parent_field_lists_the_link_first() -> None:
    value = cbor2.loads(encode_entry(_cited(VERIFIED)))[15]
    assert value[:4] == ["gw-cam-01", 8811, bytes(range(32)), 1]
    assert cbor2.loads(encode_entry(_cited(REFUSED)))[15] == [None, "no device directory is held"]


def _with_parent_field(value: object, kind: str = "decision") -> bytes:
    fields = cbor2.loads(encode_entry(_cited(VERIFIED)))
    fields[15] = value
    fields[3] = kind
    return cbor2.dumps(fields)


BAD_PARENTS = {
    "not a list": _with_parent_field("gw"),
    "three items": _with_parent_field([1, "x", 2]),
    "refused without a sentence": _with_parent_field([1, ""]),
    "short leaf hash": _with_parent_field(["gw", 1, b"x", 1, "s", "a", "r", 1, [], 1]),
    "negative seq": _with_parent_field(["gw", -1, bytes(32), 1, "s", "a", "r", 1, [], 1]),
    "group not text": _with_parent_field(["gw", 1, bytes(32), 1, "s", "a", "r", 1, [3], 1]),
    "on a transition": _with_parent_field([1, "refused"], kind="bundle_installed"),
}


@pytest.mark.parametrize("data", BAD_PARENTS.values(), ids=BAD_PARENTS.keys())
def test_decode_refuses_a_malformed_parent(data: bytes) -> None:
    with pytest.raises(LineageError):
        decode_entry(data)


def test_a_parent_has_facts_or_a_refusal_never_both() -> None:
    with pytest.raises(ValueError):
        Parent(FACTS, 1, "refused")
    with pytest.raises(ValueError):
        Parent(None, 1)

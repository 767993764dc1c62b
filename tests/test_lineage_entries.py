"""The entry encoding is deterministic CBOR, decoding is strict, and the in-place tree edge
agrees with the Merkle module."""

from __future__ import annotations

from dataclasses import replace

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import LineageError
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.lineage_entries import (
    GENESIS_PREV,
    Entry,
    Kind,
    TreeEdge,
    decode_entry,
    draft_of,
    encode_entry,
    place_draft,
)
from edge_agent.protocol.merkle import Frontier
from edge_agent.protocol.request import Request

COUNTER = st.integers(0, MAX_COUNTER)
TEXT = st.text(max_size=40)
REQUESTS = st.none() | st.builds(
    Request,
    TEXT,
    TEXT,
    TEXT,
    st.lists(st.tuples(TEXT, TEXT), max_size=4).map(tuple),
    st.lists(TEXT, max_size=3).map(tuple),
)
ENTRIES = st.builds(
    Entry,
    seq=COUNTER,
    time=COUNTER,
    prev=st.binary(min_size=32, max_size=32),
    kind=st.sampled_from(list(Kind)),
    allowed=st.booleans(),
    reason=TEXT,
    rule=st.none() | TEXT,
    bundle_digest=st.none() | st.binary(max_size=32),
    bundle_version=st.none() | COUNTER,
    request=REQUESTS,
    detail=TEXT,
)


def _canonical_map(entry: Entry) -> dict[int, object]:
    request = entry.request
    return {
        0: entry.seq,
        1: entry.time,
        2: entry.prev,
        3: str(entry.kind),
        4: entry.allowed,
        5: entry.reason,
        6: entry.rule,
        7: entry.bundle_digest,
        8: entry.bundle_version,
        9: request.subject if request else None,
        10: request.action if request else None,
        11: request.resource if request else None,
        12: [list(kv) for kv in request.context] if request else None,
        13: list(request.selectors) if request else None,
        14: entry.detail,
    }


@settings(max_examples=300)
@given(ENTRIES)
def test_an_entry_encodes_to_deterministic_cbor_and_decodes_to_itself(entry: Entry) -> None:
    data = encode_entry(entry)
    assert data == cbor2.dumps(_canonical_map(entry), canonical=True)
    assert decode_entry(data, entry.seq) == entry


@given(ENTRIES, COUNTER, st.binary(min_size=32, max_size=32))
def test_a_draft_placed_anywhere_is_the_entry_at_that_place(
    entry: Entry, seq: int, prev: bytes
) -> None:
    placed = place_draft(draft_of(entry), seq, prev)
    assert placed == encode_entry(replace(entry, seq=seq, prev=prev))


SAMPLE = Entry(
    5,
    1_800_000_000,
    GENESIS_PREV,
    Kind.DECISION,
    True,
    "allowed",
    "camera-exec",
    bytes(32),
    1,
    Request("svc:camera", "exec", "/opt/x", (("zone", "a"),), ("uid:1",)),
    "ok",
)


@pytest.mark.parametrize(
    "data",
    [
        cbor2.dumps(dict(reversed(list(_canonical_map(SAMPLE).items())))),
        cbor2.dumps(_canonical_map(SAMPLE) | {15: 0}),
        encode_entry(SAMPLE).replace(b"\x01\x1a", b"\x01\x1b\x00\x00\x00\x00", 1),
        encode_entry(SAMPLE).replace(b"\x0e\x62ok", b"\x0e\x7f\x61o\x61k\xff"),
        cbor2.dumps({int(k): v for k, v in (_canonical_map(SAMPLE) | {1: 1.5}).items()}),
        cbor2.dumps({int(k): v for k, v in (_canonical_map(SAMPLE) | {3: "mystery"}).items()}),
        cbor2.dumps({int(k): v for k, v in (_canonical_map(SAMPLE) | {2: b"short"}).items()}),
        cbor2.dumps({int(k): v for k, v in (_canonical_map(SAMPLE) | {11: None}).items()}),
        cbor2.dumps({int(k): v for k, v in (_canonical_map(SAMPLE) | {4: 1}).items()}),
        cbor2.dumps([1, 2, 3]),
        b"\xaf",
    ],
    ids=[
        "keys-out-of-order",
        "extra-key",
        "long-integer-form",
        "indefinite-string",
        "float-time",
        "unknown-kind",
        "short-prev",
        "partial-request",
        "int-for-bool",
        "not-a-map",
        "truncated",
    ],
)
def test_decode_refuses_anything_but_the_canonical_schema(data: bytes) -> None:
    with pytest.raises(LineageError) as info:
        decode_entry(data, 5)
    assert info.value.seq == 5


@given(st.integers(0, 300), st.integers(1, 70))
def test_the_tree_edge_agrees_with_the_frontier(start: int, count: int) -> None:
    frontier = Frontier()
    leaves = [bytes([i % 256, i // 256]) * 16 for i in range(start + count)]
    for leaf in leaves[:start]:
        frontier, _ = frontier.append(leaf)
    edge = TreeEdge(frontier)
    for leaf in leaves[start:]:
        closed = edge.push(leaf)
        frontier, nodes = frontier.append(leaf)
        assert closed == b"".join(node.hash for node in nodes[1:])
    assert edge.frontier() == frontier

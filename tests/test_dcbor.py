"""Deterministic CBOR: the encoder against an independent RFC 8949 4.2.1 reference, and the
strict decoder on arbitrary bytes (a value or EnvelopeError, never anything else)."""

from __future__ import annotations

import struct

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import dcbor


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | ai]) + struct.pack(fmt, n)
    raise AssertionError(n)


def reference(value: object) -> bytes:
    """RFC 8949 section 4.2.1 core deterministic encoding, written from the RFC."""
    if value is False:
        return b"\xf4"
    if value is True:
        return b"\xf5"
    if value is None:
        return b"\xf6"
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, bytes):
        return _head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode()
        return _head(3, len(raw)) + raw
    if isinstance(value, list):
        return _head(4, len(value)) + b"".join(reference(v) for v in value)
    assert isinstance(value, dict)
    items = sorted((reference(k), reference(v)) for k, v in value.items())
    return _head(5, len(items)) + b"".join(k + v for k, v in items)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=30),
    st.binary(max_size=30),
)
keys = st.one_of(
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), -1),
    st.text(max_size=30),
    st.binary(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        keys.flatmap(lambda k: st.dictionaries(_same_kind(k), inner, max_size=6)),
    ),
    max_leaves=40,
)


def _same_kind(key: object) -> st.SearchStrategy[object]:
    if isinstance(key, int):
        return st.integers(0, 2**64 - 1) if key >= 0 else st.integers(-(2**63), -1)
    return st.text(max_size=30) if isinstance(key, str) else st.binary(max_size=30)


@settings(max_examples=300, deadline=None)
@given(values)
def test_encoding_matches_the_rfc_reference_and_round_trips(value: object) -> None:
    encoded = dcbor.encode(value)
    assert encoded == reference(value)
    assert dcbor.decode(encoded, max_bytes=1 << 20) == value


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_returns_a_value_or_raises_envelope_error(data: bytes) -> None:
    try:
        value = dcbor.decode(data, max_bytes=1 << 20)
    except EnvelopeError:
        return
    assert dcbor.encode(value) == data


@pytest.mark.parametrize(
    "value",
    [
        {1: 1, -1: 2},
        {"a": 1, b"a": 2},
        {1: 1, "a": 2},
        1.5,
        [1.0],
        2**64,
        -(2**63) - 1,
        {(1, 2): 3},
    ],
)
def test_values_edgegov_never_encodes_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        dcbor.encode(value)


def test_a_map_mixing_key_types_is_refused_when_decoding() -> None:
    with pytest.raises(EnvelopeError, match="mixes key types"):
        dcbor.decode(bytes.fromhex("a2010120 02"), max_bytes=64)


@pytest.mark.parametrize(
    "keys",
    [["aa", "a"], ["b", "a"], [2, 1], [-2, -1], [b"bb", b"a"], [b"b", b"a"], [24, 23]],
)
def test_decode_refuses_map_keys_out_of_deterministic_order(keys: list[object]) -> None:
    data = cbor2.dumps(dict.fromkeys(keys, 0))
    with pytest.raises(EnvelopeError, match="deterministically"):
        dcbor.decode(data, max_bytes=1024)
    assert dcbor.decode(dcbor.encode(dict.fromkeys(keys, 0)), max_bytes=1024) == dict.fromkeys(
        keys, 0
    )


def test_cose_header_maps_may_mix_positive_and_negative_keys_in_bytewise_order() -> None:
    value = {-1: 2, 24: 1, 1: {-2: 0, 3: 1}}
    data = dcbor.encode(value, mixed_int_keys=True)
    # RFC 8949 bytewise order puts 24 (0x18 0x18) before -1 (0x20); cbor2's canonical
    # (shorter first) order would not.
    assert data == bytes.fromhex("a3 01 a2 03 01 21 00 18 18 01 20 02".replace(" ", ""))
    assert dcbor.decode(data, max_bytes=64, mixed_int_keys=True) == value
    assert dcbor.decode_tagged(
        dcbor.encode_tagged(18, [value], mixed_int_keys=True),
        tag=18,
        max_bytes=64,
        what="x",
        mixed_int_keys=True,
    ) == [value]


def test_a_mixed_map_in_shorter_first_order_is_not_deterministic() -> None:
    shorter_first = cbor2.dumps({-1: 2, 24: 1})
    with pytest.raises(EnvelopeError, match="deterministically"):
        dcbor.decode(shorter_first, max_bytes=64, mixed_int_keys=True)


def test_mixing_integer_keys_stays_refused_without_the_flag_and_with_other_types() -> None:
    with pytest.raises(ValueError, match="mixes key types"):
        dcbor.encode({1: 1, -1: 2})
    with pytest.raises(ValueError, match="mixes key types"):
        dcbor.encode({1: 1, "a": 2}, mixed_int_keys=True)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (bytes.fromhex("d8 12 80".replace(" ", "")), "not CBOR tag 18"),
        (bytes.fromhex("d2 80 00".replace(" ", "")), "1 trailing bytes"),
        (bytes.fromhex("d2 d2 80".replace(" ", "")), "forbidden CBOR item"),
        (bytes.fromhex("d2".replace(" ", "")), "not valid CBOR"),
        (bytes.fromhex("d2 a2 02 00 01 00".replace(" ", "")), "map key order"),
    ],
    ids=["tag in a longer head", "trailing byte", "nested tag", "tag alone", "unordered map"],
)
def test_a_tagged_item_is_refused_unless_it_is_exactly_the_tag_and_one_canonical_item(
    data: bytes, words: str
) -> None:
    with pytest.raises(EnvelopeError, match=words):
        dcbor.decode_tagged(data, tag=18, max_bytes=64, what="x")


@pytest.mark.parametrize("maps", [[{True: 0}, {1: 0}], [{1: 0}, {True: 0}]])
def test_a_bool_key_is_refused_after_an_equal_int_key_was_accepted(maps: list[object]) -> None:
    # The walk remembers the key sequences it has checked; True == 1 must not pass as one.
    with pytest.raises(ValueError, match="bool"):
        dcbor.encode(maps)
    with pytest.raises(EnvelopeError, match="bool"):
        dcbor.decode(cbor2.dumps(maps), max_bytes=64)


def test_maps_already_in_key_order_and_maps_out_of_it_encode_alike() -> None:
    rules = [{"id": "r1", "when": {}, "effect": "allow"}] * 3
    shuffled = [{"effect": "allow", "id": "r1", "when": {}}] * 3
    expected = reference({"rules": rules})
    assert dcbor.encode({"rules": rules}) == expected
    assert dcbor.encode({"rules": shuffled}) == expected
    assert dcbor.encode({"rules": [*rules, *shuffled]}) == reference({"rules": rules * 2})

"""The socket's own deterministic CBOR codec agrees with edgegov's strict codec (the oracle).

``edge_agent.socket._cbor`` exists so that ``edge-agent exec`` need not import cbor2 and the
server can encode answers cheaply. It must write exactly the bytes ``protocol.dcbor`` writes,
and accept only what ``protocol.dcbor`` accepts, decoded to the same value.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import dcbor
from edge_agent.socket import _cbor

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=30), inner, max_size=6)
    ),
    max_leaves=30,
)


@given(_VALUES)
def test_it_writes_the_bytes_the_strict_codec_writes(value: object) -> None:
    assert _cbor.encode(value) == dcbor.encode(value)


@given(_VALUES)
def test_what_it_writes_decodes_back_to_the_same_value(value: object) -> None:
    assert _cbor.decode(dcbor.encode(value)) == value


@given(st.binary(max_size=64))
def test_it_accepts_only_what_the_strict_codec_accepts(data: bytes) -> None:
    try:
        decoded = _cbor.decode(data)
    except ValueError:
        return
    assert dcbor.decode(data, max_bytes=len(data)) == decoded


@given(_VALUES, st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
def test_a_changed_byte_is_refused_or_read_as_the_strict_codec_reads_it(
    value: object, where: int, byte: int
) -> None:
    data = bytearray(dcbor.encode(value))
    data[where % len(data)] = byte
    try:
        decoded = _cbor.decode(bytes(data))
    except ValueError:
        return
    assert dcbor.decode(bytes(data), max_bytes=len(data)) == decoded


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xa1\x61v",
        b"\xa1\x78\x01v\x01",
        b"\x18\x05",
        b"\xa2\x61b\x01\x61a\x02",
        b"\xa2\x61a\x01\x61a\x02",
        b"\xc1\x00",
        b"\xf9\x3c\x00",
        b"\xf7",
        b"\x9f\xff",
        b"\x61\xff",
        b"\x01\x02",
        b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x81" * 17 + b"\x00",
    ],
    ids=[
        "empty",
        "truncated",
        "long-length-form",
        "long-integer-form",
        "unsorted-keys",
        "duplicate-keys",
        "tag",
        "float",
        "undefined",
        "indefinite",
        "bad-utf8",
        "trailing",
        "huge-declared-array",
        "too-deep",
    ],
)
def test_malformed_or_non_deterministic_input_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        _cbor.decode(data)
    with pytest.raises(EnvelopeError):
        dcbor.decode(data, max_bytes=max(1, len(data)))


@pytest.mark.parametrize(
    "value",
    [1.5, {1: "integer key"}, 2**64, -(2**63) - 1, object(), [[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]],
    ids=["float", "integer-key", "too-large", "too-small", "object", "too-deep"],
)
def test_values_outside_the_socket_subset_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        _cbor.encode(value)


def test_maps_with_keys_other_than_text_are_refused_though_dcbor_reads_them() -> None:
    with pytest.raises(ValueError, match="not text"):
        _cbor.decode(dcbor.encode({1: 2}))


@given(
    st.fixed_dictionaries(
        {"v": _SCALARS, "id": _SCALARS, "selectors": st.lists(st.text(max_size=20), max_size=4)}
    )
)
def test_a_fixed_shape_map_encodes_as_the_same_map_does(value: dict[str, object]) -> None:
    assert _cbor.MapShape("v", "id", "selectors").encode(value) == dcbor.encode(value)


def test_a_fixed_shape_refuses_maps_of_another_shape() -> None:
    shape = _cbor.MapShape("v", "id")
    with pytest.raises(ValueError, match="keys"):
        shape.encode({"v": 1})
    with pytest.raises(ValueError, match="lacks the key 'id'"):
        shape.encode({"v": 1, "op": 2})

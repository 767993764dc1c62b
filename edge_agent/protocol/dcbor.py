"""Deterministic CBOR (RFC 8949 section 4.2.1): the only encoding edgegov signs or accepts.

Invariants:
- ``encode`` accepts only ``int`` (64-bit range), ``bool``, ``None``, ``str``, ``bytes``,
  lists/tuples and dicts whose keys are all of one type; it never emits floats, tags or
  indefinite lengths, uses the shortest form of every length and integer, and orders map keys
  by the bytewise order of their encodings.
- ``decode`` is strict: a size cap before parsing, bounded depth and item count, no duplicate
  keys, no indefinite lengths, no floats, no tags, no trailing bytes, and the input must
  re-encode to exactly the same bytes. Anything else raises :class:`EnvelopeError`.

This module does not know what the values mean; schemas live next to each object type.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import NoReturn, TypeAlias

import cbor2

from edge_agent.errors import EnvelopeError
from edge_agent.protocol.limits import MAX_CBOR_DEPTH, MAX_CBOR_ITEMS, MAX_INT, MIN_INT

__all__ = ["CborValue", "as_list", "as_map", "decode", "decode_tagged", "encode", "encode_tagged"]

CborValue: TypeAlias = (
    "int | bool | str | bytes | list[CborValue] | tuple[CborValue, ...] "
    "| dict[int, CborValue] | dict[str, CborValue] | dict[bytes, CborValue] | None"
)

_SCALARS = (bool, int, str, bytes, type(None))


def encode(value: object) -> bytes:
    """Encode ``value`` as deterministic CBOR.

    Raises:
        ValueError: the value holds a type or integer that edgegov never encodes.
    """
    return cbor2.dumps(_canonical(value, 0))


def encode_tagged(tag: int, value: object) -> bytes:
    """Encode ``value`` under one CBOR tag (as COSE messages are: tag 18 or 98)."""
    return cbor2.dumps(cbor2.CBORTag(tag, _canonical(value, 0)))


def _canonical(value: object, depth: int) -> object:
    if depth > MAX_CBOR_DEPTH:
        raise ValueError("value nests deeper than MAX_CBOR_DEPTH")
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise ValueError(f"integer {value} is outside the 64-bit range")
        return value
    if isinstance(value, list | tuple):
        return [_canonical(item, depth + 1) for item in value]
    if isinstance(value, dict):
        _check_key_types(value.keys(), ValueError)
        items = [(cbor2.dumps(_canonical(k, depth + 1)), k, v) for k, v in value.items()]
        items.sort(key=lambda item: item[0])
        return {k: _canonical(v, depth + 1) for _, k, v in items}
    raise ValueError(f"type {type(value).__name__} is not encodable as edgegov CBOR")


def _check_key_types(keys: Iterable[object], error: type[Exception]) -> None:
    kinds = {_key_kind(k, error) for k in keys}
    if len(kinds) > 1:
        raise error("a map mixes key types")


def _key_kind(key: object, error: type[Exception]) -> str:
    if isinstance(key, bool) or not isinstance(key, int | str | bytes):
        raise error(f"map key of type {type(key).__name__} is not allowed")
    return type(key).__name__


def _refuse_tag(decoder: object, tag: object) -> object:
    raise EnvelopeError("CBOR tags are not allowed here")


def decode(data: bytes, *, max_bytes: int, what: str = "object") -> CborValue:
    """Strictly decode one deterministic CBOR item from ``data``.

    Raises:
        EnvelopeError: too large, malformed, non-deterministic, or holding a forbidden type.
    """
    value = _loads(data, max_bytes=max_bytes, what=what, allow_top_tag=None)
    return value  # type: ignore[return-value]


def decode_tagged(data: bytes, *, tag: int, max_bytes: int, what: str) -> CborValue:
    """Strictly decode one item that must carry exactly CBOR tag ``tag`` at the top level.

    Raises:
        EnvelopeError: as :func:`decode`, or the tag is missing or different.
    """
    return _loads(data, max_bytes=max_bytes, what=what, allow_top_tag=tag)  # type: ignore[return-value]


def _loads(data: bytes, *, max_bytes: int, what: str, allow_top_tag: int | None) -> object:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("CBOR input must be bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise EnvelopeError(f"{what} is {len(data)} bytes, over the {max_bytes}-byte limit")
    if not data:
        raise EnvelopeError(f"{what} is empty")
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            max_depth=MAX_CBOR_DEPTH + 1,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            semantic_decoders={28: _refuse_shared, 29: _refuse_shared, 256: _refuse_shared},
        )
        value = decoder.decode()
    except EnvelopeError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise EnvelopeError(f"{what} is not valid CBOR: {exc}") from exc
    if stream.tell() != len(data):
        raise EnvelopeError(f"{what} has {len(data) - stream.tell()} trailing bytes")
    if allow_top_tag is not None:
        if not isinstance(value, cbor2.CBORTag) or value.tag != allow_top_tag:
            raise EnvelopeError(f"{what} is not CBOR tag {allow_top_tag}")
        inner = _thaw(value.value, 0, what)
    else:
        inner = value
    _validate(inner, 0, [0], what)
    reencoded = encode_tagged(allow_top_tag, inner) if allow_top_tag is not None else encode(inner)
    if reencoded != data:
        raise EnvelopeError(f"{what} is not deterministically encoded CBOR")
    return inner


def _refuse_shared(*_args: object) -> NoReturn:
    raise EnvelopeError("CBOR shared or string references are not allowed")


def _thaw(value: object, depth: int, what: str) -> object:
    # cbor2 6 hands a tag's content back immutable (tuples, cbor2.frozendict); edgegov values
    # are lists and dicts, so the tagged content is rebuilt before it is validated.
    if depth > MAX_CBOR_DEPTH:
        raise EnvelopeError(f"{what} nests deeper than {MAX_CBOR_DEPTH} levels")
    if isinstance(value, tuple):
        return [_thaw(item, depth + 1, what) for item in value]
    if isinstance(value, cbor2.frozendict):
        thawed = {}
        for key, item in value.items():
            if not isinstance(key, _SCALARS):
                raise EnvelopeError(f"{what} has a map key that is not an integer or string")
            thawed[key] = _thaw(item, depth + 1, what)
        return thawed
    return value


def _validate(value: object, depth: int, count: list[int], what: str) -> None:
    count[0] += 1
    if count[0] > MAX_CBOR_ITEMS:
        raise EnvelopeError(f"{what} holds more than {MAX_CBOR_ITEMS} CBOR items")
    if depth > MAX_CBOR_DEPTH:
        raise EnvelopeError(f"{what} nests deeper than {MAX_CBOR_DEPTH} levels")
    if isinstance(value, _SCALARS):
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not (MIN_INT <= value <= MAX_INT)
        ):
            raise EnvelopeError(f"{what} holds an integer outside the 64-bit range")
        return
    if isinstance(value, list):
        for item in value:
            _validate(item, depth + 1, count, what)
        return
    if isinstance(value, dict):
        _check_key_types(value.keys(), EnvelopeError)
        for key, item in value.items():
            _validate(key, depth + 1, count, what)
            _validate(item, depth + 1, count, what)
        return
    if isinstance(value, float):
        raise EnvelopeError(f"{what} holds a floating-point number")
    raise EnvelopeError(f"{what} holds a forbidden CBOR item ({type(value).__name__})")


def as_map(value: object, what: str) -> Mapping[object, object]:
    """Narrow a decoded value to a map, or raise :class:`EnvelopeError` naming ``what``."""
    if not isinstance(value, dict):
        raise EnvelopeError(f"{what} must be a CBOR map")
    return value


def as_list(value: object, what: str) -> Sequence[object]:
    """Narrow a decoded value to an array, or raise :class:`EnvelopeError` naming ``what``."""
    if not isinstance(value, list):
        raise EnvelopeError(f"{what} must be a CBOR array")
    return value

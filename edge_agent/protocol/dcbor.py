"""Deterministic CBOR (RFC 8949 section 4.2.1): the only encoding edgegov signs or accepts.

Invariants:
- ``encode`` accepts only ``int`` (64-bit range), ``bool``, ``None``, ``str``, ``bytes``,
  lists/tuples and dicts whose keys are all of one type; it never emits floats, tags or
  indefinite lengths, uses the shortest form of every length and integer, and orders map keys
  by the bytewise order of their encodings.
- ``mixed_int_keys=True`` (COSE header maps, whose labels mix registered positive and
  private-use negative integers) also lets one map mix unsigned and negative integer keys:
  still in the bytewise order of their encodings, so every unsigned key before every negative
  one. Off by default: no other edgegov object has such a map.
- ``decode`` is strict: a size cap before parsing, bounded depth and item count, no duplicate
  keys, no indefinite lengths, no floats, no tags, no trailing bytes, and the input must
  re-encode to exactly the same bytes. Anything else raises :class:`EnvelopeError`.

This module does not know what the values mean; schemas live next to each object type.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import NoReturn, TypeAlias, TypeVar

import cbor2

from edge_agent.errors import EnvelopeError
from edge_agent.protocol.limits import MAX_CBOR_DEPTH, MAX_CBOR_ITEMS, MAX_INT, MIN_INT

__all__ = [
    "CborValue",
    "as_list",
    "as_map",
    "decode",
    "decode_tagged",
    "encode",
    "encode_tagged",
    "sorted_keys",
]

CborValue: TypeAlias = (
    "int | bool | str | bytes | list[CborValue] | tuple[CborValue, ...] "
    "| dict[int, CborValue] | dict[str, CborValue] | dict[bytes, CborValue] | None"
)

_Key = TypeVar("_Key", str, bytes, int)


def encode(value: object, *, mixed_int_keys: bool = False) -> bytes:
    """Encode ``value`` as deterministic CBOR.

    Raises:
        ValueError: the value holds a type, integer, nesting or map that edgegov never encodes.
    """
    order = _walk(value, "value", ValueError, mixed_int_keys=mixed_int_keys)
    if order is _Order.MIXED:
        return cbor2.dumps(_in_key_order(value))
    return cbor2.dumps(value, canonical=order is _Order.UNSORTED)


def encode_tagged(tag: int, value: object, *, mixed_int_keys: bool = False) -> bytes:
    """Encode ``value`` under one CBOR tag (as COSE messages are: tag 18 or 98)."""
    order = _walk(value, "value", ValueError, mixed_int_keys=mixed_int_keys)
    if order is _Order.MIXED:
        return cbor2.dumps(cbor2.CBORTag(tag, _in_key_order(value)))
    return cbor2.dumps(cbor2.CBORTag(tag, value), canonical=order is _Order.UNSORTED)


class _Order(enum.Enum):
    """How the maps of a walked value stand against deterministic key order, which decides
    the encoder: cbor2's plain one keeps each map's own order, its canonical one sorts every
    map (shorter encoding first), and neither orders a map mixing unsigned and negative keys
    as RFC 8949 does."""

    SORTED = "every map's keys already in deterministic order: the plain encoder"
    UNSORTED = "some map's keys out of order, none mixed: the canonical encoder"
    MIXED = "some map mixes unsigned and negative keys: rebuilt in key order first"


def _in_key_order(value: object) -> object:
    """``value`` with every map rebuilt in deterministic key order, for the plain encoder.

    Only for values that hold a map mixing unsigned and negative keys: there cbor2's canonical
    order (shorter encoding first) differs from RFC 8949's bytewise one. Depth is bounded by
    the walk that found such a map.
    """
    if type(value) is dict:
        ordered = sorted(value, key=_key_rank)
        return {key: _in_key_order(value[key]) for key in ordered}
    if type(value) is list or type(value) is tuple:
        return [_in_key_order(item) for item in value]
    return value


def sorted_keys(keys: Iterable[_Key]) -> list[_Key]:
    """``keys``, all of one kind (text, bytes, or integers of one sign), in deterministic map
    order: a map built in this order is encoded without a sort (see :func:`encode`)."""
    return sorted(keys, key=_key_rank)


def _key_rank(key: object) -> tuple[int, bytes]:
    """The bytewise order of a key's encoding, for keys of one kind (text, bytes) or ints."""
    if isinstance(key, int):
        return (key, b"") if key >= 0 else (_NINT_RANK + (-1 - key), b"")
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes):
        raise TypeError(f"a map key of type {type(key).__name__} has no deterministic rank")
    return (len(key), key)


_NINT_RANK = 2**64
"""Offset that ranks every negative integer key after every unsigned one (major type 1 after
major type 0)."""


def _walk(
    root: object,
    what: str,
    error: type[Exception],
    *,
    ordered: bool = False,
    mixed_int_keys: bool = False,
) -> _Order:
    """Check every item of ``root``: allowed types, 64-bit integers, depth, item count, and
    map keys of one CBOR major type (unsigned, negative, text or bytes; with
    ``mixed_int_keys``, unsigned and negative together); with ``ordered``, also that every
    map's keys already stand in deterministic order. Returns how the maps stand against
    that order (:class:`_Order`); a map with a key of a subclass of ``str``, ``int`` or
    ``bytes`` counts as out of order, so the canonical encoder writes what the key's value
    is, whatever the subclass says of its own order.

    With one major type per map, cbor2's canonical key order (shorter encoding first, then
    bytewise) equals RFC 8949 section 4.2.1's bytewise order of the encoded keys, so
    ``cbor2.dumps(canonical=True)`` produces the deterministic encoding. A map whose keys
    already stand in that order (every decoded map that passed ``ordered``, every map built
    in that order) needs no sort: the plain encoder reproduces deterministic bytes, and more
    cheaply.

    Every map's keys are checked afresh, in time linear in their number: a walk remembers
    nothing per map (an unsigned blob can choose its keys, and so their hashes).
    """
    if not _is_container(root):
        _check_scalar(root, what, error)
        return _Order.SORTED
    mixed = unsorted = False
    stack: list[tuple[object, int]] = [(root, 0)]
    count = 1
    while stack:
        container, depth = stack.pop()
        if depth > MAX_CBOR_DEPTH:
            raise error(f"{what} nests deeper than {MAX_CBOR_DEPTH} levels")
        items: Iterable[object]
        if type(container) is dict:
            map_mixed, map_unsorted = _check_keys(container, what, error, ordered, mixed_int_keys)
            mixed = mixed or map_mixed
            unsorted = unsorted or map_unsorted
            count += 2 * len(container)
            items = container.values()
        else:
            count += len(container)  # type: ignore[arg-type]
            items = container  # type: ignore[assignment]
        if count > MAX_CBOR_ITEMS:
            raise error(f"{what} holds more than {MAX_CBOR_ITEMS} CBOR items")
        if depth + 1 > MAX_CBOR_DEPTH and container:
            raise error(f"{what} nests deeper than {MAX_CBOR_DEPTH} levels")
        for item in items:
            kind = type(item)
            if kind is str or kind is bytes or kind is bool or item is None:
                continue
            if kind is int and MIN_INT <= item <= MAX_INT:  # type: ignore[operator]
                continue
            if kind is list or kind is dict or kind is tuple:
                stack.append((item, depth + 1))
                continue
            _check_scalar(item, what, error)
    if mixed:
        return _Order.MIXED
    return _Order.UNSORTED if unsorted else _Order.SORTED


def _is_container(value: object) -> bool:
    kind = type(value)
    return kind is list or kind is dict or kind is tuple


def _check_scalar(value: object, what: str, error: type[Exception]) -> None:
    kind = type(value)
    if kind is str or kind is bytes or kind is bool or value is None:
        return
    if kind is int:
        if not MIN_INT <= value <= MAX_INT:  # type: ignore[operator]
            raise error(f"{what} holds an integer outside the 64-bit range")
        return
    if isinstance(value, float):
        raise error(f"{what} holds a floating-point number")
    if isinstance(value, str | int) and not isinstance(value, bool):
        raise error(f"{what} holds a {kind.__name__}; encode plain str or int values")
    raise error(f"{what} holds a forbidden CBOR item ({kind.__name__})")


def _check_keys(
    value: dict[object, object],
    what: str,
    error: type[Exception],
    ordered: bool,
    mixed_int_keys: bool,
) -> tuple[bool, bool]:
    """The keys of one map checked: whether they mix unsigned and negative integers, and
    whether they may need a sort (a key out of deterministic order, or a key of a subclass,
    whose own comparisons and encoding the plain encoder would not follow)."""
    major: str | None = None
    mixed = unsorted = False
    previous: tuple[int, bytes] | None = None
    for key in value:
        rank: tuple[int, bytes]
        if type(key) is str:
            # First: the keys of every decoded map and of every payload edgegov builds.
            this = "text"
            encoded = key.encode()
            rank = (len(encoded), encoded)
        elif isinstance(key, bool):
            raise error(f"{what} has a map key of type bool, which is not allowed")
        elif isinstance(key, int):
            if not MIN_INT <= key <= MAX_INT:
                raise error(f"{what} holds an integer outside the 64-bit range")
            unsorted = unsorted or type(key) is not int
            # _key_rank's, inline: every map a strict decode reads comes through here.
            if key >= 0:
                this, rank = "uint", (key, b"")
            else:
                this, rank = "nint", (_NINT_RANK - 1 - key, b"")
        elif isinstance(key, str):
            unsorted = True
            this = "text"
            encoded = key.encode()
            rank = (len(encoded), encoded)
        elif isinstance(key, bytes):
            unsorted = unsorted or type(key) is not bytes
            this = "bytes"
            rank = (len(key), key)
        else:
            raise error(f"{what} has a map key of type {type(key).__name__}, which is not allowed")
        if this != major:
            if major is None:
                major = this
            elif mixed_int_keys and {this, major} == _INT_MAJORS:
                mixed = True
            else:
                raise error(f"{what} has a map that mixes key types")
        if previous is not None and not previous < rank:
            if ordered:
                raise error(f"{what} is not deterministically encoded CBOR (map key order)")
            unsorted = True
        previous = rank
    return mixed, unsorted


_INT_MAJORS = {"uint", "nint"}
"""The two major types one map may mix, with ``mixed_int_keys`` (COSE header maps)."""


def decode(
    data: bytes, *, max_bytes: int, what: str = "object", mixed_int_keys: bool = False
) -> CborValue:
    """Strictly decode one deterministic CBOR item from ``data``.

    Raises:
        EnvelopeError: too large, malformed, non-deterministic, or holding a forbidden type.
    """
    value = _loads(
        data, max_bytes=max_bytes, what=what, allow_top_tag=None, mixed_int_keys=mixed_int_keys
    )
    return value  # type: ignore[return-value]


def decode_tagged(
    data: bytes, *, tag: int, max_bytes: int, what: str, mixed_int_keys: bool = False
) -> CborValue:
    """Strictly decode one item that must carry exactly CBOR tag ``tag`` at the top level.

    Raises:
        EnvelopeError: as :func:`decode`, or the tag is missing or different.
    """
    return _loads(  # type: ignore[return-value]
        data, max_bytes=max_bytes, what=what, allow_top_tag=tag, mixed_int_keys=mixed_int_keys
    )


def _loads(
    data: bytes,
    *,
    max_bytes: int,
    what: str,
    allow_top_tag: int | None,
    mixed_int_keys: bool = False,
) -> object:
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("CBOR input must be bytes")
        data = bytes(data)
    if len(data) > max_bytes:
        raise EnvelopeError(f"{what} is {len(data)} bytes, over the {max_bytes}-byte limit")
    if not data:
        raise EnvelopeError(f"{what} is empty")
    body = data
    if allow_top_tag is not None:
        # Deterministic CBOR writes a tag in its shortest head only, so the tag is read by
        # comparing bytes and its content decoded as a plain item (mutable lists and maps).
        head = _tag_head(allow_top_tag)
        if not data.startswith(head):
            raise EnvelopeError(f"{what} is not CBOR tag {allow_top_tag}")
        body = data[len(head) :]
    try:
        value = cbor2.loads(
            body,
            max_depth=MAX_CBOR_DEPTH + 1,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            semantic_decoders=_REFUSED_TAGS,
        )
    except EnvelopeError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise EnvelopeError(f"{what} is not valid CBOR: {exc}") from exc
    _walk(value, what, EnvelopeError, ordered=True, mixed_int_keys=mixed_int_keys)
    # One comparison proves the rest: the plain encoder of the decoded value (its maps in
    # wire order, checked above) gives these exact bytes only for one canonical item with
    # nothing after it.
    reencoded = cbor2.dumps(value)
    if reencoded != body:
        if body.startswith(reencoded):
            raise EnvelopeError(f"{what} has {len(body) - len(reencoded)} trailing bytes")
        raise EnvelopeError(f"{what} is not deterministically encoded CBOR")
    return value


@functools.cache
def _tag_head(tag: int) -> bytes:
    """The shortest (deterministic) head of CBOR tag ``tag``: its encoding before the item."""
    return cbor2.dumps(cbor2.CBORTag(tag, None))[:-1]


def _refuse_shared(*_args: object) -> NoReturn:
    raise EnvelopeError("CBOR shared or string references are not allowed")


_REFUSED_TAGS = {28: _refuse_shared, 29: _refuse_shared, 256: _refuse_shared}


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

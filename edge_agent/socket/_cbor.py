"""Deterministic CBOR for the socket's small messages, in plain Python (no cbor2).

Why a second codec: ``edge-agent exec`` runs in front of every gated program, and
importing cbor2 (which imports :mod:`typing`) is a measurable part of its start-up; and the
server encodes every answer, where a direct encoder of these few types costs a fraction of
the generic checked walk of :mod:`edge_agent.protocol.dcbor`. Signed objects (bundles,
roots, lineage entries) never go through this module: dcbor stays the codec for anything
signed or verified, and the tests hold this module to it as an oracle.

The subset (what the socket protocol uses): integers in edgegov's 64-bit range, text,
bytes, ``True``/``False``/``None``, lists and tuples, and maps with text keys.

- :func:`encode` writes RFC 8949 section 4.2.1 deterministic CBOR: shortest heads, definite
  lengths, map keys in the bytewise order of their encodings.
- :func:`decode` is strict: definite lengths, no tags, floats or other simple values, text
  keys only, no duplicate keys, valid UTF-8, at most :data:`MAX_DEPTH` levels, no trailing
  bytes; and the input must re-encode to exactly the same bytes (which refuses
  non-shortest forms and unsorted keys).

Both raise :class:`ValueError` (callers turn it into their protocol error).
"""

from __future__ import annotations

__all__ = ["MAX_DEPTH", "MapShape", "decode", "encode"]

MAX_DEPTH = 16
"""Deepest nesting accepted or written (the socket's messages use 2)."""

_MIN_INT = -(2**63)
_MAX_INT = 2**64 - 1
_FALSE, _TRUE, _NULL = 0xF4, 0xF5, 0xF6


def encode(value: object) -> bytes:
    """``value`` as deterministic CBOR.

    Raises:
        ValueError: a type outside the subset, an integer outside the 64-bit range, a map
            key that is not text, or nesting deeper than :data:`MAX_DEPTH`.
    """
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


class MapShape:
    """Maps with one fixed set of text keys (an answer of the socket protocol): the keys are
    encoded and put in deterministic order once, so encoding one costs its values only."""

    __slots__ = ("_keys", "_prefix")

    def __init__(self, *keys: str) -> None:
        self._keys = tuple(sorted((encode(key), key) for key in keys))
        prefix = bytearray()
        _head(5, len(keys), prefix)
        self._prefix = bytes(prefix)

    def encode(self, values: dict[str, object]) -> bytes:
        """``values`` (exactly this shape's keys) as deterministic CBOR, as :func:`encode`.

        Raises:
            ValueError: the keys differ from the shape's, or a value is outside the subset.
        """
        if len(values) != len(self._keys):
            raise ValueError("the map's keys are not the shape's")
        out = bytearray(self._prefix)
        for encoded_key, key in self._keys:
            out += encoded_key
            try:
                item = values[key]
            except KeyError:
                raise ValueError(f"the map lacks the key {key!r}") from None
            _encode(item, out, 1)
        return bytes(out)


def _head(major: int, number: int, out: bytearray) -> None:
    initial = major << 5
    if number < 24:
        out.append(initial | number)
    elif number < 0x100:
        out.append(initial | 24)
        out.append(number)
    elif number < 0x10000:
        out.append(initial | 25)
        out += number.to_bytes(2, "big")
    elif number < 0x100000000:
        out.append(initial | 26)
        out += number.to_bytes(4, "big")
    else:
        out.append(initial | 27)
        out += number.to_bytes(8, "big")


def _encode(value: object, out: bytearray, depth: int) -> None:
    if isinstance(value, str):
        data = value.encode()
        _head(3, len(data), out)
        out += data
    elif value is True or value is False:
        out.append(_TRUE if value else _FALSE)
    elif isinstance(value, int):
        if not _MIN_INT <= value <= _MAX_INT:
            raise ValueError("an integer outside the 64-bit range")
        if value >= 0:
            _head(0, value, out)
        else:
            _head(1, -1 - value, out)
    elif value is None:
        out.append(_NULL)
    elif isinstance(value, bytes):
        _head(2, len(value), out)
        out += value
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH} levels")
        _head(4, len(value), out)
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH} levels")
        entries = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("a map key that is not text")
            encoded = bytearray()
            _encode(key, encoded, depth)
            entries.append((bytes(encoded), item))
        entries.sort(key=_first)
        _head(5, len(entries), out)
        for encoded_key, item in entries:
            out += encoded_key
            _encode(item, out, depth + 1)
    else:
        raise ValueError(f"a {type(value).__name__}, which the socket protocol never carries")


def _first(entry: tuple[bytes, object]) -> bytes:
    return entry[0]


def decode(data: bytes) -> object:
    """Strictly decode one item filling all of ``data``.

    Raises:
        ValueError: malformed, truncated, trailing bytes, a forbidden item, or not the
            deterministic encoding of what it holds.
    """
    value, end = _item(data, 0, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} trailing bytes")
    if encode(value) != data:
        raise ValueError("not deterministically encoded")
    return value


def _item(data: bytes, position: int, depth: int) -> tuple[object, int]:
    if position >= len(data):
        raise ValueError("truncated")
    initial = data[position]
    major, info = initial >> 5, initial & 0x1F
    position += 1
    if major == 7:
        if initial == _FALSE:
            return False, position
        if initial == _TRUE:
            return True, position
        if initial == _NULL:
            return None, position
        raise ValueError("a float, break or simple value other than true, false and null")
    if info < 24:
        number = info
    elif info < 28:
        size = 1 << (info - 24)
        if position + size > len(data):
            raise ValueError("truncated")
        number = int.from_bytes(data[position : position + size], "big")
        position += size
    else:
        raise ValueError("an indefinite or reserved length")
    if major == 0:
        return number, position
    if major == 1:
        return -1 - number, position
    if major == 2 or major == 3:
        end = position + number
        if end > len(data):
            raise ValueError("truncated")
        chunk = data[position:end]
        return (bytes(chunk) if major == 2 else chunk.decode()), end
    if major == 6:
        raise ValueError("a tag")
    if depth >= MAX_DEPTH:
        raise ValueError(f"nesting deeper than {MAX_DEPTH} levels")
    if major == 4:
        if number > len(data) - position:
            raise ValueError("truncated")
        items = []
        for _ in range(number):
            item, position = _item(data, position, depth + 1)
            items.append(item)
        return items, position
    if number > (len(data) - position) // 2:
        raise ValueError("truncated")
    mapping: dict[str, object] = {}
    for _ in range(number):
        key, position = _item(data, position, depth + 1)
        if not isinstance(key, str):
            raise ValueError("a map key that is not text")
        if key in mapping:
            raise ValueError(f"duplicate map key {key!r}")
        mapping[key], position = _item(data, position, depth + 1)
    return mapping, position

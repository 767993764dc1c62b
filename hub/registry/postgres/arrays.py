"""One-dimensional arrays bound in PostgreSQL's binary format (what the server's
``array_recv`` reads), built with a join per column.

A stored batch sends each table's rows as one array per column (16 arrays of 512 elements
for a batch of 512 entries). psycopg builds a binary array element by element in Python,
~5 µs of the hub's CPU per stored entry (bench/scale.py's batches); these builders do the
same bytes in ~1.4 µs. A value is wrapped in :class:`Int8Array`, :class:`TextArray` or
:class:`ByteaArray`, and :func:`register_arrays` gives a connection the dumpers that send the
built bytes as they are, with the array's type (``bigint[]``, ``text[]``, ``bytea[]``), in
a ``%b`` placeholder.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

__all__ = [
    "ByteaArray",
    "Int8Array",
    "TextArray",
    "bytea_array",
    "int8_array",
    "register_arrays",
    "text_array",
]

_HEAD = struct.Struct(">iiIii")
"""Dimensions (1), has-null flag, element type, length, lower bound (1)."""
_INT8 = struct.Struct(">iq")
"""An ``int8`` element: its length (8) and its value."""
_LENGTH = struct.Struct(">i")
_NULL = _LENGTH.pack(-1)
_INT8_OID, _TEXT_OID, _BYTEA_OID = 20, 25, 17


@dataclass(frozen=True, slots=True)
class Int8Array:
    """A ``bigint[]`` in binary format."""

    data: bytes


@dataclass(frozen=True, slots=True)
class TextArray:
    """A ``text[]`` in binary format (UTF-8 elements)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ByteaArray:
    """A ``bytea[]`` in binary format."""

    data: bytes


def int8_array(values: Sequence[int | None]) -> Int8Array:
    """``values`` (each a signed 64-bit integer, or None) as a ``bigint[]``.

    Raises:
        struct.error: a value does not fit in 64 bits.
    """
    if None in values:
        body = b"".join(_NULL if v is None else _INT8.pack(8, v) for v in values)
        return Int8Array(_HEAD.pack(1, 1, _INT8_OID, len(values), 1) + body)
    body = b"".join(map(_INT8.pack, repeat(8), values))
    return Int8Array(_HEAD.pack(1, 0, _INT8_OID, len(values), 1) + body)


def text_array(values: Sequence[str | None]) -> TextArray:
    """``values`` (each a string, or None) as a ``text[]``."""
    return TextArray(_elements([None if v is None else v.encode() for v in values], _TEXT_OID))


def bytea_array(values: Sequence[bytes | None]) -> ByteaArray:
    """``values`` (each bytes, or None) as a ``bytea[]``."""
    return ByteaArray(_elements(values, _BYTEA_OID))


def _elements(values: Sequence[bytes | None], oid: int) -> bytes:
    parts: list[bytes] = []
    has_null = 0
    for value in values:
        if value is None:
            parts.append(_NULL)
            has_null = 1
        else:
            parts.append(_LENGTH.pack(len(value)))
            parts.append(value)
    return _HEAD.pack(1, has_null, oid, len(values), 1) + b"".join(parts)


class _ArrayDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Int8Array | TextArray | ByteaArray) -> bytes:
        return obj.data


class _Int8ArrayDumper(_ArrayDumper):
    oid = 1016


class _TextArrayDumper(_ArrayDumper):
    oid = 1009


class _ByteaArrayDumper(_ArrayDumper):
    oid = 1001


def register_arrays(db: psycopg.Connection[tuple[object, ...]]) -> None:
    """Let ``db`` bind the arrays of this module (a connection pool's ``configure``)."""
    db.adapters.register_dumper(Int8Array, _Int8ArrayDumper)
    db.adapters.register_dumper(TextArray, _TextArrayDumper)
    db.adapters.register_dumper(ByteaArray, _ByteaArrayDumper)

"""Reading an exported lineage file: the stream side of the framing in
:mod:`edge_agent.protocol.lineage_export` (which stays pure: it parses item heads and
verifies what is read here). Public support: the hub's ``lineage verify`` reads exports with
it. Every item is bounded before it is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from edge_agent.errors import LineageError
from edge_agent.protocol.lineage_export import MAX_EXPORT_ENTRY_BYTES, item_length_bytes, item_size

__all__ = ["read_export"]


def read_export(handle: BinaryIO, max_header: int) -> tuple[bytes, Iterator[bytes]]:
    """Frame the export read from ``handle``: the header bytes (at most ``max_header``),
    then an iterator over entry bytes, read as it is consumed.

    Raises:
        LineageError: not a sequence of CBOR byte strings, or an item over its size limit
            or truncated (also while iterating).
    """
    header = _read_item(handle, max_header, "export header")
    if header is None:
        raise LineageError("the export is empty")

    def entries() -> Iterator[bytes]:
        while (item := _read_item(handle, MAX_EXPORT_ENTRY_BYTES, "export entry")) is not None:
            yield item

    return header, entries()


def _read_item(handle: BinaryIO, limit: int, what: str) -> bytes | None:
    """The next item's bytes (``None``: the stream ended before it)."""
    first = handle.read(1)
    if not first:
        return None
    width = item_length_bytes(first[0], what)
    length = handle.read(width)
    if len(length) != width:
        raise LineageError(f"{what} is truncated")
    size = item_size(first[0], length, limit, what)
    data = handle.read(size)
    if len(data) != size:
        raise LineageError(f"{what} is truncated")
    return data

"""Lineage entries: the schema as deterministic CBOR, the hash chain, streaming verification.

An entry is a flat deterministic-CBOR map with small integer keys (so its encoding is short and
one value has exactly one encoding). Entry ``seq`` is its leaf index in the RFC 9162 tree; its
``prev`` is the leaf hash of entry ``seq - 1`` (:data:`GENESIS_PREV` for entry 0), a cheap
streaming check next to the tree.

:class:`ChainVerifier` checks a stream of stored entries in order: canonical encoding, schema,
``seq`` continuity, the ``prev`` link, and the incremental tree (a :class:`Frontier`, O(log n)
memory), so a log of millions of entries is verified without loading it.

This module does no I/O and knows nothing about SQLite or files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import cbor2

from edge_agent.errors import LineageError
from edge_agent.policy.engine import Request
from edge_agent.protocol.merkle import HASH_SIZE, Frontier, Node, leaf_hash

__all__ = [
    "GENESIS_PREV",
    "MAX_ENTRY_BYTES",
    "ChainVerifier",
    "Entry",
    "Kind",
    "decode_entry",
    "encode_entry",
    "entry_hash",
    "fold_frontier",
]

MAX_ENTRY_BYTES = 1024 * 1024
"""Largest encoded entry accepted, in bytes: a request of the largest size the CLI and socket
accept (three 4 KiB fields and 64 context pairs of 4 KiB each) fits with room to spare."""

GENESIS_PREV = bytes(HASH_SIZE)
"""The ``prev`` of entry 0: there is no previous entry."""

_SEQ, _TIME, _PREV, _KIND, _ALLOWED, _REASON, _RULE, _DIGEST, _VERSION = range(9)
_SUBJECT, _ACTION, _RESOURCE, _CONTEXT, _SELECTORS, _DETAIL = range(9, 15)
_KEYS = frozenset(range(15))
_MAX_U64 = 2**64 - 1
_T = TypeVar("_T")


class Kind(StrEnum):
    """What an entry records: a decision or a trust transition."""

    DECISION = "decision"
    BUNDLE_INSTALLED = "bundle_installed"
    BUNDLE_REJECTED = "bundle_rejected"
    ROOT_ROTATED = "root_rotated"
    SEGMENT_START = "segment_start"


@dataclass(frozen=True, slots=True)
class Entry:
    """One lineage entry.

    ``request`` is set for decisions only. For trust transitions ``allowed`` is whether the
    transition took effect, ``reason`` its machine code and ``detail`` a human sentence.
    """

    seq: int
    time: int
    prev: bytes
    kind: Kind
    allowed: bool
    reason: str
    rule: str | None = None
    bundle_digest: bytes | None = None
    bundle_version: int | None = None
    request: Request | None = None
    detail: str = ""


def entry_hash(data: bytes) -> bytes:
    """The hash that chains and leafs an entry: its RFC 9162 leaf hash."""
    return leaf_hash(data)


def encode_entry(entry: Entry) -> bytes:
    """The deterministic CBOR bytes of ``entry``.

    Raises:
        ValueError: a field is out of range (negative seq, prev not 32 bytes, ...).
    """
    if not 0 <= entry.seq <= _MAX_U64 or not 0 <= entry.time <= _MAX_U64:
        raise ValueError("entry seq and time are unsigned 64-bit integers")
    if len(entry.prev) != HASH_SIZE:
        raise ValueError("entry prev is a 32-byte hash")
    request = entry.request
    value: dict[int, object] = {
        _SEQ: entry.seq,
        _TIME: entry.time,
        _PREV: entry.prev,
        _KIND: str(entry.kind),
        _ALLOWED: entry.allowed,
        _REASON: entry.reason,
        _RULE: entry.rule,
        _DIGEST: entry.bundle_digest,
        _VERSION: entry.bundle_version,
        _SUBJECT: request.subject if request else None,
        _ACTION: request.action if request else None,
        _RESOURCE: request.resource if request else None,
        _CONTEXT: [list(kv) for kv in request.context] if request else None,
        _SELECTORS: list(request.selectors) if request else None,
        _DETAIL: entry.detail,
    }
    data: bytes = cbor2.dumps(value, canonical=True)
    if len(data) > MAX_ENTRY_BYTES:
        raise ValueError(f"entry is over the {MAX_ENTRY_BYTES}-byte limit")
    return data


def decode_entry(data: bytes, seq: int | None = None) -> Entry:
    """Strictly decode entry bytes: size cap, schema, and exactly the canonical encoding.

    The canonical check re-encodes the decoded value and compares bytes, so any edit that
    keeps the bytes decodable but changes their form (floats, indefinite lengths, tags, key
    order, longer integer forms) is refused as surely as a changed value.

    Raises:
        LineageError: (with ``seq``) oversize, malformed, wrong schema or not canonical.
    """
    if not isinstance(data, bytes) or len(data) > MAX_ENTRY_BYTES:
        raise LineageError(f"entry is not bytes of at most {MAX_ENTRY_BYTES}", seq=seq)
    try:
        value = cbor2.loads(data)
    except Exception as exc:
        raise LineageError(f"entry is not valid CBOR: {exc}", seq=seq) from exc
    if not isinstance(value, dict) or set(value) != _KEYS:
        raise LineageError("entry is not a map of the lineage entry fields", seq=seq)
    # Only ints, strings, bytes, bools, null and arrays survive the schema check below, and
    # all map keys are small integers, so cbor2's canonical form is RFC 8949 section 4.2.1's.
    if cbor2.dumps(value, canonical=True) != data:
        raise LineageError("entry is not in canonical deterministic CBOR", seq=seq)
    return _entry_from_map(value, seq)


def _entry_from_map(value: dict[object, object], seq: int | None) -> Entry:
    try:
        kind = Kind(_typed(value[_KIND], str))
        context = _pairs(value[_CONTEXT])
        selectors = value[_SELECTORS]
        subject = _optional(value[_SUBJECT], str)
        request = None
        if subject is not None:
            if not isinstance(selectors, list) or not all(isinstance(s, str) for s in selectors):
                raise TypeError("selectors")
            request = Request(
                subject,
                _typed(value[_ACTION], str),
                _typed(value[_RESOURCE], str),
                context or (),
                tuple(selectors),
            )
        elif value[_ACTION] is not None or value[_RESOURCE] is not None or selectors is not None:
            raise TypeError("request fields without a subject")
        elif context is not None:
            raise TypeError("context without a subject")
        entry_seq = _typed(value[_SEQ], int)
        entry_time = _typed(value[_TIME], int)
        return Entry(
            seq=entry_seq,
            time=entry_time,
            prev=_typed(value[_PREV], bytes),
            kind=kind,
            allowed=_typed(value[_ALLOWED], bool),
            reason=_typed(value[_REASON], str),
            rule=_optional(value[_RULE], str),
            bundle_digest=_optional(value[_DIGEST], bytes),
            bundle_version=_optional(value[_VERSION], int),
            request=request,
            detail=_typed(value[_DETAIL], str),
        )
    except (TypeError, ValueError) as exc:
        raise LineageError(f"entry field has the wrong type or value: {exc}", seq=seq) from exc


def _typed(item: object, kind: type[_T]) -> _T:
    if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
        raise TypeError(f"expected {kind.__name__}, got {type(item).__name__}")
    return item


def _optional(item: object, kind: type[_T]) -> _T | None:
    return None if item is None else _typed(item, kind)


def _pairs(item: object) -> tuple[tuple[str, str], ...] | None:
    if item is None:
        return None
    if not isinstance(item, list):
        raise TypeError("context")
    pairs = []
    for pair in item:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise TypeError("context pair")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


class ChainVerifier:
    """Checks stored entries in order, from a trusted starting point, and tracks the tree.

    Start from ``Frontier()`` and :data:`GENESIS_PREV` for a whole log, or from the frontier
    at a signed checkpoint (and the entry hash before it, when known) for a log pruned or
    exported from there. Every check failure names the first bad ``seq``.
    """

    def __init__(self, frontier: Frontier, prev: bytes | None) -> None:
        self.frontier = frontier
        self.prev = prev
        """Hash of the last entry checked; ``None`` when the first link cannot be checked."""

    @property
    def size(self) -> int:
        """The tree size reached: the seq the next entry must carry."""
        return self.frontier.size

    def feed(self, seq: int, data: bytes) -> tuple[Entry, tuple[Node, ...]]:
        """Check the entry stored at ``seq``; return it and the perfect nodes it completed.

        Steps: 1. ``seq`` is the next leaf index; 2. the bytes decode strictly; 3. the entry
        states the same seq; 4. its ``prev`` is the previous entry's hash; 5. extend the tree.

        Raises:
            LineageError: with the seq of the first entry that is missing, out of order,
                malformed, or not linked to its predecessor.
        """
        expected = self.frontier.size
        if seq != expected:
            missing = min(seq, expected)
            raise LineageError(
                f"the log skips from entry {expected - 1} to entry {seq} (entry missing or "
                "out of order)",
                seq=missing,
            )
        entry = decode_entry(data, seq)
        if entry.seq != seq:
            raise LineageError(f"entry stored at {seq} says it is entry {entry.seq}", seq=seq)
        if self.prev is not None and entry.prev != self.prev:
            raise LineageError("entry does not link to the previous entry's hash", seq=seq)
        digest = entry_hash(data)
        self.frontier, nodes = self.frontier.append(digest)
        self.prev = digest
        return entry, nodes


def fold_frontier(size: int, hashes: Sequence[bytes]) -> Frontier:
    """A :class:`Frontier` of ``size`` from its hashes, as an export carries them.

    Raises:
        LineageError: the hashes do not fit the size.
    """
    try:
        return Frontier(size, tuple(hashes))
    except (ValueError, TypeError) as exc:
        raise LineageError(f"malformed tree frontier at size {size}: {exc}") from exc

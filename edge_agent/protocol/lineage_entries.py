"""Lineage entries: the schema as deterministic CBOR, the hash chain, streaming verification.

An entry is a flat deterministic-CBOR map with small integer keys (so its encoding is short and
one value has exactly one encoding): keys 0 to 14, and key 15 (the parent) only for a decision
whose request cited a parent, so every other entry keeps the bytes it always had. Entry
``seq`` is its leaf index in the RFC 9162 tree; its ``prev`` is the leaf hash of entry
``seq - 1`` (:data:`GENESIS_PREV` for entry 0), a cheap streaming check next to the tree.

:class:`ChainVerifier` checks a stream of stored entries in order: canonical encoding, schema,
``seq`` continuity, the ``prev`` link, and the incremental tree (a :class:`Frontier`, O(log n)
memory), so a log of millions of entries is verified without loading it.

This module does no I/O and knows nothing about SQLite or files. It is part of the shared core:
the hub reads entries in this format, and the agent turns its decisions into entries on its
own side (``edge_agent.lineage.decisions``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import cbor2

from edge_agent.errors import LineageError
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.merkle import HASH_SIZE, Frontier, leaf_hash, node_hash
from edge_agent.protocol.request import Parent, ParentFacts, Request

__all__ = [
    "GENESIS_PREV",
    "MAX_ENTRY_BYTES",
    "ChainVerifier",
    "Draft",
    "Entry",
    "Kind",
    "ShadowOutcome",
    "TreeEdge",
    "decode_entry",
    "draft_of",
    "encode_entry",
    "entry_hash",
    "fold_frontier",
    "parse_shadow_detail",
    "place_draft",
    "shadow_detail",
]

MAX_ENTRY_BYTES = 1024 * 1024
"""Largest encoded entry accepted, in bytes: a request of the largest size the CLI and socket
accept (three 4 KiB fields and 64 context pairs of 4 KiB each) fits with room to spare."""

GENESIS_PREV = bytes(HASH_SIZE)
"""The ``prev`` of entry 0: there is no previous entry."""

_SEQ, _TIME, _PREV, _KIND, _ALLOWED, _REASON, _RULE, _DIGEST, _VERSION = range(9)
_SUBJECT, _ACTION, _RESOURCE, _CONTEXT, _SELECTORS, _DETAIL, _PARENT = range(9, 16)
_KEY_ORDER = list(range(15))
_PARENT_KEY_ORDER = list(range(16))
_MAP_HEAD = b"\xaf"
"""CBOR head of a map of 15 pairs: every entry without a parent is one."""
_PARENT_MAP_HEAD = b"\xb0"
"""CBOR head of a map of 16 pairs: a decision that cited a parent."""
_VERIFIED_PARENT_ITEMS = 10
_REFUSED_PARENT_ITEMS = 2
_PREV_HEAD = bytes((_PREV, 0x58, HASH_SIZE))
"""Key 2 and the head of a 32-byte byte string."""
_MAX_HEAD_BYTES = 1 + 10 + 10 + len(_PREV_HEAD) + HASH_SIZE
"""Most bytes an entry has before its body: map head, seq, time and prev."""


class Kind(StrEnum):
    """What an entry records: a decision or a trust transition.

    For a transition, the entry's ``allowed`` says whether it took effect (an attestation
    passed, a revocation applied) and ``reason`` is its machine code. Values are part of the
    stored and exported format: add new ones, never rename.
    """

    DECISION = "decision"
    BUNDLE_INSTALLED = "bundle_installed"
    BUNDLE_REJECTED = "bundle_rejected"
    ROOT_ROTATED = "root_rotated"
    ROOT_REJECTED = "root_rejected"
    REVOCATION_APPLIED = "revocation_applied"
    REVOCATION_REJECTED = "revocation_rejected"
    FRESHNESS_REJECTED = "freshness_rejected"
    CLOCK_UNTRUSTED = "clock_untrusted"
    """The wall clock went below the trusted time floor: every decision denies."""
    CLOCK_RESTORED = "clock_restored"
    """The wall clock is at or above the trusted floor again."""
    ATTESTATION_PASSED = "attestation_passed"
    ATTESTATION_FAILED = "attestation_failed"
    ATTESTATION_STALE = "attestation_stale"
    SEGMENT_START = "segment_start"
    LINEAGE_PRUNED = "lineage_pruned"
    """Entries before a signed checkpoint were deleted (retention or ``log prune``)."""
    SHADOW_REJECTED = "shadow_rejected"
    """A shadow bundle was refused, with the code a real bundle would be refused with."""
    SHADOW_DIVERGENCE = "shadow_divergence"
    """The shadow bundle decides the decision just before otherwise: the request and the
    active outcome in the normal fields, the shadow's in ``detail`` (:func:`shadow_detail`)."""


_KINDS = {str(kind): kind for kind in Kind}


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


@dataclass(frozen=True, slots=True)
class ShadowOutcome:
    """What the shadow bundle decides for a request (a ``shadow_divergence`` entry's
    ``detail``): the bundle's version and SHA-256 digest, the verdict, reason and rule."""

    version: int
    digest: bytes
    allowed: bool
    reason: str
    rule: str | None


_SHADOW_DETAIL = re.compile(
    r"shadow_version=(0|[1-9][0-9]{0,15}) shadow_digest=([0-9a-f]{64}) "
    r"shadow_allowed=(true|false) shadow_reason=([a-z_]{1,64}) shadow_rule=(\S{0,256})"
)


def shadow_detail(outcome: ShadowOutcome) -> str:
    """The canonical text of ``outcome``: one line of ``key=value`` pairs in a fixed order,
    ``shadow_version=3 shadow_digest=<64 hex> shadow_allowed=false
    shadow_reason=policy_denied shadow_rule=no-shells`` (``shadow_rule=`` empty for the
    default deny), which :func:`parse_shadow_detail` reads back exactly.

    Raises:
        ValueError: a field cannot be written in that form.
    """
    text = (
        f"shadow_version={outcome.version} shadow_digest={outcome.digest.hex()} "
        f"shadow_allowed={'true' if outcome.allowed else 'false'} "
        f"shadow_reason={outcome.reason} shadow_rule={outcome.rule or ''}"
    )
    if (
        len(outcome.digest) != HASH_SIZE
        or not 0 <= outcome.version <= MAX_COUNTER
        or _SHADOW_DETAIL.fullmatch(text) is None
    ):
        raise ValueError(f"a shadow outcome cannot be written as {text!r}")
    return text


def parse_shadow_detail(text: str) -> ShadowOutcome:
    """The :class:`ShadowOutcome` a ``shadow_divergence`` entry's ``detail`` states.

    Raises:
        ValueError: ``text`` is not in :func:`shadow_detail`'s form.
    """
    found = _SHADOW_DETAIL.fullmatch(text)
    if found is None or int(found[1]) > MAX_COUNTER:
        raise ValueError(f"not a shadow outcome: {text[:120]!r}")
    version, digest, allowed, reason, rule = found.groups()
    return ShadowOutcome(
        int(version), bytes.fromhex(digest), allowed == "true", reason, rule or None
    )


def entry_hash(data: bytes) -> bytes:
    """The hash that chains and leafs an entry: its RFC 9162 leaf hash."""
    return leaf_hash(data)


@dataclass(frozen=True, slots=True)
class Draft:
    """An entry before its place in the log is known: all but ``seq`` and ``prev``, encoded.

    Concurrent deciders each prepare their own draft (the costly encoding) while another
    batch is being written; the single writer then only places it (:func:`place_draft`):
    a few byte concatenations, the hash and the tree. ``kind`` to ``action`` are the filter
    columns stored beside the entry.
    """

    time: int
    kind: Kind
    allowed: bool
    reason: str
    subject: str | None
    action: str | None
    body: bytes
    """The encoded fields after ``prev`` (map keys 3 to 14, and 15 with a parent), without
    the map head."""
    head: bytes = _MAP_HEAD
    """The entry's CBOR map head: 15 pairs, or 16 with a parent."""


def draft_of(entry: Entry) -> Draft:
    """The draft of ``entry`` (its ``seq`` and ``prev`` are ignored).

    The fields after ``prev`` are written as a 12-entry map in key order, whose one-byte
    head is then dropped: prefixed with the head and keys 0 to 2 (:func:`place_draft`) they
    are the whole entry map. Its values are only unsigned integers, text, bytes, booleans,
    null and arrays of those, so cbor2's plain encoder writes exactly RFC 8949 section
    4.2.1's deterministic form (shortest lengths and integers, keys in bytewise order), at a
    third of the cost of its sorting encoder.

    Raises:
        ValueError: a field is out of range, or the entry would be over the size limit.
    """
    if not 0 <= entry.time <= MAX_COUNTER:
        raise ValueError(f"entry time is an integer from 0 to {MAX_COUNTER}")
    if entry.bundle_version is not None and not 0 <= entry.bundle_version <= MAX_COUNTER:
        raise ValueError(f"entry bundle version is an integer from 0 to {MAX_COUNTER}")
    request = entry.request
    fields: dict[int, object] = {
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
    head = _MAP_HEAD
    if request is not None and request.parent is not None:
        fields[_PARENT] = _parent_fields(request.parent)
        head = _PARENT_MAP_HEAD
    body: bytes = cbor2.dumps(fields)
    if len(body) + _MAX_HEAD_BYTES > MAX_ENTRY_BYTES:
        raise ValueError(f"entry is over the {MAX_ENTRY_BYTES}-byte limit")
    return Draft(
        entry.time,
        entry.kind,
        entry.allowed,
        entry.reason,
        request.subject if request else None,
        request.action if request else None,
        body[1:],
        head,
    )


def _parent_fields(parent: Parent) -> list[object]:
    """Map key 15: ``[device, seq, leaf hash, depth, subject, action, resource, time,
    groups, directory version]`` for a verified parent, ``[directory version, refusal]`` for
    one refused (the directory version is null when the agent held none).

    Raises:
        ValueError: a counter is out of range or the leaf hash is not 32 bytes.
    """
    facts = parent.facts
    version = parent.directory_version
    if version is not None and not 0 <= version <= MAX_COUNTER:
        raise ValueError(f"a parent's directory version is an integer from 0 to {MAX_COUNTER}")
    if facts is None:
        return [version, parent.refusal]
    if not all(0 <= n <= MAX_COUNTER for n in (facts.seq, facts.time, facts.depth)):
        raise ValueError(f"a parent's seq, time and depth are integers from 0 to {MAX_COUNTER}")
    if len(facts.leaf_hash) != HASH_SIZE:
        raise ValueError("a parent's leaf hash is a 32-byte hash")
    return [
        facts.device,
        facts.seq,
        facts.leaf_hash,
        facts.depth,
        facts.subject,
        facts.action,
        facts.resource,
        facts.time,
        list(facts.groups),
        version,
    ]


def place_draft(draft: Draft, seq: int, prev: bytes) -> bytes:
    """The bytes of ``draft`` as entry ``seq`` following the entry whose hash is ``prev``.

    Raises:
        ValueError: ``seq`` is outside 0..``MAX_COUNTER`` or ``prev`` not a 32-byte hash.
    """
    if len(prev) != HASH_SIZE:
        raise ValueError("entry prev is a 32-byte hash")
    return b"".join(
        (draft.head, _uint(_SEQ, seq), _uint(_TIME, draft.time), _PREV_HEAD, prev, draft.body)
    )


def encode_entry(entry: Entry) -> bytes:
    """The deterministic CBOR bytes of ``entry`` (:func:`draft_of` placed at its seq).

    Raises:
        ValueError: a field is out of range (negative seq, prev not 32 bytes, ...).
    """
    return place_draft(draft_of(entry), entry.seq, entry.prev)


def _uint(key: int, value: int) -> bytes:
    """A small-int map key followed by ``value`` as a CBOR unsigned integer, shortest form."""
    if value < 24:
        if value < 0:
            raise ValueError(f"entry seq and time are integers from 0 to {MAX_COUNTER}")
        return bytes((key, value))
    if value < 0x100:
        return bytes((key, 0x18, value))
    if value < 0x10000:
        return bytes((key, 0x19)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((key, 0x1A)) + value.to_bytes(4, "big")
    if value <= MAX_COUNTER:
        return bytes((key, 0x1B)) + value.to_bytes(8, "big")
    raise ValueError(f"entry seq and time are integers from 0 to {MAX_COUNTER}")


def decode_entry(data: bytes, seq: int | None = None) -> Entry:
    """Strictly decode entry bytes: size cap, schema, and exactly the canonical encoding.

    Steps: 1. size cap; 2. decode; 3. a map of exactly the 15 entry keys (16 with a
    parent), in ascending order; 4. re-encode and compare bytes, so any edit that keeps the
    bytes decodable but changes their form (floats, indefinite lengths, tags, duplicate
    keys, longer integer forms) is refused as surely as a changed value; 5. every field of its type.

    Raises:
        LineageError: (with ``seq``) oversize, malformed, wrong schema or not canonical.
    """
    if not isinstance(data, bytes) or len(data) > MAX_ENTRY_BYTES:
        raise LineageError(f"entry is not bytes of at most {MAX_ENTRY_BYTES}", seq=seq)
    try:
        value = cbor2.loads(data)
    except Exception as exc:
        raise LineageError(f"entry is not valid CBOR: {exc}", seq=seq) from exc
    keys = list(value) if type(value) is dict else None
    if keys != _KEY_ORDER and keys != _PARENT_KEY_ORDER:
        raise LineageError("entry is not a map of the lineage entry fields in order", seq=seq)
    # With the keys in order, the plain encoder reproduces deterministic CBOR (see
    # encode_entry) for every value the schema below lets through; anything else it writes
    # differently, or the schema refuses it.
    try:
        canonical = cbor2.dumps(value) == data
    except Exception as exc:
        raise LineageError(
            f"entry holds a value that cannot be re-encoded: {exc}", seq=seq
        ) from exc
    if not canonical:
        raise LineageError("entry is not in canonical deterministic CBOR", seq=seq)
    return _entry_from_fields(*value.values(), seq=seq)


def _entry_from_fields(
    entry_seq: object,
    time: object,
    prev: object,
    kind: object,
    allowed: object,
    reason: object,
    rule: object,
    digest: object,
    version: object,
    subject: object,
    action: object,
    resource: object,
    context: object,
    selectors: object,
    detail: object,
    parent: object = None,
    *,
    seq: int | None,
) -> Entry:
    """The entry of decoded fields, each checked for type and range (a hot path of verify)."""
    if (
        type(entry_seq) is not int
        or type(time) is not int
        or not 0 <= entry_seq <= MAX_COUNTER
        or not 0 <= time <= MAX_COUNTER
        or type(prev) is not bytes
        or len(prev) != HASH_SIZE
        or type(allowed) is not bool
        or type(reason) is not str
        or type(detail) is not str
        or not (rule is None or type(rule) is str)
        or not (digest is None or type(digest) is bytes)
        or not (version is None or (type(version) is int and 0 <= version <= MAX_COUNTER))
    ):
        raise LineageError("entry field has the wrong type or value", seq=seq)
    known = _KINDS.get(kind) if type(kind) is str else None
    if known is None:
        raise LineageError(f"entry kind {str(kind)[:40]!r} is not a lineage entry kind", seq=seq)
    request = _request(subject, action, resource, context, selectors)
    if request is None and any(
        field is not None for field in (subject, action, resource, context, selectors)
    ):
        raise LineageError("entry request fields are malformed or incomplete", seq=seq)
    if parent is not None:
        cited = _parent(parent)
        if cited is None or request is None or known is not Kind.DECISION:
            raise LineageError("entry parent field is malformed or not on a decision", seq=seq)
        request = Request(
            request.subject,
            request.action,
            request.resource,
            request.context,
            request.selectors,
            cited,
        )
    return Entry(
        entry_seq, time, prev, known, allowed, reason, rule, digest, version, request, detail
    )


def _request(
    subject: object, action: object, resource: object, context: object, selectors: object
) -> Request | None:
    """The request of a decision entry, or ``None`` when the fields are not one."""
    if (
        type(subject) is not str
        or type(action) is not str
        or type(resource) is not str
        or type(context) is not list
        or type(selectors) is not list
        or not all(type(s) is str for s in selectors)
    ):
        return None
    pairs = []
    for pair in context:
        if type(pair) is not list or len(pair) != 2:
            return None
        key, item = pair
        if type(key) is not str or type(item) is not str:
            return None
        pairs.append((key, item))
    return Request(subject, action, resource, tuple(pairs), tuple(selectors))


def _parent(value: object) -> Parent | None:
    """The parent of a decision entry (map key 15), or ``None`` when it is not one."""
    if type(value) is not list:
        return None
    if len(value) == _REFUSED_PARENT_ITEMS:
        version, refusal = value
        if not _counter_or_none(version) or type(refusal) is not str or not refusal:
            return None
        return Parent(None, version, refusal)
    if len(value) != _VERIFIED_PARENT_ITEMS:
        return None
    device, seq, leaf, depth, subject, action, resource, time, groups, version = value
    if (
        type(device) is not str
        or not _counter(seq)
        or type(leaf) is not bytes
        or len(leaf) != HASH_SIZE
        or not _counter(depth)
        or type(subject) is not str
        or type(action) is not str
        or type(resource) is not str
        or not _counter(time)
        or type(groups) is not list
        or not all(type(g) is str for g in groups)
        or not _counter_or_none(version)
    ):
        return None
    facts = ParentFacts(
        device,
        tuple(groups),
        seq,
        leaf,
        subject,
        action,
        resource,
        time,
        depth,
    )
    return Parent(facts, version)


def _counter(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNTER


def _counter_or_none(value: object) -> bool:
    return value is None or _counter(value)


class TreeEdge:
    """A tree's right edge, extended in place: :meth:`Frontier.append` without the copies.

    Verifying or appending millions of entries extends the tree once per entry; this keeps
    the O(log n) edge in a list and builds the immutable :class:`Frontier` only on demand.
    """

    __slots__ = ("_hashes", "size")

    def __init__(self, frontier: Frontier) -> None:
        self.size = frontier.size
        self._hashes = list(frontier.hashes)

    def push(self, leaf: bytes) -> bytes:
        """Add the next leaf hash; return the hashes of the inner perfect nodes it closed,
        level 1 upwards, concatenated (empty when it closed none)."""
        hashes, index, current = self._hashes, self.size, leaf
        closed = b""
        while index & 1:
            current = node_hash(hashes.pop(), current)
            closed += current
            index >>= 1
        hashes.append(current)
        self.size += 1
        return closed

    def frontier(self) -> Frontier:
        return Frontier(self.size, tuple(self._hashes))


class ChainVerifier:
    """Checks stored entries in order, from a trusted starting point, and tracks the tree.

    Start from ``Frontier()`` and :data:`GENESIS_PREV` for a whole log, or from the frontier
    at a signed checkpoint (and the entry hash before it, when known) for a log pruned or
    exported from there. Every check failure names the first bad ``seq``.
    """

    def __init__(self, frontier: Frontier, prev: bytes | None) -> None:
        self._edge = TreeEdge(frontier)
        self.prev = prev
        """Hash of the last entry checked; ``None`` when the first link cannot be checked."""
        self.closed = b""
        """The perfect nodes the last entry closed, its leaf first, concatenated."""

    @property
    def size(self) -> int:
        """The tree size reached: the seq the next entry must carry."""
        return self._edge.size

    @property
    def frontier(self) -> Frontier:
        """The tree's frontier after the entries checked so far."""
        return self._edge.frontier()

    def feed(self, seq: int, data: bytes) -> Entry:
        """Check the entry stored at ``seq`` and return it.

        Steps: 1. ``seq`` is the next leaf index; 2. the bytes decode strictly; 3. the entry
        states the same seq; 4. its ``prev`` is the previous entry's hash; 5. extend the tree.

        Raises:
            LineageError: with the seq of the first entry that is missing, out of order,
                malformed, or not linked to its predecessor.
        """
        expected = self._edge.size
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
        digest = leaf_hash(data)
        self.closed = digest + self._edge.push(digest)
        self.prev = digest
        return entry


def fold_frontier(size: int, hashes: Sequence[bytes]) -> Frontier:
    """A :class:`Frontier` of ``size`` from its hashes, as an export carries them.

    Raises:
        LineageError: the hashes do not fit the size.
    """
    try:
        return Frontier(size, tuple(hashes))
    except (ValueError, TypeError) as exc:
        raise LineageError(f"malformed tree frontier at size {size}: {exc}") from exc

"""Offline verification of an exported lineage with nothing but the device's public key.

An export is a CBOR sequence of byte strings: first the deterministic-CBOR header map
(format, origin, start seq, the tree frontier at start, the hash of the entry before start,
the end size and the signed checkpoints between), then one byte string per entry, in order.
The frontier at start is authenticated by the signed checkpoints after it: a different
frontier would give different roots. An export always ends at a signed checkpoint.

:func:`frame_item`, :func:`item_length_bytes` and :func:`item_size` are the file framing;
reading a stream is the shell's (``edge_agent.support.lineage_files.read_export``).
:func:`verify_export` is pure: it takes the header bytes and an iterable of entry bytes and
returns the roots it established, so two exports, or an export and a checkpoint note, can be
compared for a fork. It raises only :class:`LineageError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edge_agent.errors import EnvelopeError, LineageError
from edge_agent.protocol import dcbor
from edge_agent.protocol.checkpoint import Checkpoint, parse_checkpoint_body, verify_checkpoint
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.lineage_entries import ChainVerifier, fold_frontier
from edge_agent.protocol.merkle import HASH_SIZE, leaf_hash, verify_inclusion

__all__ = [
    "EXPORT_FORMAT",
    "MAX_EXPORT_ENTRY_BYTES",
    "MAX_HEADER_BYTES",
    "ExportHeader",
    "ExportReport",
    "InclusionProof",
    "checkpoint_of_note",
    "compare_roots",
    "decode_header",
    "encode_header",
    "frame_item",
    "item_length_bytes",
    "item_size",
    "verify_export",
    "verify_inclusion_proof",
]

EXPORT_FORMAT = "edgegov-lineage-export/1"
MAX_HEADER_BYTES = 64 * 1024 * 1024
"""Largest export header: room for about 15,000 checkpoint notes."""
MAX_EXPORT_ENTRY_BYTES = 1024 * 1024 + 16
"""Largest export item accepted, in bytes: an entry of ``MAX_ENTRY_BYTES`` and its framing."""


@dataclass(frozen=True, slots=True)
class ExportHeader:
    origin: str
    start: int
    prev: bytes | None
    frontier: tuple[bytes, ...]
    size: int
    checkpoints: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What a verified export establishes: its range and the root at each checkpoint size."""

    origin: str
    start: int
    size: int
    roots: Mapping[int, bytes]


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """One entry, proven: its bytes, the audit path to the root of ``tree_size`` entries and
    the device-signed checkpoint note at that size (what ``edge-agent log prove`` prints)."""

    seq: int
    entry: bytes
    tree_size: int
    proof: tuple[bytes, ...]
    checkpoint: str


def verify_inclusion_proof(proof: InclusionProof, public_key: PublicKey, origin: str) -> Checkpoint:
    """Check an inclusion proof with nothing but the device's key; return the checkpoint.

    Steps: 1. the checkpoint note is signed by the key under ``origin``; 2. it is at the
    proof's tree size; 3. the entry's leaf hash and the audit path lead to its root.

    Raises:
        LineageError: any step fails.
    """
    checkpoint = _checkpoint(proof.checkpoint, public_key, origin)
    if checkpoint.size != proof.tree_size:
        raise LineageError(
            f"the checkpoint signs size {checkpoint.size}, the proof is for {proof.tree_size}"
        )
    verify_inclusion(
        leaf_hash(proof.entry), proof.seq, proof.tree_size, proof.proof, checkpoint.root
    )
    return checkpoint


def encode_header(header: ExportHeader) -> bytes:
    """The deterministic CBOR of an export header."""
    return dcbor.encode(
        {
            "format": EXPORT_FORMAT,
            "origin": header.origin,
            "start": header.start,
            "prev": header.prev,
            "frontier": list(header.frontier),
            "size": header.size,
            "checkpoints": list(header.checkpoints),
        }
    )


def decode_header(data: bytes) -> ExportHeader:
    """Strictly decode an export header.

    Raises:
        LineageError: not a lineage export of this format.
    """
    try:
        value = dcbor.as_map(
            dcbor.decode(data, max_bytes=MAX_HEADER_BYTES, what="export"), "export"
        )
    except EnvelopeError as exc:
        raise LineageError(f"not an edgegov lineage export: {exc}") from exc
    if value.get("format") != EXPORT_FORMAT:
        raise LineageError(f"not an edgegov lineage export (format is not {EXPORT_FORMAT})")
    origin, start, prev = value.get("origin"), value.get("start"), value.get("prev")
    frontier, size, notes = value.get("frontier"), value.get("size"), value.get("checkpoints")
    if (
        not isinstance(origin, str)
        or not isinstance(start, int)
        or isinstance(start, bool)
        or not isinstance(size, int)
        or isinstance(size, bool)
        or not 0 <= start <= size <= MAX_COUNTER
        or not (prev is None or (isinstance(prev, bytes) and len(prev) == HASH_SIZE))
        or not isinstance(frontier, list)
        or not all(isinstance(h, bytes) for h in frontier)
        or not isinstance(notes, list)
        or not all(isinstance(n, str) for n in notes)
    ):
        raise LineageError("the export header is malformed")
    return ExportHeader(
        origin,
        start,
        prev,
        tuple(h for h in frontier if isinstance(h, bytes)),
        size,
        tuple(n for n in notes if isinstance(n, str)),
    )


def verify_export(
    header: ExportHeader, entries: Iterable[bytes], public_key: PublicKey
) -> ExportReport:
    """Verify an export: checkpoint signatures, chain, tree, and roots at every checkpoint.

    Steps: 1. every checkpoint verifies under the key and the export's origin, sizes
    strictly increasing within the export's range, the last one at its end; 2. the entries
    chain from the start frontier, seq by seq; 3. the root at each checkpoint size is the
    signed root (so successive checkpoints are consistent); 4. the entry count is exact.

    Raises:
        LineageError: the first failure, naming the seq at fault when there is one.
    """
    checkpoints = [_checkpoint(note, public_key, header.origin) for note in header.checkpoints]
    sizes = [c.size for c in checkpoints]
    if sizes != sorted(set(sizes)) or any(not header.start <= s <= header.size for s in sizes):
        raise LineageError("the export's checkpoints are out of order or outside its range")
    if not checkpoints or sizes[-1] != header.size:
        raise LineageError("the export does not end at a signed checkpoint")
    verifier = ChainVerifier(fold_frontier(header.start, header.frontier), header.prev)
    roots: dict[int, bytes] = {}
    pending = list(checkpoints)
    if pending and pending[0].size == header.start:
        _match(verifier, pending.pop(0), roots)
    for offset, data in enumerate(entries):
        seq = header.start + offset
        if seq >= header.size:
            raise LineageError("the export holds more entries than its header says", seq=seq)
        verifier.feed(seq, data)
        while pending and pending[0].size == verifier.size:
            _match(verifier, pending.pop(0), roots)
    if verifier.size != header.size:
        raise LineageError(
            f"the export ends after {verifier.size - header.start} entries; its header says "
            f"{header.size - header.start}",
            seq=verifier.size,
        )
    return ExportReport(header.origin, header.start, header.size, roots)


def compare_roots(a: Mapping[int, bytes], b: Mapping[int, bytes]) -> int | None:
    """The smallest tree size at which two sets of verified roots disagree (a fork), if any."""
    for size in sorted(set(a) & set(b)):
        if a[size] != b[size]:
            return size
    return None


def checkpoint_of_note(note: str, public_key: PublicKey) -> Checkpoint:
    """Verify a standalone checkpoint note by the device key, whatever its origin says.

    Raises:
        LineageError: malformed, or not signed by the key under its own origin.
    """
    text = note.split("\n\n", 1)[0] + "\n"
    origin = parse_checkpoint_body(text).origin
    return _checkpoint(note, public_key, origin)


def _checkpoint(note: str, public_key: PublicKey, origin: str) -> Checkpoint:
    try:
        return verify_checkpoint(note, public_key, origin)
    except ValueError as exc:
        raise LineageError(f"checkpoint origin {origin[:80]!r} is not a key name") from exc


def _match(verifier: ChainVerifier, checkpoint: Checkpoint, roots: dict[int, bytes]) -> None:
    root = verifier.frontier.root()
    if root != checkpoint.root:
        raise LineageError(
            f"the entries do not give the root signed at size {checkpoint.size}",
            seq=checkpoint.size - 1,
        )
    roots[checkpoint.size] = root


def frame_item(data: bytes) -> bytes:
    """``data`` as one item of an export file: a CBOR byte string (head, then the bytes)."""
    size = len(data)
    if size < 24:
        return bytes([0x40 | size]) + data
    if size < 0x100:
        return bytes([0x58, size]) + data
    if size < 0x10000:
        return b"\x59" + struct.pack(">H", size) + data
    return b"\x5a" + struct.pack(">I", size) + data


def item_length_bytes(initial: int, what: str) -> int:
    """How many length bytes follow ``initial``, the first byte of an export item (0: the
    length is in ``initial`` itself); the reader reads them and calls :func:`item_size`.

    Raises:
        LineageError: the item is not a CBOR byte string (not an edgegov lineage export).
    """
    major, info = initial >> 5, initial & 0x1F
    if major != 2 or info > 26:
        raise LineageError(f"{what} is not a CBOR byte string: not an edgegov lineage export")
    return {24: 1, 25: 2, 26: 4}.get(info, 0)


def item_size(initial: int, length: bytes, limit: int, what: str) -> int:
    """The size of an export item from its first byte ``initial`` and the ``length`` bytes
    after it (:func:`item_length_bytes` of them), at most ``limit``.

    Raises:
        LineageError: the size is over ``limit``.
    """
    size = int.from_bytes(length, "big") if length else initial & 0x1F
    if size > limit:
        raise LineageError(f"{what} is {size} bytes, over the {limit}-byte limit")
    return size

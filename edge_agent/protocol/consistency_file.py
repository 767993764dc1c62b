"""The consistency-proof file, and what two checkpoints of one device log prove together.

The file (written by ``edge-agent log consistency`` and ``edge-hub lineage consistency``,
read by ``edge-verify consistency``) is text::

    edgegov/consistency-proof/v1
    old <tree size>
    new <tree size>
    <base64 hash>            (one per line, RFC 9162 section 2.1.4 order; none for equal sizes)

:func:`verify_consistency_files` judges two signed checkpoints of one device, with that
proof, as :attr:`Verdict.CONSISTENT` (the newer extends the older), :attr:`Verdict.FORK`
(the device signed two different roots at one size: its log was rewritten) or
:attr:`Verdict.NOT_PROVEN` (the evidence does not settle it: a missing or wrong proof, a
checkpoint the device did not sign, a missing cosignature). Parsing is strict and bounded
and raises only :class:`LineageError`. This module does no I/O.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from edge_agent.errors import LineageError
from edge_agent.protocol.checkpoint import (
    Checkpoint,
    decode_canonical_base64,
    parse_checkpoint_body,
    parse_origin,
    split_note,
    verify_checkpoint,
)
from edge_agent.protocol.cosignature import select_witnesses, verify_cosignature
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.merkle import HASH_SIZE, verify_consistency

__all__ = [
    "HEADER",
    "MAX_CONSISTENCY_FILE_BYTES",
    "MAX_PROOF_HASHES",
    "ConsistencyProof",
    "ConsistencyReport",
    "Verdict",
    "format_consistency_proof",
    "parse_consistency_proof",
    "verify_consistency_files",
]

HEADER = "edgegov/consistency-proof/v1"

MAX_PROOF_HASHES = 128
"""Most hashes a consistency proof between two trees of up to 2^64 leaves holds."""

MAX_CONSISTENCY_FILE_BYTES = 16 * 1024
"""Largest consistency-proof file accepted, in bytes (128 hashes take about 6 KiB)."""

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,15}")


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """A consistency proof from the tree of ``old`` leaves to the tree of ``new``."""

    old: int
    new: int
    hashes: tuple[bytes, ...]


class Verdict(StrEnum):
    """What two checkpoints of one device log prove together."""

    CONSISTENT = "consistent"
    FORK = "fork"
    NOT_PROVEN = "not_proven"


@dataclass(frozen=True, slots=True)
class ConsistencyReport:
    """The ``verdict`` on checkpoints ``old`` and ``new`` (``None`` when unreadable), and
    a sentence saying why."""

    verdict: Verdict
    detail: str
    old: Checkpoint | None
    new: Checkpoint | None


def format_consistency_proof(*, old: int, new: int, hashes: Sequence[bytes]) -> str:
    """The file text of a consistency proof from size ``old`` to size ``new``.

    Raises:
        ValueError: sizes out of order or range, a hash not 32 bytes, too many hashes.
    """
    if not 0 <= old <= new <= MAX_COUNTER:
        raise ValueError(f"sizes {old} and {new} are not 0 <= old <= new <= 2^53-1")
    if len(hashes) > MAX_PROOF_HASHES or any(len(h) != HASH_SIZE for h in hashes):
        raise ValueError(f"a consistency proof is at most {MAX_PROOF_HASHES} 32-byte hashes")
    lines = [HEADER, f"old {old}", f"new {new}"]
    lines.extend(base64.b64encode(h).decode("ascii") for h in hashes)
    return "".join(f"{line}\n" for line in lines)


def parse_consistency_proof(text: str | bytes) -> ConsistencyProof:
    """Read a consistency-proof file strictly: header, canonical decimal sizes in order,
    canonical base64 32-byte hashes, every line ended by a newline, nothing else.

    Raises:
        LineageError: oversize, not UTF-8, or any line out of place.
    """
    if len(text) > MAX_CONSISTENCY_FILE_BYTES:
        raise LineageError(f"a consistency proof is at most {MAX_CONSISTENCY_FILE_BYTES} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LineageError("the consistency proof is not UTF-8 text") from exc
    if not text.endswith("\n"):
        raise LineageError("a consistency proof is lines each ending in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or lines[0] != HEADER:
        raise LineageError(f"not a consistency proof: the first line is not {HEADER!r}")
    old, new = _size(lines[1], "old"), _size(lines[2], "new")
    if old > new:
        raise LineageError(f"the proof's old size {old} is larger than its new size {new}")
    if len(lines) - 3 > MAX_PROOF_HASHES:
        raise LineageError(f"a consistency proof has at most {MAX_PROOF_HASHES} hashes")
    return ConsistencyProof(old, new, tuple(_hash(line) for line in lines[3:]))


def verify_consistency_files(
    old_note: str | bytes,
    new_note: str | bytes,
    proof: ConsistencyProof | None,
    device_key: PublicKey,
    witness_keys: Sequence[PublicKey] = (),
) -> ConsistencyReport:
    """Judge two checkpoint notes of one device log (either order) with ``proof``.

    Steps: 0. the device key is not among ``witness_keys`` (a device cannot witness its own
    log); 1. each note is a checkpoint signed by ``device_key`` under its origin, an edgegov
    device origin (``edgegov/v1/device/<id>/epoch/<n>``), both of one origin; 2. with
    ``witness_keys``, each is cosigned by one of them; 3. equal sizes:
    equal roots are consistent, different roots a fork (no proof needed: the device signed
    both); 4. different sizes: the proof is for exactly these sizes and leads from the
    smaller tree's root to the larger's.
    """
    try:
        witnesses = select_witnesses(witness_keys, device_key=device_key)
    except ValueError as exc:
        return ConsistencyReport(Verdict.NOT_PROVEN, str(exc), None, None)
    try:
        old, new = (_open(note, device_key, witnesses) for note in (old_note, new_note))
    except LineageError as exc:
        return ConsistencyReport(Verdict.NOT_PROVEN, str(exc), None, None)
    if old.size > new.size:
        old, new = new, old
    if old.origin != new.origin:
        return ConsistencyReport(
            Verdict.NOT_PROVEN, "the checkpoints are of two different logs (origins)", old, new
        )
    if old.size == new.size:
        if old.root == new.root:
            return ConsistencyReport(
                Verdict.CONSISTENT, f"the same tree head at size {old.size}", old, new
            )
        return ConsistencyReport(
            Verdict.FORK,
            f"two different roots signed at size {old.size}: the log was rewritten",
            old,
            new,
        )
    if proof is None:
        return ConsistencyReport(
            Verdict.NOT_PROVEN, f"no proof given from size {old.size} to {new.size}", old, new
        )
    if (proof.old, proof.new) != (old.size, new.size):
        return ConsistencyReport(
            Verdict.NOT_PROVEN,
            f"the proof is from size {proof.old} to {proof.new}, the checkpoints are at "
            f"{old.size} and {new.size}",
            old,
            new,
        )
    try:
        verify_consistency(old.size, new.size, old.root, new.root, proof.hashes)
    except LineageError as exc:
        return ConsistencyReport(
            Verdict.NOT_PROVEN,
            f"the proof does not show the newer extends the older: {exc}",
            old,
            new,
        )
    return ConsistencyReport(
        Verdict.CONSISTENT, f"size {new.size} extends size {old.size}", old, new
    )


def _open(
    note: str | bytes, device_key: PublicKey, witness_keys: Sequence[PublicKey]
) -> Checkpoint:
    origin = parse_checkpoint_body(split_note(note)[0].decode("utf-8")).origin
    parse_origin(origin)
    try:
        checkpoint = verify_checkpoint(note, device_key, origin)
    except ValueError as exc:
        raise LineageError(f"the checkpoint's origin is not a key name: {exc}") from exc
    if witness_keys:
        verify_cosignature(note, witness_keys)
    return checkpoint


def _size(line: str, word: str) -> int:
    value = line.removeprefix(f"{word} ")
    if value == line or not _DECIMAL.fullmatch(value) or int(value) > MAX_COUNTER:
        raise LineageError(f"the consistency proof's {word!r} line is not '{word} <size>'")
    return int(value)


def _hash(line: str) -> bytes:
    decoded = decode_canonical_base64(line)
    if decoded is None or len(decoded) != HASH_SIZE:
        raise LineageError(f"consistency proof line {line[:60]!r} is not a base64 32-byte hash")
    return decoded

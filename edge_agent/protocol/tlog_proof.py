"""C2SP ``tlog-proof@v1``: the text form of an inclusion proof, for transparency-log tooling.

A proof is, line by line (c2sp.org/tlog-proof)::

    c2sp.org/tlog-proof@v1
    extra <base64 of the entry bytes>        (optional)
    index <leaf index, decimal>
    <base64 hash of the inclusion path>      (zero or more, leaf's sibling first)
                                             (an empty line)
    <the checkpoint note, verbatim, signature lines included>

We put the logged entry bytes in ``extra``, so one file carries everything a verifier needs
(the spec leaves ``extra`` to the application and unauthenticated: the leaf hash binds it).

:func:`parse_tlog_proof` checks the layout strictly (size cap, UTF-8, canonical decimal and
base64, 32-byte hashes, at most :data:`MAX_PATH_HASHES`) and raises only
:class:`LineageError`; it verifies nothing. ``edge_agent.protocol.receipt.verify_tlog_proof``
does. This module does no I/O.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.errors import LineageError
from edge_agent.protocol.checkpoint import MAX_NOTE_BYTES, decode_canonical_base64
from edge_agent.protocol.merkle import HASH_SIZE

__all__ = [
    "HEADER",
    "MAX_PATH_HASHES",
    "MAX_TLOG_PROOF_BYTES",
    "TlogProof",
    "format_tlog_proof",
    "parse_tlog_proof",
]

HEADER = "c2sp.org/tlog-proof@v1"

MAX_PATH_HASHES = 64
"""Most hashes an inclusion path can hold: one per level of a tree of up to 2^64 leaves."""

MAX_TLOG_PROOF_BYTES = 128 * 1024
"""Largest proof accepted, in bytes: a 64 KiB entry in base64, a full path and a note."""

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_MAX_INDEX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class TlogProof:
    """A parsed proof: leaf ``index``, inclusion ``path``, checkpoint ``note`` (verbatim) and
    the unauthenticated ``extra`` bytes (our entry bytes), ``None`` when absent."""

    index: int
    path: tuple[bytes, ...]
    note: str
    extra: bytes | None


def format_tlog_proof(*, seq: int, path: Sequence[bytes], note: str, entry: bytes | None) -> str:
    """The proof text for leaf ``seq`` with ``path`` under the checkpoint ``note``.

    ``entry`` (the logged bytes) goes into the ``extra`` line when given.

    Raises:
        ValueError: a negative index, a path hash not 32 bytes or more than
            MAX_PATH_HASHES, an empty or oversize note or one not ending in a newline.
    """
    if isinstance(seq, bool) or not 0 <= seq <= _MAX_INDEX:
        raise ValueError(f"leaf index {seq!r} is not an integer from 0 to 2^64-1")
    if len(path) > MAX_PATH_HASHES or any(len(h) != HASH_SIZE for h in path):
        raise ValueError(f"an inclusion path is at most {MAX_PATH_HASHES} 32-byte hashes")
    if not note.endswith("\n") or len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise ValueError(f"a checkpoint note ends in a newline and is at most {MAX_NOTE_BYTES} B")
    lines = [HEADER]
    if entry is not None:
        lines.append(f"extra {base64.b64encode(entry).decode('ascii')}")
    lines.append(f"index {seq}")
    lines.extend(base64.b64encode(h).decode("ascii") for h in path)
    text = "".join(f"{line}\n" for line in lines) + "\n" + note
    if len(text.encode("utf-8")) > MAX_TLOG_PROOF_BYTES:
        raise ValueError(f"a tlog-proof is at most {MAX_TLOG_PROOF_BYTES} bytes")
    return text


def parse_tlog_proof(text: str | bytes) -> TlogProof:
    """Read a ``tlog-proof@v1`` text strictly, verifying nothing.

    Steps: 1. size cap and UTF-8; 2. the header line; 3. an optional ``extra`` line of
    canonical base64; 4. ``index`` in canonical decimal; 5. path lines, each the canonical
    base64 of a 32-byte hash, up to the empty line; 6. the rest is the note, non-empty and
    ending in a newline.

    Raises:
        LineageError: any step fails.
    """
    if len(text) > MAX_TLOG_PROOF_BYTES:
        raise LineageError(f"a tlog-proof is at most {MAX_TLOG_PROOF_BYTES} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LineageError("the tlog-proof is not UTF-8 text") from exc
    head, blank, note = text.partition("\n\n")
    lines = head.split("\n")
    if not blank or lines[0] != HEADER:
        raise LineageError(f"not a tlog-proof: the first line is not {HEADER!r}")
    rest = lines[1:]
    extra = _extra(rest[0]) if rest and rest[0].startswith("extra ") else None
    rest = rest[1:] if extra is not None else rest
    if not rest or not rest[0].startswith("index "):
        raise LineageError("the tlog-proof has no 'index N' line after its header")
    index_text = rest[0].removeprefix("index ")
    if not _DECIMAL.fullmatch(index_text) or int(index_text) > _MAX_INDEX:
        raise LineageError(f"tlog-proof index {index_text[:24]!r} is not a canonical decimal")
    path = tuple(_hash(line) for line in _bounded(rest[1:]))
    if not note or not note.endswith("\n") or len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise LineageError("the tlog-proof's checkpoint is missing, oversize or not ended")
    return TlogProof(int(index_text), path, note, extra)


def _extra(line: str) -> bytes:
    decoded = decode_canonical_base64(line.removeprefix("extra "))
    if decoded is None:
        raise LineageError("the tlog-proof's extra line is not canonical base64")
    return decoded


def _bounded(lines: list[str]) -> list[str]:
    if len(lines) > MAX_PATH_HASHES:
        raise LineageError(f"the tlog-proof's path has more than {MAX_PATH_HASHES} hashes")
    return lines


def _hash(line: str) -> bytes:
    decoded = decode_canonical_base64(line)
    if decoded is None or len(decoded) != HASH_SIZE:
        raise LineageError(f"tlog-proof path line {line[:60]!r} is not a base64 32-byte hash")
    return decoded

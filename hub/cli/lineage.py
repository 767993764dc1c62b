"""``edge-hub lineage verify``: check an exported device log offline, and detect forks.

Given the device's public key, verifies an export (chain, tree, checkpoint signatures,
consistency of its checkpoints) and, with ``--checkpoint``, compares it with other exports or
checkpoint notes of the same device: two validly signed, different roots for one tree size
mean the device's history was forked or rewritten (for example a state dir restored from an
old copy and continued).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_agent.errors import ConfigError, LineageError
from edge_agent.protocol.checkpoint import MAX_NOTE_BYTES
from edge_agent.protocol.keys import PublicKey, public_key_from_pem
from edge_agent.protocol.lineage_export import (
    MAX_HEADER_BYTES,
    ExportReport,
    checkpoint_of_note,
    compare_roots,
    decode_header,
    verify_export,
)
from edge_agent.support.cli import read_bounded
from edge_agent.support.lineage_files import read_export

__all__ = ["cmd_verify", "verify_file"]


def verify_file(path: Path, key: PublicKey) -> ExportReport:
    """Verify one export file.

    Raises:
        LineageError: the file is not a valid export of this key's device.
        ConfigError: the file cannot be read.
    """
    try:
        with path.open("rb") as handle:
            header, entries = read_export(handle, MAX_HEADER_BYTES)
            return verify_export(decode_header(header), entries, key)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _other_roots(path: Path, key: PublicKey) -> dict[int, bytes]:
    try:
        head = path.open("rb").read(1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head and head[0] >> 5 == 2:
        return dict(verify_file(path, key).roots)
    note = read_bounded(path, MAX_NOTE_BYTES, "checkpoint note")
    try:
        checkpoint = checkpoint_of_note(note.decode("utf-8"), key)
    except UnicodeDecodeError as exc:
        raise LineageError(f"{path} is neither an export nor a checkpoint note") from exc
    return {checkpoint.size: checkpoint.root}


def cmd_verify(args: argparse.Namespace) -> int:
    pem = read_bounded(args.device_key, 4096, "device key")
    try:
        key = public_key_from_pem(pem.decode("ascii", "replace"))
    except ValueError as exc:
        raise ConfigError(f"{args.device_key}: {exc}") from exc
    report = verify_file(args.file, key)
    for other in args.checkpoint:
        fork = compare_roots(report.roots, _other_roots(other, key))
        if fork is not None:
            raise LineageError(
                f"FORK: {args.file} and {other} carry two different signed roots for tree "
                f"size {fork}: the device log was rewritten or restored from an old copy",
                seq=fork - 1,
            )
    if args.json:
        document = {
            "file": str(args.file),
            "origin": report.origin,
            "start": report.start,
            "size": report.size,
            "checkpoints": len(report.roots),
            "consistent_with": [str(p) for p in args.checkpoint],
            "verified": True,
        }
        print(json.dumps(document, sort_keys=True))
        return 0
    count = len(report.roots)
    print(
        f"{args.file}: {_entries(report.start, report.size)} of {report.origin} verify "
        f"({count} signed checkpoint{'' if count == 1 else 's'})"
    )
    for other in args.checkpoint:
        print(f"{other}: consistent with {args.file} where they overlap")
    return 0


def _entries(start: int, size: int) -> str:
    """``entries 3..9``, ``entry 3`` or ``no entries``: the seqs an export holds."""
    if size <= start:
        return "no entries"
    if size == start + 1:
        return f"entry {start}"
    return f"entries {start}..{size - 1}"

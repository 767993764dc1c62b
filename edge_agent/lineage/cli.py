"""``edge-agent log ...``: show, verify, prove, receipt, checkpoint, consistency, export, replay,
prune, status, acknowledge-break.

Exit codes as the rest of the CLI (docs/cli.md): 0 success, 1 the log does not verify or
diverges, 2 bad arguments, 3 no agent state. ``show`` streams rows page by page, newest last
(``--reverse``: first), in a table as wide as the terminal whose cut fields end in ``…``
(``--wide``: none cut), and with ``-f`` follows new entries until Ctrl-C. Every reading
command works on a state directory opened read-only (:mod:`edge_agent.support.readonly`).

``receipt``, ``checkpoint`` and ``consistency`` write evidence anyone can check offline with
``edge-verify`` and the device's public key (docs/receipts.md): they sign only a log that
verifies (from its last signed checkpoint, as at start-up) and carry the hub witness's
cosignature whenever the device holds one (kept from the hub's acks). The witness keys are
the verifier-role keys of the trust root now in force.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edge_agent.errors import ConfigError, EdgeGovError, LineageError, StateError
from edge_agent.lineage.log import LOG_REASONS, LineageLog
from edge_agent.lineage.replay import replay
from edge_agent.lineage.store import FILE_MODE, LineageStore
from edge_agent.protocol.consistency_file import format_consistency_proof
from edge_agent.protocol.cosignature import Cosignature, verify_cosignature
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.lineage_entries import Entry, Kind, decode_entry
from edge_agent.protocol.lineage_export import (
    ExportHeader,
    encode_header,
    frame_item,
    verify_inclusion_proof,
)
from edge_agent.protocol.merkle import leaf_hash
from edge_agent.protocol.receipt import build_receipt, verify_receipt, verify_tlog_proof
from edge_agent.protocol.roles import Role
from edge_agent.protocol.tlog_proof import format_tlog_proof
from edge_agent.support.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    counter_arg,
    ellipsize,
    epilog,
    out_stream,
    terminal_width,
    text_arg,
    utc_text,
    wall_clock,
    write_out,
)
from edge_agent.trust.gate import Reason
from edge_agent.trust.restore import verify_stored_roots

__all__ = ["register"]

MAX_FILTER_CHARS = 4096
"""The longest subject, action or note accepted (a request field's own bound)."""
_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


_READ_EXITS = (
    (EXIT_OK, "done"),
    (EXIT_REFUSED, "the log cannot be read or does not verify"),
    (EXIT_USAGE, "a bad argument"),
    (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
)
_WRITE_EXITS = (
    (EXIT_OK, "written"),
    (EXIT_REFUSED, "the log does not verify (nothing is signed or written)"),
    (EXIT_USAGE, "a bad argument, or --out cannot be written"),
    (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
)
_SINCE_HELP = "from this time on: a duration back from now (2h, 30m, 7d) or an ISO time"
_FOLLOW_POLL_S = 0.5
"""How often ``log show --follow`` looks for entries committed since the last look."""


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``log`` and its subcommands to the ``edge-agent`` parser."""
    log = commands.add_parser(
        "log",
        help="the execution lineage",
        epilog=epilog(_READ_EXITS, "edge-agent log show --limit 20"),
    ).add_subparsers(dest="log_command", required=True, metavar="COMMAND")
    show = log.add_parser(
        "show",
        parents=[common],
        help="list entries, newest last",
        description="List lineage entries in a table as wide as the terminal ($COLUMNS): a "
        "cut field ends in '…' (the action and the rule are kept, the subject and resource "
        "cut first); --wide cuts nothing.",
        epilog=epilog(
            _READ_EXITS, "edge-agent log show --decision deny --since 1h -f", _FOLLOW_NOTE
        ),
    )
    show.add_argument("--since", type=_time_arg, help=_SINCE_HELP)
    show.add_argument(
        "--until", type=_time_arg, help="up to this time: a duration back (2h) or an ISO time"
    )
    show.add_argument(
        "--decision", choices=["allow", "deny"], help="only decisions with this outcome"
    )
    show.add_argument("--subject", type=_text_arg, help="only requests of this subject")
    show.add_argument("--action", type=_text_arg, help="only requests of this action")
    show.add_argument(
        "--reason",
        type=_reason_arg,
        help="only entries with this reason code, any the log holds, as the REASON column "
        "shows it (allowed, policy_denied, no_matching_rule, bundle_signature, ...)",
    )
    show.add_argument(
        "--kind",
        choices=[str(k) for k in Kind],
        metavar="KIND",
        help=f"only entries of this kind: {', '.join(str(k) for k in Kind)}",
    )
    show.add_argument(
        "--limit",
        type=_positive,
        default=50,
        help="show at most this many entries, the newest (default: %(default)s)",
    )
    show.add_argument("--reverse", action="store_true", help="newest first")
    show.add_argument(
        "--wide", action="store_true", help="cut nothing: every field whole, however wide"
    )
    show.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="then keep printing new entries as they are committed, until Ctrl-C (exit 0)",
    )
    show.set_defaults(handler=_cmd_show, reads_only=True)

    verify = log.add_parser(
        "verify",
        parents=[common],
        help="verify chain, tree, checkpoints",
        epilog=epilog(
            [
                (EXIT_OK, "the whole log verifies and extends the recorded head"),
                (EXIT_REFUSED, "it does not, or a break waits to be acknowledged"),
                (EXIT_USAGE, "a bad argument"),
                (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
            ],
            "edge-agent log verify --json",
        ),
    )
    verify.set_defaults(handler=_cmd_verify, reads_only=True)

    prove = log.add_parser(
        "prove",
        parents=[common],
        help="inclusion proof of one entry",
        epilog=epilog(_READ_EXITS, "edge-agent log prove 42"),
    )
    prove.add_argument("seq", type=_nonnegative, help="the entry's sequence number")
    prove.set_defaults(handler=_cmd_prove, reads_only=True)

    receipt = log.add_parser(
        "receipt",
        parents=[common],
        help="a receipt of one entry, verifiable offline",
        epilog=epilog(_WRITE_EXITS, "edge-agent log receipt 42 --out entry-42.receipt"),
    )
    receipt.add_argument("seq", type=_nonnegative, help="the entry's sequence number")
    receipt.add_argument(
        "--format",
        choices=["cose", "tlog-proof"],
        default="cose",
        help="an RFC 9942 COSE receipt (default) or C2SP tlog-proof text",
    )
    receipt.add_argument("--out", type=Path, required=True, help="the receipt file to write")
    receipt.add_argument("--force", action="store_true", help="replace --out if it is a file")
    receipt.set_defaults(handler=_cmd_receipt, reads_only=True)

    checkpoint = log.add_parser(
        "checkpoint",
        parents=[common],
        help="the signed (cosigned when held) checkpoint note",
        epilog=epilog(_WRITE_EXITS, "edge-agent log checkpoint --out checkpoint.txt"),
    )
    checkpoint.add_argument(
        "--size", type=_positive, help="tree size (default: the log's current size)"
    )
    checkpoint.add_argument("--out", type=Path, required=True, help="the note file to write")
    checkpoint.add_argument("--force", action="store_true", help="replace --out if it is a file")
    checkpoint.set_defaults(handler=_cmd_checkpoint, reads_only=True)

    consistency = log.add_parser(
        "consistency",
        parents=[common],
        help="consistency proof between two tree sizes",
        epilog=epilog(_WRITE_EXITS, "edge-agent log consistency 100 250 --out proof.txt"),
    )
    consistency.add_argument("old", type=_positive, metavar="OLD", help="the older tree size")
    consistency.add_argument("new", type=_positive, metavar="NEW", help="the newer tree size")
    consistency.add_argument("--out", type=Path, required=True, help="the proof file to write")
    consistency.add_argument("--force", action="store_true", help="replace --out if it is a file")
    consistency.set_defaults(handler=_cmd_consistency, reads_only=True)

    export = log.add_parser(
        "export",
        parents=[common],
        help="write the log for offline checks",
        epilog=epilog(_WRITE_EXITS, "edge-agent log export --out - --format jsonl | less"),
    )
    export.add_argument("--out", type=Path, required=True, help="the file to write (- for stdout)")
    export.add_argument("--force", action="store_true", help="replace --out if it is a file")
    export.add_argument("--since", type=_time_arg, help=_SINCE_HELP)
    export.add_argument(
        "--format",
        choices=["cbor", "jsonl"],
        default="cbor",
        help="framed CBOR for verifiers (default) or one JSON object per line",
    )
    export.set_defaults(handler=_cmd_export, reads_only=True)

    replay_cmd = log.add_parser(
        "replay",
        parents=[common],
        help="re-decide logged requests",
        epilog=epilog(
            [
                (EXIT_OK, "every decision replays as logged"),
                (EXIT_REFUSED, "a decision diverges, or the log cannot be read"),
                (EXIT_USAGE, "a bad argument"),
                (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
            ],
            "edge-agent log replay --since 24h --json",
        ),
    )
    replay_cmd.add_argument("--since", type=_time_arg, help=_SINCE_HELP)
    replay_cmd.set_defaults(handler=_cmd_replay, reads_only=True)

    prune = log.add_parser(
        "prune",
        parents=[common],
        help="drop entries before a checkpoint",
        epilog=epilog(_WRITE_EXITS, "edge-agent log prune --before 10000"),
    )
    prune.add_argument(
        "--before",
        type=_nonnegative,
        required=True,
        metavar="SEQ",
        help="drop entries before the last signed checkpoint at or below SEQ",
    )
    prune.add_argument(
        "--include-unacknowledged",
        action="store_true",
        help="also drop entries the hub has not acknowledged (they are then lost for good)",
    )
    prune.set_defaults(handler=_cmd_prune)

    status = log.add_parser(
        "status",
        parents=[common],
        help="size, watermark, checkpoints",
        epilog=epilog(_READ_EXITS, "edge-agent log status --json"),
    )
    status.set_defaults(handler=_cmd_status, reads_only=True)

    ack = log.add_parser(
        "acknowledge-break",
        parents=[common],
        help="start a new segment",
        epilog=epilog(
            [
                (EXIT_OK, "acknowledged: a new segment starts"),
                (EXIT_REFUSED, "an agent is running on the state directory"),
                (EXIT_USAGE, "a bad argument"),
                (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
            ],
            "edge-agent log acknowledge-break --note 'card restored from backup'",
        ),
    )
    ack.add_argument("--note", type=_note_arg, help="why, for the record")
    ack.set_defaults(handler=_cmd_ack)


_FOLLOW_NOTE = (
    "With -f the entries matching the filters are printed as they are committed (the "
    "database is polled read-only every half second) until Ctrl-C, which exits 0."
)


def _time_arg(text: str) -> int:
    match = _DURATION.fullmatch(text)
    if match:
        return wall_clock() - int(match[1]) * _UNITS[match[2]]
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration like 2h/30m/7d nor an ISO time like "
            "2026-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp())


_REASON_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _reason_arg(text: str) -> str:
    """Any reason code the log can hold: a decision's (``no_matching_rule``) and a trust
    transition's (``bundle_signature``, ``tampered``, ...), all lower-case snake_case."""
    if not _REASON_CODE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a reason code (lower-case letters, digits and _, as the REASON "
            "column shows: no_matching_rule, bundle_signature, ...)"
        )
    return text


def known_reasons() -> frozenset[str]:
    """Every reason code this agent records in an entry: a decision's (:class:`Reason`), a
    transition's own kind (:class:`Kind`: ``attestation_passed``, ...), the log's own
    (:data:`LOG_REASONS`: ``lineage_tampered``, ``retention``, ...), and the code of
    every refusal it records (each loaded :class:`EdgeGovError`'s ``code`` and ``codes``:
    ``edge-agent`` loads every class the trust state machine raises and records)."""
    codes = {str(reason) for reason in Reason} | {str(kind) for kind in Kind} | set(LOG_REASONS)
    pending: list[type[EdgeGovError]] = [EdgeGovError]
    while pending:
        error = pending.pop()
        codes.add(error.code)
        codes.update(error.codes)
        pending.extend(error.__subclasses__())
    codes.discard(EdgeGovError.code)
    return frozenset(codes)


def _notice_unknown_reason(args: argparse.Namespace) -> None:
    """Say once on stderr (not under ``-q`` or ``--json``, whose stdout stays the entries
    alone) that ``--reason`` names a code no entry of this agent can carry: the filter
    still runs (an older or newer agent's log may hold other codes), but an empty table
    would otherwise look like "no such entries yet"."""
    known = known_reasons()
    if args.reason is None or args.reason in known or args.json or args.quiet:
        return
    print(
        f"edge-agent: notice: no entry can carry reason {args.reason}; "
        f"known reasons: {', '.join(sorted(known))}",
        file=sys.stderr,
    )


_text_arg = text_arg(MAX_FILTER_CHARS)


def _note_arg(text: str) -> str:
    """``--note``: empty, or text as :func:`_text_arg` takes it."""
    return text and _text_arg(text)


_positive = counter_arg(1)
_nonnegative = counter_arg(0)


def _open(
    args: argparse.Namespace, verify_at_open: bool = False, record_breaks: bool = False
) -> LineageLog:
    """The device's lineage, checked against the head in the agent state. Only commands
    that act on a break record one; the others (reading) report it and change nothing."""
    from edge_agent.store import StateStore

    store = StateStore.open(args.state_dir)
    try:
        identity = store.load().identity
    finally:
        store.close()
    log = LineageLog.open(
        args.state_dir,
        identity.device_id,
        verify_at_open=verify_at_open,
        record_breaks=record_breaks,
    )
    if log.store is None:
        raise LineageError(log.fault or "the lineage cannot be opened")
    return log


def _open_for_evidence(args: argparse.Namespace) -> tuple[LineageLog, tuple[PublicKey, ...]]:
    """The device's lineage, verified from its last signed checkpoint against the recorded
    head (a break found is reported, not recorded), and the witness keys of the trust root
    in force: what ``receipt``, ``checkpoint`` and ``consistency`` sign and prove from.

    Raises:
        StateError: the state directory cannot be read.
        RootError: its trust roots do not verify.
        LineageError: the log cannot be opened or does not verify.
    """
    from edge_agent.store import StateStore

    store = StateStore.open(args.state_dir)
    try:
        stored = store.load()
    finally:
        store.close()
    root = verify_stored_roots(stored.roots)[-1]
    log = LineageLog.open(
        args.state_dir, stored.identity.device_id, verify_at_open=True, record_breaks=False
    )
    if log.store is None or log.fault is not None:
        _release(log)
        raise LineageError(
            f"{log.fault or 'the lineage cannot be opened'}; 'edge-agent log verify' says more"
        )
    return log, tuple(root.role(Role.VERIFIER).keys.values())


def _release(log: LineageLog) -> None:
    """Close the log without signing anything more."""
    if log.store is not None:
        log.store.close()
    if log.head is not None:
        log.head.close()


def _require_size(log: LineageLog, size: int, what: str) -> None:
    """``size`` (a tree size) lies in the stored log.

    Raises:
        ConfigError: it is beyond the log's end or before its base (pruned).
    """
    summary = log.summary()
    if size > summary.size:
        raise ConfigError(f"{what} {size} is beyond the log, which holds {summary.size} entries")
    if size < summary.base:
        raise ConfigError(
            f"{what} {size} was pruned: the log holds entries {summary.base} to {summary.size - 1}"
        )


def _cosignature(note: str, witnesses: tuple[PublicKey, ...]) -> Cosignature | None:
    try:
        return verify_cosignature(note, witnesses)
    except LineageError:
        return None


def _witnessed(cosignature: Cosignature | None) -> str:
    if cosignature is None:
        return "not cosigned by the hub witness yet (it is once the hub acknowledges it)"
    return f"cosigned by the hub witness at {utc_text(cosignature.time, '%Y-%m-%d %H:%M UTC')}"


def _filters(args: argparse.Namespace) -> tuple[str, list[object]]:
    clauses, params = [], list[object]()
    for column, value in (
        ("subject", args.subject),
        ("action", args.action),
        ("reason", args.reason),
        ("kind", args.kind),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if args.decision is not None:
        clauses.append("kind = 'decision' AND allowed = ?")
        params.append(int(args.decision == "allow"))
    if args.since is not None:
        clauses.append("time >= ?")
        params.append(args.since)
    if args.until is not None:
        clauses.append("time <= ?")
        params.append(args.until)
    return " AND ".join(clauses), params


def _cmd_show(args: argparse.Namespace) -> int:
    if args.follow and args.reverse:
        raise ConfigError("--follow prints new entries last: it cannot be used with --reverse")
    _notice_unknown_reason(args)
    log = _open(args)
    store = log.store
    assert store is not None
    where, params = _filters(args)
    # The page of the newest ``limit`` matches is read newest first; only ``limit`` rows
    # are ever held.
    rows = list(store.iter_rows(0, where, params, args.limit, descending=True))
    layout = None if args.json else _Layout.for_width(None if args.wide else terminal_width())
    if layout is not None:
        print(layout.header())
    last = -1
    for seq, data, _ in rows if args.reverse else reversed(rows):
        _print_entry(decode_entry(data, seq), layout)
        last = max(last, seq)
    if not args.follow:
        store.close()
        return EXIT_OK
    return _follow(store, where, params, max(last, store.tip().size - 1), layout)


def _follow(
    store: LineageStore,
    where: str,
    params: list[object],
    last: int,
    layout: _Layout | None,
) -> int:
    """Print the entries matching ``where`` committed after ``last``, polling until Ctrl-C
    (exit 0). A log opened for inspection is opened again when its files changed: an
    immutable view never sees new commits."""
    seen = _file_stamp(store.path)
    try:
        while True:
            sys.stdout.flush()
            time.sleep(_FOLLOW_POLL_S)
            if store.inspecting:
                stamp = _file_stamp(store.path)
                if stamp == seen:
                    continue
                seen = stamp
                store.close()
            for seq, data, _ in store.iter_rows(last + 1, where, params):
                _print_entry(decode_entry(data, seq), layout)
                last = seq
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        store.close()


def _file_stamp(path: Path) -> tuple[tuple[int, int, int] | None, ...]:
    """(inode, size, mtime) of the database and its WAL: what changes when a commit lands."""
    stamps: list[tuple[int, int, int] | None] = []
    for name in (path, path.with_name(path.name + "-wal")):
        try:
            info = name.stat()
        except FileNotFoundError:
            stamps.append(None)
        else:
            stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)


def _print_entry(entry: Entry, layout: _Layout | None) -> None:
    if layout is None:
        print(json.dumps(_entry_json(entry), sort_keys=True))
    else:
        print(layout.row(entry))


@dataclass(frozen=True, slots=True)
class _Layout:
    """The ``log show`` table: SEQ, TIME, DEC fixed; REASON, SUBJECT/ACTION and
    RESOURCE/RULE share the rest of the width (``what`` ``None``: nothing is cut,
    ``--wide``)."""

    reason: int
    who: int
    what: int | None

    @classmethod
    def for_width(cls, width: int | None) -> _Layout:
        if width is None:
            return cls(_MIN_REASON, _MIN_WHO, None)
        rest = max(width - _FIXED_COLUMNS, _MIN_REASON + _MIN_WHO + _MIN_WHAT + 2)
        reason = min(_MAX_REASON, max(_MIN_REASON, rest // 5))
        who = max(_MIN_WHO, min(_MAX_WHO, (rest - reason - 2) * 2 // 5))
        return cls(reason, who, rest - reason - who - 2)

    def header(self) -> str:
        return (
            f"{'SEQ':>7} {'TIME (UTC)':<16} {'DEC':<5} {'REASON':<{self.reason}} "
            f"{'SUBJECT/ACTION':<{self.who}} RESOURCE/RULE"
        )

    def row(self, entry: Entry) -> str:
        """One line: a decision's subject, action, resource and rule, or a trust
        transition's kind and detail; a field too long for its column ends in ``…``."""
        when = utc_text(entry.time, "%Y-%m-%d %H:%M")
        head = f"{entry.seq:>7} {when:<16}"
        request = entry.request
        cut = self.what is not None
        reason = ellipsize(entry.reason, self.reason) if cut else entry.reason
        if request is None:
            what = f"{entry.kind}: {entry.detail}"
            if self.what is not None:
                what = ellipsize(what, self.who + 1 + self.what)
            return f"{head} {'trust':<5} {reason:<{self.reason}} {what}".rstrip()
        verdict = "allow" if entry.allowed else "deny"
        who = _pair(request.subject, request.action, self.who if cut else None)
        what = _pair(request.resource, entry.rule or "-", self.what)
        return f"{head} {verdict:<5} {reason:<{self.reason}} {who:<{self.who}} {what}".rstrip()


_FIXED_COLUMNS = 7 + 1 + 16 + 1 + 5 + 1
"""SEQ, TIME and DEC with the spaces after them."""
_MIN_REASON, _MAX_REASON, _MIN_WHO, _MAX_WHO, _MIN_WHAT = 16, 24, 14, 40, 12


def _pair(first: str, second: str, width: int | None) -> str:
    """``first second`` in ``width`` columns: ``first`` (a subject, a resource) is cut
    before ``second`` (the action, the rule: the part that explains the row), each cut
    ending in ``…``; ``None`` cuts nothing."""
    text = f"{first} {second}"
    if width is None or len(text) <= width:
        return text
    room = width - len(second) - 1
    if room >= _MIN_KEPT:
        return f"{ellipsize(first, room)} {second}"
    return ellipsize(text, width)


_MIN_KEPT = 4
"""The fewest characters of a subject or resource kept before the second part is cut too."""


def _entry_json(entry: Entry) -> dict[str, object]:
    """The entry as ``log show --json`` prints it; ``parent`` only on a decision that cited
    one, so every other entry prints as before."""
    request = entry.request
    shown: dict[str, object] = {
        "seq": entry.seq,
        "time": entry.time,
        "kind": str(entry.kind),
        "decision": "allow" if entry.allowed else "deny",
        "reason": entry.reason,
        "rule": entry.rule,
        "detail": entry.detail,
        "bundle_digest": entry.bundle_digest.hex() if entry.bundle_digest else None,
        "bundle_version": entry.bundle_version,
        "prev": entry.prev.hex(),
        "request": None
        if request is None
        else {
            "subject": request.subject,
            "action": request.action,
            "resource": request.resource,
            "context": dict(request.context),
            "selectors": list(request.selectors),
        },
    }
    parent = request.parent if request is not None else None
    if parent is not None:
        facts = parent.facts
        shown["parent"] = {
            "directory_version": parent.directory_version,
            "refusal": parent.refusal or None,
            "device": facts.device if facts else None,
            "seq": facts.seq if facts else None,
            "leaf_hash": facts.leaf_hash.hex() if facts else None,
            "depth": facts.depth if facts else None,
            "groups": list(facts.groups) if facts else None,
            "subject": facts.subject if facts else None,
            "action": facts.action if facts else None,
            "resource": facts.resource if facts else None,
            "time": facts.time if facts else None,
        }
    return shown


def _cmd_verify(args: argparse.Namespace) -> int:
    """OK only when the whole log verifies, extends the head recorded in the agent state,
    and no break waits to be acknowledged; otherwise FAIL and exit 1."""
    try:
        log = _open(args)
        report = log.verify()
        recorded = log.recorded_break()
    except LineageError as exc:
        return _verify_failed(args, exc.code, str(exc))
    assert log.store is not None
    log.store.close()
    if recorded is not None:
        return _verify_failed(args, "lineage_break", f"unacknowledged lineage break: {recorded}")
    if args.json:
        _print_json(
            {
                "ok": True,
                "base": report.base,
                "size": report.size,
                "checkpoints": report.checkpoints,
                "last_checkpoint": report.last_checkpoint,
                "unsigned_tail": report.unsigned_tail,
            }
        )
        return EXIT_OK
    held = (
        f"entries {report.base} to {report.size - 1}"
        if report.size > report.base
        else "no entries yet"
    )
    last = (
        "none signed yet"
        if report.last_checkpoint is None
        else f"the last at size {report.last_checkpoint}"
    )
    print(
        f"lineage OK: {held}, {_count(report.checkpoints, 'signed checkpoint')} ({last}), "
        f"{_count(report.unsigned_tail, 'entry', 'entries')} after the last checkpoint"
    )
    return EXIT_OK


def _verify_failed(args: argparse.Namespace, code: str, message: str) -> int:
    """``log verify``'s verdict on a log that does not verify (exit 1)."""
    if args.json:
        _print_json({"ok": False, "code": code, "message": message})
    else:
        print(f"lineage FAIL: {message}")
    return EXIT_REFUSED


def _count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 rule``, ``3 rules``, ``1 entry``, ``2 entries``."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def _print_json(document: object) -> None:
    print(json.dumps(document, sort_keys=True))


def _cmd_prove(args: argparse.Namespace) -> int:
    log = _open(args)
    assert log.key is not None
    summary = log.summary()
    if not summary.base <= args.seq < summary.size:
        raise ConfigError(
            f"entry {args.seq} is not in the log (it holds entries {summary.base} to "
            f"{summary.size - 1})"
        )
    proven = log.prove(args.seq, wall_clock())
    verify_inclusion_proof(proven, log.key.public, log.origin)
    print(
        json.dumps(
            {
                "seq": proven.seq,
                "entry": base64.b64encode(proven.entry).decode(),
                "entry_json": _entry_json(decode_entry(proven.entry, proven.seq)),
                "tree_size": proven.tree_size,
                "proof": [base64.b64encode(h).decode() for h in proven.proof],
                "checkpoint": proven.checkpoint,
            },
            indent=2,
        )
    )
    return 0


def _cmd_receipt(args: argparse.Namespace) -> int:
    """Prove the entry against the smallest cosigned checkpoint holding it (else the latest
    signed one, signed now when none covers it), sign the receipt with the device key,
    check it as ``edge-verify`` would, and write it."""
    log, witnesses = _open_for_evidence(args)
    try:
        key = log.key
        assert key is not None
        summary = log.summary()
        if args.seq < summary.base:
            raise ConfigError(
                f"entry {args.seq} was pruned: the log holds entries {summary.base} to "
                f"{summary.size - 1}"
            )
        if args.seq >= summary.size:
            raise ConfigError(
                f"entry {args.seq} is not in the log (it holds entries {summary.base} to "
                f"{summary.size - 1})"
            )
        now = wall_clock()
        proven = log.prove(args.seq, now, witnesses=witnesses)
    finally:
        _release(log)
    cosignature = _cosignature(proven.checkpoint, witnesses)
    held = witnesses if cosignature else ()
    if args.format == "cose":
        data = build_receipt(
            entry=proven.entry,
            seq=proven.seq,
            tree_size=proven.tree_size,
            path=proven.proof,
            note=proven.checkpoint,
            signer=key,
            now=now,
        )
        verify_receipt(data, device_key=key.public, witness_keys=held)
    else:
        data = format_tlog_proof(
            seq=proven.seq, path=proven.proof, note=proven.checkpoint, entry=proven.entry
        ).encode()
        verify_tlog_proof(data, device_key=key.public, witness_keys=held)
    # A receipt holds the entry (subjects, resources): the owner's alone, as the log.
    write_out(args.out, data, mode=FILE_MODE, force=args.force, state_dir=args.state_dir)
    kind = decode_entry(proven.entry, proven.seq).kind
    if args.json:
        _print_json(
            {
                "out": str(args.out),
                "seq": proven.seq,
                "kind": str(kind),
                "format": args.format,
                "tree_size": proven.tree_size,
                "cosigned": cosignature is not None,
            }
        )
        return EXIT_OK
    print(
        f"receipt of entry {proven.seq} ({kind}) written to {args.out}: proven against the "
        f"checkpoint at size {proven.tree_size}, {_witnessed(cosignature)}"
    )
    return EXIT_OK


def _cmd_checkpoint(args: argparse.Namespace) -> int:
    """Write the checkpoint note at ``--size`` (default: the current size), signing one
    from the stored tree when none is stored there; the cosigned note when the device
    holds it."""
    log, witnesses = _open_for_evidence(args)
    try:
        size = log.size if args.size is None else args.size
        if size == 0:
            raise ConfigError("the log is empty: there is no checkpoint to write")
        _require_size(log, size, "tree size")
        note = log.checkpoint_note(size, wall_clock())
    finally:
        _release(log)
    write_out(args.out, note.encode(), mode=0o644, force=args.force, state_dir=args.state_dir)
    cosignature = _cosignature(note, witnesses)
    if args.json:
        _print_json({"out": str(args.out), "size": size, "cosigned": cosignature is not None})
        return EXIT_OK
    print(f"checkpoint at size {size} written to {args.out}: {_witnessed(cosignature)}")
    return EXIT_OK


def _cmd_consistency(args: argparse.Namespace) -> int:
    """Write the consistency proof from tree size OLD to NEW, from stored nodes."""
    if args.old > args.new:
        raise ConfigError(f"OLD ({args.old}) is larger than NEW ({args.new})")
    log, _ = _open_for_evidence(args)
    try:
        _require_size(log, args.new, "NEW")
        _require_size(log, args.old, "OLD")
        proof = log.consistency(args.old, args.new)
    finally:
        _release(log)
    text = format_consistency_proof(old=args.old, new=args.new, hashes=proof)
    write_out(args.out, text.encode(), mode=0o644, force=args.force, state_dir=args.state_dir)
    if args.json:
        _print_json({"out": str(args.out), "old": args.old, "new": args.new, "hashes": len(proof)})
        return EXIT_OK
    print(
        f"consistency proof from size {args.old} to size {args.new} "
        f"({_count(len(proof), 'hash', 'hashes')}) written to {args.out}"
    )
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    """Write the log from ``--since`` with its checkpoints, signing one at the end first
    (not stored when the state is only inspected) so every entry is covered; ``--out -``
    writes stdout and says what it wrote on stderr."""
    to_stdout = str(args.out) == "-"
    log = _open(args)
    store = log.store
    assert store is not None
    with _export_stream(args, to_stdout) as out:
        # A broken log is exported as it is, evidence; it is never signed (nor an empty one).
        size = store.tip().size
        signed = log.checkpoint_note(size, wall_clock()) if log.fault is None and size else None
        tip = store.tip()
        start = tip.base
        if args.since is not None:
            first = next(store.iter_rows(tip.base, "time >= ?", [args.since], 1), None)
            start = first[0] if first else tip.size
        prev = None
        if start > tip.base:
            prev = leaf_hash(next(d for _, d, _ in store.iter_rows(start - 1, limit=1)))
        elif start == tip.base:
            prev = tip.base_prev
        notes = [c.note for c in store.checkpoints(start) if c.size <= tip.size]
        if signed is not None and signed not in notes and tip.size > start:
            notes.append(signed)
        header = ExportHeader(
            log.origin, start, prev, store.frontier(start).hashes, tip.size, tuple(notes)
        )
        if args.format == "cbor":
            out.write(frame_item(encode_header(header)))
        else:
            first_line = {"origin": log.origin, "start": start, "size": tip.size}
            out.write(json.dumps(first_line | {"checkpoints": notes}).encode() + b"\n")
        for seq, data, _ in store.iter_rows(start):
            if seq >= tip.size:
                break
            if args.format == "cbor":
                out.write(frame_item(data))
            else:
                item = _entry_json(decode_entry(data, seq)) | {"cbor": data.hex()}
                out.write(json.dumps(item, sort_keys=True).encode() + b"\n")
    store.close()
    held = f"entries {start} to {tip.size - 1}" if tip.size > start else "no entries"
    where = "stdout" if to_stdout else str(args.out)
    if args.json and not to_stdout:
        _print_json({"out": where, "start": start, "size": tip.size, "format": args.format})
    elif not (to_stdout and args.quiet):
        print(f"exported {held} to {where}", file=sys.stderr if to_stdout else sys.stdout)
    return EXIT_OK


@contextlib.contextmanager
def _export_stream(args: argparse.Namespace, to_stdout: bool) -> Iterator[IO[bytes]]:
    """Where ``log export`` writes: stdout's bytes, or ``--out`` created owner-only (a
    decision names subjects and resources: the export is the owner's alone, as the log),
    as every ``--out`` is (:func:`out_stream`: never over an existing file without
    ``--force``, never inside the state directory).

    Raises:
        ConfigError: ``--out`` is refused or cannot be written.
    """
    if to_stdout:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with out_stream(args.out, mode=FILE_MODE, force=args.force, state_dir=args.state_dir) as out:
        yield out


def _cmd_replay(args: argparse.Namespace) -> int:
    log = _open(args)
    assert log.store is not None
    report = replay(args.state_dir, log.store, args.since)
    log.store.close()
    verdict = EXIT_REFUSED if report.divergences else EXIT_OK
    if args.json:
        _print_json(
            {
                "ok": not report.divergences,
                "replayed": report.replayed,
                "skipped": report.skipped,
                "divergent": len(report.divergences),
                "divergences": [
                    {"seq": d.seq, "why": d.why} for d in report.divergences[:_MAX_SHOWN]
                ],
            }
        )
        return verdict
    for divergence in report.divergences[:_MAX_SHOWN]:
        print(f"DIVERGED seq {divergence.seq}: {divergence.why}")
    print(
        f"replayed {_count(report.replayed, 'decision')}, skipped {report.skipped}, "
        f"{len(report.divergences)} divergent"
    )
    return verdict


_MAX_SHOWN = 100
"""The most divergences ``log replay`` lists (the count says how many there are)."""


def _cmd_prune(args: argparse.Namespace) -> int:
    log = _open(args)
    before = log.summary()
    pruned = log.prune_before(
        args.before, wall_clock(), include_unacknowledged=args.include_unacknowledged
    )
    after = log.summary()
    log.close(wall_clock())
    if args.json:
        _print_json({"pruned": pruned, "base": after.base, "size": after.size})
        return EXIT_OK
    if pruned:
        print(
            f"pruned entries {before.base} to {after.base - 1}; the log verifies from the "
            f"signed checkpoint at {after.base}"
        )
    else:
        print(
            f"nothing to prune: no signed checkpoint between entry {before.base} and {args.before}"
        )
    if not args.include_unacknowledged and before.acknowledged < args.before:
        print(
            f"entries from {max(before.acknowledged, after.base)} on are not acknowledged by the "
            "hub and were kept (--include-unacknowledged drops them too)"
        )
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    log = _open(args, verify_at_open=True)
    summary = log.summary()
    log.close(wall_clock())
    checkpoint = summary.last_checkpoint
    if args.json:
        print(
            json.dumps(
                {
                    "base": summary.base,
                    "size": summary.size,
                    "acknowledged": summary.acknowledged,
                    "unacknowledged": summary.unacknowledged,
                    "last_checkpoint": None
                    if checkpoint is None
                    else {"size": checkpoint.size, "time": checkpoint.time},
                    "available": summary.problem is None,
                    "problem": summary.problem,
                },
                sort_keys=True,
            )
        )
        return 0
    if summary.size > summary.base:
        print(f"entries       {summary.base} to {summary.size - 1} stored ({summary.size} in all)")
    else:
        print(f"entries       none stored ({summary.size} in all, {summary.base} pruned)")
    print(
        f"acknowledged  {summary.acknowledged} by the hub, {summary.unacknowledged} waiting "
        "to be shipped (kept until acknowledged)"
    )
    if checkpoint is None:
        print("checkpoint    none signed yet")
    else:
        when = utc_text(checkpoint.time, "%Y-%m-%d %H:%M UTC")
        print(f"checkpoint    at size {checkpoint.size}, signed {when}")
    print(f"lineage       {'OK' if summary.problem is None else 'UNAVAILABLE: ' + summary.problem}")
    return 0


def _cmd_ack(args: argparse.Namespace) -> int:
    """Acknowledge the break with no agent running: a running agent keeps the log it opened
    (and the gate closed), so it is stopped first and started again after."""
    from edge_agent.store import agent_lock

    with agent_lock(args.state_dir, exclusive=True) as alone:
        if not alone:
            raise StateError(
                f"an agent is running on {args.state_dir}: stop the agent first "
                "('systemctl stop edge-agent'), acknowledge the break, then start it again"
            )
        log = _open(args, verify_at_open=True, record_breaks=True)
        seq = log.acknowledge_break(wall_clock(), args.note or "")
        log.close(wall_clock())
    if args.json:
        _print_json({"acknowledged": True, "segment_start": seq})
    else:
        print(f"lineage break acknowledged; new segment starts at entry {seq}")
    return EXIT_OK

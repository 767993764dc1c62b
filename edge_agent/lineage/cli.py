"""``edge-agent log ...``: show, verify, prove, receipt, checkpoint, consistency, export, replay,
prune, status, acknowledge-break.

Exit codes as the rest of the CLI: 0 success, 1 the log does not verify or diverges, 2 bad
arguments. ``show`` streams rows page by page, newest last, in an 80-column table.

``receipt``, ``checkpoint`` and ``consistency`` write evidence anyone can check offline with
``edge-verify`` and the device's public key (docs/receipts.md): they sign only a log that
verifies (from its last signed checkpoint, as at start-up) and carry the hub witness's
cosignature whenever the device holds one (kept from the hub's acks). The witness keys are
the verifier-role keys of the trust root now in force.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
from pathlib import Path

from edge_agent.errors import ConfigError, LineageError, StateError
from edge_agent.lineage.log import LineageLog
from edge_agent.lineage.replay import replay
from edge_agent.lineage.store import FILE_MODE
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
from edge_agent.support.cli import counter_arg, utc_text, wall_clock, write_out
from edge_agent.trust.gate import Reason
from edge_agent.trust.restore import verify_stored_roots

__all__ = ["register"]

_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``log`` and its subcommands to the ``edge-agent`` parser."""
    log = commands.add_parser("log", help="the execution lineage").add_subparsers(
        dest="log_command", required=True, metavar="COMMAND"
    )
    show = log.add_parser("show", parents=[common], help="list entries, newest last")
    show.add_argument("--since", type=_time_arg)
    show.add_argument("--until", type=_time_arg)
    show.add_argument("--decision", choices=["allow", "deny"])
    show.add_argument("--subject")
    show.add_argument("--action")
    show.add_argument("--reason", type=_reason_arg)
    show.add_argument("--kind", choices=[str(k) for k in Kind], help="only entries of this kind")
    show.add_argument("--limit", type=_positive, default=50)
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(handler=_cmd_show)

    verify = log.add_parser("verify", parents=[common], help="verify chain, tree, checkpoints")
    verify.set_defaults(handler=_cmd_verify)

    prove = log.add_parser("prove", parents=[common], help="inclusion proof of one entry")
    prove.add_argument("seq", type=_nonnegative)
    prove.set_defaults(handler=_cmd_prove)

    receipt = log.add_parser(
        "receipt", parents=[common], help="a receipt of one entry, verifiable offline"
    )
    receipt.add_argument("seq", type=_nonnegative)
    receipt.add_argument(
        "--format",
        choices=["cose", "tlog-proof"],
        default="cose",
        help="an RFC 9942 COSE receipt (default) or C2SP tlog-proof text",
    )
    receipt.add_argument("--out", type=Path, required=True)
    receipt.add_argument("--force", action="store_true", help="replace --out if it is a file")
    receipt.set_defaults(handler=_cmd_receipt)

    checkpoint = log.add_parser(
        "checkpoint", parents=[common], help="the signed (cosigned when held) checkpoint note"
    )
    checkpoint.add_argument(
        "--size", type=_positive, help="tree size (default: the log's current size)"
    )
    checkpoint.add_argument("--out", type=Path, required=True)
    checkpoint.add_argument("--force", action="store_true", help="replace --out if it is a file")
    checkpoint.set_defaults(handler=_cmd_checkpoint)

    consistency = log.add_parser(
        "consistency", parents=[common], help="consistency proof between two tree sizes"
    )
    consistency.add_argument("old", type=_positive, metavar="OLD")
    consistency.add_argument("new", type=_positive, metavar="NEW")
    consistency.add_argument("--out", type=Path, required=True)
    consistency.add_argument("--force", action="store_true", help="replace --out if it is a file")
    consistency.set_defaults(handler=_cmd_consistency)

    export = log.add_parser("export", parents=[common], help="write the log for offline checks")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--since", type=_time_arg)
    export.add_argument("--format", choices=["cbor", "jsonl"], default="cbor")
    export.set_defaults(handler=_cmd_export)

    replay_cmd = log.add_parser("replay", parents=[common], help="re-decide logged requests")
    replay_cmd.add_argument("--since", type=_time_arg)
    replay_cmd.set_defaults(handler=_cmd_replay)

    prune = log.add_parser("prune", parents=[common], help="drop entries before a checkpoint")
    prune.add_argument("--before", type=_nonnegative, required=True, metavar="SEQ")
    prune.add_argument(
        "--include-unacknowledged",
        action="store_true",
        help="also drop entries the hub has not acknowledged (they are then lost for good)",
    )
    prune.set_defaults(handler=_cmd_prune)

    status = log.add_parser("status", parents=[common], help="size, watermark, checkpoints")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_cmd_status)

    ack = log.add_parser("acknowledge-break", parents=[common], help="start a new segment")
    ack.add_argument("--note", default="", help="why, for the record")
    ack.set_defaults(handler=_cmd_ack)


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


def _reason_arg(text: str) -> str:
    known = [str(r) for r in Reason]
    if text not in known:
        raise argparse.ArgumentTypeError(f"unknown reason code {text!r}; one of {', '.join(known)}")
    return text


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
    log = _open(args)
    assert log.store is not None
    where, params = _filters(args)
    # Newest last: the page of the newest ``limit`` matches is read newest first, then
    # printed in order; only ``limit`` rows are ever held.
    rows = list(log.store.iter_rows(0, where, params, args.limit, descending=True))
    if not args.json:
        print(
            f"{'SEQ':>7} {'TIME (UTC)':<16} {'DEC':<5} {'REASON':<16} {'SUBJECT/ACTION':<16} "
            "RESOURCE/RULE"
        )
    for seq, data, _ in reversed(rows):
        entry = decode_entry(data, seq)
        print(json.dumps(_entry_json(entry), sort_keys=True) if args.json else _row(entry))
    log.store.close()
    return 0


def _row(entry: Entry) -> str:
    """One 80-column line: a decision's subject, action, resource and rule, or a trust
    transition's kind and detail."""
    when = utc_text(entry.time, "%Y-%m-%d %H:%M")
    request = entry.request
    head = f"{entry.seq:>7} {when:<16}"
    if request is None:
        what = f"{entry.kind}: {entry.detail}"
        return f"{head} {'trust':<5} {entry.reason[:16]:<16} {what[:32]}"
    verdict = "allow" if entry.allowed else "deny"
    who = f"{request.subject} {request.action}"
    what = f"{request.resource} {entry.rule or '-'}"
    return f"{head} {verdict:<5} {entry.reason[:16]:<16} {who[:16]:<16} {what[:15]}"


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
        print(f"lineage FAIL: {exc}")
        return 1
    assert log.store is not None
    log.store.close()
    if recorded is not None:
        print(f"lineage FAIL: unacknowledged lineage break: {recorded}")
        return 1
    print(
        f"lineage OK: entries {report.base}..{report.size - 1}, {report.checkpoints} signed "
        f"checkpoints (last at size {report.last_checkpoint}), "
        f"{report.unsigned_tail} entries after the last checkpoint"
    )
    return 0


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
    write_out(args.out, data, mode=FILE_MODE, force=args.force)
    kind = decode_entry(proven.entry, proven.seq).kind
    print(
        f"receipt of entry {proven.seq} ({kind}) written to {args.out}: proven against the "
        f"checkpoint at size {proven.tree_size}, {_witnessed(cosignature)}"
    )
    return 0


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
    write_out(args.out, note.encode(), mode=0o644, force=args.force)
    print(
        f"checkpoint at size {size} written to {args.out}: "
        f"{_witnessed(_cosignature(note, witnesses))}"
    )
    return 0


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
    write_out(args.out, text.encode(), mode=0o644, force=args.force)
    print(
        f"consistency proof from size {args.old} to size {args.new} ({len(proof)} hashes) "
        f"written to {args.out}"
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    log = _open(args)
    store = log.store
    assert store is not None
    if log.fault is None:
        # A broken log is exported as it is, evidence; it is never signed.
        log.checkpoint(wall_clock())
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
    notes = tuple(c.note for c in store.checkpoints(start) if c.size <= tip.size)
    header = ExportHeader(log.origin, start, prev, store.frontier(start).hashes, tip.size, notes)
    # Decisions name subjects and resources: the export is the owner's alone, as the log.
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        if args.format == "cbor":
            out.write(frame_item(encode_header(header)))
        else:
            out.write(
                json.dumps(
                    {
                        "origin": log.origin,
                        "start": start,
                        "size": tip.size,
                        "checkpoints": list(notes),
                    }
                ).encode()
                + b"\n"
            )
        for seq, data, _ in store.iter_rows(start):
            if seq >= tip.size:
                break
            if args.format == "cbor":
                out.write(frame_item(data))
            else:
                item = _entry_json(decode_entry(data, seq)) | {"cbor": data.hex()}
                out.write(json.dumps(item, sort_keys=True).encode() + b"\n")
    print(f"exported entries {start}..{tip.size - 1} to {args.out}")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    log = _open(args)
    assert log.store is not None
    report = replay(args.state_dir, log.store, args.since)
    for divergence in report.divergences[:100]:
        print(f"DIVERGED seq {divergence.seq}: {divergence.why}")
    print(
        f"replayed {report.replayed} decisions, skipped {report.skipped}, "
        f"{len(report.divergences)} divergent"
    )
    return 1 if report.divergences else 0


def _cmd_prune(args: argparse.Namespace) -> int:
    log = _open(args)
    before = log.summary()
    pruned = log.prune_before(
        args.before, wall_clock(), include_unacknowledged=args.include_unacknowledged
    )
    after = log.summary()
    log.close(wall_clock())
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
    return 0


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
    print(f"entries       {summary.base} to {summary.size - 1} stored ({summary.size} in all)")
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
        seq = log.acknowledge_break(wall_clock(), args.note)
        print(f"lineage break acknowledged; new segment starts at entry {seq}")
        log.close(wall_clock())
    return 0

"""The ``edge-verify`` command line: ``receipt``, ``consistency`` and ``chain``, text or
``--json``.

Exit codes: 0 when every step holds (receipt), the checkpoints are consistent, or every link
of a chain holds; 1 when a step fails (naming it and why; for a chain, the link too), or a
fork or an unproven pair; 2 for usage errors and files that cannot be read or keys that
cannot be parsed. With ``--json`` every outcome is one JSON object on stdout: a verdict
(``ok``, ``steps``, and ``error`` naming the step that failed), or a usage error as every
edgegov command prints one (``error``, ``code``, ``message``, ``exit``, and ``path`` or
``field``; docs/cli.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn

from edge_agent import __version__
from edge_agent.errors import ChainError, ConfigError, EdgeGovError, LineageError, ReceiptError
from edge_agent.policy.bundle import compile_bundle_policy
from edge_agent.policy.engine import evaluate
from edge_agent.protocol.bundle import claimed_region, verify_bundle
from edge_agent.protocol.chain import MAX_CHAIN_BYTES, ChainReport, Decide, verify_chain
from edge_agent.protocol.checkpoint import MAX_NOTE_BYTES, Checkpoint, parse_origin
from edge_agent.protocol.consistency_file import (
    MAX_CONSISTENCY_FILE_BYTES,
    ConsistencyReport,
    Verdict,
    parse_consistency_proof,
    verify_consistency_files,
)
from edge_agent.protocol.cosignature import select_witnesses
from edge_agent.protocol.keys import PublicKey, public_key_from_pem
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES, MAX_ROOT_BYTES
from edge_agent.protocol.lineage_entries import Entry
from edge_agent.protocol.receipt import (
    MAX_RECEIPT_BYTES,
    ReceiptReport,
    Step,
    StepResult,
    verify_receipt,
    verify_tlog_proof,
)
from edge_agent.protocol.root import TrustRoot, verify_trusted_root
from edge_agent.protocol.tlog_proof import HEADER as TLOG_PROOF_HEADER
from edge_agent.protocol.tlog_proof import MAX_TLOG_PROOF_BYTES
from edge_agent.support.cli import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_STDOUT_GONE,
    EXIT_USAGE,
    CliParser,
    epilog,
    fail,
    path_error,
    printable_output,
    read_regular,
    wants_json,
)

__all__ = ["main"]

PROG = "edge-verify"
EXIT_FAILED = EXIT_REFUSED
_EXITS = (
    (EXIT_OK, "verified"),
    (EXIT_FAILED, "not verified: a step failed (named, with why)"),
    (EXIT_USAGE, "a bad argument, an unreadable file or a key that does not parse"),
)
_MAX_RECEIPT_FILE = max(MAX_RECEIPT_BYTES + MAX_BUNDLE_BYTES + 16, MAX_TLOG_PROOF_BYTES)
_MAX_PEM_BYTES = 4096


class _UsageError(Exception):
    """A bad argument or an unreadable file or key: exit 2."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class _Parser(CliParser):
    """The shared parser, its usage errors returned by :func:`main` (exit 2) rather than
    raised as ``SystemExit``."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


@dataclass(frozen=True, slots=True)
class _Keys:
    device: PublicKey
    witnesses: tuple[PublicKey, ...]
    """The ``--witness-key`` keys, as given."""
    root: TrustRoot | None
    trusted: tuple[PublicKey, ...]
    """Every witness key: those given and the root's verifier keys."""


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    as_json = wants_json(args_list)
    printable_output()
    try:
        args = _parser().parse_args(args_list)
        if args.command == "receipt":
            return _receipt(args)
        if args.command == "chain":
            return _chain(args)
        return _consistency(args)
    except _UsageError as exc:
        return fail(PROG, exc, False, EXIT_USAGE, as_json=as_json, reason="bad_argument")
    except BrokenPipeError:
        return EXIT_STDOUT_GONE
    except OSError as exc:
        problem = path_error(exc)
        if problem is None:
            return _internal(exc, as_json)
        return fail(PROG, problem, False, EXIT_USAGE, as_json=as_json)
    except Exception as exc:
        return _internal(exc, as_json)


def _internal(exc: Exception, as_json: bool) -> int:
    """Report a fault of ours: one line, exit 70."""
    internal = RuntimeError(f"internal error: {exc} (please report it)")
    return fail(PROG, internal, False, EXIT_INTERNAL, as_json=as_json)


def _parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="Verify edgegov decision receipts and checkpoint consistency from files "
        "alone (no state directory, database or network).",
        epilog=epilog(_EXITS, "edge-verify receipt entry-42.receipt --device-key gw-001.pem"),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    receipt = commands.add_parser(
        "receipt",
        help="verify a receipt (COSE transparent statement) or a C2SP tlog-proof",
        description="Verify a decision receipt step by step: entry, leaf hash, inclusion "
        "path, root, receipt signature, checkpoint signature by the device, cosignature by "
        "the hub witness, and (with --root and the bundle) the bundle's policy signature.",
        epilog=epilog(
            _EXITS,
            "edge-verify receipt entry-42.receipt --device-key gw-001.pem --root root.cbor --json",
        ),
    )
    receipt.add_argument("file", help="the receipt (.receipt, COSE) or .tlog-proof file")
    receipt.add_argument("--bundle", help="the policy bundle the entry names, if not embedded")
    consistency = commands.add_parser(
        "consistency",
        help="check two checkpoints of one device log: consistent, fork or not proven",
        epilog=epilog(
            [
                (EXIT_OK, "consistent"),
                (EXIT_FAILED, "a fork, or the pair is not proven consistent"),
                (EXIT_USAGE, "a bad argument or a file that cannot be read"),
            ],
            "edge-verify consistency old.txt new.txt --proof proof.txt --device-key gw-001.pem",
        ),
    )
    consistency.add_argument("old", help="a checkpoint note file")
    consistency.add_argument("new", help="another checkpoint note file of the same device")
    consistency.add_argument("--proof", help="the consistency-proof file between their sizes")
    for sub in (receipt, consistency):
        sub.add_argument("--device-key", required=True, help="the device's public key (PEM)")
        sub.add_argument(
            "--witness-key",
            action="append",
            default=[],
            help="a witness (hub verifier) public key, PEM; repeatable; requires a cosignature",
        )
        sub.add_argument(
            "--root",
            help="a trust root (root.cbor): its verifier keys are witness keys, its policy "
            "role judges the bundle",
        )
        # SUPPRESS: a subcommand's default must not undo a --json given before it.
        sub.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object"
        )
    chain = commands.add_parser(
        "chain",
        help="verify a chain of decisions across devices (edge-hub lineage ancestry --export)",
        description="Verify a chain file link by link: the device directory under the root's "
        "verifier role (the version each child recorded), every link's receipt with the key "
        "the directory lists for its device, each child's recorded parent facts (groups, "
        "subject, action, resource, time, verdict), depth and age against the next link, "
        "the decision the chain was exported for, and (with --bundle) each child re-decided "
        "under its bundle with its parent's verified facts (the policy requirement).",
        epilog=epilog(
            _EXITS,
            "edge-verify chain chain.cbor --root root.cbor --child gw-plc-02:8812 --json",
        ),
    )
    chain.add_argument("file", help="the chain file (chain.cbor)")
    chain.add_argument("--root", required=True, help="the trust root (root.cbor)")
    chain.add_argument(
        "--child",
        metavar="DEVICE:SEQ",
        help="the decision the chain must prove the ancestry of (its first link); without it "
        "the verdict names the decision the chain proves, to compare with the one meant",
    )
    chain.add_argument(
        "--bundle",
        action="append",
        default=[],
        help="a policy bundle a link's entry names (repeatable): checked under the root's "
        "policy role, and a child decided under it is re-decided with the parent it recorded",
    )
    chain.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object"
    )
    return parser


build_parser = _parser


# --- receipt -------------------------------------------------------------------------------


def _receipt(args: argparse.Namespace) -> int:
    keys = _keys(args)
    data = _read(args.file, _MAX_RECEIPT_FILE, "receipt", offered=True)
    bundle = _read(args.bundle, MAX_BUNDLE_BYTES, "bundle", offered=True) if args.bundle else None
    is_proof = data.startswith(f"{TLOG_PROOF_HEADER}\n".encode())
    verify = verify_tlog_proof if is_proof else verify_receipt
    kind = "tlog-proof" if is_proof else "receipt"
    try:
        report = verify(
            data,
            device_key=keys.device,
            witness_keys=keys.witnesses,
            root=keys.root,
            bundle=bundle,
        )
    except ReceiptError as exc:
        return _receipt_failed(args, kind, exc)
    _emit(args.json, _receipt_json(args.file, kind, report), _receipt_text(args.file, kind, report))
    return EXIT_OK


def _receipt_failed(args: argparse.Namespace, kind: str, exc: ReceiptError) -> int:
    steps = [{"step": step, "status": "held", "detail": detail} for step, detail in exc.held]
    steps.append({"step": exc.step, "status": "failed", "detail": exc.message})
    document = {
        "file": args.file,
        "kind": kind,
        "ok": False,
        "steps": steps,
        "error": {"step": exc.step, "code": exc.code, "message": exc.message},
    }
    lines = [f"{PROG}: {kind} {args.file}"]
    lines += [_line("ok", step, detail) for step, detail in exc.held]
    lines.append(_line("FAILED", exc.step, exc.message))
    lines.append(f"NOT VERIFIED: step '{exc.step}' failed: {exc.message}")
    _emit(args.json, document, "\n".join(lines))
    return EXIT_FAILED


def _receipt_json(path: str, kind: str, report: ReceiptReport) -> dict[str, Any]:
    results = [(r, "held") for r in report.held] + [(r, "skipped") for r in report.skipped]
    order = list(Step)
    results.sort(key=lambda item: order.index(item[0].step))
    steps = [{"step": str(r.step), "status": status, "detail": r.detail} for r, status in results]
    cosignature = report.cosignature
    return {
        "file": path,
        "kind": kind,
        "ok": True,
        "steps": steps,
        "skipped": [{"step": str(r.step), "detail": r.detail} for r in _skipped(report)],
        "entry": _entry_json(report.entry),
        "checkpoint": _checkpoint_json(report.checkpoint),
        "cosignature": None
        if cosignature is None
        else {"key_id": cosignature.key.key_id.hex(), "time": cosignature.time},
    }


def _receipt_text(path: str, kind: str, report: ReceiptReport) -> str:
    results = [("ok", r.step, r.detail) for r in report.held]
    results += [("skipped", r.step, f"not checked: {r.detail}") for r in report.skipped]
    order = list(Step)
    results.sort(key=lambda item: order.index(item[1]))
    lines = [f"{PROG}: {kind} {path}"]
    lines += [_line(status, step, detail) for status, step, detail in results]
    checked = ", ".join(r.step for r in report.held)
    lines.append(f"VERIFIED{_not_checked(report)}: {checked}")
    return "\n".join(lines)


def _not_checked(report: ReceiptReport) -> str:
    """`` (cosignature not checked: why; ...)`` when a step was skipped, so the verdict line
    itself says what it does not cover; empty when every step ran."""
    skipped = _skipped(report)
    if not skipped:
        return ""
    return " (" + "; ".join(f"{r.step} not checked: {r.detail}" for r in skipped) + ")"


def _skipped(report: ReceiptReport) -> list[StepResult]:
    order = list(Step)
    return sorted(report.skipped, key=lambda result: order.index(result.step))


def _line(status: str, step: str, detail: str) -> str:
    return f"  {status:<8} {step:<21} {detail}"


def _entry_json(entry: Entry) -> dict[str, Any]:
    request = entry.request
    return {
        "seq": entry.seq,
        "time": entry.time,
        "kind": str(entry.kind),
        "allowed": entry.allowed,
        "reason": entry.reason,
        "rule": entry.rule,
        "bundle_digest": None if entry.bundle_digest is None else entry.bundle_digest.hex(),
        "bundle_version": entry.bundle_version,
        "request": None
        if request is None
        else {
            "subject": request.subject,
            "action": request.action,
            "resource": request.resource,
            "context": dict(request.context),
            "selectors": list(request.selectors),
        },
        "detail": entry.detail,
    }


def _checkpoint_json(checkpoint: Checkpoint | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    device_id, epoch = _device_named(checkpoint)
    return {
        "origin": checkpoint.origin,
        "device_id": device_id,
        "key_epoch": epoch,
        "size": checkpoint.size,
        "root": checkpoint.root.hex(),
    }


def _device_named(checkpoint: Checkpoint) -> tuple[str | None, int | None]:
    """The device id and key epoch the checkpoint's origin names (``None`` for a foreign
    origin, which no verdict of ours accepts)."""
    try:
        return parse_origin(checkpoint.origin)
    except LineageError:
        return None, None


# --- chain ---------------------------------------------------------------------------------


def _chain(args: argparse.Namespace) -> int:
    root = _root(args.root)
    data = _read(args.file, MAX_CHAIN_BYTES, "chain", offered=True)
    bundles = [_read(path, MAX_BUNDLE_BYTES, "bundle", offered=True) for path in args.bundle]
    child = None if args.child is None else _child(args.child)
    try:
        report = verify_chain(
            data, root=root, child=child, bundles=bundles, decide_under=_engines(bundles, root)
        )
    except ChainError as exc:
        return _chain_failed(args, exc)
    unchecked = _unchecked_policy(report, given=bool(bundles))
    _emit(
        args.json,
        _chain_json(args.file, report, unchecked, bound=child is not None),
        _chain_text(args.file, report, unchecked, bound=child is not None),
    )
    return EXIT_OK


def _child(value: str) -> tuple[str, int]:
    """``DEVICE:SEQ`` as (device, seq).

    Raises:
        _UsageError: not a device id, a colon and a seq.
    """
    device, _, seq = value.rpartition(":")
    if not device or not seq.isdecimal() or not seq.isascii():
        raise _UsageError(f"--child is DEVICE:SEQ (such as gw-plc-02:8812), not {value!r}")
    return device, int(seq)


def _engines(bundles: Sequence[bytes], root: TrustRoot) -> dict[bytes, Decide]:
    """The device's engine under each bundle that verifies under ``root`` and compiles, by
    the bundle's SHA-256; one that does not is left out (a link naming it then fails its
    receipt's bundle step, or is not re-decided)."""
    engines: dict[bytes, Decide] = {}
    for bundle in bundles:
        try:
            verified = verify_bundle(bundle, root=root, region=claimed_region(bundle))
            policy = compile_bundle_policy(verified).policy
        except EdgeGovError:
            continue
        engines[hashlib.sha256(bundle).digest()] = partial(evaluate, policy)
    return engines


def _chain_failed(args: argparse.Namespace, exc: ChainError) -> int:
    where = "chain" if exc.link is None else f"link {exc.link}"
    steps = [{"step": step, "status": "held", "detail": detail} for step, detail in exc.held]
    steps.append({"step": f"{where}: {exc.step}", "status": "failed", "detail": exc.message})
    document = {
        "file": args.file,
        "kind": "chain",
        "ok": False,
        "steps": steps,
        "error": {"link": exc.link, "step": exc.step, "code": exc.code, "message": exc.message},
    }
    lines = [f"{PROG}: chain {args.file}"]
    lines += [_line("ok", step, detail) for step, detail in exc.held]
    lines.append(_line("FAILED", f"{where}: {exc.step}", exc.message))
    lines.append(f"NOT VERIFIED: {where}, step '{exc.step}' failed: {exc.message}")
    _emit(args.json, document, "\n".join(lines))
    return EXIT_FAILED


def _chain_json(
    path: str, report: ChainReport, unchecked: list[str], *, bound: bool
) -> dict[str, Any]:
    directory = report.directory
    return {
        "file": path,
        "kind": "chain",
        "ok": True,
        "child": {"device": report.child[0], "seq": report.child[1], "asked": bound},
        "directory": {
            "region": directory.region,
            "version": directory.version,
            "issued_at": directory.issued_at,
            "expires_at": directory.expires_at,
        },
        "links": [
            {
                "device": link.device.id,
                "groups": list(link.device.groups),
                "depth": link.depth,
                "age_s": link.age_s,
                "entry": _entry_json(link.entry),
                "checkpoint": _checkpoint_json(link.receipt.checkpoint),
                "bundle_checked": any(r.step == Step.BUNDLE for r in link.receipt.held),
                "policy": link.policy or None,
                "policy_checked": link.policy_checked,
            }
            for link in report.links
        ],
        "skipped": [{"step": "policy", "detail": why} for why in unchecked],
    }


def _chain_text(path: str, report: ChainReport, unchecked: list[str], *, bound: bool) -> str:
    directory = report.directory
    lines = [
        f"{PROG}: chain {path}",
        _line(
            "ok",
            "directory",
            f"{directory.region} version {directory.version}, the version each child recorded",
        ),
    ]
    for index, link in enumerate(report.links):
        entry = link.entry
        request = entry.request
        what = "" if request is None else f" {request.subject} {request.action} {request.resource}"
        verdict = "allow" if entry.allowed else "deny"
        age = "" if link.age_s is None else f", {link.age_s} s before its child"
        groups = ", ".join(link.device.groups) or "none"
        bundle = (
            f", bundle v{entry.bundle_version} signed by the policy role"
            if any(r.step == Step.BUNDLE for r in link.receipt.held)
            else ""
        )
        lines.append(
            _line(
                "ok",
                f"link {index}",
                f"{link.device.id} (groups {groups}) seq {entry.seq} depth {link.depth}: "
                f"{verdict}{what} (rule {entry.rule or '-'}){age}{bundle}",
            )
        )
        if link.policy:
            lines.append(_line("ok" if link.policy_checked else "skipped", "  policy", link.policy))
    skipped = f" ({'; '.join(unchecked)})" if unchecked else ""
    checked = ", every policy requirement re-decided as logged" if not unchecked else ""
    device, seq = report.child
    asked = (
        "the decision asked for (--child)"
        if bound
        else "give --child DEVICE:SEQ to require the decision you mean"
    )
    lines.append(
        f"VERIFIED{skipped}: {len(report.links)} links to the root, every receipt cosigned by "
        f"the hub witness, every parent as its child recorded it{checked}; the ancestry of "
        f"{device} seq {seq} ({asked})"
    )
    return "\n".join(lines)


def _unchecked_policy(report: ChainReport, *, given: bool) -> list[str]:
    """Why the policy step did not run, as the verdict line says it: once when no bundle
    was given and a link needed one, else per link whose bundle was not among those given."""
    if not report.unchecked:
        return []
    if not given:
        return ["policy requirement not checked: no bundle given"]
    return list(report.unchecked)


# --- consistency ---------------------------------------------------------------------------


def _consistency(args: argparse.Namespace) -> int:
    keys = _keys(args)
    old = _read(args.old, MAX_NOTE_BYTES, "checkpoint")
    new = _read(args.new, MAX_NOTE_BYTES, "checkpoint")
    proof = None
    if args.proof:
        text = _read(args.proof, MAX_CONSISTENCY_FILE_BYTES, "consistency proof")
        try:
            proof = parse_consistency_proof(text)
        except EdgeGovError as exc:
            raise _UsageError(f"consistency proof {args.proof}: {exc}") from exc
    report = verify_consistency_files(old, new, proof, keys.device, keys.trusted)
    _emit(args.json, _consistency_json(args, report), _consistency_text(args, report))
    return EXIT_OK if report.verdict == Verdict.CONSISTENT else EXIT_FAILED


def _consistency_json(args: argparse.Namespace, report: ConsistencyReport) -> dict[str, Any]:
    return {
        "old": args.old,
        "new": args.new,
        "ok": report.verdict == Verdict.CONSISTENT,
        "verdict": str(report.verdict),
        "detail": report.detail,
        "old_checkpoint": _checkpoint_json(report.old),
        "new_checkpoint": _checkpoint_json(report.new),
    }


def _consistency_text(args: argparse.Namespace, report: ConsistencyReport) -> str:
    names = {
        Verdict.CONSISTENT: "CONSISTENT",
        Verdict.FORK: "FORK",
        Verdict.NOT_PROVEN: "NOT PROVEN",
    }
    lines = [f"{PROG}: consistency {args.old} {args.new}"]
    for label, checkpoint in (("older", report.old), ("newer", report.new)):
        if checkpoint is not None:
            device_id, epoch = _device_named(checkpoint)
            named = "" if device_id is None else f": device {device_id!r}, key epoch {epoch}"
            lines.append(
                f"  {label}: size {checkpoint.size} root {checkpoint.root.hex()} "
                f"({checkpoint.origin}{named})"
            )
    lines.append(f"{names[report.verdict]}: {report.detail}")
    return "\n".join(lines)


# --- files and keys ------------------------------------------------------------------------


def _keys(args: argparse.Namespace) -> _Keys:
    device = _pem_key(args.device_key, "device key")
    witnesses = tuple(_pem_key(path, "witness key") for path in args.witness_key)
    root = _root(args.root) if args.root else None
    try:
        trusted = select_witnesses(witnesses, device_key=device, root=root)
    except ValueError as exc:
        raise _UsageError(str(exc)) from exc
    return _Keys(device, witnesses, root, trusted)


def _root(path: str) -> TrustRoot:
    try:
        return verify_trusted_root(_read(path, MAX_ROOT_BYTES, "trust root"), now=None)
    except EdgeGovError as exc:
        raise _UsageError(f"trust root {path}: {exc}", path=path) from exc


def _pem_key(path: str, what: str) -> PublicKey:
    data = _read(path, _MAX_PEM_BYTES, what)
    try:
        return public_key_from_pem(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _UsageError(f"{what} {path}: {exc}", path=path) from exc


def _read(path: str, max_bytes: int, what: str, *, offered: bool = False) -> bytes:
    """The bytes of a regular file (never blocking on a FIFO); with ``offered``, a larger
    file reads as ``max_bytes + 1`` bytes so the verifier's own cap refuses it as a failed
    step."""
    try:
        return read_regular(path, max_bytes, what, offered=offered)
    except ConfigError as exc:
        raise _UsageError(str(exc), path=path) from exc


def _emit(as_json: bool, document: dict[str, Any], text: str) -> None:
    print(json.dumps(document, indent=2) if as_json else text)


if __name__ == "__main__":
    sys.exit(main())

"""The proof viewer: check a receipt (COSE) or a tlog-proof step by step, server-side, with
the same code ``edge-verify`` runs.

- ``GET /proof``: the form (paste the proof as text or base64, or upload the file);
  ``GET /proof?device=D&seq=N[&format=cose|tlog-proof]`` builds that entry's receipt now (as
  the decision page's download does) and checks it.
- ``POST /proof``: check what was pasted or uploaded (CSRF-checked; at most
  :data:`MAX_PROOF_BYTES` of proof, :data:`MAX_FORM_BYTES` of request); a paste that is no
  proof shows the form again, with what was pasted and why (a 400).

:func:`check_proof` reads which device the proof claims (the origin of its checkpoint note)
and which bundle its entry names, then runs
:func:`edge_agent.protocol.receipt.verify_receipt` (or ``verify_tlog_proof``) with that
device's key from the registry, the hub's current trust root (whose verifier role keys are
the witness keys, so the hub's cosignature is required) and the bundle from the registry
when the hub holds it. Those claims only pick keys: a proof that lies about its device fails
the signature steps. Each step of :class:`~edge_agent.protocol.receipt.Step` is shown as it
ended: held (with what it established), failed (with why), skipped (with why) or not run
(after the first failure).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge_agent.errors import EnvelopeError, LineageError, ReceiptError
from edge_agent.protocol import cose
from edge_agent.protocol.checkpoint import (
    MAX_NOTE_BYTES,
    Checkpoint,
    parse_checkpoint_body,
    split_note,
)
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES, MAX_COUNTER
from edge_agent.protocol.lineage_entries import Entry, decode_entry
from edge_agent.protocol.receipt import (
    LABEL_CHECKPOINT,
    LABEL_RECEIPTS,
    MAX_RECEIPT_BYTES,
    ReceiptReport,
    Step,
    verify_receipt,
    verify_tlog_proof,
)
from edge_agent.protocol.root import TrustRoot
from edge_agent.protocol.tlog_proof import HEADER as TLOG_PROOF_HEADER
from edge_agent.protocol.tlog_proof import MAX_TLOG_PROOF_BYTES, parse_tlog_proof
from hub.console.auth import checked_form, console_context, require_viewer
from hub.console.errors import BadRequest
from hub.console.lineage import console_receipt
from hub.console.query import check_params
from hub.console.render import render
from hub.core.receipts import FORMATS
from hub.registry import Registry

__all__ = [
    "MAX_FORM_BYTES",
    "MAX_PROOF_BYTES",
    "ROUTES",
    "ProofCheck",
    "Status",
    "StepLine",
    "check_proof",
    "read_pasted",
]

MAX_PROOF_BYTES = max(MAX_RECEIPT_BYTES + MAX_BUNDLE_BYTES + 16, MAX_TLOG_PROOF_BYTES)
"""Largest proof checked: a receipt with an embedded bundle (what ``edge-verify`` reads)."""
MAX_FORM_BYTES = MAX_PROOF_BYTES * 4 // 3 + 64 * 1024
"""Largest request ``POST /proof`` reads: the proof base64-encoded, with the form around."""
_ORIGIN_PREFIX = "edgegov/v1/device/"
_MAX_PEEK_BYTES = MAX_PROOF_BYTES + 64
_SKIPPED = {str(Step.RECEIPT_SIGNATURE): "a tlog-proof carries none"}


class Status(StrEnum):
    """How a step ended."""

    HELD = "held"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_RUN = "not run"


@dataclass(frozen=True, slots=True)
class StepLine:
    """One verification step as the viewer shows it."""

    step: str
    status: Status
    detail: str


@dataclass(frozen=True, slots=True)
class ProofCheck:
    """The outcome of checking one proof: its form, the device it claims, every step, and
    (when every step held) the entry and checkpoint it proves."""

    form: str
    device: str | None
    steps: tuple[StepLine, ...]
    entry: Entry | None = None
    checkpoint: Checkpoint | None = None

    @property
    def verified(self) -> bool:
        return self.entry is not None

    @property
    def failed(self) -> StepLine | None:
        return next((s for s in self.steps if s.status is Status.FAILED), None)


def check_proof(data: bytes, registry: Registry, root: TrustRoot) -> ProofCheck:
    """Check ``data``, a receipt (COSE transparent statement) or a C2SP tlog-proof, step by
    step, as ``edge-verify receipt`` does with the claimed device's registered key, ``root``
    (its verifier keys are the witnesses: the cosignature is required) and the bundle the
    entry names when the registry holds it.

    Steps: 1. tell the form by its first line; 2. read the device the checkpoint names and
    the bundle the entry names (claims, used only to pick keys); 3. the device is registered;
    4. verify, every step of :class:`Step` in order.
    """
    form = "tlog-proof" if data.startswith(TLOG_PROOF_HEADER.encode()) else "cose"
    try:
        device_id, bundle_digest = _claims(data, form)
    except ReceiptError as exc:
        return ProofCheck(form, None, _failed(exc))
    device = registry.device(device_id)
    if device is None:
        error = ReceiptError(
            Step.CHECKPOINT_SIGNATURE,
            f"the proof's checkpoint names device {device_id!r}, which this hub has not "
            "registered: it holds no key to check the device's signature with",
        )
        return ProofCheck(form, device_id, _failed(error))
    bundle = None if bundle_digest is None else registry.bundle_data(bundle_digest)
    verify = verify_tlog_proof if form == "tlog-proof" else verify_receipt
    try:
        report = verify(data, device_key=device.public_key, root=root, bundle=bundle)
    except ReceiptError as exc:
        return ProofCheck(form, device_id, _failed(exc))
    return ProofCheck(form, device_id, _held(report), report.entry, report.checkpoint)


def read_pasted(text: str) -> bytes:
    """The proof in pasted text: a tlog-proof as it is, anything else as base64 (whitespace
    ignored).

    Raises:
        BadRequest: neither a tlog-proof nor base64, or over :data:`MAX_PROOF_BYTES`.
    """
    stripped = text.strip()
    if stripped.startswith(TLOG_PROOF_HEADER):
        data = text.replace("\r\n", "\n").lstrip().encode("utf-8")
    else:
        try:
            data = base64.b64decode("".join(stripped.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(
                "the pasted proof is neither a tlog-proof (its first line is "
                f"{TLOG_PROOF_HEADER}) nor a receipt in base64: paste it again, or upload "
                "the file"
            ) from exc
    if not data:
        raise BadRequest("paste a proof or choose a file to upload")
    return _bounded(data)


async def proof_page(request: Request) -> Response:
    """The form; with ``device`` and ``seq``, that entry's receipt built now and checked."""
    require_viewer(request)
    context = console_context(request)
    check_params(request, ("device", "seq", "format"))
    params = request.query_params
    if not params.get("device") and not params.get("seq"):
        return render(request, "proof.html", _values(None, None))
    device_id, seq_text = params.get("device", ""), params.get("seq", "")
    if not device_id or not _is_count(seq_text) or int(seq_text) > MAX_COUNTER:
        raise BadRequest("give device and seq (a whole number) to check that entry's receipt")
    fmt = params.get("format", "cose")
    if fmt not in FORMATS:
        raise BadRequest(f"format is one of {', '.join(FORMATS)}")
    data = await context.db(console_receipt, context, device_id, int(seq_text), fmt)
    check = await context.db(check_proof, data, context.registry, context.keys().root)
    return render(request, "proof.html", _values(check, data))


async def proof_check(request: Request) -> Response:
    """Check the pasted or uploaded proof."""
    form = await checked_form(request, operator=False, max_bytes=MAX_FORM_BYTES)
    context = console_context(request)
    upload = form.get("file")
    pasted = form.get("text")
    text = pasted if isinstance(pasted, str) else ""
    data = b""
    if isinstance(upload, UploadFile):
        data = await upload.read(MAX_PROOF_BYTES + 1)
    try:
        data = _bounded(data) if data else read_pasted(text)
    except BadRequest as exc:
        values = _values(None, None) | {"proof_text": text[:MAX_FORM_BYTES], "error": exc.message}
        return render(request, "proof.html", values, status=400)
    check = await context.db(check_proof, data, context.registry, context.keys().root)
    return render(request, "proof.html", _values(check, data), status=200)


def _values(check: ProofCheck | None, data: bytes | None) -> dict[str, object]:
    return {
        "check": check,
        "size": 0 if data is None else len(data),
        "proof_text": ""
        if data is None
        else data.decode("utf-8", "replace")
        if check is not None and check.form == "tlog-proof"
        else base64.b64encode(data).decode("ascii"),
        "max_bytes": MAX_PROOF_BYTES,
        "error": None,
    }


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _bounded(data: bytes) -> bytes:
    if len(data) > MAX_PROOF_BYTES:
        raise BadRequest(
            f"the proof is {len(data)} bytes or more; a receipt (with its bundle) or a "
            f"tlog-proof is at most {MAX_PROOF_BYTES} bytes"
        )
    return data


def _claims(data: bytes, form: str) -> tuple[str, bytes | None]:
    """The device id the proof's checkpoint names and the bundle digest its entry names, read
    without verifying anything (to pick the keys that then verify it).

    Raises:
        ReceiptError: (step ``entry``) the proof cannot be read far enough to say.
    """
    if form == "tlog-proof":
        try:
            proof = parse_tlog_proof(data)
        except LineageError as exc:
            raise ReceiptError(Step.ENTRY, f"not a readable tlog-proof: {exc}") from exc
        note, entry = proof.note, proof.extra
    else:
        note, entry = _statement_claims(data)
    if entry is None:
        raise ReceiptError(Step.ENTRY, "the proof carries no entry")
    try:
        digest = decode_entry(entry).bundle_digest
        origin = parse_checkpoint_body(split_note(note)[0].decode("utf-8")).origin
    except (LineageError, UnicodeDecodeError) as exc:
        raise ReceiptError(Step.ENTRY, f"the proof cannot be read: {exc}") from exc
    return _origin_device(origin), digest


def _statement_claims(data: bytes) -> tuple[str, bytes | None]:
    def unreadable(why: str) -> ReceiptError:
        return ReceiptError(Step.ENTRY, f"not a readable receipt: {why}")

    try:
        statement = cose.parse_sign1_open(
            data, max_bytes=_MAX_PEEK_BYTES, max_protected_bytes=MAX_NOTE_BYTES, what="receipt"
        )
        receipts = statement.unprotected.get(LABEL_RECEIPTS)
        if not isinstance(receipts, list) or len(receipts) != 1:
            raise unreadable("it does not carry exactly one receipt (label 394)")
        receipt = cose.parse_sign1_open(
            receipts[0],
            max_bytes=MAX_RECEIPT_BYTES,
            max_protected_bytes=MAX_NOTE_BYTES,
            what="inclusion receipt",
        )
    except (EnvelopeError, TypeError) as exc:
        raise unreadable(str(exc)) from exc
    note = receipt.unprotected.get(LABEL_CHECKPOINT)
    if not isinstance(note, str):
        raise unreadable("its receipt carries no checkpoint note (label -65602)")
    return note, statement.payload


def _origin_device(origin: str) -> str:
    """The device id in a device log's origin ``edgegov/v1/device/<id>/epoch/<n>``."""
    rest = origin.removeprefix(_ORIGIN_PREFIX)
    device, separator, _ = rest.rpartition("/epoch/")
    if rest == origin or not separator or not device:
        raise ReceiptError(
            Step.ENTRY, f"the proof's checkpoint origin {origin[:80]!r} is not a device log's"
        )
    return unquote(device)


def _failed(exc: ReceiptError) -> tuple[StepLine, ...]:
    """Every step in order: those that held, those skipped before the failure (the
    verifier runs the steps in order, so an earlier step that did not hold was skipped:
    only a tlog-proof's receipt signature is), the one that failed, the rest not run."""
    ended = {step: StepLine(step, Status.HELD, detail) for step, detail in exc.held}
    ended[str(exc.step)] = StepLine(str(exc.step), Status.FAILED, exc.message)
    lines, before = [], bool(exc.held)
    for step in map(str, Step):
        before = before and step != str(exc.step)
        status = Status.SKIPPED if before else Status.NOT_RUN
        lines.append(
            ended.get(step, StepLine(step, status, _SKIPPED.get(step, "") if before else ""))
        )
    return tuple(lines)


def _held(report: ReceiptReport) -> tuple[StepLine, ...]:
    ended = {str(r.step): StepLine(str(r.step), Status.HELD, r.detail) for r in report.held}
    ended |= {str(r.step): StepLine(str(r.step), Status.SKIPPED, r.detail) for r in report.skipped}
    return tuple(ended[str(s)] for s in Step if str(s) in ended)


ROUTES = [
    Route("/proof", proof_page, methods=["GET"], name="proof"),
    Route("/proof", proof_check, methods=["POST"], name="proof_check"),
]

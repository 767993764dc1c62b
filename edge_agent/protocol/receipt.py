"""Decision receipts: RFC 9942 COSE Receipts for lineage entries, verifiable offline.

A receipt file is a *transparent statement*: a ``COSE_Sign1`` (tag 18) whose payload is one
lineage entry exactly as logged, with the receipt under unprotected label 394::

    statement  protected   {1: -8, 3: "application/edgegov-lineage-entry+cbor", 4: kid}
               unprotected {394: [receipt], ?-65603: bundle envelope}
               payload     the entry bytes
    receipt    protected   {1: -8, 4: kid, 15: {1: origin, 6: iat}, 395: 1,
                            -65600: tree size, -65601: leaf index}
               unprotected {396: {-1: [bstr .cbor [tree size, leaf index, [path...]]]},
                            -65602: the checkpoint note (device-signed, maybe cosigned)}
               payload     nil: detached, the Merkle root at that tree size

Both are signed by one key: the device key (a receipt made on the device) or the hub's
witness key (made at the hub). RFC 9942 leaves tree size and leaf index unprotected; this
profile also signs them (labels -65600/-65601), and the verifier requires them equal to the
proof's, to the entry's ``seq`` and to the signed checkpoint's size, so none can be changed.

:func:`verify_receipt` (and :func:`verify_tlog_proof` for the C2SP text form) runs the
:class:`Step` checks in order, each a statement an auditor can read, and raises
:class:`ReceiptError` naming the first that fails. A cosignature is required when witness
keys (or a trust root, whose verifier role keys are the witness keys) are given; the bundle
step runs when a trust root and the bundle the entry names are at hand. Everything is
bounded (:data:`MAX_RECEIPT_BYTES`; an embedded bundle by ``MAX_BUNDLE_BYTES``). No I/O.

:func:`verify_device_receipt` (a parent at decision time) reads a statement laid out as
:func:`build_receipt` writes it straight from its bytes, and any other by the strict
decode; the two accept the same bytes and read them the same (see "reading a device
receipt as it is written" below).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from edge_agent.errors import BundleError, EnvelopeError, LineageError, ReceiptError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol.bundle import claimed_region, verify_bundle
from edge_agent.protocol.checkpoint import (
    MAX_NOTE_BYTES,
    Checkpoint,
    NoteSignature,
    parse_checkpoint_body,
    parse_origin,
    split_note,
    verify_note_signature,
)
from edge_agent.protocol.cosignature import (
    Cosignature,
    select_witnesses,
    verify_cosignature_lines,
)
from edge_agent.protocol.keys import ALG_EDDSA, PrivateKey, PublicKey
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES, SIGNED_TIME_SKEW_S
from edge_agent.protocol.lineage_entries import Entry, Kind, decode_entry
from edge_agent.protocol.merkle import (
    HASH_SIZE,
    inclusion_path_length,
    leaf_hash,
    verify_inclusion,
)
from edge_agent.protocol.root import TrustRoot
from edge_agent.protocol.tlog_proof import MAX_PATH_HASHES, parse_tlog_proof

__all__ = [
    "CONTENT_TYPE",
    "MAX_RECEIPT_BYTES",
    "ReceiptReport",
    "Step",
    "StepResult",
    "build_receipt",
    "verify_device_receipt",
    "verify_receipt",
    "verify_tlog_proof",
]

CONTENT_TYPE = "application/edgegov-lineage-entry+cbor"
"""Content type of a transparent statement's payload: one lineage entry."""

MAX_RECEIPT_BYTES = 64 * 1024
"""Largest transparent statement accepted without its embedded bundle, in bytes (so an
entry of up to about 60 KiB; a receipt at a million entries is under 2 KiB)."""

LABEL_RECEIPTS = 394
LABEL_VDS = 395
LABEL_VDP = 396
LABEL_CWT_CLAIMS = 15
LABEL_TREE_SIZE = -65600
LABEL_LEAF_INDEX = -65601
LABEL_CHECKPOINT = -65602
LABEL_BUNDLE = -65603
VDS_RFC9162_SHA256 = 1
VDP_INCLUSION = -1
CLAIM_ISS = 1
CLAIM_IAT = 6

_REFUSED_BUNDLE_KINDS = frozenset({Kind.BUNDLE_REJECTED})
"""Entry kinds that name a bundle the device refused (the bundle step does not require it
to verify)."""

_MAX_STATEMENT_BYTES = MAX_RECEIPT_BYTES + MAX_BUNDLE_BYTES + 16
_STATEMENT_LABELS = frozenset({LABEL_RECEIPTS, LABEL_BUNDLE})
"""Unprotected labels a statement may carry."""
_RECEIPT_LABELS = frozenset({LABEL_VDP, LABEL_CHECKPOINT})
"""Unprotected labels a receipt carries, exactly."""
_MAX_PROTECTED_BYTES = MAX_NOTE_BYTES + 256


class Step(StrEnum):
    """The checks of a receipt, in the order they run."""

    ENTRY = "entry"
    """The file is a statement (or proof) of one canonical lineage entry."""
    LEAF_HASH = "leaf_hash"
    """The entry's RFC 9162 leaf hash."""
    INCLUSION_PATH = "inclusion_path"
    """Leaf index and tree size agree everywhere (entry, proof, signed headers); the path
    has the length that index and size need."""
    ROOT = "root"
    """The path leads from the leaf to the checkpoint's root at the checkpoint's size."""
    RECEIPT_SIGNATURE = "receipt_signature"
    """The receipt (over that root) and the statement (over the entry) are signed by the
    device key or a witness key."""
    CHECKPOINT_SIGNATURE = "checkpoint_signature"
    """The device key signed the checkpoint under the device's own origin."""
    COSIGNATURE = "cosignature"
    """A witness (the hub) cosigned the checkpoint: it saw it consistent with all before."""
    BUNDLE = "bundle"
    """The bundle the entry names (digest and version) is signed by the policy role and
    valid at the entry's time; for a refused bundle, the one given is the one named."""


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step and what it established (or, for a skipped step, why it did not run)."""

    step: Step
    detail: str


@dataclass(frozen=True, slots=True)
class ReceiptReport:
    """What a verified receipt proves: the decoded ``entry``, the checkpoint it is in, the
    steps that held in order, the steps not run and why, the cosignature if checked, and
    the entry's leaf hash (over the bytes received, as the ``leaf_hash`` step computed it)."""

    entry: Entry
    checkpoint: Checkpoint
    held: tuple[StepResult, ...]
    skipped: tuple[StepResult, ...]
    cosignature: Cosignature | None
    leaf_hash: bytes


class _Note(NamedTuple):
    """A claim's checkpoint note, read once for every step that needs it: the signed text,
    its signature lines (none verified yet) and the checkpoint the text states. (Named
    tuples, this and :class:`_Claim`: each receipt verified builds one of each.)"""

    text: bytes
    signatures: Sequence[NoteSignature]
    checkpoint: Checkpoint


class _Claim(NamedTuple):
    """What a receipt or a proof claims, read but not yet verified."""

    entry: bytes
    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...]
    note: str
    signed: Callable[[bytes, Sequence[PublicKey]], str] | None
    """Checks the receipt signature over the root; returns who signed. ``None``: no receipt
    signature (a tlog-proof)."""
    bundle: bytes | None
    origin: str | None
    """The origin the receipt signed, when it has one."""


# --- building ------------------------------------------------------------------------------


def build_receipt(
    *,
    entry: bytes,
    seq: int,
    tree_size: int,
    path: Sequence[bytes],
    note: str,
    signer: PrivateKey,
    now: int,
    bundle: bytes | None = None,
) -> bytes:
    """The transparent statement of ``entry`` (leaf ``seq``) under the checkpoint ``note``.

    ``signer`` is the device key (a receipt made on the device) or the hub's witness key;
    it signs with EdDSA (-8), the code point RFC 9942 tooling knows. ``now`` is the receipt's
    issued-at time. The receipt is checked before it is made: the entry decodes as ``seq``,
    the note is a checkpoint at ``tree_size`` and ``path`` leads to its root.

    Raises:
        ValueError: any of those checks fails, the bundle is oversize, or the statement
            would exceed MAX_RECEIPT_BYTES.
    """
    try:
        decode_entry(entry, seq)
        checkpoint = parse_checkpoint_body(split_note(note)[0].decode("utf-8"))
        if checkpoint.size != tree_size:
            raise LineageError(f"the checkpoint is at size {checkpoint.size}, not {tree_size}")
        verify_inclusion(leaf_hash(entry), seq, tree_size, path, checkpoint.root)
    except LineageError as exc:
        raise ValueError(f"cannot make a receipt: {exc}") from exc
    if bundle is not None and len(bundle) > MAX_BUNDLE_BYTES:
        raise ValueError(f"a bundle is at most {MAX_BUNDLE_BYTES} bytes")
    key = PrivateKey(signer.seed, ALG_EDDSA)
    kid = signer.public.key_id
    proof = dcbor.encode([tree_size, seq, list(path)])
    claims: dict[int, dcbor.CborValue] = {CLAIM_ISS: checkpoint.origin, CLAIM_IAT: now}
    vdp: dict[int, dcbor.CborValue] = {VDP_INCLUSION: [proof]}
    receipt = cose.sign1_open(
        checkpoint.root,
        key=key,
        protected={
            cose.HEADER_ALG: ALG_EDDSA,
            cose.HEADER_KID: kid,
            LABEL_CWT_CLAIMS: claims,
            LABEL_VDS: VDS_RFC9162_SHA256,
            LABEL_TREE_SIZE: tree_size,
            LABEL_LEAF_INDEX: seq,
        },
        unprotected={LABEL_VDP: vdp, LABEL_CHECKPOINT: note},
        detached=True,
    )
    unprotected: dict[int, dcbor.CborValue] = {LABEL_RECEIPTS: [receipt]}
    if bundle is not None:
        unprotected[LABEL_BUNDLE] = bundle
    statement = cose.sign1_open(
        entry,
        key=key,
        protected={
            cose.HEADER_ALG: ALG_EDDSA,
            cose.HEADER_CONTENT_TYPE: CONTENT_TYPE,
            cose.HEADER_KID: kid,
        },
        unprotected=unprotected,
    )
    if len(statement) - (len(bundle) if bundle else 0) > MAX_RECEIPT_BYTES:
        raise ValueError(f"a receipt is at most {MAX_RECEIPT_BYTES} bytes without its bundle")
    return statement


# --- verifying -----------------------------------------------------------------------------


def verify_receipt(
    data: bytes,
    *,
    device_key: PublicKey,
    witness_keys: Sequence[PublicKey] = (),
    root: TrustRoot | None = None,
    bundle: bytes | None = None,
) -> ReceiptReport:
    """Verify a transparent statement (:func:`build_receipt`) step by step (:class:`Step`).

    ``witness_keys`` (and, with ``root``, its verifier role keys) may sign the receipt and
    must have cosigned the checkpoint; with none, the cosignature step is skipped. With
    ``root`` and a bundle (embedded, or ``bundle``), the bundle step checks the bundle the
    entry names.

    Raises:
        ReceiptError: the first step that fails, named in ``step``.
    """
    return _verify(_read_statement(data), device_key, witness_keys, root, bundle)


def verify_device_receipt(
    data: bytes, *, device_key: Callable[[str], PublicKey | None]
) -> ReceiptReport:
    """Verify a receipt made on a device by its device-signed checkpoint, as a tlog-proof is.

    For deciding at speed (a parent receipt, docs/policy.md): the :class:`Step` checks of
    :func:`verify_receipt` except ``receipt_signature``. The device key's checkpoint
    signature covers the root the inclusion path reaches from the entry, which binds the
    entry to the device's log as surely; the statement's and receipt's own signatures, two
    more Ed25519 verifications, add nothing to it. ``device_key`` maps the log origin the
    receipt names to the key that must have signed its checkpoint under that origin, or
    ``None`` when there is none. No cosignature is required (a fresh receipt has none yet).
    A statement laid out as :func:`build_receipt` writes it is read straight from its bytes
    (:func:`_statement_as_written`), any other by the strict reading, which accepts the same.

    Raises:
        ReceiptError: the first step that fails, named in ``step``.
    """
    claim = _statement_as_written(data)
    if claim is None:
        claim = _read_statement(data, signed=False)
    key = device_key(claim.origin) if claim.origin is not None else None
    if key is None:
        raise ReceiptError(
            Step.CHECKPOINT_SIGNATURE, f"no device key is known for log {claim.origin!r}"
        )
    return _verify(claim, key, (), None, None)


def verify_tlog_proof(
    text: str | bytes,
    *,
    device_key: PublicKey,
    witness_keys: Sequence[PublicKey] = (),
    root: TrustRoot | None = None,
    bundle: bytes | None = None,
) -> ReceiptReport:
    """Verify a C2SP tlog-proof whose ``extra`` is the entry, as :func:`verify_receipt`.

    It has no receipt signature (that step is skipped): the device's checkpoint signature
    and the witness's cosignature vouch for the root.

    Raises:
        ReceiptError: the first step that fails, named in ``step``.
    """
    try:
        proof = parse_tlog_proof(text)
    except LineageError as exc:
        raise ReceiptError(Step.ENTRY, f"not a readable tlog-proof: {exc}") from exc
    if proof.extra is None:
        raise ReceiptError(Step.ENTRY, "the tlog-proof carries no entry (no 'extra' line)")
    size = _note_size(proof.note)
    claim = _Claim(proof.extra, proof.index, size, proof.path, proof.note, None, None, None)
    return _verify(claim, device_key, witness_keys, root, bundle)


def _note_size(note: str) -> int:
    try:
        return parse_checkpoint_body(split_note(note)[0].decode("utf-8")).size
    except LineageError as exc:
        raise ReceiptError(Step.ENTRY, f"the checkpoint cannot be read: {exc}") from exc


def _verify(
    claim: _Claim,
    device_key: PublicKey,
    witness_keys: Sequence[PublicKey],
    root: TrustRoot | None,
    bundle: bytes | None,
) -> ReceiptReport:
    """Steps of :class:`Step`, in order; the first failure raises with the steps that held."""
    held: list[StepResult] = []
    try:
        return _run(claim, device_key, witness_keys, root, bundle, held)
    except ReceiptError as exc:
        done = tuple((str(result.step), result.detail) for result in held)
        raise ReceiptError(exc.step, exc.message, held=done) from exc


def _run(
    claim: _Claim,
    device_key: PublicKey,
    witness_keys: Sequence[PublicKey],
    root: TrustRoot | None,
    bundle: bytes | None,
    held: list[StepResult],
) -> ReceiptReport:
    try:
        witnesses = select_witnesses(witness_keys, device_key=device_key, root=root)
    except ValueError as exc:
        raise ReceiptError(Step.COSIGNATURE, str(exc)) from exc
    skipped: list[StepResult] = []

    def hold(step: Step, detail: str) -> None:
        held.append(StepResult(step, detail))

    entry = _check_entry(claim)
    hold(Step.ENTRY, f"{entry.kind} seq {entry.seq} at {entry.time} ({_what(entry)})")
    leaf = leaf_hash(claim.entry)
    hold(Step.LEAF_HASH, leaf.hex())
    _check_indexes(claim, entry)
    hold(
        Step.INCLUSION_PATH,
        f"leaf {claim.leaf_index} of {claim.tree_size}, {len(claim.path)} hashes",
    )
    note = _read_note(claim)
    checkpoint = note.checkpoint
    _check_root(claim, leaf, checkpoint)
    hold(Step.ROOT, f"{checkpoint.root.hex()} at size {checkpoint.size}")
    if claim.signed is None:
        skipped.append(StepResult(Step.RECEIPT_SIGNATURE, "a tlog-proof carries none"))
    else:
        hold(Step.RECEIPT_SIGNATURE, claim.signed(checkpoint.root, [device_key, *witnesses]))
    device_id, epoch = _check_device_signature(note, device_key)
    hold(
        Step.CHECKPOINT_SIGNATURE,
        f"by the device key under {checkpoint.origin} (device {device_id!r}, key epoch {epoch})",
    )
    cosignature = None
    if witnesses:
        cosignature = _check_cosignature(note, witnesses)
        hold(Step.COSIGNATURE, f"by witness {_key_label(cosignature.key)} at {cosignature.time}")
    else:
        skipped.append(StepResult(Step.COSIGNATURE, "no witness key given"))
    outcome = _check_bundle(entry, root, bundle if bundle is not None else claim.bundle)
    (held if outcome[0] else skipped).append(StepResult(Step.BUNDLE, outcome[1]))
    return ReceiptReport(entry, checkpoint, tuple(held), tuple(skipped), cosignature, leaf)


def _check_entry(claim: _Claim) -> Entry:
    try:
        return decode_entry(claim.entry)
    except LineageError as exc:
        raise ReceiptError(Step.ENTRY, f"the logged entry is not a lineage entry: {exc}") from exc


def _check_indexes(claim: _Claim, entry: Entry) -> None:
    if claim.leaf_index != entry.seq:
        raise ReceiptError(
            Step.INCLUSION_PATH,
            f"the proof is for leaf {claim.leaf_index} but the entry is seq {entry.seq}",
        )
    try:
        needed = inclusion_path_length(claim.leaf_index, claim.tree_size)
    except ValueError as exc:
        raise ReceiptError(Step.INCLUSION_PATH, str(exc)) from exc
    if len(claim.path) != needed:
        raise ReceiptError(
            Step.INCLUSION_PATH,
            f"the path has {len(claim.path)} hashes; leaf {claim.leaf_index} of a tree of "
            f"{claim.tree_size} needs {needed}",
        )


def _read_note(claim: _Claim) -> _Note:
    """The claim's note, split and its checkpoint text parsed, once (part of the ROOT step)."""
    try:
        text, signatures = split_note(claim.note)
        checkpoint = parse_checkpoint_body(text.decode("utf-8"))
    except LineageError as exc:
        raise ReceiptError(Step.ROOT, f"the checkpoint cannot be read: {exc}") from exc
    return _Note(text, signatures, checkpoint)


def _check_root(claim: _Claim, leaf: bytes, checkpoint: Checkpoint) -> None:
    if checkpoint.size != claim.tree_size:
        raise ReceiptError(
            Step.ROOT,
            f"the proof is for a tree of {claim.tree_size} but the checkpoint is at "
            f"size {checkpoint.size}",
        )
    if claim.origin is not None and claim.origin != checkpoint.origin:
        raise ReceiptError(
            Step.ROOT, f"the receipt names log {claim.origin!r}, the checkpoint another"
        )
    try:
        verify_inclusion(leaf, claim.leaf_index, claim.tree_size, claim.path, checkpoint.root)
    except LineageError as exc:
        raise ReceiptError(
            Step.ROOT, f"the path does not lead to the checkpoint's root: {exc}"
        ) from exc


def _check_device_signature(note: _Note, device_key: PublicKey) -> tuple[str, int]:
    """The device id and key epoch the checkpoint's origin names, once the device key is
    shown to have signed it under that origin (the key name is the origin the note's text
    states, so the checkpoint is this device's and this key epoch's, as
    :func:`~edge_agent.protocol.checkpoint.verify_checkpoint` requires)."""
    origin = note.checkpoint.origin
    try:
        named = parse_origin(origin)
    except LineageError as exc:
        raise ReceiptError(Step.CHECKPOINT_SIGNATURE, str(exc)) from exc
    try:
        verify_note_signature(note.text, note.signatures, device_key, origin)
    except (LineageError, ValueError) as exc:
        raise ReceiptError(
            Step.CHECKPOINT_SIGNATURE,
            f"the checkpoint is not signed by this device key ({_key_label(device_key)}): {exc}",
        ) from exc
    return named


def _check_cosignature(note: _Note, witnesses: Iterable[PublicKey]) -> Cosignature:
    try:
        return verify_cosignature_lines(note.text, note.signatures, witnesses)
    except LineageError as exc:
        raise ReceiptError(
            Step.COSIGNATURE, f"no witness vouches for this checkpoint: {exc}"
        ) from exc


def _check_bundle(entry: Entry, root: TrustRoot | None, bundle: bytes | None) -> tuple[bool, str]:
    """(held, detail) of the bundle step, or (False, why it was skipped).

    What it shows depends on the entry's kind: a bundle the device refused
    (:data:`_REFUSED_BUNDLE_KINDS`) is shown to be the one the entry names, and whether it
    verifies under the root is reported, not required (its refusal is the point); for every
    other kind (a decision, ``bundle_installed``) the bundle the entry names must verify
    under the root's policy role, be the version the entry names, and be valid at the
    entry's time."""
    if entry.bundle_digest is None:
        return False, "the entry names no bundle"
    if root is None or bundle is None:
        return False, "needs a trust root and the bundle the entry names"
    if hashlib.sha256(bundle).digest() != entry.bundle_digest:
        raise ReceiptError(
            Step.BUNDLE,
            f"the bundle given is not the one the entry names (digest "
            f"{entry.bundle_digest.hex()[:16]}…)",
        )
    if entry.kind in _REFUSED_BUNDLE_KINDS:
        return True, _refused_bundle(entry, root, bundle)
    try:
        verified = verify_bundle(bundle, root=root, region=claimed_region(bundle))
    except BundleError as exc:
        raise ReceiptError(
            Step.BUNDLE, f"the bundle is not signed by the policy role: {exc}"
        ) from exc
    if verified.version != entry.bundle_version:
        raise ReceiptError(
            Step.BUNDLE,
            f"the entry names bundle version {entry.bundle_version}, the bundle is "
            f"version {verified.version}",
        )
    if entry.time >= verified.expires_at:
        raise ReceiptError(
            Step.BUNDLE,
            f"bundle version {verified.version} had expired at the entry's time "
            f"({entry.time}; valid until {verified.expires_at})",
        )
    if entry.time < verified.issued_at - SIGNED_TIME_SKEW_S:
        raise ReceiptError(
            Step.BUNDLE,
            f"the entry ({entry.time}) is before bundle version {verified.version} was "
            f"issued ({verified.issued_at})",
        )
    region = verified.target.region
    return True, (
        f"version {verified.version} for {region}, signed by the policy role, valid at the "
        f"entry's time ({verified.issued_at} to {verified.expires_at})"
    )


def _refused_bundle(entry: Entry, root: TrustRoot, bundle: bytes) -> str:
    try:
        verified = verify_bundle(bundle, root=root, region=claimed_region(bundle))
    except BundleError as exc:
        return (
            f"the bundle given is the one the device refused; it does not verify under the "
            f"root ({exc.code}: {exc})"
        )
    return (
        f"the bundle given is the one the device refused; it verifies under the root "
        f"(version {verified.version}): the device refused it as {entry.reason}"
    )


def _what(entry: Entry) -> str:
    if entry.request is not None:
        verdict = "allow" if entry.allowed else "deny"
        request = entry.request
        return f"{verdict} {request.subject} {request.action} {request.resource}"
    return f"{'took effect' if entry.allowed else 'refused'}: {entry.reason}"


def _key_label(key: PublicKey) -> str:
    return key.key_id.hex()[:16]


# --- reading a statement -------------------------------------------------------------------


def _read_statement(data: bytes, *, signed: bool = True) -> _Claim:
    """Decode the statement and its receipt strictly, checking every label this profile
    requires (as the ENTRY and INCLUSION_PATH steps); no signature is checked here. With
    ``signed`` false the claim carries no receipt signature check (a device receipt judged
    by its checkpoint signature, :func:`verify_device_receipt`)."""
    if not isinstance(data, bytes) or len(data) > _MAX_STATEMENT_BYTES:
        raise ReceiptError(Step.ENTRY, f"a receipt is at most {MAX_RECEIPT_BYTES} bytes")
    try:
        statement = cose.parse_sign1_open(
            data,
            max_bytes=_MAX_STATEMENT_BYTES,
            max_protected_bytes=_MAX_PROTECTED_BYTES,
            what="receipt",
        )
    except EnvelopeError as exc:
        raise ReceiptError(Step.ENTRY, f"not a readable receipt: {exc}") from exc
    entry, bundle, receipt_bytes = _statement_fields(statement, len(data))
    try:
        receipt = cose.parse_sign1_open(
            receipt_bytes,
            max_bytes=MAX_RECEIPT_BYTES,
            max_protected_bytes=_MAX_PROTECTED_BYTES,
            what="inclusion receipt",
        )
    except EnvelopeError as exc:
        raise ReceiptError(Step.INCLUSION_PATH, f"the receipt cannot be read: {exc}") from exc
    tree_size, leaf_index, path, note, origin = _receipt_fields(receipt)

    def check(root: bytes, keys: Sequence[PublicKey]) -> str:
        return _check_signatures(statement, receipt, entry, root, keys)

    return _Claim(
        entry, leaf_index, tree_size, path, note, check if signed else None, bundle, origin
    )


def _statement_fields(statement: cose.OpenSign1, size: int) -> tuple[bytes, bytes | None, bytes]:
    def fail(message: str) -> ReceiptError:
        return ReceiptError(Step.ENTRY, message)

    if statement.protected.get(cose.HEADER_CONTENT_TYPE) != CONTENT_TYPE:
        raise fail(f"the statement's content type is not {CONTENT_TYPE!r}")
    if statement.alg != ALG_EDDSA or not isinstance(
        statement.protected.get(cose.HEADER_KID), bytes
    ):
        raise fail("the statement is not signed with EdDSA (-8) under a key id")
    if not statement.unprotected.keys() <= _STATEMENT_LABELS:
        raise fail("the statement carries unprotected labels other than 394 and -65603")
    if statement.payload is None:
        raise fail("the statement has no entry (detached payload)")
    bundle = statement.unprotected.get(LABEL_BUNDLE)
    if bundle is not None and not isinstance(bundle, bytes):
        raise fail("the embedded bundle (label -65603) is not a byte string")
    if size - (len(bundle) if bundle else 0) > MAX_RECEIPT_BYTES:
        raise fail(f"a receipt is at most {MAX_RECEIPT_BYTES} bytes without its bundle")
    receipts = statement.unprotected.get(LABEL_RECEIPTS)
    if not isinstance(receipts, list) or len(receipts) != 1 or not isinstance(receipts[0], bytes):
        raise ReceiptError(
            Step.INCLUSION_PATH, "the statement does not carry exactly one receipt (label 394)"
        )
    return statement.payload, bundle, receipts[0]


def _receipt_fields(receipt: cose.OpenSign1) -> tuple[int, int, tuple[bytes, ...], str, str]:
    def fail(message: str) -> ReceiptError:
        return ReceiptError(Step.INCLUSION_PATH, message)

    protected, unprotected = receipt.protected, receipt.unprotected
    if receipt.payload is not None:
        raise fail("the receipt's payload is attached; it must be detached (the root)")
    if protected.get(LABEL_VDS) != VDS_RFC9162_SHA256 or receipt.alg != ALG_EDDSA:
        raise fail("the receipt is not an RFC 9162 SHA-256 (vds 1) receipt signed with EdDSA")
    claims = protected.get(LABEL_CWT_CLAIMS)
    origin = claims.get(CLAIM_ISS) if isinstance(claims, dict) else None
    if not isinstance(origin, str) or not isinstance(protected.get(cose.HEADER_KID), bytes):
        raise fail("the receipt does not sign its log's origin (claim 1) and key id")
    signed_size = _count(protected.get(LABEL_TREE_SIZE), "signed tree size")
    signed_index = _count(protected.get(LABEL_LEAF_INDEX), "signed leaf index")
    if unprotected.keys() != _RECEIPT_LABELS:
        raise fail("the receipt's unprotected labels are not exactly 396 and -65602")
    note = unprotected[LABEL_CHECKPOINT]
    if not isinstance(note, str):
        raise fail("the receipt's checkpoint (label -65602) is not text")
    tree_size, leaf_index, path = _inclusion_proof(unprotected[LABEL_VDP])
    if (tree_size, leaf_index) != (signed_size, signed_index):
        raise fail(
            f"the proof says leaf {leaf_index} of {tree_size}, the signed headers say leaf "
            f"{signed_index} of {signed_size}"
        )
    return tree_size, leaf_index, path, note, origin


def _inclusion_proof(vdp: object) -> tuple[int, int, tuple[bytes, ...]]:
    proofs = vdp.get(VDP_INCLUSION) if isinstance(vdp, dict) and len(vdp) == 1 else None
    if not isinstance(proofs, list) or len(proofs) != 1 or not isinstance(proofs[0], bytes):
        raise ReceiptError(
            Step.INCLUSION_PATH, "the receipt does not carry exactly one inclusion proof"
        )
    read = _proof_as_written(proofs[0])
    if read is not None:
        return read
    try:
        value = dcbor.decode(proofs[0], max_bytes=MAX_RECEIPT_BYTES, what="inclusion proof")
    except EnvelopeError as exc:
        raise ReceiptError(Step.INCLUSION_PATH, str(exc)) from exc
    if not isinstance(value, list) or len(value) != 3 or not isinstance(value[2], list):
        raise ReceiptError(
            Step.INCLUSION_PATH, "the inclusion proof is not [tree size, leaf index, [path]]"
        )
    hashes = tuple(h for h in value[2] if type(h) is bytes and len(h) == HASH_SIZE)
    if len(hashes) != len(value[2]) or len(hashes) > MAX_PATH_HASHES:
        raise ReceiptError(
            Step.INCLUSION_PATH, f"the path is not at most {MAX_PATH_HASHES} 32-byte hashes"
        )
    return _count(value[0], "tree size"), _count(value[1], "leaf index"), hashes


# --- reading a device receipt as it is written ---------------------------------------------
#
# A device writes every receipt with build_receipt, so its bytes follow one layout. Reading
# that layout straight from the bytes costs a fraction of the strict decode of each COSE
# message, header and proof, which verify_device_receipt pays on every parent a decision
# cites. The readers below accept only bytes that the strict reading (_read_statement and
# the schema checks after it) accepts, and give what it gives: every head in its shortest
# form, every map's keys exactly those build_receipt writes in their deterministic order,
# every value of the type the profile requires, text in strict UTF-8, nothing after the
# last item, every size bound. Anything else (a bundle embedded, another label, a longer
# head, ...) reads as ``None``, and the strict reading then judges it and names its fault.


class _NotAsWritten(Exception):
    """The bytes depart from the layout :func:`build_receipt` writes (never escapes)."""


def _after(data: bytes, at: int, literal: bytes) -> int:
    """The offset after ``literal``, which must stand at ``at``."""
    if not data.startswith(literal, at):
        raise _NotAsWritten
    return at + len(literal)


def _head(data: bytes, at: int, major: int) -> tuple[int, int]:
    """The argument of the CBOR head of ``major`` at ``at``, in its shortest form (RFC 8949
    section 4.2.1), and the offset after it."""
    initial = data[at] if at < len(data) else -1
    if initial >> 5 != major:
        raise _NotAsWritten
    info = initial & 0x1F
    if info < 24:
        return info, at + 1
    width = _ARGUMENT_BYTES.get(info, 0)
    end = at + 1 + width
    if not width or end > len(data):
        raise _NotAsWritten
    value = int.from_bytes(data[at + 1 : end], "big")
    # Each width holds only what no shorter one can: 24 and up in one byte, 2^8 in two, ...
    if value < (24 if width == 1 else 1 << (4 * width)):
        raise _NotAsWritten
    return value, end


def _byte_string(data: bytes, at: int, major: int = 2) -> tuple[bytes, int]:
    """The byte string (or, with major 3, the text's bytes) at ``at``, and the offset after."""
    length, at = _head(data, at, major)
    end = at + length
    if end > len(data):
        raise _NotAsWritten
    return data[at:end], end


def _text(data: bytes, at: int) -> tuple[str, int]:
    raw, at = _byte_string(data, at, 3)
    try:
        return raw.decode("utf-8"), at
    except UnicodeDecodeError:
        raise _NotAsWritten from None


def _statement_as_written(data: bytes) -> _Claim | None:
    """The claim of a statement laid out as :func:`build_receipt` writes it without a bundle
    (:data:`_STATEMENT_PROTECTED`, :data:`_STATEMENT_UNPROTECTED`), or ``None``: what
    :func:`_read_statement` with ``signed`` false returns for those bytes, read straight
    from them."""
    if type(data) is not bytes or len(data) > MAX_RECEIPT_BYTES:
        return None
    try:
        at = _after(data, 0, _SIGN1_HEAD)
        protected, at = _byte_string(data, at)
        _, end = _byte_string(protected, _after(protected, 0, _STATEMENT_PROTECTED))
        if end != len(protected) or end > _MAX_PROTECTED_BYTES:
            return None
        receipt, at = _byte_string(data, _after(data, at, _STATEMENT_UNPROTECTED))
        entry, at = _byte_string(data, at)
        _, at = _byte_string(data, at)
        if at != len(data):
            return None
        return _receipt_as_written(receipt, entry)
    except _NotAsWritten:
        return None


def _receipt_as_written(receipt: bytes, entry: bytes) -> _Claim | None:
    """:func:`_statement_as_written` for the receipt the statement carries
    (:data:`_RECEIPT_PROTECTED`, :data:`_RECEIPT_UNPROTECTED`): ``_NotAsWritten`` or ``None``
    when it departs from them."""
    at = _after(receipt, 0, _SIGN1_HEAD)
    protected, at = _byte_string(receipt, at)
    if len(protected) > _MAX_PROTECTED_BYTES:
        return None
    _, p = _byte_string(protected, _after(protected, 0, _RECEIPT_PROTECTED))
    origin, p = _text(protected, _after(protected, p, _RECEIPT_CLAIMS))
    _, p = _head(protected, _after(protected, p, _RECEIPT_IAT), 0)
    signed_size, p = _head(protected, _after(protected, p, _RECEIPT_SIZE), 0)
    signed_index, p = _head(protected, _after(protected, p, _RECEIPT_INDEX), 0)
    proof, at = _byte_string(receipt, _after(receipt, at, _RECEIPT_UNPROTECTED))
    note, at = _text(receipt, _after(receipt, at, _RECEIPT_NOTE))
    _, at = _byte_string(receipt, _after(receipt, at, _DETACHED))
    read = _proof_as_written(proof)
    if read is None or p != len(protected) or at != len(receipt):
        return None
    tree_size, leaf_index, path = read
    if (tree_size, leaf_index) != (signed_size, signed_index):
        return None
    return _Claim(entry, leaf_index, tree_size, path, note, None, None, origin)


def _proof_as_written(data: bytes) -> tuple[int, int, tuple[bytes, ...]] | None:
    """The inclusion proof ``data`` as :func:`build_receipt` writes it: the deterministic CBOR
    of ``[tree size, leaf index, [path]]`` with at most :data:`MAX_PATH_HASHES` 32-byte
    hashes; ``None`` for any other bytes (the strict decode and
    :func:`_inclusion_proof`'s schema then judge them)."""
    try:
        size, at = _head(data, _after(data, 0, b"\x83"), 0)
        index, at = _head(data, at, 0)
        count, at = _head(data, at, 4)
    except _NotAsWritten:
        return None
    if (
        count > MAX_PATH_HASHES
        or len(data) != at + count * _PATH_ITEM_BYTES
        or data[at::_PATH_ITEM_BYTES] != _HASH_HEAD[:1] * count
        or data[at + 1 :: _PATH_ITEM_BYTES] != _HASH_HEAD[1:] * count
    ):
        return None
    ends = range(at + _PATH_ITEM_BYTES, len(data) + 1, _PATH_ITEM_BYTES)
    return size, index, tuple(data[end - HASH_SIZE : end] for end in ends)


_ARGUMENT_BYTES = {24: 1, 25: 2, 26: 4, 27: 8}
"""Bytes after a CBOR head byte whose additional information is 24 to 27."""
_HASH_HEAD = b"\x58\x20"
"""The CBOR head of a 32-byte byte string."""
_PATH_ITEM_BYTES = len(_HASH_HEAD) + HASH_SIZE
_SIGN1_HEAD = b"\xd2\x84"
"""Tag 18 and an array of four items: every COSE_Sign1."""


def _map_of(pairs: int) -> bytes:
    """The CBOR head of a map of ``pairs`` (fewer than 24) pairs."""
    return bytes((0xA0 | pairs,))


_ONE_ITEM = b"\x81"
"""The CBOR head of an array of one item."""


_STATEMENT_PROTECTED = (
    _map_of(3)
    + dcbor.encode(cose.HEADER_ALG)
    + dcbor.encode(ALG_EDDSA)
    + dcbor.encode(cose.HEADER_CONTENT_TYPE)
    + dcbor.encode(CONTENT_TYPE)
    + dcbor.encode(cose.HEADER_KID)
)
"""A statement's protected header up to its kid: ``{1: -8, 3: CONTENT_TYPE, 4: kid}``."""
_STATEMENT_UNPROTECTED = _map_of(1) + dcbor.encode(LABEL_RECEIPTS) + _ONE_ITEM
"""A statement's unprotected header up to its receipt: ``{394: [receipt]}``."""
_RECEIPT_PROTECTED = (
    _map_of(6)
    + dcbor.encode(cose.HEADER_ALG)
    + dcbor.encode(ALG_EDDSA)
    + dcbor.encode(cose.HEADER_KID)
)
"""A receipt's protected header up to its kid: ``{1: -8, 4: kid, 15: {1: origin, 6: iat},
395: 1, -65600: tree size, -65601: leaf index}``, in that (deterministic) order."""
_RECEIPT_CLAIMS = dcbor.encode(LABEL_CWT_CLAIMS) + _map_of(2) + dcbor.encode(CLAIM_ISS)
_RECEIPT_IAT = dcbor.encode(CLAIM_IAT)
_RECEIPT_SIZE = (
    dcbor.encode(LABEL_VDS) + dcbor.encode(VDS_RFC9162_SHA256) + dcbor.encode(LABEL_TREE_SIZE)
)
_RECEIPT_INDEX = dcbor.encode(LABEL_LEAF_INDEX)
_RECEIPT_UNPROTECTED = (
    _map_of(2) + dcbor.encode(LABEL_VDP) + _map_of(1) + dcbor.encode(VDP_INCLUSION) + _ONE_ITEM
)
"""A receipt's unprotected header up to its proof: ``{396: {-1: [proof]}, -65602: note}``."""
_RECEIPT_NOTE = dcbor.encode(LABEL_CHECKPOINT)
_DETACHED = dcbor.encode(None)


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReceiptError(Step.INCLUSION_PATH, f"the receipt's {what} is not an integer ≥ 0")
    return value


def _check_signatures(
    statement: cose.OpenSign1,
    receipt: cose.OpenSign1,
    entry: bytes,
    root: bytes,
    keys: Sequence[PublicKey],
) -> str:
    """The RECEIPT_SIGNATURE step: one key (found by kid, device or witness) signed both
    the receipt over ``root`` and the statement over the entry."""
    kid = receipt.protected.get(cose.HEADER_KID)
    if statement.protected.get(cose.HEADER_KID) != kid:
        raise ReceiptError(
            Step.RECEIPT_SIGNATURE, "the statement and its receipt name different signers"
        )
    key = next((k for k in keys if k.key_id == kid), None)
    if key is None:
        raise ReceiptError(
            Step.RECEIPT_SIGNATURE,
            "the receipt is signed by a key that is neither the device's nor a witness's "
            f"(kid {kid.hex()[:16] if isinstance(kid, bytes) else '?'}…)",
        )
    if not receipt.verify(key, root):
        raise ReceiptError(
            Step.RECEIPT_SIGNATURE, "the receipt's signature over the root does not verify"
        )
    if not statement.verify(key, entry):
        raise ReceiptError(
            Step.RECEIPT_SIGNATURE, "the statement's signature over the entry does not verify"
        )
    who = "the device key" if key is keys[0] else "witness"
    return f"by {who} {_key_label(key)}"

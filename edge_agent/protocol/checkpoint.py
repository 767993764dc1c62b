"""Signed checkpoints of the execution lineage: C2SP ``tlog-checkpoint`` in a C2SP signed note.

A checkpoint states a tree size and the RFC 9162 root at that size. Its note text is::

    <origin>\\n<tree size, decimal>\\n<base64 root>\\n[<extension line>\\n ...]

followed by a blank line and one or more signature lines ``— <key name> <base64(key ID ||
signature)>``; the key ID is ``SHA-256(key name || 0x0A || 0x01 || Ed25519 public key)[:4]``
and the Ed25519 signature covers the note text, final newline included (c2sp.org/signed-note,
as golang.org/x/mod/sumdb/note implements it). Witnesses and Go tooling can read our notes.

Our convention: the origin names the device and its key epoch (:func:`origin_for`) and the
device key signs under a key name equal to the origin, so a checkpoint can never be presented
as another device's or another key epoch's. :func:`verify_checkpoint` enforces that; the
lower-level :func:`open_note` does not, for notes of other logs.

Verification is bounded (:data:`MAX_NOTE_BYTES`, :data:`MAX_NOTE_SIGNATURES`) and raises only
:class:`LineageError`. Signatures by unknown keys are ignored, as the note spec requires; a
failing signature by the expected key rejects the whole note. This module does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from edge_agent.errors import LineageError
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.merkle import HASH_SIZE

__all__ = [
    "KEY_ID_BYTES",
    "MAX_NOTE_BYTES",
    "MAX_NOTE_SIGNATURES",
    "Checkpoint",
    "NoteSignature",
    "decode_canonical_base64",
    "format_checkpoint_body",
    "note_key_id",
    "open_note",
    "origin_for",
    "parse_checkpoint_body",
    "parse_origin",
    "require_key_name",
    "sign_checkpoint",
    "sign_note",
    "split_note",
    "verify_checkpoint",
    "verify_note_signature",
]

MAX_NOTE_BYTES = 16 * 1024
"""Largest signed note accepted, in UTF-8 bytes: a checkpoint with 16 Ed25519 signatures by
long key names is under 4 KiB."""

MAX_NOTE_SIGNATURES = 16
"""Signature lines accepted on one note; the signed-note spec requires accepting 16."""

_SIGNATURE_PREFIX = "\N{EM DASH} "
_ED25519_TYPE = 0x01
KEY_ID_BYTES = 4
"""Length of a signed-note key ID, the first bytes of every signature line's blob."""
_ORIGIN_PREFIX = "edgegov/v1/device/"
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_CONTROL_BYTES = bytes(range(0x0A)) + bytes(range(0x0B, 0x20))
"""The characters :data:`_CONTROL` matches, as bytes."""
_SPACE = re.compile(r"\s")
"""Whitespace as ``str.isspace`` counts it (the same test), in one scan of a key name."""
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_ORIGIN = re.compile(r"edgegov/v1/device/([A-Za-z0-9_.~%-]+)/epoch/([1-9][0-9]{0,15})")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: the log ``origin``, its ``size`` in leaves and the root at that size.

    ``extensions`` are the optional, opaque extension lines of the format (we write none).
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _is_line(self.origin):
            raise ValueError("a checkpoint origin is one non-empty line of printable text")
        if isinstance(self.size, bool) or not 0 <= self.size <= MAX_COUNTER:
            raise ValueError(f"tree size {self.size!r} is out of range")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise ValueError("a checkpoint root is a 32-byte SHA-256 hash")
        if not all(_is_line(line) for line in self.extensions):
            raise ValueError("a checkpoint extension is one non-empty line of printable text")


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One parsed signature line of a signed note: ``— <name> base64(key_id || signature)``.

    ``signature`` is the blob after the key ID, uninterpreted (an Ed25519 signature for a
    note signature, a timestamped one for a cosignature).
    """

    name: str
    key_id: bytes
    signature: bytes

    @property
    def line(self) -> str:
        """The signature line as written in the note, without its newline."""
        blob = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{_SIGNATURE_PREFIX}{self.name} {blob}"


def origin_for(device_id: str, key_epoch: int) -> str:
    """The origin (and key name) of a device's log under one device-key epoch.

    For example ``edgegov/v1/device/gw-001/epoch/1``. The device id is percent-encoded
    (everything but ``A-Z a-z 0-9 _ . - ~``), so the origin holds no space, ``+`` or extra
    ``/`` and two different devices or epochs never share an origin.

    Raises:
        ValueError: empty device id, or an epoch outside 1..``MAX_COUNTER``.
    """
    if not device_id:
        raise ValueError("a device id is not empty")
    if (
        isinstance(key_epoch, bool)
        or not isinstance(key_epoch, int)
        or not 0 < key_epoch <= MAX_COUNTER
    ):
        raise ValueError(f"key epoch {key_epoch!r} is not an integer from 1 to {MAX_COUNTER}")
    return f"{_ORIGIN_PREFIX}{quote(device_id, safe='')}/epoch/{key_epoch}"


def parse_origin(origin: str) -> tuple[str, int]:
    """The device id and key epoch an origin names: the inverse of :func:`origin_for`.

    Only the exact text :func:`origin_for` writes is accepted (canonical percent-encoding,
    epoch 1..``MAX_COUNTER`` without leading zeros), so a note signed under any other log's
    origin (``example.com/log``) is never taken for a device's.

    Raises:
        LineageError: ``origin`` is not ``edgegov/v1/device/<id>/epoch/<n>``.
    """
    match = _ORIGIN.fullmatch(origin)
    if match is not None:
        try:
            encoded, epoch = match[1], int(match[2])
            # Text without '%' is its own percent-encoding and decoding (the pattern admits
            # no other character quote() changes): only the epoch's bound is left to check.
            if "%" not in encoded and epoch <= MAX_COUNTER:
                return encoded, epoch
            device_id = unquote(encoded, errors="strict")
            if origin_for(device_id, epoch) == origin:
                return device_id, epoch
        except (UnicodeDecodeError, ValueError):
            pass
    raise LineageError(
        f"origin {origin[:80]!r} is not an edgegov device log (edgegov/v1/device/<id>/epoch/<n>)"
    )


def format_checkpoint_body(checkpoint: Checkpoint) -> str:
    """The note text of ``checkpoint``: the exact text its signatures cover."""
    lines = (
        checkpoint.origin,
        str(checkpoint.size),
        base64.b64encode(checkpoint.root).decode("ascii"),
        *checkpoint.extensions,
    )
    return "".join(f"{line}\n" for line in lines)


def parse_checkpoint_body(text: str) -> Checkpoint:
    """Read a checkpoint note text (origin, size, root, extension lines), strictly.

    The size must be canonical decimal (no sign, no leading zero) and the root canonical
    base64 of 32 bytes, so one checkpoint has exactly one text.

    Raises:
        LineageError: oversize text, fewer than three lines, an empty line, a malformed size
            or root.
    """
    if len(text) > MAX_NOTE_BYTES or not text.endswith("\n"):
        raise LineageError("a checkpoint is at most 16 KiB of lines each ending in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise LineageError("a checkpoint is three or more non-empty lines: origin, size, root")
    origin, size_line, root_line, *extensions = lines
    if not _DECIMAL.fullmatch(size_line):
        raise LineageError(f"checkpoint tree size {size_line[:24]!r} is not a canonical decimal")
    if int(size_line) > MAX_COUNTER:
        raise LineageError(f"checkpoint tree size {size_line[:24]} is over {MAX_COUNTER} (2^53-1)")
    root = decode_canonical_base64(root_line)
    if root is None or len(root) != HASH_SIZE:
        raise LineageError("checkpoint root is not the base64 of a 32-byte hash")
    try:
        return Checkpoint(origin, int(size_line), root, tuple(extensions))
    except ValueError as exc:
        raise LineageError(f"malformed checkpoint: {exc}") from exc


def note_key_id(key_name: str, public_key: PublicKey, signature_type: int = _ED25519_TYPE) -> bytes:
    """The 4-byte signed-note key ID of an Ed25519 key under ``key_name``.

    ``signature_type`` is the signed-note signature type byte: 0x01 for an Ed25519 note
    signature, 0x04 for a C2SP cosignature/v1 by the same kind of key.
    """
    material = key_name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key.raw
    return hashlib.sha256(material).digest()[:KEY_ID_BYTES]


def sign_note(text: str, key: PrivateKey, key_name: str) -> str:
    """Sign ``text`` as a C2SP signed note with one Ed25519 signature line.

    Raises:
        ValueError: ``text`` does not end in a newline or holds control characters, the key
            name is not a valid note key name, or the note would exceed MAX_NOTE_BYTES.
    """
    require_key_name(key_name)
    if not text.endswith("\n") or _CONTROL.search(text):
        raise ValueError("note text ends in a newline and holds no other control characters")
    message = text.encode("utf-8")
    blob = note_key_id(key_name, key.public) + key.sign(message)
    note = f"{text}\n{_SIGNATURE_PREFIX}{key_name} {base64.b64encode(blob).decode('ascii')}\n"
    if len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise ValueError(f"a signed note is at most {MAX_NOTE_BYTES} bytes")
    return note


def open_note(note: str | bytes, public_key: PublicKey, key_name: str) -> str:
    """Verify a signed note against one known key and return its text.

    Steps: 1. size cap and UTF-8 without control characters; 2. split text and signature
    block at the last blank line; 3. parse every signature line; 4. verify every line by
    the known key (name and key ID both match), ignoring the others; 5. require at least one
    (steps 4 and 5 are :func:`verify_note_signature`).

    Raises:
        ValueError: ``key_name`` is not a valid note key name.
        LineageError: oversize or malformed note, a bad signature by the known key, or no
            signature by it at all.
    """
    text, signatures = split_note(note)
    verify_note_signature(text, signatures, public_key, key_name)
    return text.decode("utf-8")


def verify_note_signature(
    text: bytes, signatures: Sequence[NoteSignature], public_key: PublicKey, key_name: str
) -> None:
    """Steps 4 and 5 of :func:`open_note` on a note :func:`split_note` has read: every
    signature line by ``public_key`` under ``key_name`` verifies over ``text``, and there is
    at least one. For a verifier that reads the note once for several checks.

    Raises:
        ValueError: ``key_name`` is not a valid note key name.
        LineageError: a bad signature by the key, or no signature by it at all.
    """
    require_key_name(key_name)
    key_id = note_key_id(key_name, public_key)
    verified = 0
    for line in signatures:
        if line.name != key_name or line.key_id != key_id:
            continue
        if not public_key.verify(text, line.signature):
            raise LineageError(f"invalid signature for key {key_name}+{key_id.hex()}")
        verified += 1
    if not verified:
        raise LineageError(f"signed note has no signature by key {key_name}+{key_id.hex()}")


def split_note(note: str | bytes) -> tuple[bytes, list[NoteSignature]]:
    """Split a signed note into its text (the signed bytes) and its parsed signature lines.

    Checks the size cap, UTF-8 without control characters, the blank line before the
    signatures, at most :data:`MAX_NOTE_SIGNATURES` well-formed lines; verifies nothing.

    Raises:
        LineageError: oversize or malformed note.
    """
    message = _note_bytes(note)
    split = message.rfind(b"\n\n")
    if split < 0:
        raise LineageError("signed note has no blank line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block.endswith(b"\n"):
        raise LineageError("signed note does not end with a signature line and a newline")
    return text, _signature_lines(block.decode("utf-8"))


def sign_checkpoint(checkpoint: Checkpoint, key: PrivateKey, key_name: str) -> str:
    """The signed note of ``checkpoint`` by ``key`` under ``key_name`` (its origin).

    Raises:
        ValueError: ``key_name`` differs from the origin or is not a valid note key name.
    """
    if key_name != checkpoint.origin:
        raise ValueError(f"key name {key_name!r} is not the checkpoint origin")
    return sign_note(format_checkpoint_body(checkpoint), key, key_name)


def verify_checkpoint(note: str | bytes, public_key: PublicKey, key_name: str) -> Checkpoint:
    """Verify a signed checkpoint by ``public_key`` under ``key_name`` and return it.

    Steps: 1. open the note (bounds, syntax, signature by the key); 2. parse the checkpoint
    text; 3. require its origin to be the key name, so the checkpoint is this device's and
    this key epoch's.

    Raises:
        ValueError: ``key_name`` is not a valid note key name.
        LineageError: malformed or oversize note, bad or missing signature by the key, a
            malformed checkpoint, or an origin other than ``key_name``.
    """
    checkpoint = parse_checkpoint_body(open_note(note, public_key, key_name))
    if checkpoint.origin != key_name:
        raise LineageError(
            f"checkpoint origin {checkpoint.origin[:80]!r} is not the signer {key_name!r}"
        )
    return checkpoint


def _note_bytes(note: str | bytes) -> bytes:
    if len(note) > MAX_NOTE_BYTES:
        raise LineageError(f"signed note is larger than {MAX_NOTE_BYTES} bytes")
    try:
        text = note.decode("utf-8") if isinstance(note, bytes) else note
        message = text.encode("utf-8")
    except UnicodeError as exc:
        raise LineageError("signed note is not valid UTF-8") from exc
    if len(message) > MAX_NOTE_BYTES:
        raise LineageError(f"signed note is larger than {MAX_NOTE_BYTES} bytes")
    # The control characters are single bytes in UTF-8 and no other character's encoding
    # holds such a byte: deleting them from the bytes is the one-pass test.
    if len(message.translate(None, _CONTROL_BYTES)) != len(message):
        raise LineageError("signed note holds a control character other than newline")
    return message


def _signature_lines(block: str) -> list[NoteSignature]:
    lines = block[:-1].split("\n")
    if len(lines) > MAX_NOTE_SIGNATURES:
        raise LineageError(f"signed note has more than {MAX_NOTE_SIGNATURES} signatures")
    parsed = []
    for line in lines:
        name, _, encoded = line.removeprefix(_SIGNATURE_PREFIX).partition(" ")
        signed = decode_canonical_base64(encoded)
        if (
            not line.startswith(_SIGNATURE_PREFIX)
            or not _is_key_name(name)
            or signed is None
            or len(signed) <= KEY_ID_BYTES
        ):
            raise LineageError(f"malformed signature line {line[:80]!r}")
        parsed.append(NoteSignature(name, signed[:KEY_ID_BYTES], signed[KEY_ID_BYTES:]))
    return parsed


def decode_canonical_base64(encoded: str) -> bytes | None:
    """The bytes of ``encoded`` when it is non-empty, canonical standard base64 (padded, no
    stray characters, one text per value); ``None`` otherwise."""
    try:
        raw = encoded.encode("ascii")
        # base64.b64decode(raw, validate=True) and base64.b64encode, without their wrappers:
        # every checkpoint and signature line a verifier reads comes through here.
        decoded = binascii.a2b_base64(raw, strict_mode=True)
    except (UnicodeError, binascii.Error):
        return None
    if not raw or binascii.b2a_base64(decoded, newline=False) != raw:
        return None
    return decoded


def _is_key_name(name: str) -> bool:
    return bool(name) and "+" not in name and not _SPACE.search(name)


def require_key_name(key_name: str) -> None:
    """Refuse a key name a signature line could not carry (caller misuse: ``ValueError``)."""
    if not _is_key_name(key_name) or _CONTROL.search(key_name):
        raise ValueError(f"{key_name!r} is not a note key name (non-empty, no space, no '+')")


def _is_line(value: str) -> bool:
    return (
        isinstance(value, str) and bool(value) and "\n" not in value and not _CONTROL.search(value)
    )

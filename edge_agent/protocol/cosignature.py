"""C2SP ``cosignature/v1``: a witness's Ed25519 cosignature on a device's signed checkpoint.

A cosignature is one more signature line on the checkpoint's signed note::

    — edgegov/v1/witness base64(key ID (4) || timestamp u64 big-endian (8) || signature (64))

with key ID ``SHA-256(name || "\\n" || 0x04 || Ed25519 public key)[:4]`` and the Ed25519
signature over ``cosignature/v1\\ntime <timestamp>\\n`` followed by the note text (c2sp.org/
tlog-cosignature). It states that, at ``timestamp``, the witness had verified this checkpoint
consistent with every earlier one it saw for that origin.

Our witness is the hub and its key is the trust root's verifier role key: the fixed header
line ``cosignature/v1`` keeps this message apart from any COSE Sig_structure the same key
signs. The device's own signature line stays; verifiers of the device signature ignore the
witness line (unknown key), as the signed-note spec requires.

Verification is bounded by the note caps of :mod:`edge_agent.protocol.checkpoint` and raises
only :class:`LineageError`. This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from edge_agent.errors import LineageError
from edge_agent.protocol.checkpoint import (
    MAX_NOTE_BYTES,
    MAX_NOTE_SIGNATURES,
    NoteSignature,
    note_key_id,
    parse_checkpoint_body,
    require_key_name,
    split_note,
)
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import TrustRoot

__all__ = [
    "MAX_COSIGNATURE_TIME",
    "WITNESS_KEY_NAME",
    "Cosignature",
    "cosign_note",
    "cosignature_key_id",
    "select_witnesses",
    "verify_cosignature",
    "verify_cosignature_lines",
]

WITNESS_KEY_NAME = "edgegov/v1/witness"
"""The key name of the hub's witness signature lines."""

MAX_COSIGNATURE_TIME = 2**63 - 1
"""Largest cosignature timestamp (POSIX seconds) the spec allows."""

_COSIGNATURE_TYPE = 0x04
_TIMESTAMP_BYTES = 8
_SIGNATURE_BYTES = 64


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A verified cosignature: the witness ``key`` that made it and its ``time`` (POSIX s)."""

    key: PublicKey
    time: int


def cosignature_key_id(key: PublicKey, name: str = WITNESS_KEY_NAME) -> bytes:
    """The 4-byte cosignature/v1 key ID of witness ``key`` under ``name``."""
    return note_key_id(name, key, _COSIGNATURE_TYPE)


def cosign_note(note: str, key: PrivateKey, *, time: int, name: str = WITNESS_KEY_NAME) -> str:
    """``note`` (a signed checkpoint) with this witness's cosignature line appended.

    An earlier line by the same witness key and name is replaced, so a note carries at most
    one cosignature per witness. The caller has verified the checkpoint first: cosigning is
    the statement that it is consistent with everything the witness holds.

    Raises:
        ValueError: ``note`` is not a signed note whose text is a checkpoint, ``time`` is not
            an integer from 0 to 2^63-1, ``name`` is not a key name, or the cosigned note
            would exceed MAX_NOTE_BYTES or MAX_NOTE_SIGNATURES.
    """
    require_key_name(name)
    if isinstance(time, bool) or not isinstance(time, int) or not 0 <= time <= MAX_COSIGNATURE_TIME:
        raise ValueError(f"cosignature time {time!r} is not an integer from 0 to 2^63-1")
    try:
        text, signatures = split_note(note)
        parse_checkpoint_body(text.decode("utf-8"))
    except LineageError as exc:
        raise ValueError(f"cannot cosign: {exc}") from exc
    key_id = cosignature_key_id(key.public, name)
    stamp = time.to_bytes(_TIMESTAMP_BYTES, "big")
    line = NoteSignature(name, key_id, stamp + key.sign(_signed_message(text, time)))
    kept = [s for s in signatures if (s.name, s.key_id) != (name, key_id)]
    if len(kept) + 1 > MAX_NOTE_SIGNATURES:
        raise ValueError(f"a note carries at most {MAX_NOTE_SIGNATURES} signatures")
    lines = "".join(f"{s.line}\n" for s in (*kept, line))
    cosigned = f"{text.decode('utf-8')}\n{lines}"
    if len(cosigned.encode("utf-8")) > MAX_NOTE_BYTES:
        raise ValueError(f"a signed note is at most {MAX_NOTE_BYTES} bytes")
    return cosigned


def select_witnesses(
    given: Iterable[PublicKey], *, device_key: PublicKey, root: TrustRoot | None = None
) -> tuple[PublicKey, ...]:
    """The witness keys a verifier of ``device_key``'s log may trust: ``given`` and, with
    ``root``, the root's verifier role keys (the hub's witness keys), each once.

    A witness vouches for a log it does not control, so the device's own key never counts
    as one (its "cosignature" would be the device vouching for itself); and with ``root``,
    a given key must be one of its verifier keys: a policy, freshness or revoke key (or a
    stranger's) cosigning proves nothing the root says it may.

    Raises:
        ValueError: the device key is among them, or (with ``root``) a given key is not a
            verifier role key of the root (the sentence names the role it has).
    """
    keys = tuple(given)
    verifiers = () if root is None else tuple(root.role(Role.VERIFIER).keys.values())
    if any(key.raw == device_key.raw for key in (*keys, *verifiers)):
        raise ValueError(
            f"the device key {device_key.key_id.hex()[:16]} was given as a witness key: a "
            "device cannot witness its own log"
        )
    if root is not None:
        for key in keys:
            if key.raw not in {verifier.raw for verifier in verifiers}:
                raise ValueError(
                    f"witness key {key.key_id.hex()[:16]} is {_role_of(key, root)}: with a "
                    "trust root, a witness key must be one of its verifier (witness) keys"
                )
    found: dict[bytes, PublicKey] = {}
    for key in (*keys, *verifiers):
        found.setdefault(key.raw, key)
    return tuple(found.values())


def _role_of(key: PublicKey, root: TrustRoot) -> str:
    roles = [str(role) for role, keys in root.roles.items() if key.raw in _raws(keys.keys)]
    return f"the trust root's {' and '.join(roles)} key" if roles else "not in the trust root"


def _raws(keys: Mapping[bytes, PublicKey]) -> set[bytes]:
    return {key.raw for key in keys.values()}


def verify_cosignature(
    note: str | bytes, keys: Iterable[PublicKey], *, name: str = WITNESS_KEY_NAME
) -> Cosignature:
    """The first valid cosignature on ``note`` by one of the witness ``keys``.

    Steps: 1. split the note (bounds, syntax); 2. match each signature line to a key by
    name and key ID, ignoring lines by other keys; 3. check a matching line's length and
    timestamp and its Ed25519 signature over the cosignature/v1 message; 4. require one
    (steps 2 to 4 are :func:`verify_cosignature_lines`).
    A matching line that fails rejects the note: a witness key never signs garbage.

    Raises:
        ValueError: ``name`` is not a key name.
        LineageError: malformed or oversize note, an invalid line by one of the keys, or no
            cosignature by any of them.
    """
    text, signatures = split_note(note)
    return verify_cosignature_lines(text, signatures, keys, name=name)


def verify_cosignature_lines(
    text: bytes,
    signatures: Sequence[NoteSignature],
    keys: Iterable[PublicKey],
    *,
    name: str = WITNESS_KEY_NAME,
) -> Cosignature:
    """Steps 2 to 4 of :func:`verify_cosignature` on a note
    :func:`~edge_agent.protocol.checkpoint.split_note` has read, for a verifier that reads
    the note once for several checks.

    Raises:
        ValueError: ``name`` is not a key name.
        LineageError: an invalid line by one of the keys, or no cosignature by any of them.
    """
    require_key_name(name)
    by_id = {cosignature_key_id(key, name): key for key in keys}
    found: Cosignature | None = None
    for line in signatures:
        key = by_id.get(line.key_id) if line.name == name else None
        if key is None:
            continue
        cosignature = _check_line(text, line, key)
        found = found or cosignature
    if found is None:
        ids = ", ".join(sorted(key_id.hex() for key_id in by_id)) or "none given"
        raise LineageError(f"checkpoint has no cosignature by witness key {name}+[{ids}]")
    return found


def _check_line(text: bytes, line: NoteSignature, key: PublicKey) -> Cosignature:
    label = f"{line.name}+{line.key_id.hex()}"
    if len(line.signature) != _TIMESTAMP_BYTES + _SIGNATURE_BYTES:
        raise LineageError(f"cosignature by {label} is not a timestamp and an Ed25519 signature")
    time = int.from_bytes(line.signature[:_TIMESTAMP_BYTES], "big")
    if time > MAX_COSIGNATURE_TIME:
        raise LineageError(f"cosignature by {label} has a timestamp over 2^63-1")
    if not key.verify(_signed_message(text, time), line.signature[_TIMESTAMP_BYTES:]):
        raise LineageError(f"invalid cosignature by witness key {label}")
    return Cosignature(key, time)


def _signed_message(text: bytes, time: int) -> bytes:
    return f"cosignature/v1\ntime {time}\n".encode("ascii") + text

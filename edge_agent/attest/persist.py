"""The attestation state file: ``STATE_DIR/attestation.cbor``.

Deterministic CBOR ``{"result": bstr / null, "local": {...} / null}``: the hub's last
attestation result exactly as received (re-verified on every load), and the last local
verdict, so that other ``edge-agent`` processes (``status``, ``decide``) see what the running
agent measured. A local verdict counts only until its ``valid_until``: a stale file can only
deny. Written atomically (temp file, fsync, rename) in the agent's own 0700 state directory.
A file that is missing, damaged or fails verification leaves no attestation state (deny when
the bundle requires attestation), never a partial one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import ConfigError, EnvelopeError, StateError
from edge_agent.protocol import dcbor
from edge_agent.protocol._schema import Fields
from edge_agent.protocol.attestation import MAX_DETAIL_CHARS, MAX_RESULT_BYTES
from edge_agent.support.cli import write_atomic
from edge_agent.support.files import read_regular_file
from edge_agent.trust.state import LocalVerdict

__all__ = ["ATTESTATION_FILE", "StoredAttestation", "read_attestation", "write_attestation"]

ATTESTATION_FILE = "attestation.cbor"
MAX_FILE_BYTES = 8 * 1024


class _FileError(EnvelopeError):
    code = "attestation_state"


@dataclass(frozen=True, slots=True)
class StoredAttestation:
    result: bytes | None
    local: LocalVerdict | None


def read_attestation(state_dir: Path) -> StoredAttestation:
    """The stored attestation state (empty when there is no file).

    Raises:
        StateError: the file is unreadable or damaged.
    """
    path = state_dir / ATTESTATION_FILE
    try:
        raw = read_regular_file(path, MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return StoredAttestation(None, None)
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        fields = Fields(
            dcbor.decode(raw, max_bytes=MAX_FILE_BYTES, what=str(path)),
            ATTESTATION_FILE,
            _FileError,
            required=frozenset({"result", "local"}),
        )
        result = fields.raw("result")
        if result is not None and (not isinstance(result, bytes) or len(result) > MAX_RESULT_BYTES):
            raise _FileError("result must be the bytes of an attestation result")
        local = fields.raw("local")
        return StoredAttestation(result, None if local is None else _local(local))
    except EnvelopeError as exc:
        raise StateError(f"{path} is damaged: {exc.message}") from exc


def _local(value: object) -> LocalVerdict:
    fields = Fields(
        value,
        "local",
        _FileError,
        required=frozenset(
            {"passed", "digest", "bundle_digest", "measured_at", "valid_until", "detail"}
        ),
    )
    passed, detail = fields.raw("passed"), fields.raw("detail")
    if not isinstance(passed, bool) or not isinstance(detail, str) or len(detail) > 4096:
        raise _FileError("local.passed must be a bool and local.detail text")
    return LocalVerdict(
        passed=passed,
        digest=fields.byte_string("digest", length=32),
        bundle_digest=fields.byte_string("bundle_digest"),
        measured_at=fields.integer("measured_at"),
        valid_until=fields.integer("valid_until"),
        detail=detail[:MAX_DETAIL_CHARS],
    )


def write_attestation(state_dir: Path, stored: StoredAttestation) -> None:
    """Replace the state file atomically.

    Raises:
        StateError: it cannot be written (the previous file stays).
    """
    local = stored.local
    value = {
        "result": stored.result,
        "local": None
        if local is None
        else {
            "passed": local.passed,
            "digest": local.digest,
            "bundle_digest": local.bundle_digest,
            "measured_at": local.measured_at,
            "valid_until": local.valid_until,
            "detail": local.detail[:MAX_DETAIL_CHARS],
        },
    }
    try:
        write_atomic(state_dir / ATTESTATION_FILE, dcbor.encode(value), mode=0o600)
    except ConfigError as exc:
        raise StateError(f"cannot record the attestation state: {exc.message}") from exc

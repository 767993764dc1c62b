"""Rows of the hub registry decoded into its records, and records encoded into rows: what
every backend (:mod:`hub.registry.sqlite`, :mod:`hub.registry.postgres`) reads and writes
the same way, whatever its SQL dialect.

Each backend selects the columns of a table in the order of :mod:`hub.registry.schema`, so
one decoder serves both. A column that does not hold its type is damage:
:class:`RegistryError`.
"""

from __future__ import annotations

import json

import cbor2

from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.lineage_entries import Entry
from hub.registry.interface import RegistryError
from hub.registry.lineage_records import LineageHit
from hub.registry.records import (
    AttestationRecord,
    ConsoleFleetRow,
    DeviceRecord,
    PublishedBundle,
    StoredCheckpoint,
)
from hub.registry.rollout_records import RolloutRecord, RolloutState, StageLog

__all__ = [
    "SearchRow",
    "as_bytes",
    "as_groups",
    "as_int",
    "as_opt_int",
    "as_text",
    "as_whole",
    "attestation_record",
    "console_fleet_row",
    "device_record",
    "entry_row",
    "lineage_hit_row",
    "opt_text",
    "published_bundle",
    "rollout_json",
    "rollout_record",
    "search_row",
    "stored_checkpoint",
]


def as_int(value: object) -> int:
    """A column that must hold an integer (anything else is damage)."""
    if not isinstance(value, int):
        raise RegistryError(f"the hub registry holds {type(value).__name__} for an integer")
    return value


def as_whole(value: object) -> int:
    """A column holding a large sum as a float (or an integer): the nearest integer."""
    if not isinstance(value, (int, float)):
        raise RegistryError(f"the hub registry holds {type(value).__name__} for a number")
    return round(value)


def as_opt_int(value: object) -> int | None:
    return None if value is None else as_int(value)


def as_bytes(value: object) -> bytes:
    """A column that must hold bytes (anything else is damage)."""
    if not isinstance(value, bytes):
        raise RegistryError(f"the hub registry holds {type(value).__name__} for bytes")
    return value


def as_text(value: object) -> str:
    """A column that must hold text (anything else is damage)."""
    if not isinstance(value, str):
        raise RegistryError(f"the hub registry holds {type(value).__name__} for text")
    return value


def as_groups(value: object) -> tuple[str, ...]:
    """A device's group list, stored as a JSON array of strings."""
    try:
        groups = json.loads(as_text(value))
    except ValueError as exc:
        raise RegistryError("the hub registry holds a damaged group list") from exc
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise RegistryError("the hub registry holds a damaged group list")
    return tuple(groups)


def device_record(row: tuple[object, ...]) -> DeviceRecord:
    device_id, region, groups, profile, key, epoch, added_at = row
    return DeviceRecord(
        device_id=as_text(device_id),
        region=as_text(region),
        groups=as_groups(groups),
        profile=as_text(profile),
        public_key=PublicKey(as_bytes(key)),
        key_epoch=as_int(epoch),
        added_at=as_int(added_at),
    )


def published_bundle(row: tuple[object, ...]) -> PublishedBundle:
    region, channel, version, digest, data, expires_at, max_offline, updated_at = row
    return PublishedBundle(
        region=as_text(region),
        channel=as_text(channel),
        version=as_int(version),
        digest=as_bytes(digest),
        data=as_bytes(data),
        expires_at=as_int(expires_at),
        max_offline=as_opt_int(max_offline),
        pushed_at=as_int(updated_at),
    )


def stored_checkpoint(row: tuple[object, ...]) -> StoredCheckpoint:
    size, root, note, received_at = row
    return StoredCheckpoint(as_int(size), as_bytes(root), as_text(note), as_int(received_at))


def attestation_record(row: tuple[object, ...]) -> AttestationRecord:
    device, verdict, detail, measured, nonce, issued, expires = row[:7]
    bundle_digest, lineage_size, measurements, result, verified_at = row[7:]
    return AttestationRecord(
        device=as_text(device),
        verdict=as_text(verdict),
        detail=as_text(detail),
        measured=as_bytes(measured),
        nonce=as_bytes(nonce),
        issued_at=as_int(issued),
        expires_at=as_int(expires),
        bundle_digest=None if bundle_digest is None else as_bytes(bundle_digest),
        lineage_size=as_int(lineage_size),
        measurements=as_text(measurements),
        result=as_bytes(result),
        verified_at=as_int(verified_at),
    )


def console_fleet_row(row: tuple[object, ...]) -> ConsoleFleetRow:
    return ConsoleFleetRow(
        device_id=as_text(row[0]),
        region=as_text(row[1]),
        groups=as_groups(row[2]),
        online=None if row[3] is None else bool(row[3]),
        gate=None if row[4] is None else as_text(row[4]),
        bundle_version=as_opt_int(row[5]),
        status_time=as_opt_int(row[6]),
        last_seen=as_opt_int(row[7]),
        device_lineage_size=as_opt_int(row[8]),
        lineage_size=as_int(row[9]),
        forks=as_int(row[10]),
        attestation_verdict=None if row[11] is None else as_text(row[11]),
        attestation_expires_at=as_opt_int(row[12]),
        attested_at=as_opt_int(row[13]),
    )


SearchRow = tuple[
    int, str, int, str, int, str, str | None, str | None, str | None, str | None, int | None
]
"""time, device, seq, kind, allowed, reason, rule, subject, action, resource, version."""

UNSEARCHABLE = "\x00"
SEARCHABLE_STAND_IN = "\ufffd"
"""PostgreSQL's text holds no NUL, and an entry's text (a workload's request) may: the
search columns hold U+FFFD in its place, on both backends alike, so such an entry is
stored (byte for byte, in its entry row) and found as anywhere else. Left as it was, one
entry with a NUL made its whole batch fail on PostgreSQL at every resend, and nothing
after it in that device's log was ever stored."""


def searchable(text: str | None) -> str | None:
    """``text`` as the search columns hold it (see :data:`SEARCHABLE_STAND_IN`)."""
    if text is None or UNSEARCHABLE not in text:
        return text
    return text.replace(UNSEARCHABLE, SEARCHABLE_STAND_IN)


def search_row(device: str, seq: int, data: bytes) -> SearchRow:
    """The search columns of ``device``'s verified entry ``seq`` (``data``: its bytes).

    Raises:
        RegistryError: the bytes are not an entry map (the caller stored unverified bytes).
    """
    try:
        fields = cbor2.loads(data)
        return (
            int(fields[1]),
            device,
            seq,
            str(fields[3]),
            int(bool(fields[4])),
            searchable(str(fields[5])) or "",
            searchable(fields[6]),
            searchable(fields[9]),
            searchable(fields[10]),
            searchable(fields[11]),
            fields[8],
        )
    except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError) as exc:
        raise RegistryError(f"entry {seq} of {device} is not a lineage entry: {exc}") from exc


def entry_row(device: str, entry: Entry) -> SearchRow:
    """The search columns of ``device``'s decoded entry."""
    request = entry.request
    return (
        entry.time,
        device,
        entry.seq,
        str(entry.kind),
        int(entry.allowed),
        searchable(entry.reason) or "",
        searchable(entry.rule),
        searchable(request.subject) if request else None,
        searchable(request.action) if request else None,
        searchable(request.resource) if request else None,
        entry.bundle_version,
    )


def lineage_hit_row(row: tuple[object, ...]) -> LineageHit:
    device, seq, time, kind, allowed, reason, rule, subject, action, resource, version = row
    return LineageHit(
        as_text(device),
        as_int(seq),
        as_int(time),
        as_text(kind),
        bool(as_int(allowed)),
        as_text(reason),
        opt_text(rule),
        opt_text(subject),
        opt_text(action),
        opt_text(resource),
        as_opt_int(version),
    )


def opt_text(value: object) -> str | None:
    return None if value is None else as_text(value)


def rollout_json(record: RolloutRecord) -> str:
    """What the ``record`` column holds: every field but those in columns of their own."""
    return json.dumps(
        {
            "candidate_version": record.candidate_version,
            "candidate_digest": record.candidate_digest.hex(),
            "channels": list(record.channels),
            "devices": list(record.devices),
            "stages": list(record.stages),
            "soak_s": record.soak_s,
            "halts": list(record.halts),
            "groups": list(record.groups),
            "stage": record.stage,
            "entered": record.entered,
            "stage_started_at": record.stage_started_at,
            "paused_at": record.paused_at,
            "paused_s": record.paused_s,
            "reason": record.reason,
            "updated_at": record.updated_at,
            "history": [
                {
                    "stage": log.stage,
                    "started_at": log.started_at,
                    "devices": log.devices,
                    "baseline_decisions": log.baseline_decisions,
                    "baseline_denied": log.baseline_denied,
                    "ended_at": log.ended_at,
                    "outcome": log.outcome,
                    "observed": list(log.observed),
                }
                for log in record.history
            ],
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def rollout_record(row: tuple[object, ...]) -> RolloutRecord:
    rollout_id, region, state, created_at, candidate, rollback, text = row
    try:
        fields = json.loads(as_text(text))
        return RolloutRecord(
            rollout_id=as_text(rollout_id),
            region=as_text(region),
            state=RolloutState(as_text(state)),
            created_at=as_int(created_at),
            updated_at=int(fields["updated_at"]),
            candidate=as_bytes(candidate),
            candidate_version=int(fields["candidate_version"]),
            candidate_digest=bytes.fromhex(fields["candidate_digest"]),
            rollback=as_bytes(rollback),
            channels=tuple(map(str, fields["channels"])),
            devices=tuple(map(str, fields["devices"])),
            stages=tuple(map(str, fields["stages"])),
            soak_s=int(fields["soak_s"]),
            halts=tuple(map(str, fields["halts"])),
            groups=tuple(map(str, fields["groups"])),
            stage=int(fields["stage"]),
            entered=int(fields["entered"]),
            stage_started_at=int(fields["stage_started_at"]),
            paused_at=None if fields["paused_at"] is None else int(fields["paused_at"]),
            paused_s=int(fields["paused_s"]),
            reason=str(fields["reason"]),
            history=tuple(
                StageLog(
                    stage=int(log["stage"]),
                    started_at=int(log["started_at"]),
                    devices=int(log["devices"]),
                    baseline_decisions=int(log["baseline_decisions"]),
                    baseline_denied=int(log["baseline_denied"]),
                    ended_at=None if log["ended_at"] is None else int(log["ended_at"]),
                    outcome=str(log["outcome"]),
                    observed=tuple(map(str, log["observed"])),
                )
                for log in fields["history"]
            ),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"rollout {rollout_id!r} in the hub registry is damaged") from exc

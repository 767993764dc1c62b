"""Devices in the registry, either backend: registration, each device's last kept status,
its status history and when the hub last heard from it, attestation (challenges spent at
most once, outcomes, TPM keys), rejection counters and the fleet view (tables ``devices``,
``status``, ``status_spans``, ``activity``, ``challenges``, ``attestation``, ``tpm_keys``,
``rejections``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from edge_agent.errors import ConfigError
from edge_agent.protocol.attestation import Challenge
from edge_agent.protocol.shipping import DeviceStatus
from hub.registry.interface import MAX_REJECTION_DETAIL, MAX_STATUS_SPANS, STATUS_SPAN_JOIN_S
from hub.registry.queries.base import RegistryQueries, Session
from hub.registry.records import (
    AttestationRecord,
    DeviceRecord,
    FleetRow,
    RejectionCount,
    RejectionTotal,
)
from hub.registry.rows import (
    as_bytes,
    as_groups,
    as_int,
    as_opt_int,
    as_text,
    attestation_record,
    device_record,
)

__all__ = ["DeviceTables"]

_REGISTRATION_TABLES = (
    "status",
    "activity",
    "status_spans",
    "challenges",
    "attestation",
    "tpm_keys",
)
"""What :meth:`DeviceTables.remove_device` forgets with the device: its registration's live
state. Its log (entries, checkpoints, tree nodes, log state), fork evidence and rejection
counters stay: they are evidence of what it did."""

_REGISTRATIONS = "registrations"
"""The lock every registration takes: a key is registered to one device only."""


class DeviceTables(RegistryQueries):
    """The device, attestation, rejection and fleet operations of
    :class:`hub.registry.interface.Registry`."""

    def add_device(self, record: DeviceRecord) -> None:
        with self._write("register the device") as db:
            self._lock(db, _REGISTRATIONS)
            if db.execute(
                self._sql("SELECT 1 FROM devices WHERE id = ?"), (record.device_id,)
            ).fetchone():
                raise ConfigError(f"device {record.device_id!r} is registered already")
            holder = db.execute(
                self._sql("SELECT id FROM devices WHERE public_key = ?"), (record.public_key.raw,)
            ).fetchone()
            if holder:
                raise ConfigError(
                    f"this public key is registered already to device {holder[0]!r}; every "
                    f"device needs its own key (read {record.device_id}'s with "
                    "'edge-agent pubkey' on that device)"
                )
            db.execute(
                self._sql("INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)"),
                (
                    record.device_id,
                    record.region,
                    json.dumps(list(record.groups)),
                    record.profile,
                    record.public_key.raw,
                    record.key_epoch,
                    record.added_at,
                ),
            )

    def remove_device(self, device_id: str) -> DeviceRecord | None:
        with self._write("remove the device") as db:
            self._lock(db, _REGISTRATIONS)
            rows = db.execute(
                self._sql("SELECT * FROM devices WHERE id = ?"), (device_id,)
            ).fetchall()
            if not rows:
                return None
            for table in _REGISTRATION_TABLES:
                db.execute(self._sql(f"DELETE FROM {table} WHERE device = ?"), (device_id,))
            db.execute(self._sql("DELETE FROM devices WHERE id = ?"), (device_id,))
        return device_record(rows[0])

    def device(self, device_id: str) -> DeviceRecord | None:
        rows = self._rows("SELECT * FROM devices WHERE id = ?", (device_id,))
        return device_record(rows[0]) if rows else None

    def devices(self) -> list[DeviceRecord]:
        return [device_record(row) for row in self._rows("SELECT * FROM devices ORDER BY id")]

    def regions(self) -> list[str]:
        rows = self._rows(
            "SELECT region FROM devices UNION SELECT region FROM channels "
            "UNION SELECT region FROM revocations ORDER BY 1"
        )
        return [as_text(r[0]) for r in rows]

    def record_status(self, status: DeviceStatus, raw: bytes, received_at: int) -> bool:
        with self._write("record the device status") as db:
            self._lock(db, f"status {status.device}")
            held = db.execute(
                self._sql("SELECT time, data FROM status WHERE device = ?"), (status.device,)
            ).fetchone()
            held_time = None if held is None else as_int(held[0])
            if held_time is not None and (
                status.time < held_time or (status.time == held_time and raw == held[1])
            ):
                return False
            db.execute(
                self._sql(
                    "INSERT INTO status VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (device) DO UPDATE SET data = excluded.data, "
                    "time = excluded.time, online = excluded.online, "
                    "bundle_version = excluded.bundle_version, "
                    "expires_at = excluded.expires_at, gate = excluded.gate, "
                    "lineage_size = excluded.lineage_size, acked = excluded.acked, "
                    "received_at = excluded.received_at"
                ),
                (
                    status.device,
                    raw,
                    status.time,
                    int(status.online),
                    status.bundle_version,
                    status.expires_at,
                    status.gate,
                    status.lineage_size,
                    status.acked,
                    received_at,
                ),
            )
            if held_time is None or status.time > held_time:
                self._touch_activity(db, status.device, received_at)
                self._note_status(db, status, received_at)
        return True

    def _touch_activity(self, db: Session, device: str, at: int) -> None:
        """Record that ``device`` was heard from at ``at`` (its last seen never moves back)."""
        db.execute(
            self._sql(
                "INSERT INTO activity VALUES (?, ?) ON CONFLICT (device) "
                "DO UPDATE SET last_seen = excluded.last_seen "
                "WHERE excluded.last_seen > activity.last_seen"
            ),
            (device, at),
        )

    def _note_status(self, db: Session, status: DeviceStatus, received_at: int) -> None:
        """Extend ``status.device``'s last span with a status it is heard from by at
        ``received_at``, or start a new span (another state, or heard from too late to
        join), then drop spans past :data:`MAX_STATUS_SPANS`. Inside the caller's write
        (which holds the device's status lock)."""
        last = db.execute(
            self._sql(
                "SELECT since, until, online, gate, bundle_version FROM status_spans "
                "WHERE device = ? ORDER BY since DESC LIMIT 1"
            ),
            (status.device,),
        ).fetchone()
        state = (int(status.online), status.gate, status.bundle_version)
        if (
            last is not None
            and tuple(last[2:]) == state
            and 0 <= received_at - as_int(last[1]) <= STATUS_SPAN_JOIN_S
        ):
            db.execute(
                self._sql("UPDATE status_spans SET until = ? WHERE device = ? AND since = ?"),
                (received_at, status.device, last[0]),
            )
            return
        if last is not None and received_at <= as_int(last[0]):
            return
        db.execute(
            self._sql("INSERT INTO status_spans VALUES (?, ?, ?, ?, ?, ?)"),
            (status.device, received_at, received_at, *state),
        )
        db.execute(
            self._sql(
                "DELETE FROM status_spans WHERE device = ? AND since <= (SELECT since FROM "
                "status_spans WHERE device = ? ORDER BY since DESC LIMIT 1 OFFSET ?)"
            ),
            (status.device, status.device, MAX_STATUS_SPANS),
        )

    # Attestation.

    def record_challenge(self, challenge: Challenge) -> None:
        with self._write("record the attestation challenge") as db:
            db.execute(
                self._sql("INSERT INTO challenges VALUES (?, ?, ?, ?, NULL)"),
                (challenge.device, challenge.nonce, challenge.issued_at, challenge.expires_at),
            )

    def spend_challenge(self, device: str, nonce: bytes, now: int) -> str | None:
        with self._write("spend the attestation nonce") as db:
            # Decided against the committed row: a concurrent spender waits (PostgreSQL's
            # row lock, SQLite's write lock), then finds spent_at set.
            spent = db.execute(
                self._sql(
                    "UPDATE challenges SET spent_at = ? WHERE device = ? AND nonce = ? "
                    "AND spent_at IS NULL AND expires_at > ?"
                ),
                (now, device, nonce, now),
            ).rowcount
            if spent:
                return None
            row = db.execute(
                self._sql(
                    "SELECT expires_at, spent_at FROM challenges WHERE device = ? AND nonce = ?"
                ),
                (device, nonce),
            ).fetchone()
        if row is None:
            return "its nonce was never issued to this device (replayed or misaddressed)"
        if row[1] is not None:
            return "its nonce was already used (replayed evidence)"
        return f"its nonce expired {now - as_int(row[0])} s ago"

    def prune_challenges(self, before: int) -> None:
        with self._write("prune attestation challenges") as db:
            db.execute(self._sql("DELETE FROM challenges WHERE expires_at < ?"), (before,))

    def record_attestation(self, record: AttestationRecord) -> None:
        with self._write("record the attestation outcome") as db:
            db.execute(
                self._sql(
                    "INSERT INTO attestation VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (device) DO UPDATE SET verdict = excluded.verdict, "
                    "detail = excluded.detail, measured = excluded.measured, "
                    "nonce = excluded.nonce, issued_at = excluded.issued_at, "
                    "expires_at = excluded.expires_at, "
                    "bundle_digest = excluded.bundle_digest, "
                    "lineage_size = excluded.lineage_size, "
                    "measurements = excluded.measurements, result = excluded.result, "
                    "verified_at = excluded.verified_at"
                ),
                (
                    record.device,
                    record.verdict,
                    record.detail,
                    record.measured,
                    record.nonce,
                    record.issued_at,
                    record.expires_at,
                    record.bundle_digest,
                    record.lineage_size,
                    record.measurements,
                    record.result,
                    record.verified_at,
                ),
            )
            self._touch_activity(db, record.device, record.verified_at)

    def attestation(self, device: str) -> AttestationRecord | None:
        rows = self._rows("SELECT * FROM attestation WHERE device = ?", (device,))
        return attestation_record(rows[0]) if rows else None

    def attestations(self) -> dict[str, AttestationRecord]:
        return {
            record.device: record
            for record in map(attestation_record, self._rows("SELECT * FROM attestation"))
        }

    def set_tpm_ak(self, device: str, public_key: bytes | None, at: int) -> None:
        with self._write("record the TPM attestation key") as db:
            if public_key is None:
                db.execute(self._sql("DELETE FROM tpm_keys WHERE device = ?"), (device,))
            else:
                db.execute(
                    self._sql(
                        "INSERT INTO tpm_keys VALUES (?, ?, ?) ON CONFLICT (device) DO UPDATE "
                        "SET public_key = excluded.public_key, "
                        "registered_at = excluded.registered_at"
                    ),
                    (device, public_key, at),
                )

    def tpm_ak(self, device: str) -> bytes | None:
        rows = self._rows("SELECT public_key FROM tpm_keys WHERE device = ?", (device,))
        return as_bytes(rows[0][0]) if rows else None

    # Rejections.

    def add_rejections(self, counts: Sequence[RejectionCount], at: int) -> None:
        if not counts:
            return
        with self._write("record rejections") as db:
            db.executemany(
                self._sql(
                    "INSERT INTO rejections VALUES (?, ?, ?, ?, ?) ON CONFLICT (device, code) "
                    "DO UPDATE SET count = rejections.count + excluded.count, "
                    "last_at = excluded.last_at, last_detail = excluded.last_detail"
                ),
                [
                    (c.device, c.code, c.count, at, c.last_detail[:MAX_REJECTION_DETAIL])
                    for c in counts
                ],
            )

    def rejections(self, device: str | None = None) -> list[RejectionTotal]:
        sql, params = "SELECT * FROM rejections", tuple[str, ...]()
        if device is not None:
            sql, params = sql + " WHERE device = ?", (device,)
        return [
            RejectionTotal(as_text(d), as_text(c), as_int(n), as_int(t), as_text(x))
            for d, c, n, t, x in self._rows(sql + " ORDER BY device, code", params)
        ]

    # Fleet view.

    def fleet(self) -> list[FleetRow]:
        with self._snapshot() as db:
            rows = db.execute(
                "SELECT d.id, d.region, d.groups, s.online, s.bundle_version, s.expires_at, "
                "s.gate, s.time, a.last_seen, s.lineage_size, coalesce(l.size, 0), "
                "(SELECT count(*) FROM forks f WHERE f.device = d.id) "
                "FROM devices d LEFT JOIN status s ON s.device = d.id "
                "LEFT JOIN activity a ON a.device = d.id "
                "LEFT JOIN lineage_state l ON l.device = d.id ORDER BY d.id"
            ).fetchall()
            totals = db.execute(
                "SELECT device, code, count FROM rejections ORDER BY device, code"
            ).fetchall()
        rejected: dict[str, dict[str, int]] = {}
        for device, code, count in totals:
            rejected.setdefault(as_text(device), {})[as_text(code)] = as_int(count)
        result = []
        for row in rows:
            device_id, region, groups, online, version, expires, gate, time, seen = row[:9]
            device_size, size, forks = row[9:]
            result.append(
                FleetRow(
                    device_id=as_text(device_id),
                    region=as_text(region),
                    groups=as_groups(groups),
                    online=None if online is None else bool(as_int(online)),
                    bundle_version=as_opt_int(version),
                    expires_at=as_opt_int(expires),
                    gate=None if gate is None else as_text(gate),
                    status_time=as_opt_int(time),
                    last_seen=as_opt_int(seen),
                    device_lineage_size=as_opt_int(device_size),
                    lineage_size=as_int(size),
                    forks=as_int(forks),
                    rejections=rejected.get(as_text(device_id), {}),
                )
            )
        return result

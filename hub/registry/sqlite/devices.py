"""Devices in the SQLite registry: registration, each device's last kept status, and when
the hub last heard from it (tables ``devices``, ``status``, ``activity``)."""

from __future__ import annotations

import json
import sqlite3

from edge_agent.errors import ConfigError
from edge_agent.protocol.shipping import DeviceStatus
from hub.registry.records import DeviceRecord
from hub.registry.rows import device_record
from hub.registry.sqlite.console_fleet import note_status
from hub.registry.sqlite.transactions import (
    SqliteTransactions,
    as_text,
)

__all__ = ["DeviceTables", "touch_activity"]

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


class DeviceTables(SqliteTransactions):
    """The device operations of :class:`hub.registry.interface.Registry`."""

    def add_device(self, record: DeviceRecord) -> None:
        with self._write("register the device") as db:
            if db.execute("SELECT 1 FROM devices WHERE id = ?", (record.device_id,)).fetchone():
                raise ConfigError(f"device {record.device_id!r} is registered already")
            holder = db.execute(
                "SELECT id FROM devices WHERE public_key = ?", (record.public_key.raw,)
            ).fetchone()
            if holder:
                raise ConfigError(
                    f"this public key is registered already to device {holder[0]!r}; every "
                    f"device needs its own key (read {record.device_id}'s with "
                    "'edge-agent pubkey' on that device)"
                )
            db.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            rows = db.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchall()
            if not rows:
                return None
            for table in _REGISTRATION_TABLES:
                db.execute(f"DELETE FROM {table} WHERE device = ?", (device_id,))
            db.execute("DELETE FROM devices WHERE id = ?", (device_id,))
        return device_record(rows[0])

    def device(self, device_id: str) -> DeviceRecord | None:
        rows = self._read("SELECT * FROM devices WHERE id = ?", (device_id,))
        return device_record(rows[0]) if rows else None

    def devices(self) -> list[DeviceRecord]:
        return [device_record(row) for row in self._read("SELECT * FROM devices ORDER BY id")]

    def regions(self) -> list[str]:
        rows = self._read(
            "SELECT region FROM devices UNION SELECT region FROM channels "
            "UNION SELECT region FROM revocations ORDER BY 1"
        )
        return [as_text(r[0]) for r in rows]

    def record_status(self, status: DeviceStatus, raw: bytes, received_at: int) -> bool:
        with self._write("record the device status") as db:
            held = db.execute(
                "SELECT time, data FROM status WHERE device = ?", (status.device,)
            ).fetchone()
            if held is not None and (
                status.time < held[0] or (status.time == held[0] and raw == held[1])
            ):
                return False
            db.execute(
                "INSERT OR REPLACE INTO status VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            if held is None or status.time > held[0]:
                touch_activity(db, status.device, received_at)
                note_status(db, status, received_at)
        return True


def touch_activity(db: sqlite3.Connection, device: str, at: int) -> None:
    """Record that ``device`` was heard from at ``at`` (its last seen never moves back)."""
    db.execute(
        "INSERT INTO activity VALUES (?, ?) ON CONFLICT (device) "
        "DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
        (device, at),
    )

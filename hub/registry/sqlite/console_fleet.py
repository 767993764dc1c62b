"""The console's tables in the SQLite registry: login tokens (``console_tokens``) and each
device's status history (``status_spans``, kept by :func:`note_status` as statuses are
recorded), created when missing (:data:`CONSOLE_FLEET_SCHEMA`)."""

from __future__ import annotations

import sqlite3

from edge_agent.errors import ConfigError
from edge_agent.protocol.shipping import DeviceStatus
from hub.registry.interface import MAX_STATUS_SPANS, STATUS_SPAN_JOIN_S
from hub.registry.records import ConsoleFleetRow, ConsoleToken, StatusSpan
from hub.registry.sqlite.transactions import (
    SqliteTransactions,
    as_bytes,
    as_groups,
    as_int,
    as_opt_int,
    as_text,
)

__all__ = ["CONSOLE_FLEET_SCHEMA", "ConsoleFleetTables", "note_status"]

CONSOLE_FLEET_SCHEMA = """
CREATE TABLE IF NOT EXISTS console_tokens (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, digest BLOB NOT NULL, created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS status_spans (
    device TEXT NOT NULL, since INTEGER NOT NULL, until INTEGER NOT NULL,
    online INTEGER NOT NULL, gate TEXT NOT NULL, bundle_version INTEGER,
    PRIMARY KEY (device, since)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS forks_device ON forks (device);
"""


class ConsoleFleetTables(SqliteTransactions):
    """The console operations of :class:`hub.registry.interface.Registry`."""

    def add_console_token(self, token: ConsoleToken) -> None:
        with self._write("store the console token") as db:
            if db.execute("SELECT 1 FROM console_tokens WHERE name = ?", (token.name,)).fetchone():
                raise ConfigError(
                    f"a console token named {token.name!r} exists already; revoke it first "
                    "('edge-hub console token revoke') or choose another name"
                )
            db.execute(
                "INSERT INTO console_tokens VALUES (?, ?, ?, ?)",
                (token.name, token.role, token.digest, token.created_at),
            )

    def console_tokens(self) -> list[ConsoleToken]:
        return [
            ConsoleToken(as_text(n), as_text(r), as_bytes(d), as_int(t))
            for n, r, d, t in self._read("SELECT * FROM console_tokens ORDER BY name")
        ]

    def revoke_console_token(self, name: str) -> bool:
        with self._write("revoke the console token") as db:
            return db.execute("DELETE FROM console_tokens WHERE name = ?", (name,)).rowcount > 0

    def console_fleet(self) -> list[ConsoleFleetRow]:
        return [_fleet_row(row) for row in self._read(_FLEET_SQL + " ORDER BY d.id")]

    def console_device(self, device_id: str) -> ConsoleFleetRow | None:
        rows = self._read(_FLEET_SQL + " WHERE d.id = ?", (device_id,))
        return _fleet_row(rows[0]) if rows else None

    def status_history(self, device: str, since: int = 0) -> list[StatusSpan]:
        rows = self._read(
            "SELECT since, until, online, gate, bundle_version FROM status_spans "
            "WHERE device = ? AND until >= ? ORDER BY since",
            (device, since),
        )
        return [
            StatusSpan(as_int(s), as_int(u), bool(as_int(o)), as_text(g), as_opt_int(v))
            for s, u, o, g, v in rows
        ]


_FLEET_SQL = (
    "SELECT d.id, d.region, d.groups, s.online, s.gate, s.bundle_version, s.time, "
    "a.last_seen, s.lineage_size, coalesce(l.size, 0), "
    "(SELECT count(*) FROM forks f WHERE f.device = d.id), "
    "t.verdict, t.expires_at, t.verified_at "
    "FROM devices d LEFT JOIN status s ON s.device = d.id "
    "LEFT JOIN activity a ON a.device = d.id "
    "LEFT JOIN lineage_state l ON l.device = d.id "
    "LEFT JOIN attestation t ON t.device = d.id"
)


def _fleet_row(row: tuple[object, ...]) -> ConsoleFleetRow:
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


def note_status(db: sqlite3.Connection, status: DeviceStatus, received_at: int) -> None:
    """Extend ``status.device``'s last span with a status it is heard from by at
    ``received_at``, or start a new span (another state, or heard from too late to join), then
    drop spans past :data:`MAX_STATUS_SPANS`. Inside the caller's write."""
    last = db.execute(
        "SELECT since, until, online, gate, bundle_version FROM status_spans "
        "WHERE device = ? ORDER BY since DESC LIMIT 1",
        (status.device,),
    ).fetchone()
    state = (int(status.online), status.gate, status.bundle_version)
    if (
        last is not None
        and tuple(last[2:]) == state
        and 0 <= received_at - last[1] <= STATUS_SPAN_JOIN_S
    ):
        db.execute(
            "UPDATE status_spans SET until = ? WHERE device = ? AND since = ?",
            (received_at, status.device, last[0]),
        )
        return
    if last is not None and received_at <= last[0]:
        return
    db.execute(
        "INSERT INTO status_spans VALUES (?, ?, ?, ?, ?, ?)",
        (status.device, received_at, received_at, *state),
    )
    db.execute(
        "DELETE FROM status_spans WHERE device = ? AND since <= (SELECT since FROM status_spans "
        "WHERE device = ? ORDER BY since DESC LIMIT 1 OFFSET ?)",
        (status.device, status.device, MAX_STATUS_SPANS),
    )

"""The console's tables in the SQLite registry: login tokens (``console_tokens``) and each
device's status history (``status_spans``, kept by :func:`note_status` as statuses are
recorded), created when missing (:data:`CONSOLE_FLEET_SCHEMA`)."""

from __future__ import annotations

import sqlite3

from edge_agent.errors import ConfigError
from edge_agent.protocol.shipping import DeviceStatus
from hub.registry.interface import FLEET_EXAMPLES, MAX_STATUS_SPANS, STATUS_SPAN_JOIN_S
from hub.registry.records import (
    ConsoleFleetRow,
    ConsoleToken,
    FleetCount,
    FleetSummary,
    RolloutCount,
    StatusSpan,
)
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

    def console_devices(
        self,
        *,
        now: int,
        stale_after_s: int,
        limit: int,
        after: str = "",
        state: str | None = None,
        region: str | None = None,
    ) -> list[ConsoleFleetRow]:
        rows = self._read(
            _FLEET_SQL + " WHERE d.id > ?3 AND (?4 IS NULL OR d.region = ?4) "
            f"AND (?5 IS NULL OR {_STATE} = ?5) ORDER BY d.id LIMIT ?6",
            (now, stale_after_s, after, region, state, limit),
        )
        return [_fleet_row(row) for row in rows]

    def fleet_summary(self, now: int, stale_after_s: int) -> FleetSummary:
        rows = self._read(_SUMMARY_SQL, (now, stale_after_s, FLEET_EXAMPLES))
        cells: dict[str, dict[object, FleetCount]] = {}
        examples: dict[str, list[str]] = {}
        rollout, waiting, most = [], 0, None
        for kind, key, group, target, running, known, n, oldest, newest in rows:
            if kind == "example":
                examples.setdefault(as_text(key), []).append(as_text(group))
                continue
            count = FleetCount(as_int(n), as_opt_int(oldest), as_opt_int(newest))
            if kind == "rollout":
                rollout.append(
                    RolloutCount(
                        as_text(key),
                        as_text(group),
                        as_opt_int(target),
                        as_opt_int(running),
                        bool(known),
                        count,
                    )
                )
            elif kind == "waiting":
                waiting = count.count
            elif kind == "most":
                most = (as_text(key), count.count)
            else:
                cells.setdefault(as_text(kind), {})[key] = count
        lineage = cells.get("lineage", {})
        return FleetSummary(
            states=_by_text(cells.get("state", {})),
            rollout=tuple(rollout),
            attestation=_by_text(cells.get("attestation", {})),
            lineage_current=lineage.get(0, FleetCount()),
            lineage_lagging=lineage.get(1, FleetCount()),
            lineage_waiting=waiting,
            lineage_max_lag=most,
            forks=cells.get("forks", {}).get(None, FleetCount()),
            rejections=_by_text(cells.get("rejection", {})),
            state_examples={state: tuple(ids) for state, ids in examples.items()},
        )

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


_STATE = (
    "CASE WHEN a.last_seen IS NULL OR s.gate IS NULL THEN 'never_seen' "
    "WHEN ?1 - a.last_seen > ?2 THEN 'stale' "
    "WHEN s.online = 0 THEN 'offline' ELSE s.gate END"
)
"""A device's state now (``?1``) with heartbeat window ``?2``, over ``devices d``,
``status s`` and ``activity a`` (:meth:`Registry.fleet_summary` states the rule)."""

_SUMMARY_SQL = f"""
WITH current AS MATERIALIZED (
    SELECT c.region, c.channel, b.version FROM channels c JOIN bundles b ON b.digest = c.digest
),
dev AS MATERIALIZED (
    SELECT d.id, d.region, d.groups, a.last_seen AS seen, s.time AS signed,
        {_STATE} AS state,
        s.bundle_version AS running, s.lineage_size AS device_size,
        coalesce(l.size, 0) AS stored,
        (SELECT max(c.version) FROM current c WHERE c.region = d.region AND (
            c.channel = 'all/_' OR c.channel = 'device/' || d.id
            OR c.channel IN (SELECT 'group/' || value FROM json_each(d.groups)))) AS target,
        CASE WHEN t.verdict IS NULL THEN 'never attested'
            WHEN t.expires_at <= ?1 THEN t.verdict || ' (expired)'
            ELSE t.verdict END AS verdict,
        t.verified_at AS verified,
        EXISTS (SELECT 1 FROM forks f WHERE f.device = d.id) AS forked
    FROM devices d LEFT JOIN status s ON s.device = d.id
    LEFT JOIN activity a ON a.device = d.id
    LEFT JOIN lineage_state l ON l.device = d.id
    LEFT JOIN attestation t ON t.device = d.id
)
SELECT 'state', state, NULL, NULL, NULL, NULL, count(*), min(seen), max(seen)
FROM dev GROUP BY state
UNION ALL
SELECT 'rollout', dev.region, g.value, dev.target, CASE WHEN dev.state IN ('stale', 'never_seen')
    THEN NULL ELSE dev.running END, dev.state NOT IN ('stale', 'never_seen'),
    count(*), min(dev.seen), max(dev.seen)
FROM dev, json_each(dev.groups) g GROUP BY 2, 3, 4, 5, 6
UNION ALL
SELECT 'attestation', verdict, NULL, NULL, NULL, NULL, count(*), min(verified), max(verified)
FROM dev GROUP BY verdict
UNION ALL
SELECT 'lineage', device_size > stored, NULL, NULL, NULL, NULL, count(*), min(signed),
    max(signed)
FROM dev WHERE device_size IS NOT NULL GROUP BY 2
UNION ALL
SELECT 'waiting', NULL, NULL, NULL, NULL, NULL, coalesce(sum(device_size - stored), 0), NULL,
    NULL
FROM dev WHERE device_size > stored
UNION ALL
SELECT * FROM (
    SELECT 'most', id, NULL, NULL, NULL, NULL, device_size - stored, NULL, NULL FROM dev
    WHERE device_size > stored ORDER BY device_size - stored DESC, id LIMIT 1
)
UNION ALL
SELECT 'forks', NULL, NULL, NULL, NULL, NULL, count(*), NULL, NULL FROM dev WHERE forked
UNION ALL
SELECT 'rejection', code, NULL, NULL, NULL, NULL, sum(count), min(last_at), max(last_at)
FROM rejections GROUP BY code
UNION ALL
SELECT 'example', state, id, NULL, NULL, NULL, NULL, NULL, NULL FROM (
    SELECT state, id, row_number() OVER (PARTITION BY state ORDER BY id) AS rank FROM dev
) WHERE rank <= ?3
ORDER BY 1, 2, 3, 4, 5
"""


def _by_text(cells: dict[object, FleetCount]) -> dict[str, FleetCount]:
    return {as_text(key): count for key, count in cells.items()}


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

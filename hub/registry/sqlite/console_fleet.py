"""The console's tables in the SQLite registry: login tokens (``console_tokens``), each
device's status history (``status_spans``, kept as statuses are recorded:
:mod:`hub.registry.queries.devices`) and the dashboard's per-device summary
(``console_fleet``, kept by triggers), created when missing (:data:`CONSOLE_FLEET_SCHEMA`)."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from edge_agent.errors import ConfigError
from hub.registry.fleet_cells import CellCounts, fleet_summary
from hub.registry.interface import (
    FLEET_EXAMPLES,
    RegistryError,
)
from hub.registry.records import (
    ConsoleFleetRow,
    ConsoleToken,
    FleetCount,
    FleetSummary,
    StatusSpan,
)
from hub.registry.rows import console_fleet_row
from hub.registry.sqlite.transactions import (
    SqliteTransactions,
    as_bytes,
    as_int,
    as_opt_int,
    as_text,
)

__all__ = ["CONSOLE_FLEET_SCHEMA", "ConsoleFleetTables"]

_FLEET_ROW = """
SELECT d.id, d.region, d.groups,
    (SELECT max(b.version) FROM channels c JOIN bundles b ON b.digest = c.digest
        WHERE c.region = d.region AND c.channel = 'device/' || d.id),
    a.last_seen, s.gate, s.online, s.bundle_version, s.time, s.lineage_size,
    coalesce(l.size, 0), t.verdict, t.expires_at, t.verified_at,
    EXISTS (SELECT 1 FROM forks f WHERE f.device = d.id)
FROM devices d LEFT JOIN status s ON s.device = d.id
LEFT JOIN activity a ON a.device = d.id
LEFT JOIN lineage_state l ON l.device = d.id
LEFT JOIN attestation t ON t.device = d.id
"""
"""A device's ``console_fleet`` row, from the tables it summarises."""

_FLEET_SOURCES = (
    ("devices", "{row}.id", ""),
    ("status", "{row}.device", ""),
    ("activity", "{row}.device", ""),
    ("lineage_state", "{row}.device", ""),
    ("attestation", "{row}.device", ""),
    ("forks", "{row}.device", ""),
    ("channels", "substr({row}.channel, 8)", "WHEN {row}.channel LIKE 'device/%' "),
)
"""The tables a ``console_fleet`` row is made of, how a changed row names its device, and
when it concerns one (a bundle current on a device's own channel sets its target)."""


def _fleet_triggers() -> str:
    """Triggers that rewrite a device's ``console_fleet`` row whenever a row it is made of
    is written or deleted: the summary changes in the transaction that changes its source."""
    triggers = []
    for table, device, when in _FLEET_SOURCES:
        for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            named = device.format(row=row)
            triggers.append(
                f"CREATE TRIGGER IF NOT EXISTS console_fleet_{table}_{event.lower()} "
                f"AFTER {event} ON {table} {when.format(row=row)}BEGIN "
                f"DELETE FROM console_fleet WHERE device = {named}; "
                f"INSERT INTO console_fleet {_FLEET_ROW} WHERE d.id = {named}; END;"
            )
    return "\n".join(triggers)


CONSOLE_FLEET_SCHEMA = f"""
{_fleet_triggers()}
INSERT INTO console_fleet {_FLEET_ROW} WHERE NOT EXISTS (SELECT 1 FROM console_fleet);
"""
"""What keeps the console's ``console_fleet`` table (:mod:`hub.registry.schema`): one narrow row per
device of what the dashboard counts (:meth:`ConsoleFleetTables.fleet_summary`), kept by
triggers in the transaction of every write to its sources, and filled from them when the
table is new (a registry from before it). Its ``console_fleet_cells`` index holds the rows in
the order the dashboard groups them, so the summary reads them in one pass with no sort."""


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
        return [console_fleet_row(row) for row in rows]

    def fleet_summary(self, now: int, stale_after_s: int) -> FleetSummary:
        with self._snapshot():
            cells = self._read(_CELLS_SQL, (now, stale_after_s))
            current = {
                (as_text(region), as_text(channel)): as_int(version)
                for region, channel, version in self._read(_CURRENT_SQL)
            }
            most = self._read(_MOST_SQL)
            rejections = self._read(_REJECTIONS_SQL)
            counted = CellCounts.of(cells, current)
            examples = self._examples(now, stale_after_s, counted.states)
        return fleet_summary(counted, most, rejections, examples)

    def _examples(
        self, now: int, stale_after_s: int, states: dict[str, FleetCount]
    ) -> dict[str, tuple[str, ...]]:
        """The first :data:`FLEET_EXAMPLES` device ids of each state, by id: the devices in
        id order until every state has its examples (usually a few rows, at most all)."""
        wanted = {state: min(count.count, FLEET_EXAMPLES) for state, count in states.items()}
        examples: dict[str, list[str]] = {state: [] for state in wanted}
        missing = sum(wanted.values())
        try:
            with closing(self._db.execute(_EXAMPLES_SQL, (now, stale_after_s))) as rows:
                for device, state in rows:
                    if missing == 0:
                        break
                    named = examples.get(as_text(state))
                    if named is not None and len(named) < wanted[as_text(state)]:
                        named.append(as_text(device))
                        missing -= 1
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read the hub registry {self.path}: {exc}") from exc
        return {state: tuple(ids) for state, ids in sorted(examples.items())}

    def console_device(self, device_id: str) -> ConsoleFleetRow | None:
        rows = self._read(_FLEET_SQL + " WHERE d.id = ?", (device_id,))
        return console_fleet_row(rows[0]) if rows else None

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

_NEVER = "(seen IS NULL OR gate IS NULL)"
_STALE = f"(NOT {_NEVER} AND ?1 - seen > ?2)"
_FRESH = f"(NOT {_NEVER} AND ?1 - seen <= ?2)"
_EXPIRED = "(verdict IS NOT NULL AND attested_until <= ?1)"
_LAGGING = "(device_size > stored)"
_IN_STEP = "(device_size <= stored)"


def _span(condition: str, column: str) -> str:
    """The count, oldest and newest ``column`` of a cell's rows where ``condition`` holds."""
    case = f"CASE WHEN {condition} THEN {column} END"
    return f"sum({condition}), min({case}), max({case})"


_CELLS_SQL = f"""
SELECT region, groups, own, gate, online, running, verdict, count(*),
    {_span(_NEVER, "seen")}, {_span(_STALE, "seen")}, {_span(_FRESH, "seen")},
    {_span(_EXPIRED, "verified")}, {_span(f"NOT {_EXPIRED}", "verified")},
    {_span(_LAGGING, "signed")}, {_span(_IN_STEP, "signed")},
    sum(CASE WHEN {_LAGGING} THEN device_size - stored ELSE 0 END), sum(forked)
FROM console_fleet GROUP BY region, groups, own, gate, online, running, verdict
"""
"""The fleet in cells of devices alike but for their times (``?1`` now, ``?2`` the heartbeat
window): read in the order of the ``console_fleet_cells`` index, so O(devices) in one pass
with no sort, split per cell into what depends on ``now`` (stale or not, attestation expired
or not) by conditional sums."""

_CURRENT_SQL = (
    "SELECT c.region, c.channel, b.version FROM channels c JOIN bundles b ON b.digest = c.digest"
)
_MOST_SQL = (
    f"SELECT device, device_size - stored FROM console_fleet WHERE {_LAGGING} "
    "ORDER BY 2 DESC, 1 LIMIT 1"
)
_REJECTIONS_SQL = (
    "SELECT code, sum(count), min(last_at), max(last_at) FROM rejections GROUP BY code"
)
_EXAMPLES_SQL = (
    f"SELECT device, CASE WHEN {_NEVER} THEN 'never_seen' WHEN ?1 - seen > ?2 THEN 'stale' "
    "WHEN online = 0 THEN 'offline' ELSE gate END FROM console_fleet ORDER BY device"
)

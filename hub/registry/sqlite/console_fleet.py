"""The console in the SQLite registry: the triggers that keep the dashboard's per-device
summary (``console_fleet``), created when missing (:data:`CONSOLE_FLEET_SCHEMA`), and the
fleet summary's examples read SQLite's way; the console's queries are
:mod:`hub.registry.queries.console`."""

from __future__ import annotations

from contextlib import closing

from hub.registry.interface import FLEET_EXAMPLES
from hub.registry.queries.base import Session
from hub.registry.queries.console import STATE_OF_ROW
from hub.registry.queries.console import ConsoleTables as SharedConsoleTables
from hub.registry.records import FleetCount
from hub.registry.rows import as_text
from hub.registry.schema import CONSOLE_FLEET_IN_PLACE
from hub.registry.sqlite.transactions import SqliteTransactions

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


_REWRITTEN_BEFORE = ("console_fleet_status_update", "console_fleet_activity_update")
"""The rewrite triggers a registry from before
:data:`~hub.registry.schema.CONSOLE_FLEET_IN_PLACE` holds instead."""


def _fleet_triggers() -> str:
    """Triggers that keep a device's ``console_fleet`` row whenever a row it is made of is
    written or deleted: the summary changes in the transaction that changes its source. A
    status or last seen updated sets its columns in place; any other write rewrites the
    row."""
    in_place = dict(CONSOLE_FLEET_IN_PLACE)
    triggers = [f"DROP TRIGGER IF EXISTS {name};" for name in _REWRITTEN_BEFORE]
    for table, columns in CONSOLE_FLEET_IN_PLACE:
        triggers.append(
            f"CREATE TRIGGER IF NOT EXISTS console_fleet_{table}_in_place "
            f"AFTER UPDATE ON {table} BEGIN "
            f"UPDATE console_fleet SET {columns} WHERE device = NEW.device; END;"
        )
    for table, device, when in _FLEET_SOURCES:
        for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            if event == "UPDATE" and table in in_place:
                continue
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


class ConsoleFleetTables(SharedConsoleTables, SqliteTransactions):
    """The console operations of :class:`hub.registry.interface.Registry` on SQLite."""

    def _examples(
        self, db: Session, now: int, stale_after_s: int, states: dict[str, FleetCount]
    ) -> dict[str, tuple[str, ...]]:
        # The devices in id order until every state has its examples: usually a few rows,
        # at most all.
        wanted = {state: min(count.count, FLEET_EXAMPLES) for state, count in states.items()}
        examples: dict[str, list[str]] = {state: [] for state in wanted}
        missing = sum(wanted.values())
        with closing(self._db.execute(_EXAMPLES_SQL, {"now": now, "stale": stale_after_s})) as rows:
            for device, state in rows:
                if missing == 0:
                    break
                named = examples.get(as_text(state))
                if named is not None and len(named) < wanted[as_text(state)]:
                    named.append(as_text(device))
                    missing -= 1
        return {state: tuple(ids) for state, ids in sorted(examples.items())}


_EXAMPLES_SQL = f"SELECT device, {STATE_OF_ROW} FROM console_fleet ORDER BY device"

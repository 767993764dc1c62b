"""The console's operations in the registry, either backend: login tokens, the devices list,
the dashboard's fleet summary (read from ``console_fleet``, which each backend keeps in the
transaction of every write to its sources: SQLite's triggers, PostgreSQL's trigger
functions), each device's status history and the operator audit log (``operator_audit``:
every governance action, written ``pending`` before it is carried out and given its outcome
when it ends; ids only grow, so a page is a range of ids)."""

from __future__ import annotations

from abc import abstractmethod

from edge_agent.errors import ConfigError
from hub.registry.fleet_cells import CellCounts, fleet_summary
from hub.registry.interface import AUDIT_OUTCOMES, MAX_AUDIT_PAGE, MAX_AUDIT_TEXT, RegistryError
from hub.registry.queries.base import RegistryQueries, Session
from hub.registry.records import (
    AuditEntry,
    ConsoleFleetRow,
    ConsoleToken,
    FleetCount,
    FleetSummary,
    StatusSpan,
)
from hub.registry.rows import as_bytes, as_int, as_opt_int, as_text, console_fleet_row
from hub.registry.schema import Dialect

__all__ = ["STATE_OF_ROW", "ConsoleTables"]

_PENDING = "pending"
_MAX_ID = 2**63 - 1
"""The largest integer both databases store: no id is above it, so a larger ``before`` is
the same as none."""

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
    "WHEN :now - a.last_seen > :stale THEN 'stale' "
    "WHEN s.online = 0 THEN 'offline' ELSE s.gate END"
)
"""A device's state at ``:now`` with heartbeat window ``:stale``, over ``devices d``,
``status s`` and ``activity a`` (:meth:`Registry.fleet_summary` states the rule)."""

_NEVER = "(seen IS NULL OR gate IS NULL)"
_STALE = f"(NOT {_NEVER} AND :now - seen > :stale)"
_FRESH = f"(NOT {_NEVER} AND :now - seen <= :stale)"
_EXPIRED = "(verdict IS NOT NULL AND attested_until <= :now)"
_LAGGING = "(device_size > stored)"
_IN_STEP = "(device_size <= stored)"
STATE_OF_ROW = (
    f"CASE WHEN {_NEVER} THEN 'never_seen' WHEN :now - seen > :stale THEN 'stale' "
    "WHEN online = 0 THEN 'offline' ELSE gate END"
)
"""A ``console_fleet`` row's state, as :data:`_STATE` of the tables it summarises."""

_TOTAL: dict[Dialect, str] = {"sqlite": "sum({})", "postgresql": "sum({})::bigint"}
"""A sum of integers, as an integer (PostgreSQL's sum of BIGINT is NUMERIC)."""
_LARGE_TOTAL: dict[Dialect, str] = {"sqlite": "total({})", "postgresql": "sum({})::float8"}
"""A sum of integers that may pass 64 bits, as a float: the entries devices say they hold
beyond what is stored (each up to 2^53-1, a valid counter; 1,025 such devices overflowed
an integer sum and made the whole summary unreadable). Exact up to 2^53, close beyond."""
_COUNT_WHERE: dict[Dialect, str] = {
    "sqlite": "sum({})",
    "postgresql": "sum(CASE WHEN {} THEN 1 ELSE 0 END)::bigint",
}
"""How many rows a condition holds for (SQLite sums the condition's 0/1 itself)."""


def _cells_sql(dialect: Dialect) -> str:
    """The fleet in cells (:mod:`hub.registry.fleet_cells`) at ``:now``: one pass over the
    summary rows (on SQLite in the order of the ``console_fleet_cells`` index, so with no
    sort), split per cell by conditional sums into what depends on ``:now`` (stale or not,
    attestation expired or not)."""

    def span(condition: str, column: str) -> str:
        case = f"CASE WHEN {condition} THEN {column} END"
        return f"{_COUNT_WHERE[dialect].format(condition)}, min({case}), max({case})"

    total = _TOTAL[dialect]
    return f"""
SELECT region, groups, own, gate, online, running, verdict, count(*),
    {span(_NEVER, "seen")}, {span(_STALE, "seen")}, {span(_FRESH, "seen")},
    {span(_EXPIRED, "verified")}, {span(f"NOT {_EXPIRED}", "verified")},
    {span(_LAGGING, "signed")}, {span(_IN_STEP, "signed")},
    {_LARGE_TOTAL[dialect].format(f"CASE WHEN {_LAGGING} THEN device_size - stored ELSE 0 END")},
    {total.format("forked")}
FROM console_fleet GROUP BY region, groups, own, gate, online, running, verdict
"""


_CELLS_SQL: dict[Dialect, str] = {
    "sqlite": _cells_sql("sqlite"),
    "postgresql": _cells_sql("postgresql"),
}
_CURRENT_SQL = (
    "SELECT c.region, c.channel, b.version FROM channels c JOIN bundles b ON b.digest = c.digest"
)
_MOST_SQL = (
    f"SELECT device, device_size - stored FROM console_fleet WHERE {_LAGGING} "
    "ORDER BY 2 DESC, 1 LIMIT 1"
)
_REJECTIONS_SQL: dict[Dialect, str] = {
    dialect: f"SELECT code, {_TOTAL[dialect].format('count')}, min(last_at), max(last_at) "
    "FROM rejections GROUP BY code"
    for dialect in ("sqlite", "postgresql")
}


class ConsoleTables(RegistryQueries):
    """The console and audit log operations of :class:`hub.registry.interface.Registry`."""

    @abstractmethod
    def _examples(
        self, db: Session, now: int, stale_after_s: int, states: dict[str, FleetCount]
    ) -> dict[str, tuple[str, ...]]:
        """The first :data:`hub.registry.interface.FLEET_EXAMPLES` device ids of each state
        in ``states``, by id, read in the summary's snapshot ``db``."""

    def add_console_token(self, token: ConsoleToken) -> None:
        with self._write("store the console token") as db:
            stored = db.execute(
                self._sql("INSERT INTO console_tokens VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"),
                (token.name, token.role, token.digest, token.created_at),
            ).rowcount
            if stored != 1:
                raise ConfigError(
                    f"a console token named {token.name!r} exists already; revoke it first "
                    "('edge-hub console token revoke') or choose another name"
                )

    def console_tokens(self) -> list[ConsoleToken]:
        return [
            ConsoleToken(as_text(n), as_text(r), as_bytes(d), as_int(t))
            for n, r, d, t in self._rows("SELECT * FROM console_tokens ORDER BY name")
        ]

    def revoke_console_token(self, name: str) -> bool:
        with self._write("revoke the console token") as db:
            return (
                db.execute(self._sql("DELETE FROM console_tokens WHERE name = ?"), (name,)).rowcount
                > 0
            )

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
        sql = _FLEET_SQL + " WHERE d.id > :after"
        if region is not None:
            sql += " AND d.region = :region"
        if state is not None:
            sql += f" AND {_STATE} = :state"
        rows = self._rows(
            sql + " ORDER BY d.id LIMIT :limit",
            {
                "now": now,
                "stale": stale_after_s,
                "after": after,
                "region": region,
                "state": state,
                "limit": limit,
            },
        )
        return [console_fleet_row(row) for row in rows]

    def fleet_summary(self, now: int, stale_after_s: int) -> FleetSummary:
        times = {"now": now, "stale": stale_after_s}
        with self._snapshot() as db:
            cells = db.execute(self._sql(_CELLS_SQL[self.dialect]), times).fetchall()
            current = {
                (as_text(region), as_text(channel)): as_int(version)
                for region, channel, version in db.execute(_CURRENT_SQL).fetchall()
            }
            most = db.execute(_MOST_SQL).fetchall()
            rejections = db.execute(_REJECTIONS_SQL[self.dialect]).fetchall()
            counted = CellCounts.of(cells, current)
            examples = self._examples(db, now, stale_after_s, counted.states)
        return fleet_summary(counted, most, rejections, examples)

    def console_device(self, device_id: str) -> ConsoleFleetRow | None:
        rows = self._rows(_FLEET_SQL + " WHERE d.id = ?", (device_id,))
        return console_fleet_row(rows[0]) if rows else None

    def status_history(self, device: str, since: int = 0) -> list[StatusSpan]:
        rows = self._rows(
            "SELECT since, until, online, gate, bundle_version FROM status_spans "
            "WHERE device = ? AND until >= ? ORDER BY since",
            (device, since),
        )
        return [
            StatusSpan(as_int(s), as_int(u), bool(as_int(o)), as_text(g), as_opt_int(v))
            for s, u, o, g, v in rows
        ]

    # Operator audit log.

    def begin_action(self, *, at: int, operator: str, action: str, target: str, reason: str) -> int:
        with self._write("record an operator action") as db:
            row = db.execute(
                self._sql(
                    "INSERT INTO operator_audit "
                    "(at, operator, action, target, reason, outcome, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?, '') RETURNING id"
                ),
                (
                    at,
                    operator[:MAX_AUDIT_TEXT],
                    action[:MAX_AUDIT_TEXT],
                    target[:MAX_AUDIT_TEXT],
                    reason[:MAX_AUDIT_TEXT],
                    _PENDING,
                ),
            ).fetchone()
        if row is None:
            raise RegistryError(f"{self.path} gave the operator action no id")
        return as_int(row[0])

    def finish_action(self, action_id: int, *, outcome: str, detail: str, at: int) -> None:
        if outcome not in AUDIT_OUTCOMES:
            raise ValueError(f"an action ends {', '.join(sorted(AUDIT_OUTCOMES))}, not {outcome!r}")
        with self._write("record an operator action's outcome") as db:
            changed = db.execute(
                self._sql(
                    "UPDATE operator_audit SET outcome = ?, detail = ?, finished_at = ? "
                    "WHERE id = ? AND outcome = ?"
                ),
                (outcome, detail[:MAX_AUDIT_TEXT], at, action_id, _PENDING),
            ).rowcount
            if changed != 1:
                raise RegistryError(f"no pending operator action {action_id} in {self.path}")

    def audit_log(self, *, before: int | None = None, limit: int = 50) -> list[AuditEntry]:
        if not 1 <= limit <= MAX_AUDIT_PAGE:
            raise ValueError(f"an audit page holds 1 to {MAX_AUDIT_PAGE} entries, not {limit}")
        rows = self._rows(
            "SELECT id, at, operator, action, target, reason, outcome, detail, finished_at "
            "FROM operator_audit WHERE id < ? ORDER BY id DESC LIMIT ?",
            (_MAX_ID if before is None else min(before, _MAX_ID), limit),
        )
        return [
            AuditEntry(
                as_int(i),
                as_int(t),
                as_text(o),
                as_text(a),
                as_text(g),
                as_text(r),
                as_text(c),
                as_text(d),
                as_opt_int(f),
            )
            for i, t, o, a, g, r, c, d, f in rows
        ]

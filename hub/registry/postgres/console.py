"""The console's operations in the PostgreSQL registry: login tokens, the devices list, the
dashboard's fleet summary (read from ``console_fleet``, kept by the trigger functions of
:mod:`.schema`), status history and the operator audit log."""

from __future__ import annotations

from edge_agent.errors import ConfigError
from hub.registry.fleet_cells import CellCounts, fleet_summary
from hub.registry.interface import (
    AUDIT_OUTCOMES,
    FLEET_EXAMPLES,
    MAX_AUDIT_PAGE,
    MAX_AUDIT_TEXT,
    RegistryError,
)
from hub.registry.postgres.transactions import PostgresTransactions
from hub.registry.records import AuditEntry, ConsoleFleetRow, ConsoleToken, FleetSummary, StatusSpan
from hub.registry.rows import as_bytes, as_int, as_opt_int, as_text, console_fleet_row

__all__ = ["ConsoleTables"]

_PENDING = "pending"

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
    "WHEN %(now)s - a.last_seen > %(stale)s THEN 'stale' "
    "WHEN s.online = 0 THEN 'offline' ELSE s.gate END"
)
"""A device's state at ``now`` with heartbeat window ``stale``, over ``devices d``,
``status s`` and ``activity a`` (:meth:`Registry.fleet_summary` states the rule)."""

_NEVER = "(seen IS NULL OR gate IS NULL)"
_STALE = f"(NOT {_NEVER} AND %(now)s - seen > %(stale)s)"
_FRESH = f"(NOT {_NEVER} AND %(now)s - seen <= %(stale)s)"
_EXPIRED = "(verdict IS NOT NULL AND attested_until <= %(now)s)"
_LAGGING = "(device_size > stored)"
_IN_STEP = "(device_size <= stored)"


def _span(condition: str, column: str) -> str:
    """The count, oldest and newest ``column`` of a cell's rows where ``condition`` holds."""
    case = f"CASE WHEN {condition} THEN {column} END"
    return f"sum(CASE WHEN {condition} THEN 1 ELSE 0 END)::bigint, min({case}), max({case})"


_CELLS_SQL = f"""
SELECT region, groups, own, gate, online, running, verdict, count(*),
    {_span(_NEVER, "seen")}, {_span(_STALE, "seen")}, {_span(_FRESH, "seen")},
    {_span(_EXPIRED, "verified")}, {_span(f"NOT {_EXPIRED}", "verified")},
    {_span(_LAGGING, "signed")}, {_span(_IN_STEP, "signed")},
    sum(CASE WHEN {_LAGGING} THEN device_size - stored ELSE 0 END)::bigint,
    sum(forked)::bigint
FROM console_fleet GROUP BY region, groups, own, gate, online, running, verdict
"""
"""The fleet in cells (:mod:`hub.registry.fleet_cells`) at ``now``: one pass over the
summary rows, split per cell by conditional sums into what depends on ``now``."""

_CURRENT_SQL = (
    "SELECT c.region, c.channel, b.version FROM channels c JOIN bundles b ON b.digest = c.digest"
)
_MOST_SQL = (
    f"SELECT device, device_size - stored FROM console_fleet WHERE {_LAGGING} "
    "ORDER BY 2 DESC, 1 LIMIT 1"
)
_REJECTIONS_SQL = (
    "SELECT code, sum(count)::bigint, min(last_at), max(last_at) FROM rejections GROUP BY code"
)
_EXAMPLES_SQL = f"""
SELECT device, state FROM (
    SELECT device, state, row_number() OVER (PARTITION BY state ORDER BY device) AS n
    FROM (SELECT device, CASE WHEN {_NEVER} THEN 'never_seen'
        WHEN %(now)s - seen > %(stale)s THEN 'stale'
        WHEN online = 0 THEN 'offline' ELSE gate END AS state FROM console_fleet) AS states
) AS numbered WHERE n <= %(examples)s ORDER BY device
"""
"""The first :data:`FLEET_EXAMPLES` device ids of each state, by id."""


class ConsoleTables(PostgresTransactions):
    """The console and audit log operations of :class:`hub.registry.interface.Registry`."""

    def add_console_token(self, token: ConsoleToken) -> None:
        with self._write("store the console token") as db:
            stored = db.execute(
                "INSERT INTO console_tokens VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
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
            for n, r, d, t in self._read("SELECT * FROM console_tokens ORDER BY name")
        ]

    def revoke_console_token(self, name: str) -> bool:
        with self._write("revoke the console token") as db:
            return db.execute("DELETE FROM console_tokens WHERE name = %s", (name,)).rowcount > 0

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
        sql = _FLEET_SQL + " WHERE d.id > %(after)s"
        if region is not None:
            sql += " AND d.region = %(region)s"
        if state is not None:
            sql += f" AND {_STATE} = %(state)s"
        rows = self._read(
            sql + " ORDER BY d.id LIMIT %(limit)s",
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
        times = {"now": now, "stale": stale_after_s, "examples": FLEET_EXAMPLES}
        with self._snapshot() as db:
            cells = db.execute(_CELLS_SQL, times).fetchall()
            current = {
                (as_text(region), as_text(channel)): as_int(version)
                for region, channel, version in db.execute(_CURRENT_SQL).fetchall()
            }
            most = db.execute(_MOST_SQL).fetchall()
            rejections = db.execute(_REJECTIONS_SQL).fetchall()
            named = db.execute(_EXAMPLES_SQL, times).fetchall()
        counted = CellCounts.of(cells, current)
        examples: dict[str, list[str]] = {state: [] for state in counted.states}
        for device, state in named:
            if as_text(state) in examples:
                examples[as_text(state)].append(as_text(device))
        return fleet_summary(
            counted,
            most,
            rejections,
            {state: tuple(ids) for state, ids in sorted(examples.items())},
        )

    def console_device(self, device_id: str) -> ConsoleFleetRow | None:
        rows = self._read(_FLEET_SQL + " WHERE d.id = %s", (device_id,))
        return console_fleet_row(rows[0]) if rows else None

    def status_history(self, device: str, since: int = 0) -> list[StatusSpan]:
        rows = self._read(
            "SELECT since, until, online, gate, bundle_version FROM status_spans "
            "WHERE device = %s AND until >= %s ORDER BY since",
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
                "INSERT INTO operator_audit "
                "(at, operator, action, target, reason, outcome, detail) "
                "VALUES (%s, %s, %s, %s, %s, %s, '') RETURNING id",
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
                "UPDATE operator_audit SET outcome = %s, detail = %s, finished_at = %s "
                "WHERE id = %s AND outcome = %s",
                (outcome, detail[:MAX_AUDIT_TEXT], at, action_id, _PENDING),
            ).rowcount
            if changed != 1:
                raise RegistryError(f"no pending operator action {action_id} in {self.path}")

    def audit_log(self, *, before: int | None = None, limit: int = 50) -> list[AuditEntry]:
        if not 1 <= limit <= MAX_AUDIT_PAGE:
            raise ValueError(f"an audit page holds 1 to {MAX_AUDIT_PAGE} entries, not {limit}")
        rows = self._read(
            "SELECT id, at, operator, action, target, reason, outcome, detail, finished_at "
            "FROM operator_audit WHERE id < %s ORDER BY id DESC LIMIT %s",
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


_MAX_ID = 2**63 - 1
"""The largest BIGINT: no id is above it, so a larger ``before`` is the same as none."""

"""The PostgreSQL registry's lineage partitions: the lineage search's month partitions made
ahead, dropped past its retention, and the layout ``registry check`` reports.

A registry created partitioned (:func:`hub.registry.postgres.schema.migrate`) holds
``lineage_search`` as one range partition per calendar month of ``time`` plus a DEFAULT
partition, and the per-device tables as hash partitions. Months are made ahead
(:data:`hub.registry.search_months.MONTHS_AHEAD`) when a hub opens the registry and on the
leader's schedule (one try each, at most :data:`~hub.registry.postgres.schema.LOCK_WAIT_MS`
for its lock: a hub's registry operations wait behind it); a row of a month with none lands
in the DEFAULT partition, so an insert never fails for a missing month.

Making a month moves the DEFAULT partition's rows of that month into it and attaches it,
in one transaction that first locks the parent against writes (``SHARE ROW EXCLUSIVE``:
searches go on) and then the DEFAULT partition: an insert that began before the attach
has its rows of that month routed to the DEFAULT partition, which PostgreSQL refuses once
the month is attached, so the hubs' inserts wait for the making instead (moving the
DEFAULT partition's rows of one month: none for a month made ahead). Dropping a month
takes the parent's ``ACCESS EXCLUSIVE`` lock for the drop (``DETACH ... CONCURRENTLY`` is
refused beside a DEFAULT partition): like a schema upgrade it waits at most
:data:`~hub.registry.postgres.schema.LOCK_WAIT_MS` for it, gives it back and tries again,
so a hub's write is never refused by a deadlock check. An unpartitioned
(older) registry has no months: nothing here changes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg
from psycopg import sql

from hub.registry.postgres.schema import LOCK_WAIT_MS, UPGRADE_PATIENCE_S, patiently
from hub.registry.retention import LINEAGE_TABLES, TableLayout
from hub.registry.schema import SEARCH_TABLE
from hub.registry.search_months import Month, parse_bound

__all__ = ["drop_month", "layout", "make_months", "months_held"]

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[tuple[object, ...]]

_SEARCH = SEARCH_TABLE.name
_DEFAULT = f"{_SEARCH}_default"
_STRATEGY = {"h": "device", "r": "month"}


def months_held(db: Connection) -> dict[Month, str]:
    """The month partitions of ``lineage_search`` and their names; empty when it is not
    partitioned."""
    rows = db.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
        (_SEARCH,),
    ).fetchall()
    held: dict[Month, str] = {}
    for name, bound in rows:
        month = parse_bound(str(bound))
        if month is not None:
            held[month] = str(name)
    return held


def make_months(db: Connection, where: str, months: Sequence[Month]) -> list[str]:
    """Create the partitions of ``months`` that ``lineage_search`` lacks (one transaction
    each); return their names. Nothing when the table is not partitioned. A month whose
    locks are not had within :data:`LOCK_WAIT_MS` (hubs writing, rows of months without a
    partition among them) is left for the next call: its rows are kept in the DEFAULT
    partition meanwhile, and a hub opening the registry or the leader's worker, which every
    registry operation of that hub waits for, never waits longer.

    Raises:
        psycopg.Error: the database refused.
    """
    if not _partitioned(db):
        return []
    held = months_held(db)
    made = []
    for month in months:
        if month in held:
            continue
        try:
            created = _make_month(db, month)
        except psycopg.errors.LockNotAvailable:
            logger.info(
                "lineage search partition for %s not made in %s: its default partition is "
                "busy (tried again next time)",
                month.label,
                where,
            )
            continue
        if created:
            made.append(month.partition(_SEARCH))
    return made


def drop_month(db: Connection, where: str, name: str) -> None:
    """Drop the month partition ``name`` of ``lineage_search`` (one transaction).

    Raises:
        RegistryError: hub writes kept the table busy too long.
        psycopg.Error: the database refused.
    """

    def attempt() -> None:
        with db.transaction():
            db.execute(f"SET LOCAL lock_timeout = {LOCK_WAIT_MS}")
            db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))

    patiently(
        attempt,
        f"cannot drop {name} in {where}: hub writes kept lineage_search busy for "
        f"{UPGRADE_PATIENCE_S:.0f} s; run the prune again (it resumes)",
    )


def layout(db: Connection) -> tuple[TableLayout, ...]:
    """How each lineage table is stored (:class:`TableLayout`)."""
    rows = db.execute(
        "SELECT c.relname, p.partstrat, (SELECT count(*) FROM pg_inherits i "
        "WHERE i.inhparent = c.oid) FROM pg_class c LEFT JOIN pg_partitioned_table p "
        "ON p.partrelid = c.oid WHERE c.relnamespace = current_schema()::regnamespace "
        "AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)",
        (list(LINEAGE_TABLES),),
    ).fetchall()
    found = {str(name): (strategy, int(count)) for name, strategy, count in rows}  # type: ignore[call-overload]
    layouts = []
    for table in LINEAGE_TABLES:
        strategy, count = found.get(table, (None, 0))
        kind = _STRATEGY.get(str(strategy)) if strategy is not None else None
        if kind is None:
            layouts.append(TableLayout(table))
        elif kind == "month":
            default = db.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(_DEFAULT))
            ).fetchone()
            months = tuple(m.label for m in sorted(months_held(db)))
            layouts.append(
                TableLayout(table, "month", count, months, int(default[0]) if default else 0)  # type: ignore[call-overload]
            )
        else:
            layouts.append(TableLayout(table, "device", count))
    return tuple(layouts)


def _partitioned(db: Connection) -> bool:
    row = db.execute(
        "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", (_SEARCH,)
    ).fetchone()
    return row is not None and row[0] == 1


def _make_month(db: Connection, month: Month) -> bool:
    """One attempt to make ``month``'s partition: ``False`` when another hub made it first."""
    name = month.partition(_SEARCH)
    with db.transaction():
        db.execute(f"SET LOCAL lock_timeout = {LOCK_WAIT_MS}")
        db.execute(
            sql.SQL("LOCK TABLE ONLY {} IN SHARE ROW EXCLUSIVE MODE").format(
                sql.Identifier(_SEARCH)
            )
        )
        db.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(_DEFAULT))
        )
        if month in months_held(db):
            return False
        table = sql.Identifier(name)
        db.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                table, sql.Identifier(_SEARCH)
            )
        )
        db.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM {} WHERE time >= %s AND time < %s RETURNING *) "
                "INSERT INTO {} SELECT * FROM moved"
            ).format(sql.Identifier(_DEFAULT), table),
            (month.start, month.end),
        )
        db.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(_SEARCH), table, sql.Literal(month.start), sql.Literal(month.end)
            )
        )
    return True

"""The PostgreSQL registry's schema: the tables of :mod:`hub.registry.schema` rendered for
PostgreSQL, its version in ``registry_meta``, and the trigger functions that keep the
dashboard's ``console_fleet`` summary in the transaction of every write to its sources
(as SQLite's triggers do). :func:`migrate` creates what is missing, in one transaction
under an advisory lock (hub processes starting at once create it once).

An upgrade of a registry other hubs are writing to waits for each table's lock at most
:data:`LOCK_WAIT_MS`, then gives back every lock it holds and tries again: it takes its
tables in an order hub writes do not share, and a wait of its longer than PostgreSQL's
``deadlock_timeout`` (1 s by default) could end in a deadlock check refusing a hub's write
instead (a device's status lost).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from hub.registry.interface import RegistryError
from hub.registry.postgres.devices import RECORD_STATUS_BODY, RECORD_STATUS_FUNCTION
from hub.registry.rows import as_bytes, as_int, as_text, search_row
from hub.registry.schema import (
    CONSOLE_FLEET_IN_PLACE,
    SCHEMA_VERSION,
    SEARCH_TABLE,
    TABLES,
    UPGRADABLE_VERSIONS,
    create_statements,
    partition_statements,
)

__all__ = ["FLEET_ROW", "LOCK_WAIT_MS", "migrate", "patiently"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MIGRATION_LOCK = "edgegov hub registry schema"
LOCK_WAIT_MS = 200
"""Longest the upgrade waits for one table's lock (below ``deadlock_timeout``)."""
UPGRADE_PATIENCE_S = 60.0
"""How long the upgrade keeps trying while other hubs hold its tables."""
_BACKFILL_ROWS = 10_000
_REFRESH_LANGUAGE = "plpgsql"
"""The language of ``console_fleet_refresh`` (:func:`_fleet_statements`)."""

FLEET_ROW = """
SELECT d.id, d.region, d.groups,
    (SELECT max(b.version) FROM channels c JOIN bundles b ON b.digest = c.digest
        WHERE c.region = d.region AND c.channel = 'device/' || d.id),
    a.last_seen, s.gate, s.online, s.bundle_version, s.time, s.lineage_size,
    coalesce(l.size, 0), t.verdict, t.expires_at, t.verified_at,
    CASE WHEN EXISTS (SELECT 1 FROM forks f WHERE f.device = d.id) THEN 1 ELSE 0 END
FROM devices d LEFT JOIN status s ON s.device = d.id
LEFT JOIN activity a ON a.device = d.id
LEFT JOIN lineage_state l ON l.device = d.id
LEFT JOIN attestation t ON t.device = d.id
"""
"""A device's ``console_fleet`` row, from the tables it summarises."""

_FLEET_SOURCES = (
    ("devices", "{row}.id"),
    ("status", "{row}.device"),
    ("activity", "{row}.device"),
    ("lineage_state", "{row}.device"),
    ("attestation", "{row}.device"),
    ("forks", "{row}.device"),
    ("channels", "CASE WHEN {row}.channel LIKE 'device/%' THEN substr({row}.channel, 8) END"),
)
"""The tables a ``console_fleet`` row is made of and how a changed row names its device (a
bundle current on a device's own channel sets its target)."""


def _fleet_statements() -> list[str]:
    """The function rewriting one device's ``console_fleet`` row, a trigger per source
    table calling it for the device of each row written or deleted, and the first fill of
    an empty summary.

    The rewrite holds a per-device transaction lock first: without it, two hubs writing for
    one device at once (one storing its lineage, the other its status) both delete the row
    and the second's insert meets the first's new row (a duplicate key, the write refused).
    An update of a status or a last seen sets its columns in place
    (:data:`~hub.registry.schema.CONSOLE_FLEET_IN_PLACE`) under the same lock, so it never
    updates a row another hub's rewrite is replacing from a snapshot without it.

    The rewrite is PL/pgSQL, whose statements each backend plans once and keeps: a ``LANGUAGE
    sql`` function plans its join of six tables again on every call (~1 ms of the server's
    CPU per lineage batch stored, measured, against ~0.25 ms).
    """
    statements = [
        "CREATE OR REPLACE FUNCTION console_fleet_refresh(named TEXT) RETURNS void "
        f"LANGUAGE {_REFRESH_LANGUAGE} AS $$ BEGIN "
        "PERFORM pg_advisory_xact_lock(hashtextextended('console_fleet:' || named, 0)); "
        "DELETE FROM console_fleet WHERE device = named; "
        f"INSERT INTO console_fleet {FLEET_ROW} WHERE d.id = named; END $$"
    ]
    in_place = dict(CONSOLE_FLEET_IN_PLACE)
    for table, columns in CONSOLE_FLEET_IN_PLACE:
        statements.append(
            f"CREATE OR REPLACE FUNCTION console_fleet_in_place_{table}() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM pg_advisory_xact_lock(hashtextextended('console_fleet:' || NEW.device, 0)); "
            f"UPDATE console_fleet SET {columns} WHERE device = NEW.device; "
            "RETURN NULL; END $$"
        )
        statements.append(
            f"CREATE OR REPLACE TRIGGER console_fleet_{table}_in_place AFTER UPDATE "
            f"ON {table} FOR EACH ROW EXECUTE FUNCTION console_fleet_in_place_{table}()"
        )
    for table, device in _FLEET_SOURCES:
        events = "INSERT OR DELETE" if table in in_place else "INSERT OR UPDATE OR DELETE"
        statements.append(
            f"CREATE OR REPLACE FUNCTION console_fleet_from_{table}() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "IF TG_OP <> 'DELETE' THEN "
            f"PERFORM console_fleet_refresh({device.format(row='NEW')}); END IF; "
            "IF TG_OP <> 'INSERT' THEN "
            f"PERFORM console_fleet_refresh({device.format(row='OLD')}); END IF; "
            "RETURN NULL; END $$"
        )
        statements.append(
            f"CREATE OR REPLACE TRIGGER console_fleet_{table} AFTER {events} "
            f"ON {table} FOR EACH ROW EXECUTE FUNCTION console_fleet_from_{table}()"
        )
    statements.append(
        f"INSERT INTO console_fleet {FLEET_ROW} WHERE NOT EXISTS (SELECT 1 FROM console_fleet)"
    )
    return statements


def migrate(db: psycopg.Connection[tuple[object, ...]], where: str) -> None:
    """Create what the registry lacks in the database ``db`` is connected to (autocommit),
    record its schema version, and fill the lineage search rows when that table is new.

    Raises:
        RegistryError: the database holds another schema version, or tables of another
            program, or cannot be written.
    """
    try:
        patiently(
            lambda: _migrate_once(db, where),
            f"cannot upgrade the hub registry {where}: other hub processes kept its tables "
            f"busy for {UPGRADE_PATIENCE_S:.0f} s; start this hub again, or stop the others "
            "while one upgrades it",
        )
    except psycopg.Error as exc:
        raise RegistryError(f"cannot prepare the hub registry {where}: {exc}") from exc


def patiently(attempt: Callable[[], T], busy: str) -> T:
    """Run ``attempt`` (one transaction that sets ``lock_timeout`` to :data:`LOCK_WAIT_MS`)
    again while a lock it needs is not had in time, for up to :data:`UPGRADE_PATIENCE_S`;
    other psycopg errors propagate.

    Raises:
        RegistryError: still busy after that long (the message ``busy``).
    """
    deadline = time.monotonic() + UPGRADE_PATIENCE_S
    while True:
        try:
            return attempt()
        except psycopg.errors.LockNotAvailable as exc:
            if time.monotonic() >= deadline:
                raise RegistryError(busy) from exc
            time.sleep(random.uniform(0.05, 0.25))


def _migrate_once(db: psycopg.Connection[tuple[object, ...]], where: str) -> None:
    """One attempt of :func:`migrate`: all of it or, when a table's lock is not had within
    :data:`LOCK_WAIT_MS` (``LockNotAvailable``), none of it."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_MIGRATION_LOCK,))
        db.execute(f"SET LOCAL lock_timeout = {LOCK_WAIT_MS}")
        _check_version(db, where)
        if _complete(db):
            return
        for statement in create_statements("postgresql", TABLES):
            db.execute(statement)
        search_missing = db.execute("SELECT to_regclass('lineage_search')").fetchone()
        for statement in create_statements("postgresql", (SEARCH_TABLE,)):
            db.execute(statement)
        _create_partitions(db)
        if search_missing is None or search_missing[0] is None:
            filled = _fill_search(db)
            if filled:
                logger.info("lineage search rows stored for %d entries", filled)
        for statement in _fleet_statements():
            db.execute(statement)
        db.execute(RECORD_STATUS_FUNCTION)


def _create_partitions(db: psycopg.Connection[tuple[object, ...]]) -> None:
    """Create the fixed partitions (:func:`~hub.registry.schema.partition_statements`) of
    every lineage table that is partitioned: one this registry created partitioned. A
    table created before partitioning stays one table: nothing rewrites it."""
    tables = [t for t in (*TABLES, SEARCH_TABLE) if t.partitioned is not None]
    rows = db.execute(
        "SELECT relname FROM pg_class WHERE relkind = 'p' "
        "AND relnamespace = current_schema()::regnamespace AND relname = ANY(%s)",
        ([t.name for t in tables],),
    ).fetchall()
    partitioned = {row[0] for row in rows}
    for table in tables:
        if table.name in partitioned:
            for statement in partition_statements(table):
                db.execute(statement)


def _complete(db: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether the database holds every table and summary trigger already, and the status
    function as this hub writes it (a registry opened before): then opening it writes
    nothing. One from before the in-place updates lacks their triggers, and gets them (its
    rewrite triggers of those tables replaced); one from before the PL/pgSQL rewrite gets it
    in place of its SQL function; one without ``record_device_status``, or with another
    text of it, gets this hub's."""
    tables = [table.name for table in (*TABLES, SEARCH_TABLE)]
    triggers = [f"console_fleet_{table}" for table, _ in _FLEET_SOURCES]
    triggers += [f"console_fleet_{table}_in_place" for table, _ in CONSOLE_FLEET_IN_PLACE]
    row = db.execute(
        "SELECT (SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
        "AND tablename = ANY(%s)), (SELECT count(*) FROM pg_trigger t JOIN pg_class c "
        "ON c.oid = t.tgrelid WHERE c.relnamespace = current_schema()::regnamespace "
        "AND t.tgname = ANY(%s)), (SELECT count(*) FROM pg_proc p JOIN pg_language l "
        "ON l.oid = p.prolang WHERE p.pronamespace = current_schema()::regnamespace "
        "AND p.proname = 'console_fleet_refresh' AND l.lanname = %s), "
        "(SELECT count(*) FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace "
        "AND p.proname = 'record_device_status' AND p.prosrc = %s)",
        (tables, triggers, _REFRESH_LANGUAGE, RECORD_STATUS_BODY),
    ).fetchone()
    return row == (len(tables), len(triggers), 1, 1)


def _check_version(db: psycopg.Connection[tuple[object, ...]], where: str) -> None:
    """Refuse a database of another schema version, or one holding tables that are not a
    registry's; record :data:`SCHEMA_VERSION` in a new one, or in one of an older version it
    upgrades (:data:`UPGRADABLE_VERSIONS`)."""
    has_meta = db.execute("SELECT to_regclass('registry_meta')").fetchone()
    if has_meta is None or has_meta[0] is None:
        others = db.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchone()
        if others is not None and others[0]:
            raise RegistryError(
                f"{where} holds tables but no hub registry: it is another program's database "
                "(give the hub a database of its own)"
            )
        db.execute(
            'CREATE TABLE registry_meta (key TEXT COLLATE "C" PRIMARY KEY, value BIGINT NOT NULL)'
        )
        db.execute("INSERT INTO registry_meta VALUES ('schema_version', %s)", (SCHEMA_VERSION,))
        return
    row = db.execute("SELECT value FROM registry_meta WHERE key = 'schema_version'").fetchone()
    version = None if row is None else row[0]
    if version in UPGRADABLE_VERSIONS:
        # What the newer version adds, :func:`migrate` creates next in this transaction.
        db.execute(
            "UPDATE registry_meta SET value = %s WHERE key = 'schema_version'", (SCHEMA_VERSION,)
        )
        logger.info("%s upgraded from schema %s to %d", where, version, SCHEMA_VERSION)
        return
    if version != SCHEMA_VERSION:
        raise RegistryError(
            f"{where} is a registry of schema {version}; this hub reads {SCHEMA_VERSION}"
        )


def _fill_search(db: psycopg.Connection[tuple[object, ...]]) -> int:
    """Store the search row of every stored entry (a registry whose search table was
    missing); return how many."""
    filled = 0
    insert = (
        "INSERT INTO lineage_search VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT DO NOTHING"
    )
    with db.cursor(name="lineage_search_fill") as entries:
        entries.execute("SELECT device, seq, data FROM lineage_entries")
        while chunk := entries.fetchmany(_BACKFILL_ROWS):
            with db.cursor() as cursor:
                cursor.executemany(
                    insert,
                    [search_row(as_text(d), as_int(s), as_bytes(data)) for d, s, data in chunk],
                )
            filled += len(chunk)
    return filled

"""``edge-hub registry migrate``: copy a registry into another database (a SQLite
``hub.db`` into PostgreSQL, the move users make; any backend into any other), verified.

Rules:

- **Generic over the schema.** Every table of :mod:`hub.registry.schema` is copied, in the
  order they are created (a table's references first), each in primary key order, in chunks
  of ``chunk`` rows, each chunk one destination transaction. A table added to the schema is
  copied with nothing added here. The dashboard summary (:data:`DERIVED_TABLES`) is not
  copied: the destination's triggers rebuild it from the rows copied.
- **Resumes, never merges.** Interrupted, a copy leaves each table holding a prefix of the
  source's rows in key order, so the destination's rows say how far each table got. A run
  first compares every row the destination holds with the source's rows at the same place,
  for every table, before it writes anything: equal, it copies what is missing; any
  difference (another registry, or rows written since) refuses the run with nothing
  written. A run that finds every row there writes nothing ("already migrated").
- **Same schema.** A source or destination of another schema version is refused.
- **A still source.** The source is read in one snapshot, but rows written to it after the
  copy started are not copied: the hubs using it must be stopped. The command refuses a hub
  directory whose ``edge-hub serve`` runs, and the copy refuses a source whose schedule
  lease is held and unexpired (:class:`SourceInUse`): every running ``serve`` claims it, so
  a held lease is a hub serving this registry, from whichever hub directory. The lease is
  read again after the copy: claimed meanwhile, the copy is refused as incomplete. Before
  reading, the source is opened once as any ``edge-hub`` command opens it, which adds the
  tables an older registry of this schema version lacks.
- **Search months first.** A destination that keeps the lineage search by month
  (partitioned PostgreSQL) gets a partition for every month from the source's oldest search
  row (at most three years back) to now before the copy, so the copied history can be
  pruned a month at a time.
- **Verified at the destination.** After copying, :func:`hub.registry.check.check_registry`
  compares the destination's row counts with the source's and checks every device log
  there: each one's stored entries rebuild its chain and reach its stored checkpoint roots.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import StateError
from edge_agent.support.cli import utc_text
from hub.registry.backends import open_registry, open_tables, parse_location
from hub.registry.check import RegistryCheck, check_registry
from hub.registry.interface import RegistryError
from hub.registry.records import ScheduleLeaseHolder
from hub.registry.rows import as_int
from hub.registry.schema import SCHEMA_VERSION, SEARCH_TABLE, UPGRADABLE_VERSIONS, Table
from hub.registry.tables import Row, TableStore, key_of, registry_tables

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DERIVED_TABLES",
    "HISTORY_MONTHS_S",
    "MAX_CHUNK_ROWS",
    "CopyReport",
    "MigrationError",
    "MigrationReport",
    "SourceInUse",
    "TablePlan",
    "copy_tables",
    "migrate_registry",
    "plan_copy",
]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 500
"""Rows copied per destination transaction unless told otherwise."""
MAX_CHUNK_ROWS = 10_000
"""Most rows one destination transaction copies (a chunk is held in memory)."""
HISTORY_MONTHS_S = 3 * 366 * 86_400
"""How far back a copy makes the destination's search months (three years)."""
DERIVED_TABLES = frozenset({"console_fleet"})
"""Tables each backend keeps itself from the others (triggers): never copied, counted."""


class MigrationError(StateError):
    """A registry copy refused: the destination holds another registry or other rows, or a
    registry of another schema version, or the source's hub still runs. ``edge-hub`` exits
    1 (refused)."""

    code = "registry_migration_refused"
    codes = ("registry_differs", "registry_schema", "hub_running")


class SourceInUse(RegistryError):
    """A registry copy refused because a hub serves the source: its schedule lease is held
    and unexpired (a ``serve`` on any hub directory using it). ``edge-hub`` exits 3
    (unavailable: the registry is busy until every hub on it stops)."""

    code = "registry_in_use"


@dataclass(frozen=True, slots=True)
class TablePlan:
    """One table to copy: the source's rows and how many the destination holds already."""

    table: Table
    source_rows: int
    held_rows: int


def plan_copy(
    tables: tuple[Table, ...], source_rows: Mapping[str, int], held_rows: Mapping[str, int]
) -> tuple[TablePlan, ...]:
    """What to copy of ``tables`` (but the derived ones), from each table's row count at the
    source and at the destination.

    Raises:
        MigrationError: the destination holds more rows of a table than the source.
    """
    plans = []
    for table in tables:
        if table.name in DERIVED_TABLES:
            continue
        plan = TablePlan(table, source_rows[table.name], held_rows[table.name])
        if plan.held_rows > plan.source_rows:
            raise MigrationError(
                f"the destination holds {plan.held_rows} rows of {table.name}, the source "
                f"{plan.source_rows}: it holds another registry (give an empty database)",
                code="registry_differs",
            )
        plans.append(plan)
    return tuple(plans)


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What a copy did: the tables and rows copied or found, and how many rows it found at
    the destination already (equal to the source's) and how many it wrote."""

    tables: int
    rows: int
    matched: int
    copied: int

    @property
    def already_migrated(self) -> bool:
        return self.copied == 0


def copy_tables(source: TableStore, destination: TableStore, *, chunk: int) -> CopyReport:
    """Copy every registry table's rows from ``source`` to ``destination``, resuming where
    an earlier run stopped.

    Steps: 1. plan from both sides' row counts (:func:`plan_copy`); 2. compare every row
    the destination holds with the source's, every table, before writing; 3. copy the rest
    of each table in key order, ``chunk`` rows per destination transaction.

    Raises:
        MigrationError: the destination holds rows the source does not.
        RegistryError: either cannot be read, or the destination written.
    """
    if not 1 <= chunk <= MAX_CHUNK_ROWS:
        raise ValueError(f"chunk must be 1 to {MAX_CHUNK_ROWS} rows, not {chunk}")
    tables = registry_tables()
    plans = plan_copy(
        tables,
        {t.name: source.count(t) for t in tables if t.name not in DERIVED_TABLES},
        {t.name: destination.count(t) for t in tables if t.name not in DERIVED_TABLES},
    )
    resume_after = {
        plan.table.name: _compare_held(source, destination, plan, chunk) for plan in plans
    }
    copied = 0
    for plan in plans:
        copied += _copy_rest(source, destination, plan.table, resume_after[plan.table.name], chunk)
    return CopyReport(
        len(plans),
        sum(plan.source_rows for plan in plans),
        sum(plan.held_rows for plan in plans),
        copied,
    )


def _compare_held(
    source: TableStore, destination: TableStore, plan: TablePlan, chunk: int
) -> Row | None:
    """Check the destination's rows of a table are the source's first rows, in key order;
    return the key of the last one (``None``: it holds none).

    Raises:
        MigrationError: a row differs.
    """
    table, after, left = plan.table, None, plan.held_rows
    while left:
        wanted = min(chunk, left)
        expected = source.page(table, after, wanted)
        held = destination.page(table, after, wanted)
        if held != expected:
            first = next(
                (h for h, e in zip(held, expected, strict=False) if h != e),
                held[-1] if held else None,
            )
            where = "" if first is None else f" (first at key {key_of(table, first)!r})"
            raise MigrationError(
                f"{destination.where} holds rows of {table.name} that differ from "
                f"{source.where}{where}: it holds another registry, or was written to since "
                "the last run; nothing was written (give an empty database)",
                code="registry_differs",
            )
        after = key_of(table, expected[-1])
        left -= len(expected)
    return after


def _copy_rest(
    source: TableStore, destination: TableStore, table: Table, after: Row | None, chunk: int
) -> int:
    """Copy ``table``'s rows after the key ``after``; return how many."""
    copied = 0
    while rows := source.page(table, after, chunk):
        destination.insert(table, rows)
        copied += len(rows)
        after = key_of(table, rows[-1])
    if copied:
        logger.info("copied %d rows of %s to %s", copied, table.name, destination.where)
    return copied


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """A finished copy: where from and to, what it copied, and the destination's check."""

    source: str
    destination: str
    copy: CopyReport
    check: RegistryCheck

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "destination": self.destination,
            "already_migrated": self.copy.already_migrated,
            "tables": self.copy.tables,
            "rows": self.copy.rows,
            "matched": self.copy.matched,
            "copied": self.copy.copied,
            "verified": self.check.ok,
            "check": self.check.to_json(),
        }


def migrate_registry(
    source: Path | str, destination: Path | str, *, chunk: int = DEFAULT_CHUNK_ROWS
) -> MigrationReport:
    """Copy the registry at ``source`` to ``destination`` (each a ``hub.db`` path or a
    ``postgresql://`` URL), resuming an interrupted copy, then check the destination.

    Raises:
        MigrationError: either holds a registry of another schema version (or the source
            none), or the destination holds rows the source does not.
        RegistryError: either cannot be opened, read or written.
    """
    where = _bring_up_to_date(source)
    lease = _refuse_while_served(source, where, during=False)
    with (
        open_tables(source, write=False) as source_rows,
        open_tables(destination, write=True) as destination_rows,
    ):
        _prepare_destination(destination, destination_rows, source_rows)
        copied = copy_tables(source_rows, destination_rows, chunk=chunk)
        if _refuse_while_served(source, where, during=True) != lease:
            raise SourceInUse(
                f"a hub claimed the schedule lease of {source_rows.where} while it was "
                "copied: rows it wrote meanwhile may be missing at the destination; stop "
                "every hub serving this registry first, then copy it again"
            )
        with open_registry(destination) as registry:
            check = check_registry(registry, destination_rows, source=source_rows)
    return MigrationReport(source_rows.where, destination_rows.where, copied, check)


def _refuse_while_served(
    source: Path | str, where: str, *, during: bool
) -> ScheduleLeaseHolder | None:
    """The schedule lease of the source (at ``where``, for messages), refused while a hub
    holds it unexpired (by the clock here; ``during``: read again after copying).

    Raises:
        SourceInUse: a hub serves the source.
    """
    with open_registry(source) as registry:
        lease = registry.schedule_lease()
    now = int(time.time())
    if lease is None or not lease.holder or lease.expires_at <= now:
        return lease
    when = "started serving it during the copy" if during else "serves it"
    raise SourceInUse(
        f"a hub {when}: the schedule lease of {where} is held by {lease.holder} until "
        f"{utc_text(lease.expires_at, '%Y-%m-%dT%H:%M:%SZ')} (an edge-hub serve on any hub "
        "directory using this registry); stop every hub serving this registry first"
        + (", then copy it again" if during else "")
    )


def _bring_up_to_date(source: Path | str) -> str:
    """Refuse a source holding no registry of this schema version (or of one opening
    upgrades); open it once as every ``edge-hub`` command does (upgrading an older registry:
    the tables it lacks are added, its version raised). Return where it is, for messages."""
    with open_tables(source, write=False) as rows:
        where = rows.where
        _refuse_other_schema("source", where, rows.schema_version())
    open_registry(source).close()
    return where


def _prepare_destination(destination: Path | str, rows: TableStore, source: TableStore) -> None:
    """Create the registry's tables in an empty destination, and on PostgreSQL the search
    months of the source's rows (:func:`_search_months`); refuse one of another schema
    version."""
    version = rows.schema_version()
    if version is None:
        open_registry(destination).close()
    else:
        _refuse_other_schema("destination", rows.where, version)
    first, last = _search_months(source)
    # Only PostgreSQL keeps the search by month; a SQLite destination is not opened here,
    # as opening one checks the device logs a resumed copy holds only part of.
    if first is not None and isinstance(parse_location(destination), str):
        with open_registry(destination) as registry:
            made = registry.prepare_search_months(first, last)
        if made:
            logger.info("lineage search partitions made for the copy: %d", len(made))


def _search_months(source: TableStore) -> tuple[int | None, int]:
    """The span of months a destination that keeps the lineage search by month
    (partitioned PostgreSQL) gets partitions for before the copy: from the source's oldest
    search row (at most :data:`HISTORY_MONTHS_S` ago: older rows land in the DEFAULT
    partition) to now, so the copied history can be pruned a month at a time. ``None``
    first: the source holds no search row."""
    now = int(time.time())
    oldest = source.page(SEARCH_TABLE, None, 1)
    if not oldest:
        return None, now
    return max(as_int(oldest[0][0]), now - HISTORY_MONTHS_S), now


def _refuse_other_schema(side: str, where: str, version: int | None) -> None:
    """Refuse the ``side`` of a copy (``source`` or ``destination``, at ``where``) unless it
    holds a registry of this schema version, or (the source only: opening it upgrades it)
    of one opening upgrades.

    Raises:
        MigrationError: it holds no registry, or one of another schema version.
    """
    accepted = (SCHEMA_VERSION, *UPGRADABLE_VERSIONS) if side == "source" else (SCHEMA_VERSION,)
    if version in accepted:
        return
    held = "no hub registry" if version is None else f"a registry of schema {version}"
    advice = " (give an empty database)" if side == "destination" else ""
    raise MigrationError(
        f"the {side} {where} holds {held}; this hub copies schema {SCHEMA_VERSION}{advice}",
        code="registry_schema",
    )

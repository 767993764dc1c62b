"""The lineage search's retention and the lineage tables' layout, either backend (tables
``lineage_search`` and ``retention``).

A prune records its cut first (``retention``, the greater of the held cut and the new one),
then drops the month partitions entirely before it (partitioned PostgreSQL only:
:meth:`SearchRetentionTables._old_months`), then deletes what is left before the cut in
chunks of :data:`PRUNE_CHUNK_ROWS`, each chunk its own transaction (on partitioned
PostgreSQL that is only the DEFAULT partition's rows: the cut is a month's start, so no
month partition straddles it), until none is left: a short chunk alone does not end it, as
on PostgreSQL a chunk whose rows another prune deleted first deletes none. Interrupted,
it resumes when run again; run again, it finds nothing. It never reads nor writes
``lineage_entries``, ``lineage_checkpoints`` or ``lineage_nodes``.
"""

from __future__ import annotations

from hub.registry.queries.base import RegistryQueries
from hub.registry.retention import LINEAGE_TABLES, SearchPrune, TableLayout
from hub.registry.rows import as_int
from hub.registry.schema import RETENTION_TABLE
from hub.registry.search_months import Month, month_of

__all__ = ["PRUNE_CHUNK_ROWS", "SearchRetentionTables"]

PRUNE_CHUNK_ROWS = 10_000
"""Search rows one transaction of a prune deletes (a bounded write, whatever the range)."""

_DELETE_CHUNK = (
    "DELETE FROM lineage_search WHERE (time, device, seq) IN (SELECT time, device, seq "
    "FROM lineage_search WHERE time < ? ORDER BY time, device, seq LIMIT ?)"
)
_ANY_BEFORE = "SELECT 1 FROM lineage_search WHERE time < ? LIMIT 1"
_RECORD_CUT = (
    "INSERT INTO retention VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
    "cut = excluded.cut, set_at = excluded.set_at WHERE retention.cut < excluded.cut"
)


class SearchRetentionTables(RegistryQueries):
    """The retention and layout operations of :class:`hub.registry.interface.Registry`.
    A backend whose search is partitioned overrides :meth:`_old_months`,
    :meth:`_drop_month`, :meth:`prepare_search_months` and :meth:`lineage_layout`."""

    def search_retention(self) -> int | None:
        rows = self._rows("SELECT cut FROM retention WHERE name = ?", (RETENTION_TABLE,))
        return as_int(rows[0][0]) if rows else None

    def prune_search(self, cut: int, *, at: int, dry_run: bool) -> SearchPrune:
        if month_of(cut).start != cut:
            raise ValueError(f"a search retention cut is the start of a month, not {cut}")
        previous = self.search_retention()
        old = self._old_months(cut)
        month_rows = sum(self._count(name) for _, name in old)
        if dry_run:
            rows = self._count("lineage_search", cut) - month_rows
            return SearchPrune(cut, rows, _labels(old), month_rows, previous, dry_run=True)
        with self._write("record the lineage search's retention") as db:
            db.execute(self._sql(_RECORD_CUT), (RETENTION_TABLE, cut, at))
        for _, name in old:
            self._drop_month(name)
        rows = 0
        while True:
            with self._write("prune the lineage search") as db:
                deleted = db.execute(self._sql(_DELETE_CHUNK), (cut, PRUNE_CHUNK_ROWS)).rowcount
            rows += deleted
            if deleted < PRUNE_CHUNK_ROWS and not self._rows(_ANY_BEFORE, (cut,)):
                break
        return SearchPrune(cut, rows, _labels(old), month_rows, previous, dry_run=False)

    def prepare_search_months(self, first: int, last: int) -> list[str]:
        """Nothing to prepare: the search is one table."""
        return []

    def lineage_layout(self) -> tuple[TableLayout, ...]:
        """Every lineage table is one table."""
        return tuple(TableLayout(table) for table in LINEAGE_TABLES)

    def _old_months(self, cut: int) -> list[tuple[Month, str]]:
        """The month partitions entirely before ``cut``, oldest first, with their names."""
        return []

    def _drop_month(self, name: str) -> None:
        raise NotImplementedError(f"the lineage search has no partition {name} to drop")

    def _count(self, table: str, before: int | None = None) -> int:
        where = "" if before is None else " WHERE time < ?"
        rows = self._rows(
            f"SELECT count(*) FROM {table}{where}", () if before is None else (before,)
        )
        return as_int(rows[0][0])


def _labels(months: list[tuple[Month, str]]) -> tuple[str, ...]:
    return tuple(month.label for month, _ in months)

"""The lineage search's retention in the PostgreSQL registry: the shared prune
(:mod:`hub.registry.queries.search_retention`) with whole month partitions dropped first,
months made ahead, and the layout read from the catalog (:mod:`.search_partitions`)."""

from __future__ import annotations

import psycopg

from edge_agent.support.cli import utc_text
from hub.registry.interface import RegistryError
from hub.registry.postgres import search_partitions
from hub.registry.postgres.transactions import PostgresTransactions
from hub.registry.queries.search_retention import (
    SearchRetentionTables as SharedSearchRetentionTables,
)
from hub.registry.retention import PruneRefused, SearchPrune, TableLayout
from hub.registry.rows import as_int
from hub.registry.schema import SEARCH_TABLE
from hub.registry.search_months import MIN_RETENTION_DAYS, Month, months_between, retention_cut

__all__ = ["SearchRetentionTables"]


class SearchRetentionTables(SharedSearchRetentionTables, PostgresTransactions):
    """The retention and layout operations of :class:`hub.registry.interface.Registry` on
    PostgreSQL."""

    def prune_search(self, cut: int, *, at: int, dry_run: bool) -> SearchPrune:
        """The shared prune, refused when ``cut`` is later than the latest one the database
        server's clock gives (``--older-than 1`` by it): the months every hub writes to are
        made by that clock, so a cut from a clock running ahead of it would drop the rows of
        the server's current month and record a cut no later prune moves back.

        Raises:
            PruneRefused: ``cut`` is later than that.
        """
        server_now = as_int(self._rows("SELECT extract(epoch FROM now())::bigint")[0][0])
        latest = retention_cut(server_now, MIN_RETENTION_DAYS)
        if cut > latest:
            raise PruneRefused(
                f"the cut {utc_text(cut, '%Y-%m-%d')} is later than any retention allows by "
                f"the clock of {self.path} (now {utc_text(server_now, '%Y-%m-%d %H:%M')} UTC "
                "there): this machine's clock is ahead of the database server's (or the "
                "server's behind); set the wrong one right and run the prune again (nothing "
                "was changed)"
            )
        return super().prune_search(cut, at=at, dry_run=dry_run)

    def prepare_search_months(self, first: int, last: int) -> list[str]:
        """Make the search partitions of every month from ``first``'s to ``last``'s that
        lacks one (on an unpartitioned registry: nothing)."""
        with self._connection(f"prepare the lineage search of {self.path}") as db:
            try:
                return search_partitions.make_months(
                    db, str(self.path), months_between(first, last)
                )
            except psycopg.Error as exc:
                raise RegistryError(
                    f"cannot make the lineage search's partitions in {self.path}: {exc}"
                ) from exc

    def lineage_layout(self) -> tuple[TableLayout, ...]:
        with self._connection(f"read the hub registry {self.path}") as db:
            try:
                return search_partitions.layout(db)
            except psycopg.Error as exc:
                raise RegistryError(f"cannot read the hub registry {self.path}: {exc}") from exc

    def _old_months(self, cut: int) -> list[tuple[Month, str]]:
        """The month partitions entirely before ``cut`` named as this registry names them
        (another one is left to the row-wise delete)."""
        with self._connection(f"read the hub registry {self.path}") as db:
            try:
                held = search_partitions.months_held(db)
            except psycopg.Error as exc:
                raise RegistryError(f"cannot read the hub registry {self.path}: {exc}") from exc
        return sorted(
            (month, name)
            for month, name in held.items()
            if month.end <= cut and name == month.partition(SEARCH_TABLE.name)
        )

    def _drop_month(self, name: str) -> None:
        with self._connection(f"prune the lineage search of {self.path}") as db:
            try:
                search_partitions.drop_month(db, str(self.path), name)
            except psycopg.Error as exc:
                raise RegistryError(f"cannot drop {name} in {self.path}: {exc}") from exc

"""The lineage search's retention in the PostgreSQL registry: the shared prune
(:mod:`hub.registry.queries.search_retention`) with whole month partitions dropped first,
months made ahead, and the layout read from the catalog (:mod:`.search_partitions`)."""

from __future__ import annotations

import psycopg

from hub.registry.interface import RegistryError
from hub.registry.postgres import search_partitions
from hub.registry.postgres.transactions import PostgresTransactions
from hub.registry.queries.search_retention import (
    SearchRetentionTables as SharedSearchRetentionTables,
)
from hub.registry.retention import TableLayout
from hub.registry.schema import SEARCH_TABLE
from hub.registry.search_months import Month, months_between

__all__ = ["SearchRetentionTables"]


class SearchRetentionTables(SharedSearchRetentionTables, PostgresTransactions):
    """The retention and layout operations of :class:`hub.registry.interface.Registry` on
    PostgreSQL."""

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

"""Row-level access to a PostgreSQL registry (:class:`hub.registry.tables.TableStore`), for
copying a registry and checking one.

Opened to read, every read runs in one ``REPEATABLE READ READ ONLY`` transaction held until
the store is closed: a copy reads the registry as it was when it started. Opened to write,
each :meth:`PostgresTableStore.insert` is one transaction, which also moves the identity
sequence of a table with a database-assigned id past the ids copied (rows inserted with
their ids leave it where it was, and the hub's next insert would take a copied id).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from hub.registry.interface import RegistryError
from hub.registry.postgres.registry import CONNECT_TIMEOUT_S, describe
from hub.registry.schema import Table
from hub.registry.tables import Row, count_query, insert_query, page_query

__all__ = ["PostgresTableStore"]


class PostgresTableStore:
    """One PostgreSQL registry's tables, row by row."""

    def __init__(self, db: psycopg.Connection[tuple[object, ...]], where: str) -> None:
        self._db = db
        self.where = where

    @classmethod
    def open(cls, url: str, *, write: bool) -> PostgresTableStore:
        """Connect to the database at ``url``: to read in one snapshot, or to write.

        Raises:
            RegistryError: it cannot be reached or logged into.
        """
        where = describe(url)
        try:
            db = psycopg.connect(url, autocommit=write, connect_timeout=CONNECT_TIMEOUT_S)
            if not write:
                db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                db.read_only = True
        except psycopg.Error as exc:
            raise RegistryError(f"cannot connect to the hub registry {where}: {exc}") from exc
        return cls(db, where)

    def schema_version(self) -> int | None:
        if (
            self._one(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'registry_meta' "
                "AND schemaname = current_schema()"
            )
            == 0
        ):
            return None
        return self._one(
            "SELECT coalesce(max(value), 0) FROM registry_meta WHERE key = 'schema_version'"
        )

    def count(self, table: Table) -> int:
        return self._one(count_query(table))

    def page(self, table: Table, after: Row | None, limit: int) -> list[Row]:
        params = (*(after or ()), limit)
        try:
            return self._db.execute(
                page_query(table, "%s", after=after is not None), params
            ).fetchall()
        except psycopg.Error as exc:
            raise RegistryError(f"cannot read {table.name} in {self.where}: {exc}") from exc

    def insert(self, table: Table, rows: Sequence[Row]) -> None:
        ids = [c.name for c in table.columns if c.type == "id"]
        try:
            with self._db.transaction(), self._db.cursor() as cursor:
                cursor.executemany(insert_query(table, "%s"), rows)
                for column in ids:
                    cursor.execute(
                        f"SELECT setval(pg_get_serial_sequence(%s, %s), max({column})) "
                        f"FROM {table.name}",
                        (table.name, column),
                    )
        except psycopg.Error as exc:
            raise RegistryError(
                f"cannot copy rows of {table.name} into {self.where}: {exc}"
            ) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PostgresTableStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _one(self, sql: str) -> int:
        try:
            row = self._db.execute(sql).fetchone()
        except psycopg.Error as exc:
            raise RegistryError(f"cannot read the hub registry {self.where}: {exc}") from exc
        return 0 if row is None else int(row[0])  # type: ignore[call-overload]

"""Row-level access to a SQLite registry (:class:`hub.registry.tables.TableStore`), for
copying a registry and checking one.

Opened to read, the file is opened read-only and every read of the store sees one snapshot
(one read transaction, held until it is closed): a copy reads the registry as it was when it
started. Opened to write, each :meth:`SqliteTableStore.insert` is one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from hub.registry.interface import RegistryError
from hub.registry.schema import Table
from hub.registry.sqlite.registry import BUSY_TIMEOUT_S
from hub.registry.tables import Row, count_query, insert_query, key_columns, page_query

__all__ = ["SqliteTableStore"]


class SqliteTableStore:
    """One SQLite registry file's tables, row by row."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.where = str(path)

    @classmethod
    def open(cls, path: Path, *, write: bool) -> SqliteTableStore:
        """Open the registry file at ``path``: read-only in one snapshot, or to write
        (creating the file when missing).

        Raises:
            RegistryError: it cannot be opened (to read: it does not exist).
        """
        try:
            if write:
                db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
                db.execute("PRAGMA foreign_keys = ON")
                db.execute("PRAGMA synchronous = FULL")
            else:
                db = sqlite3.connect(
                    f"file:{quote(str(path.absolute()))}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    timeout=BUSY_TIMEOUT_S,
                )
                db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open the hub registry {path}: {exc}") from exc
        return cls(db, path)

    def schema_version(self) -> int | None:
        version = self._one("PRAGMA user_version")
        if version:
            return version
        tables = self._one("SELECT count(*) FROM sqlite_schema WHERE type = 'table'")
        return None if tables == 0 else 0

    def count(self, table: Table) -> int:
        return self._one(count_query(table))

    def page(self, table: Table, after: Row | None, limit: int) -> list[Row]:
        params = (*(after or ()), limit)
        try:
            return self._db.execute(
                page_query(table, "?", after=after is not None), params
            ).fetchall()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read {table.name} in {self.where}: {exc}") from exc

    def insert(self, table: Table, rows: Sequence[Row]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(insert_query(table, "?"), rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RegistryError(
                f"cannot copy rows of {table.name} ({', '.join(key_columns(table))}) into "
                f"{self.where}: {exc}"
            ) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteTableStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _one(self, sql: str) -> int:
        try:
            row = self._db.execute(sql).fetchone()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read the hub registry {self.where}: {exc}") from exc
        return int(row[0])

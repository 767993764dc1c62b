"""The SQLite registry's transaction core: write groups, one write, reads, column decoding.

Every change is one ``BEGIN IMMEDIATE`` transaction, or one savepoint inside a
:meth:`SqliteTransactions.write_group` (which commits a burst of changes with one fsync).
SQLite undoes a whole transaction on a full disk or an I/O error; a group remembers that
through the connection's ``in_transaction`` and refuses every later write of the group, and
its commit. sqlite3 errors stay in this package: they become :class:`RegistryError`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import ClassVar, Literal

from hub.registry.interface import RegistryError
from hub.registry.queries.base import Params, RegistryQueries, Session
from hub.registry.rows import as_bytes, as_groups, as_int, as_opt_int, as_text

__all__ = [
    "SqliteTransactions",
    "as_bytes",
    "as_groups",
    "as_int",
    "as_opt_int",
    "as_text",
]


class SqliteTransactions(RegistryQueries):
    """One open registry connection and the transaction discipline every concern uses."""

    dialect: ClassVar[Literal["sqlite"]] = "sqlite"

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._grouped = False

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def write_group(self) -> Iterator[None]:
        """See :meth:`hub.registry.interface.Registry.write_group`."""
        if self._grouped:
            yield
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot begin a write in {self.path}: {exc}") from exc
        self._grouped = True
        try:
            yield
        except BaseException:
            self._grouped = False
            self._rollback()
            raise
        self._grouped = False
        if not self._db.in_transaction:
            raise RegistryError(f"cannot commit to {self.path}: a failure rolled the group back")
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise RegistryError(f"cannot commit to {self.path}: {exc}") from exc

    def _rollback(self) -> None:
        with suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One atomic write: a transaction of its own, or a savepoint inside a group. An
        exception out of the block undoes the block's changes and propagates; a sqlite3
        error becomes :class:`RegistryError` saying it could not ``what``."""
        if self._grouped and not self._db.in_transaction:
            # SQLite rolls a whole transaction back on a full disk or an I/O error.
            raise RegistryError(
                f"cannot {what} in {self.path}: an earlier failure rolled back this group"
            )
        begin, commit, rollback = (
            ("SAVEPOINT write", "RELEASE write", ("ROLLBACK TO write", "RELEASE write"))
            if self._grouped
            else ("BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",))
        )
        try:
            self._db.execute(begin)
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    for statement in rollback:
                        self._db.execute(statement)
                raise
            self._db.execute(commit)
        except sqlite3.Error as exc:
            if not self._grouped:
                self._rollback()
            raise RegistryError(f"cannot {what} in {self.path}: {exc}") from exc

    def _read(self, sql: str, params: Params = ()) -> list[tuple[object, ...]]:
        """The rows of one query; a sqlite3 error becomes :class:`RegistryError`."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read the hub registry {self.path}: {exc}") from exc

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """The connection, its reads in the block in one read transaction (one consistent
        view), unless a write group or the caller's read holds one already; a sqlite3 error
        in the block becomes :class:`RegistryError`."""
        begin = not (self._grouped or self._db.in_transaction)
        try:
            if begin:
                self._db.execute("BEGIN")
            yield self._db
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read the hub registry {self.path}: {exc}") from exc
        finally:
            if begin:
                self._rollback()

    def _lock(self, db: Session, key: str) -> None:
        """Nothing to take: every write holds the database's write lock from its
        ``BEGIN IMMEDIATE``, so it already runs alone among all writers."""

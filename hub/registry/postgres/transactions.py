"""The PostgreSQL registry's transaction core: the connection pool, write groups, one write,
reads, and psycopg's errors turned into :class:`RegistryError`.

Connections come from a :class:`psycopg_pool.ConnectionPool` in autocommit mode, each
checked when taken (a server restart costs the next call a reconnect, not an error). Every
change is one transaction (``BEGIN`` ... ``COMMIT``, READ COMMITTED), or one savepoint
inside a :meth:`PostgresTransactions.write_group`, which holds one connection until the
block ends. Compare-and-set writes decide inside the database against what is committed
(conditional ``UPDATE``/``INSERT ... ON CONFLICT``, whose row locks make a concurrent writer
wait and re-check), or under a transaction-scoped advisory lock (:meth:`lock`) where a
read decides a later write. psycopg's errors stay in this package.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import ClassVar, Literal

import psycopg
from psycopg_pool import ConnectionPool

from hub.registry.interface import RegistryError
from hub.registry.queries.base import RegistryQueries, Session

__all__ = ["PostgresTransactions"]


class PostgresTransactions(RegistryQueries):
    """One registry's connection pool and the transaction discipline every concern uses.

    ``where`` names the database without its password, for messages."""

    dialect: ClassVar[Literal["postgresql"]] = "postgresql"

    def __init__(self, pool: ConnectionPool, where: str) -> None:
        self._pool = pool
        self.path = where
        self._group: psycopg.Connection[tuple[object, ...]] | None = None
        self._group_lock = threading.RLock()

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def write_group(self) -> Iterator[None]:
        """See :meth:`hub.registry.interface.Registry.write_group`."""
        if self._group is not None:
            yield
            return
        with self._group_lock, self._connection(f"begin a write in {self.path}") as db:
            try:
                with db.transaction():
                    self._group = db
                    try:
                        yield
                    finally:
                        self._group = None
            except psycopg.Error as exc:
                raise RegistryError(f"cannot commit to {self.path}: {exc}") from exc

    @contextmanager
    def _connection(self, what: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """The write group's connection, or one from the pool for the block; a psycopg
        error (the pool's too: none free in time, or the server unreachable) becomes
        :class:`RegistryError` saying it could not ``what``."""
        if self._group is not None:
            yield self._group
            return
        try:
            with self._pool.connection() as db:
                yield db
        except psycopg.Error as exc:
            raise RegistryError(f"cannot {what}: {exc}") from exc

    @contextmanager
    def _write(self, what: str) -> Iterator[psycopg.Cursor[tuple[object, ...]]]:
        """One atomic write on a cursor of its own: a transaction of its own, or a savepoint
        inside a group. An exception out of the block undoes the block's changes and
        propagates; a psycopg error becomes :class:`RegistryError` saying it could not
        ``what``."""
        with self._connection(f"{what} in {self.path}") as db:
            try:
                with db.transaction(), db.cursor() as cursor:
                    yield cursor
            except psycopg.Error as exc:
                raise RegistryError(f"cannot {what} in {self.path}: {exc}") from exc

    def _write_one(
        self, what: str, sql: str, params: Mapping[str, object]
    ) -> list[tuple[object, ...]]:
        """The rows of one statement run as one atomic write: on its own (the connection's
        autocommit makes the statement its own transaction: one round trip, no ``BEGIN``
        nor ``COMMIT``), or in a savepoint inside a group. A psycopg error becomes
        :class:`RegistryError` saying it could not ``what``."""
        with self._connection(f"{what} in {self.path}") as db:
            try:
                if db is not self._group:
                    return db.execute(sql, params).fetchall()
                with db.transaction():
                    return db.execute(sql, params).fetchall()
            except psycopg.Error as exc:
                raise RegistryError(f"cannot {what} in {self.path}: {exc}") from exc

    def _read(
        self, sql: str, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[tuple[object, ...]]:
        """The rows of one query; a psycopg error becomes :class:`RegistryError`."""
        with self._connection(f"read the hub registry {self.path}") as db:
            try:
                return db.execute(sql, params).fetchall()
            except psycopg.Error as exc:
                raise RegistryError(f"cannot read the hub registry {self.path}: {exc}") from exc

    @contextmanager
    def _snapshot(self) -> Iterator[psycopg.Cursor[tuple[object, ...]]]:
        """A cursor whose reads in the block see one consistent snapshot (a REPEATABLE
        READ, read-only transaction), or the write group's (which sees its own writes)."""
        with self._connection(f"read the hub registry {self.path}") as db:
            try:
                if db is self._group:
                    with db.cursor() as cursor:
                        yield cursor
                    return
                with db.transaction(), db.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    yield cursor
            except psycopg.Error as exc:
                raise RegistryError(f"cannot read the hub registry {self.path}: {exc}") from exc

    def _lock(self, db: Session, key: str) -> None:
        """Hold the advisory lock named ``key`` until the transaction ends: a write whose
        read decides what it writes (one status per device newer than the held one, a key
        registered once) runs alone among the writers that take the same lock, across every
        hub process."""
        db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))

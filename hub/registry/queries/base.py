"""What every shared query module stands on: the dialect's rendering of a statement, the
write session a backend hands out, and the backend's small set of primitives.

Statements are written once with ``?`` (or ``:name``) placeholders and the SQL both
databases read alike (``INSERT ... ON CONFLICT``, ``RETURNING``, row values, ``NULLS
FIRST``); :func:`render` gives PostgreSQL its ``%s`` (``%(name)s``) placeholders. A
statement that differs beyond that names its dialect's text where it is used.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import lru_cache
from typing import Any, ClassVar, Protocol

from hub.registry.schema import Dialect

__all__ = ["RENDERED_STATEMENTS", "Params", "RegistryQueries", "Rows", "Session", "render"]

Params = Sequence[object] | Mapping[str, object]
"""A statement's values: in placeholder order (``?``), or by name (``:name``)."""

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
"""A ``:name`` placeholder (not a PostgreSQL ``::type`` cast)."""


def render(sql: str, dialect: Dialect) -> str:
    """``sql`` (``?`` or ``:name`` placeholders) in ``dialect``: as written for SQLite; for
    PostgreSQL (psycopg) a literal ``%`` is doubled, each ``?`` becomes ``%s`` and each
    ``:name`` ``%(name)s``."""
    if dialect == "sqlite":
        return sql
    return _postgresql(sql)


RENDERED_STATEMENTS = 4096
"""Statements :func:`render` keeps rendered for PostgreSQL (the fixed ones, and the
search's filter combinations a hub meets), so a statement is rewritten once, not per call."""


@lru_cache(maxsize=RENDERED_STATEMENTS)
def _postgresql(sql: str) -> str:
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%").replace("?", "%s"))


class Rows(Protocol):
    """What a statement run in a write leaves: its rows and how many it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Session(Protocol):
    """One write's handle on the database (a sqlite3 connection, a psycopg cursor): it runs
    statements already rendered in the backend's dialect."""

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ..., /) -> Rows: ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> object: ...


class RegistryQueries(ABC):
    """The primitives a backend gives the shared queries: its dialect, where it is (for
    messages), one atomic write, one read, a consistent view, and the lock a write takes
    where what it reads decides what it writes."""

    dialect: ClassVar[Dialect]
    path: object
    """The registry's file or URL (no password), for messages."""

    @abstractmethod
    def _write(self, what: str) -> AbstractContextManager[Session]:
        """One atomic write (statements already rendered); an error out of it becomes
        :class:`hub.registry.interface.RegistryError` saying it could not ``what``."""

    @abstractmethod
    def _read(self, sql: str, params: Params = ()) -> list[tuple[object, ...]]:
        """The rows of one rendered query."""

    @abstractmethod
    def _snapshot(self) -> AbstractContextManager[Session]:
        """A session whose reads in the block see one consistent snapshot (a write group's
        own, which sees its writes, when one is open); an error in it becomes
        :class:`hub.registry.interface.RegistryError`."""

    @abstractmethod
    def _lock(self, db: Session, key: str) -> None:
        """Make the rest of this write run alone among the writes locking ``key``, so what
        it read decides what it writes."""

    def _sql(self, sql: str) -> str:
        """``sql`` in this backend's dialect."""
        return render(sql, self.dialect)

    def _rows(self, sql: str, params: Params = ()) -> list[tuple[object, ...]]:
        """The rows of ``sql`` (written with ``?`` or ``:name`` placeholders)."""
        return self._read(render(sql, self.dialect), params)

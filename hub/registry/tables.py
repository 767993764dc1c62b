"""Row-level access to a registry's tables, whatever its backend: what copying a registry
(:mod:`hub.registry.migrate`) and checking one read and write, below the
:class:`hub.registry.interface.Registry` of records.

A :class:`TableStore` reads a table's rows in primary key order, a page at a time after a
given key, and inserts rows in one transaction. The order is the same in both backends:
text compares by byte (SQLite's ``BINARY``, PostgreSQL's ``COLLATE "C"``), as do bytes and
integers, so one registry's rows come out of SQLite and PostgreSQL in the same order. This
module holds no connection: the backends implement the protocol
(:mod:`hub.registry.sqlite.table_store`, :mod:`hub.registry.postgres.table_store`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hub.registry.schema import SEARCH_TABLE, TABLES, Table

__all__ = [
    "Row",
    "TableStore",
    "count_query",
    "insert_query",
    "key_columns",
    "key_of",
    "page_query",
    "registry_tables",
]

Row = tuple[object, ...]
"""One row, its values in the order of the table's columns."""


def registry_tables() -> tuple[Table, ...]:
    """Every table of a registry, in the order they are created (a table's references
    before it)."""
    return (*TABLES, SEARCH_TABLE)


def key_columns(table: Table) -> tuple[str, ...]:
    """The columns ordering ``table``: its primary key, or its database-assigned id."""
    if table.primary_key:
        return table.primary_key
    return tuple(c.name for c in table.columns if c.type == "id")


def key_of(table: Table, row: Row) -> Row:
    """The primary key values of ``row`` of ``table``."""
    names = [c.name for c in table.columns]
    return tuple(row[names.index(column)] for column in key_columns(table))


def count_query(table: Table) -> str:
    return f"SELECT count(*) FROM {table.name}"


def page_query(table: Table, placeholder: str, *, after: bool) -> str:
    """The next rows of ``table`` in key order (after a key given as parameters when
    ``after``), the page size the last parameter."""
    columns = ", ".join(c.name for c in table.columns)
    keys = key_columns(table)
    where = ""
    if after:
        marks = ", ".join(placeholder for _ in keys)
        where = f" WHERE ({', '.join(keys)}) > ({marks})"
    return (
        f"SELECT {columns} FROM {table.name}{where} ORDER BY {', '.join(keys)} LIMIT {placeholder}"
    )


def insert_query(table: Table, placeholder: str) -> str:
    columns = ", ".join(c.name for c in table.columns)
    marks = ", ".join(placeholder for _ in table.columns)
    return f"INSERT INTO {table.name} ({columns}) VALUES ({marks})"


class TableStore(Protocol):
    """Row-level access to one registry. ``where`` names it for messages (a path, or a URL
    without its password). Use as a context manager, or call :meth:`close`."""

    where: str

    def schema_version(self) -> int | None:
        """The schema version the registry records; ``None`` when it holds no registry."""
        ...

    def count(self, table: Table) -> int:
        """How many rows ``table`` holds."""
        ...

    def page(self, table: Table, after: Row | None, limit: int) -> list[Row]:
        """Up to ``limit`` rows of ``table`` in primary key order, those after the key
        ``after`` (from the first when ``None``)."""
        ...

    def insert(self, table: Table, rows: Sequence[Row]) -> None:
        """Insert ``rows`` into ``table`` in one transaction: all of them or none."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> TableStore: ...

    def __exit__(self, *exc_info: object) -> None: ...

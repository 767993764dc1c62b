"""Opening a registry: the one place that picks a backend and names its class.

Everything else holds a :class:`hub.registry.interface.Registry`: SQLite (a ``hub.db``
file, the default) or PostgreSQL (a ``postgresql://`` URL, shared by hubs on several hosts).
"""

from __future__ import annotations

from pathlib import Path

from hub.registry.interface import Registry
from hub.registry.sqlite import SqliteRegistry
from hub.registry.sqlite.table_store import SqliteTableStore
from hub.registry.tables import TableStore

__all__ = ["POSTGRES_SCHEMES", "open_registry", "open_tables"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""How a registry location names a PostgreSQL database (libpq's URL schemes)."""


def open_registry(location: Path | str) -> Registry:
    """Open (creating if needed) the registry at ``location``: a PostgreSQL database when it
    is a ``postgresql://`` URL, otherwise the SQLite file at that path.

    Raises:
        RegistryError: it cannot be opened or reached, or it is another program's database.
    """
    if isinstance(location, str) and location.startswith(POSTGRES_SCHEMES):
        # Imported here: psycopg and its pool take about half a second to import, which
        # every edge-hub command on a SQLite registry would otherwise pay.
        from hub.registry.postgres import PostgresRegistry

        return PostgresRegistry.open(location)
    return SqliteRegistry.open(Path(location))


def open_tables(location: Path | str, *, write: bool) -> TableStore:
    """Row-level access to the registry at ``location`` (as :func:`open_registry` names
    it), read-only in one snapshot or to write, for copying and checking a registry.

    Raises:
        RegistryError: it cannot be opened or reached (to read: a missing file).
    """
    if isinstance(location, str) and location.startswith(POSTGRES_SCHEMES):
        from hub.registry.postgres.table_store import PostgresTableStore

        return PostgresTableStore.open(location, write=write)
    return SqliteTableStore.open(Path(location), write=write)

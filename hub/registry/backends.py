"""Opening a registry: the one place that picks a backend and names its class.

Everything else holds a :class:`hub.registry.interface.Registry`: SQLite (a ``hub.db``
file, the default) or PostgreSQL (a ``postgresql://`` URL, shared by hubs on several hosts).
"""

from __future__ import annotations

import re
from pathlib import Path

from hub.registry.interface import Registry, RegistryError
from hub.registry.sqlite import SqliteRegistry
from hub.registry.sqlite.table_store import SqliteTableStore
from hub.registry.tables import TableStore

__all__ = [
    "POSTGRES_SCHEMES",
    "UNRECOGNISED_LOCATION",
    "open_registry",
    "open_tables",
    "parse_location",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""How a registry location names a PostgreSQL database (libpq's URL schemes, matched
whatever their case)."""

UNRECOGNISED_LOCATION = "the registry location is neither a hub.db path nor a postgresql:// URL"
"""The refusal of a location that is neither: it never quotes it (it may hold a password)."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_DSN_KEYWORD = re.compile(r"(?:host|hostaddr|password|dbname|user)\s*=", re.IGNORECASE)


def parse_location(location: Path | str) -> Path | str:
    """``location`` as a backend opens it: a ``postgresql://`` URL (its scheme in lower
    case: libpq matches it case-sensitively), else the path of a ``hub.db`` file. Text that
    looks like another URL (``scheme:...``) or a libpq ``key=value`` connection string is
    neither, and is refused: taken as a file name it would be echoed in messages, password
    and all. A path that must start with such text is given as ``./scheme:...``.

    Raises:
        RegistryError: ``location`` is neither (the message does not quote it).
    """
    if not isinstance(location, str):
        return location
    if location.lower().startswith(POSTGRES_SCHEMES):
        scheme_end = location.index(":")
        return location[:scheme_end].lower() + location[scheme_end:]
    if _SCHEME.match(location) or ("=" in location and _DSN_KEYWORD.search(location)):
        raise RegistryError(UNRECOGNISED_LOCATION)
    return Path(location)


def open_registry(location: Path | str) -> Registry:
    """Open (creating if needed) the registry at ``location``: a PostgreSQL database when it
    is a ``postgresql://`` URL, otherwise the SQLite file at that path.

    Raises:
        RegistryError: it cannot be opened or reached, it is another program's database, or
            it is neither a path nor a PostgreSQL URL (:func:`parse_location`).
    """
    location = parse_location(location)
    if isinstance(location, str):
        # Imported here: psycopg and its pool take about half a second to import, which
        # every edge-hub command on a SQLite registry would otherwise pay.
        from hub.registry.postgres import PostgresRegistry

        return PostgresRegistry.open(location)
    return SqliteRegistry.open(location)


def open_tables(location: Path | str, *, write: bool) -> TableStore:
    """Row-level access to the registry at ``location`` (as :func:`open_registry` names
    it), read-only in one snapshot or to write, for copying and checking a registry.

    Raises:
        RegistryError: it cannot be opened or reached (to read: a missing file).
    """
    location = parse_location(location)
    if isinstance(location, str):
        from hub.registry.postgres.table_store import PostgresTableStore

        return PostgresTableStore.open(location, write=write)
    return SqliteTableStore.open(location, write=write)

"""Opening a registry: the one place that picks a backend and names its class.

Everything else holds a :class:`hub.registry.interface.Registry`. Today the only backend is
SQLite (a ``hub.db`` file).
"""

from __future__ import annotations

from pathlib import Path

from hub.registry.interface import Registry
from hub.registry.sqlite import SqliteRegistry

__all__ = ["open_registry"]


def open_registry(path: Path) -> Registry:
    """Open (creating if needed) the SQLite registry at ``path``.

    Raises:
        RegistryError: it cannot be opened, or it is another program's database.
    """
    return SqliteRegistry.open(path)

"""The SQLite backend of the hub registry (the embedded default): :class:`SqliteRegistry`.

The registry stores what callers verified; it verifies nothing itself. sqlite3 is imported
in this package only, and its errors become :class:`hub.registry.interface.RegistryError`.
"""

from hub.registry.sqlite.registry import SqliteRegistry

__all__ = ["SqliteRegistry"]

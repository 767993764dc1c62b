"""The hub's registry in SQLite: one database file (``hub.db`` in the hub directory), shared
by ``edge-hub serve`` and the other ``edge-hub`` commands, in WAL mode with a bounded busy
timeout.

:class:`SqliteRegistry` implements :class:`hub.registry.interface.Registry` by composing
one class per concern over the transaction core (:mod:`.transactions`): devices with
attestation, rejections and the fleet view, and publications (both from
:mod:`hub.registry.queries`, shared with PostgreSQL), device logs, the console, the lineage
search, the operator audit log, staged rollouts and the schedule lease. Open it through
:func:`hub.registry.backends.open_registry`.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from hub.registry.interface import RegistryError
from hub.registry.queries.devices import DeviceTables
from hub.registry.queries.publications import PublicationTables
from hub.registry.queries.rollouts import RolloutTables
from hub.registry.queries.schedule_lease import ScheduleLeaseTables
from hub.registry.queries.search_retention import SearchRetentionTables
from hub.registry.schema import UPGRADABLE_VERSIONS
from hub.registry.sqlite.console_fleet import CONSOLE_FLEET_SCHEMA, ConsoleFleetTables
from hub.registry.sqlite.device_logs import DeviceLogTables
from hub.registry.sqlite.lineage_search import ensure_search
from hub.registry.sqlite.schema import SCHEMA, SCHEMA_VERSION
from hub.registry.sqlite.tree_nodes import backfill

__all__ = ["BUSY_TIMEOUT_S", "SqliteRegistry"]

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0
"""Longest a write waits for another process's write lock before failing."""


class SqliteRegistry(
    DeviceTables,
    PublicationTables,
    DeviceLogTables,
    ConsoleFleetTables,
    RolloutTables,
    ScheduleLeaseTables,
    SearchRetentionTables,
):
    """An open SQLite registry. Use as a context manager, or call :meth:`close`."""

    @classmethod
    def open(cls, path: Path) -> SqliteRegistry:
        """Open (creating if needed) the registry at ``path``; store the tree nodes of
        device logs written before the registry kept them (:func:`.tree_nodes.backfill`),
        and their lineage search rows (:func:`.lineage_search.ensure_search`).

        Raises:
            RegistryError: it cannot be opened, it is another program's database (tables
                but no ``user_version``: every hub registry has recorded one), a registry
                of a version this hub does not open, or a device log's entries do not
                rebuild its stored tree.
        """
        try:
            db = sqlite3.connect(
                path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open the hub registry {path}: {exc}") from exc
        try:
            # Checked before anything is written (WAL mode rewrites the file's header):
            # another program's database is left byte for byte as it was.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
            ).fetchone()[0]
            if version == 0 and tables:
                db.close()
                raise RegistryError(
                    f"{path} is another program's database (it holds tables but no hub "
                    "registry): check --registry (or $EDGEGOV_REGISTRY)"
                )
            if version not in (0, SCHEMA_VERSION, *UPGRADABLE_VERSIONS):
                db.close()
                raise RegistryError(
                    f"{path} is a registry of schema {version}; this hub reads {SCHEMA_VERSION}"
                )
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            # One transaction, with one fsync: a new registry, or an upgraded one (what it
            # lacked is created as for a new one), gets its tables and its version, all of
            # them or none if the process is killed. On one opened by this hub before,
            # every statement is a no-op and the version is not rewritten, so a command that
            # only reads leaves hub.db as it was; one from before the in-place summary
            # triggers has its old ones replaced, once (.console_fleet): a status another
            # process records meanwhile meets the old triggers or the new ones, never
            # neither (its dashboard row would keep the status before).
            new_version = (
                "" if version == SCHEMA_VERSION else f"PRAGMA user_version = {SCHEMA_VERSION};\n"
            )
            db.executescript(
                f"BEGIN IMMEDIATE;\n{SCHEMA}{CONSOLE_FLEET_SCHEMA}{new_version}COMMIT;"
            )
        except sqlite3.Error as exc:
            db.close()
            raise RegistryError(f"cannot open the hub registry {path}: {exc}") from exc
        try:
            for device in backfill(db, path):
                logger.info("tree nodes of %s's log stored (registry from before them)", device)
            ensure_search(db, path)
        except RegistryError:
            db.close()
            raise
        return cls(db, path)

    def __enter__(self) -> SqliteRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""The hub's registry in PostgreSQL: one database shared by every hub process and
``edge-hub`` command that names it, on this host or others.

Why psycopg 3 (not asyncpg): it has a synchronous and an asynchronous API over the same
SQL, parameters and types, so this backend serves today's synchronous
:class:`hub.registry.interface.Registry` and can serve the asynchronous one that comes
next with the same driver and the same statements.

:class:`PostgresRegistry` implements the Registry by composing one class per concern (the
queries of :mod:`hub.registry.queries`, shared with SQLite, and this package's few of its
own) over the transaction core (:mod:`.transactions`). Open it through
:func:`hub.registry.backends.open_registry` with a ``postgresql://`` URL.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from hub.registry.interface import RegistryError
from hub.registry.postgres.arrays import register_arrays
from hub.registry.postgres.console import ConsoleTables
from hub.registry.postgres.device_logs import DeviceLogTables
from hub.registry.postgres.devices import DeviceTables
from hub.registry.postgres.schema import migrate
from hub.registry.postgres.search_partitions import make_months
from hub.registry.postgres.search_retention import SearchRetentionTables
from hub.registry.queries.publications import PublicationTables
from hub.registry.queries.rollouts import RolloutTables
from hub.registry.queries.schedule_lease import ScheduleLeaseTables
from hub.registry.search_months import months_ahead

__all__ = ["CONNECT_TIMEOUT_S", "POOL_SIZE", "PostgresRegistry", "describe"]

CONNECT_TIMEOUT_S = 10
"""Longest a connection attempt (or a wait for a free pooled connection) lasts."""
POOL_SIZE = 4
"""Connections one open registry holds at most (one is kept open)."""


class PostgresRegistry(
    DeviceTables,
    PublicationTables,
    DeviceLogTables,
    ConsoleTables,
    RolloutTables,
    ScheduleLeaseTables,
    SearchRetentionTables,
):
    """An open PostgreSQL registry. Use as a context manager, or call :meth:`close`."""

    @classmethod
    def open(cls, url: str) -> PostgresRegistry:
        """Connect to the database at ``url`` (``postgresql://user@host:port/db``), create
        the registry's tables there when missing, and make the lineage search's partitions
        of this month and the :data:`~hub.registry.search_months.MONTHS_AHEAD` after it
        when it is partitioned (by the database server's clock: the one every hub on it
        shares).

        Raises:
            RegistryError: it cannot be reached or logged into, it holds another schema
                version, or it is another program's database.
        """
        where = describe(url)
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as db:
                migrate(db, where)
                make_months(db, where, months_ahead(_server_time(db)))
        except psycopg.Error as exc:
            raise RegistryError(f"cannot connect to the hub registry {where}: {exc}") from exc
        pool: ConnectionPool = ConnectionPool(
            url,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            min_size=1,
            max_size=POOL_SIZE,
            timeout=CONNECT_TIMEOUT_S,
            check=ConnectionPool.check_connection,
            configure=register_arrays,
            name="hub-registry",
            open=True,
        )
        return cls(pool, where)

    def __enter__(self) -> PostgresRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _server_time(db: psycopg.Connection[tuple[object, ...]]) -> int:
    row = db.execute("SELECT extract(epoch FROM now())::bigint").fetchone()
    return int(row[0]) if row is not None else 0  # type: ignore[call-overload]


def describe(url: str) -> str:
    """``url`` without its password, for messages: ``postgresql://user@host:port/db``.

    Raises:
        RegistryError: ``url`` is not a connection URL.
    """
    try:
        parts = conninfo_to_dict(url)
    except (psycopg.Error, ValueError):
        # psycopg's own message quotes the text, password included: never shown. A
        # percent-escape that is not UTF-8 (``%FF``) fails to decode (UnicodeDecodeError).
        raise RegistryError(
            "the registry URL is not a PostgreSQL connection URL "
            "(postgresql://user@host:port/database)"
        ) from None
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "localhost"
    port = parts.get("port") or 5432
    return f"postgresql://{user}{host}:{port}/{parts.get('dbname') or ''}"

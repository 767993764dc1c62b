"""The PostgreSQL backend of the hub registry: :class:`PostgresRegistry`, for hubs that
share one registry across processes and hosts.

The registry stores what callers verified; it verifies nothing itself. psycopg is imported
in this package only, and its errors become :class:`hub.registry.interface.RegistryError`.
"""

from hub.registry.postgres.registry import PostgresRegistry

__all__ = ["PostgresRegistry"]

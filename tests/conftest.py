"""Fixtures shared across test modules: the PostgreSQL server of the registry's PostgreSQL
backend (started once per session, only when a test asks for it)."""

from tests.postgres_support import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

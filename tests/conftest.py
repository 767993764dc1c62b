"""Fixtures shared across test modules: the PostgreSQL server of the registry's PostgreSQL
backend (started once per session, only when a test asks for it), and the switch running the
hub tests on PostgreSQL (``EDGEGOV_TEST_REGISTRY=postgresql``, :mod:`tests.hub_support`)."""

from collections.abc import Iterator

import pytest

from hub.hubdir.paths import ENV_REGISTRY
from tests.hub_support import ON_POSTGRES, set_suite_registry
from tests.postgres_support import PostgresServer, postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url", "suite_registry"]


@pytest.fixture(autouse=True)
def suite_registry(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Under ``EDGEGOV_TEST_REGISTRY=postgresql``: skip a ``sqlite_only`` test with its reason,
    else give the test a fresh PostgreSQL registry, named by ``$EDGEGOV_REGISTRY`` and by
    :func:`tests.hub_support.suite_registry` (the first hub directory a test builds; any
    other gets a database of its own), created when that is first called (about half of
    these tests never open a registry), unless it is marked ``module_registry`` (it names
    its module's own). Otherwise nothing."""
    if not ON_POSTGRES:
        yield
        return
    marker = request.node.get_closest_marker("sqlite_only")
    if marker is not None:
        pytest.skip(f"sqlite_only: {marker.args[0] if marker.args else 'SQLite-specific'}")
    if request.node.get_closest_marker("module_registry") is not None:
        yield
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.unused_name()
    created: list[str] = []

    def create() -> None:
        server.create_database(name)
        created.append(name)

    def another() -> str:
        created.append(server.new_database())
        return server.url(created[-1])

    monkeypatch.setenv(ENV_REGISTRY, server.url(name))
    set_suite_registry(server.url(name), create, another)
    try:
        yield
    finally:
        set_suite_registry(None)
        for database in created:
            server.drop_database(database)

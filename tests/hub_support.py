"""Helpers for hub integration tests: a hub directory with real keys, bundles, an MQTT watcher.

- :func:`make_hub_dir`: ``keys/`` from ``init_keys`` (as ``edge-hub keys init``) and devices
  registered in ``hub.db``, each with a :class:`DeviceLogSim` holding its key.
- :func:`make_bundle`: a bundle signed by the hub's policy key, as ``edge-hub bundle build``.
- :class:`Watcher`: an MQTT client that subscribes and queues what arrives, to wait for
  the next message on a topic.
- :func:`run_cli`: ``edge-hub`` in a thread (its commands run their own event loop).

``EDGEGOV_TEST_REGISTRY=postgresql`` (``make test-postgres``) runs the hub tests on PostgreSQL:
each test gets a fresh database of the session's server (:func:`suite_registry`, set by the
autouse fixture in ``tests/conftest.py``, which also sets ``$EDGEGOV_REGISTRY`` to it for the
``edge-hub`` commands and the subprocesses the test starts), and every hub directory built
here registers its devices there and names it to the hub (:attr:`HubSetup.url`,
:func:`hub_config`). Tests marked ``sqlite_only`` are skipped under it, with their reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import TrustRoot
from edge_agent.support.mqtt import BrokerSettings, Connection, Incoming, connect
from hub.cli.main import main as hub_main
from hub.cli.operations import build_bundle, init_keys
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root
from hub.registry import DeviceRecord
from hub.registry.backends import open_registry
from hub.service.config import HubConfig
from tests.brokers import AmqttHandle
from tests.lineage_sim import DeviceLogSim
from tests.postgres_support import PostgresServer

POLICY = """\
target: {{region: eu-1, groups: [{group}], profiles: [generic-x86_64]}}
ttl: 24h
{extra}rules:
  - id: camera-exec
    effect: allow
    subjects: [svc:camera]
    actions: [exec]
    resources: ["/opt/camera/bin/*"]
"""
WAIT_S = 15.0

SUITE_REGISTRY_ENV = "EDGEGOV_TEST_REGISTRY"
"""Names the backend the hub tests run on: ``postgresql``, else SQLite (``hub.db``)."""
ON_POSTGRES = os.environ.get(SUITE_REGISTRY_ENV, "sqlite") == "postgresql"
"""Whether this test session runs the hub tests on PostgreSQL (``make test-postgres``)."""
_suite_url: list[str | None] = [None]
_suite_create: list[Callable[[], None] | None] = [None]
_suite_more: list[Callable[[], str] | None] = [None]
_suite_taken: list[bool] = [False]


def set_suite_registry(
    url: str | None,
    create: Callable[[], None] | None = None,
    more: Callable[[], str] | None = None,
) -> None:
    """Name the current test's PostgreSQL registry (``None``: ``hub.db``), how to create it
    (on the first :func:`suite_registry`: ~0.1 s a test that never needs it does not pay)
    and how to make another for a second hub directory in the same test; conftest only."""
    _suite_url[0], _suite_create[0], _suite_more[0], _suite_taken[0] = url, create, more, False


def suite_registry() -> str | None:
    """The current test's PostgreSQL registry under ``EDGEGOV_TEST_REGISTRY=postgresql``,
    created on the first call, else ``None`` (hub directories keep their registry in their
    ``hub.db``). A test that reaches it only through ``$EDGEGOV_REGISTRY`` calls this
    first: until then the database the variable names does not exist."""
    create = _suite_create[0]
    if create is not None:
        _suite_create[0] = None
        create()
    return _suite_url[0]


def module_registry(request: pytest.FixtureRequest) -> str | None:
    """The registry of a hub directory a module-scoped fixture builds for its tests: under
    ``EDGEGOV_TEST_REGISTRY=postgresql`` a PostgreSQL database of its own, dropped with the
    fixture (the per-test one does not exist yet when such a fixture runs, and is gone
    before the next test), else ``None`` (its ``hub.db``). The tests name it to the hub
    (:attr:`HubSetup.registry_args`, ``$EDGEGOV_REGISTRY``): the per-test one is the
    default."""
    if not ON_POSTGRES:
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.new_database()
    request.addfinalizer(lambda: server.drop_database(name))
    return server.url(name)


def hub_registry(path: Path) -> Path | str:
    """The registry of the hub directory ``path`` in this test: the suite's PostgreSQL
    database under the switch, else its ``hub.db``."""
    return suite_registry() or path / "hub.db"


@dataclass
class HubSetup:
    path: Path
    root: TrustRoot
    devices: dict[str, DeviceLogSim]
    url: str | None = None
    """The PostgreSQL registry's URL (``None``: the directory's ``hub.db``)."""

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    @property
    def registry(self) -> Path | str:
        """Where the hub's registry is, for :func:`hub.registry.backends.open_registry`."""
        return self.url or self.path / "hub.db"

    @property
    def registry_args(self) -> list[str]:
        """The ``edge-hub`` options naming the registry (none for ``hub.db``)."""
        return [] if self.url is None else ["--registry", self.url]


REGISTRY_BACKENDS = ("sqlite", "postgres")
"""The registries hub tests run on (:func:`backend_url`)."""


def backend_url(request: pytest.FixtureRequest) -> str | None:
    """A fresh PostgreSQL registry's URL when the parametrised ``request`` asks for the
    ``postgres`` backend, ``None`` (the hub directory's ``hub.db``) for ``sqlite``."""
    if request.param == "sqlite":
        if ON_POSTGRES:
            pytest.skip("the SQLite case of a test run on both backends (suite on PostgreSQL)")
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


def edit_registry(location: Path | str, statement: str, *params: object) -> None:
    """Run ``statement`` (``?`` placeholders) on the registry at ``location`` behind the
    hub's back, on either backend: a test's damage or a row from long ago."""
    if isinstance(location, str):
        with psycopg.connect(location, autocommit=True) as db:
            db.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
        return
    with contextlib.closing(sqlite3.connect(location)) as db, db:
        db.execute(statement, params)


def registry_rows(url: str) -> dict[str, str]:
    """Each table of the PostgreSQL registry at ``url`` and a digest of its rows: what a
    command wrote there shows as a changed digest (a ``hub.db`` is checked as a file)."""
    with psycopg.connect(url, autocommit=True) as db:
        tables = db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
        ).fetchall()
        digests = {}
        for (table,) in tables:
            query = "SELECT md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) FROM {} r"
            row = db.execute(sql.SQL(query).format(sql.Identifier(table))).fetchone()
            assert row is not None
            digests[table] = str(row[0])
        return digests


def _same_database(a: str, b: str) -> bool:
    """Whether two PostgreSQL URLs name the same database (whatever their passwords)."""
    first, second = urlsplit(a), urlsplit(b)
    return (first.hostname, first.port, first.path, first.query) == (
        second.hostname,
        second.port,
        second.path,
        second.query,
    )


def make_hub_dir(
    path: Path,
    devices: Sequence[tuple[str, str]] = (("gw-001", "line-a"), ("gw-002", "line-a")),
    *,
    url: str | None = None,
) -> HubSetup:
    """A hub directory with keys and ``(device id, group)`` devices registered in eu-1, in
    its ``hub.db`` or in the PostgreSQL registry at ``url`` (default: :func:`suite_registry`)."""
    suite = suite_registry()
    if suite is not None and (url is None or _same_database(url, suite)):
        more = _suite_more[0]
        if url is None:
            url = more() if _suite_taken[0] and more is not None else suite
        _suite_taken[0] = True
    path.mkdir(parents=True, exist_ok=True)
    root = init_keys(
        path / "keys", root_keys=3, root_threshold=2, now=int(time.time()), ttl=86400 * 30
    )
    sims = {}
    with open_registry(url or path / "hub.db") as registry:
        for device_id, group in devices:
            sim = DeviceLogSim(device_id, PrivateKey.generate())
            registry.add_device(
                DeviceRecord(device_id, "eu-1", (group,), "generic-x86_64", sim.key.public)
            )
            sims[device_id] = sim
    return HubSetup(path, root, sims, url)


def make_bundle(
    keys: Path,
    version: int,
    *,
    group: str = "line-a",
    max_offline: str | None = None,
    now: int | None = None,
) -> bytes:
    """A bundle for ``group`` of eu-1, built and signed as ``edge-hub bundle build`` does
    (at ``now``, its ``issued_at``; default the clock)."""
    extra = f"max_offline: {max_offline}\n" if max_offline else ""
    source = load_policy_source(POLICY.format(group=group, extra=extra))
    root = load_root(keys / ROOT_FILE)
    data, _ = build_bundle(
        source,
        root=root,
        signers=load_role_keys(keys, Role.POLICY, root),
        version=version,
        ttl=None,
        now=int(time.time()) if now is None else now,
    )
    return data


async def run_cli(*args: str) -> int:
    """``edge-hub ARGS`` in a worker thread; its exit code."""
    return await asyncio.to_thread(hub_main, list(args))


class Watcher:
    """Messages on the subscribed filters, in arrival order."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.queue: asyncio.Queue[Incoming] = asyncio.Queue()

    async def next(
        self, match: Callable[[Incoming], bool] | str, timeout: float = WAIT_S
    ) -> Incoming:
        """The next message ``match`` accepts (a topic string matches that exact topic)."""
        accept = (lambda m: m.topic == match) if isinstance(match, str) else match
        async with asyncio.timeout(timeout):
            while True:
                message = await self.queue.get()
                if accept(message):
                    return message


@contextlib.asynccontextmanager
async def watching(
    settings: BrokerSettings, filters: Sequence[str], client_id: str = "test-watcher"
) -> AsyncIterator[Watcher]:
    """A :class:`Watcher` subscribed to ``filters`` for the duration of the block."""
    async with connect(settings, client_id=client_id) as connection:
        watcher = Watcher(connection)

        async def pump() -> None:
            async for message in connection.messages():
                watcher.queue.put_nowait(message)

        await connection.subscribe(list(filters))
        task = asyncio.create_task(pump())
        try:
            yield watcher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def wait_for(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll ``condition`` until it holds (a deadline guard, not a timing assertion)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def hub_config(setup: HubSetup, broker: object, **overrides: object) -> HubConfig:
    """A hub on ``broker`` (a test broker handle) with quick rounds and reconnects."""
    values: dict[str, object] = {
        "broker": broker.settings,  # type: ignore[attr-defined]
        "freshness_interval_s": 0.3,
        "token_ttl_s": 5,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.5,
        # amqtt ignores $share/ subscriptions; probing for that costs a second per test.
        "shared_subscriptions": False if isinstance(broker, AmqttHandle) else None,
    }
    values.update(overrides)
    values.setdefault("registry", setup.url)
    return HubConfig(setup.path, **values)  # type: ignore[arg-type]

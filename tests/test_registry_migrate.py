"""Copying a registry (``edge-hub registry migrate``) and checking one (``registry
check``): a SQLite registry with real shipped lineage moves to PostgreSQL (or another SQLite
file) row for row, every device log verifies there, a second run writes nothing, an
interrupted run resumes to the same end state, and a destination holding anything else is
refused with nothing written."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg
import pytest

from edge_agent.support.cli import EXIT_REFUSED, EXIT_UNAVAILABLE
from edge_agent.support.mqtt import BrokerSettings
from hub.cli.exits import exit_code
from hub.cli.parsers import registry as registry_parser
from hub.cli.parsers.registry import chunk_arg
from hub.cli.registry_cmd import cmd_registry_check, cmd_registry_migrate
from hub.hubdir.layout import HubDir, ServeInfo
from hub.registry import RegistryError
from hub.registry import migrate as migrate_module
from hub.registry.backends import open_registry, open_tables
from hub.registry.check import check_registry
from hub.registry.migrate import (
    DERIVED_TABLES,
    MigrationError,
    SourceInUse,
    migrate_registry,
    plan_copy,
)
from hub.registry.records import ForkEvidence
from hub.registry.schema import SCHEMA_VERSION, Table
from hub.registry.tables import Row, TableStore, registry_tables
from hub.service.config import HubConfig
from hub.service.server import HubService
from tests.hub_support import make_hub_dir, wait_for
from tests.lineage_sim import NOW
from tests.postgres_support import PostgresServer
from tests.registry_fill import LOG_SIZES, fill_registry


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    """A stopped hub's directory whose registry holds a row in every table."""
    path = tmp_path / "hub"
    path.mkdir()
    with open_registry(path / "hub.db") as registry:
        fill_registry(registry)
    return path


@pytest.fixture
def source(hub_dir: Path) -> Path:
    return hub_dir / "hub.db"


@pytest.fixture(params=["sqlite", "postgres"])
def source_location(
    request: pytest.FixtureRequest, source: Path, postgres_server: PostgresServer
) -> Iterator[Path | str]:
    """A registry to copy from, holding a row in every table: the hub's ``hub.db``, or a
    PostgreSQL database it was copied into."""
    if request.param == "sqlite":
        yield source
        return
    name = postgres_server.new_database()
    url = postgres_server.url(name)
    migrate_registry(source, url)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty registry to copy into: a new SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "copy.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


def _rows(location: Path | str) -> dict[str, list[Row]]:
    with open_tables(location, write=False) as store:
        return {t.name: store.page(t, None, 1_000_000) for t in registry_tables()}


def _execute(location: str, sql: str, params: Sequence[object] = ()) -> None:
    """Change the registry at ``location`` behind its back."""
    if location.startswith("postgresql://"):
        with psycopg.connect(location, autocommit=True) as db:
            db.execute(sql.replace("?", "%s"), params)
    else:
        with closing(sqlite3.connect(location)) as db, db:
            db.execute(sql, params)


def _migrate_args(hub_dir: Path, to: str, *, chunk: int = 7) -> argparse.Namespace:
    return argparse.Namespace(to=to, source_dir=hub_dir, chunk=chunk, json=True)


def _check_args(location: str, sample: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(registry=location, source_dir=None, sample=sample, json=True)


def _printed(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    document: dict[str, object] = json.loads(capsys.readouterr().out)
    return document


class _FailingAfter:
    """A destination whose connection is lost after ``chunks`` chunks were committed."""

    def __init__(self, store: TableStore, chunks: int) -> None:
        self._store = store
        self._left = chunks
        self.where = store.where

    def schema_version(self) -> int | None:
        return self._store.schema_version()

    def count(self, table: Table) -> int:
        return self._store.count(table)

    def page(self, table: Table, after: Row | None, limit: int) -> list[Row]:
        return self._store.page(table, after, limit)

    def insert(self, table: Table, rows: Sequence[Row]) -> None:
        if not self._left:
            raise RegistryError(f"cannot copy rows of {table.name}: the connection was lost")
        self._left -= 1
        self._store.insert(table, rows)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> _FailingAfter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def _losing_connection(monkeypatch: pytest.MonkeyPatch, chunks: int) -> Iterator[None]:
    real = migrate_module.open_tables

    def failing(location: Path | str, *, write: bool) -> TableStore:
        store = real(location, write=write)
        return _FailingAfter(store, chunks) if write else store

    with monkeypatch.context() as patch:
        patch.setattr(migrate_module, "open_tables", failing)
        yield


def test_every_row_moves_and_every_device_log_verifies_at_the_destination(
    hub_dir: Path, source: Path, destination: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = source.read_bytes()
    assert cmd_registry_migrate(_migrate_args(hub_dir, destination)) == 0
    report = _printed(capsys)
    assert source.read_bytes() == before
    assert report["verified"] is True
    assert report["copied"] == report["rows"] and report["matched"] == 0
    check = report["check"]
    assert isinstance(check, dict)
    assert check["logs"] == {"devices": 3, "checked": 3, "failed": 0, "failures": []}
    assert _rows(destination) == _rows(source)
    with open_registry(destination) as registry:
        for device, size in LOG_SIZES.items():
            assert registry.lineage_state(device).size == size


def test_the_copy_takes_new_rows_with_ids_after_the_copied_ones(
    source: Path, destination: str
) -> None:
    migrate_registry(source, destination)
    with open_registry(destination) as registry:
        registry.record_fork(ForkEvidence("gw-003", "fork", None, "note 2", b"b"), NOW)
        action = registry.begin_action(
            at=NOW, operator="bob", action="remove", target="gw-003", reason=""
        )
        assert len(registry.forks("gw-003")) == 1
        assert [entry.id for entry in registry.audit_log()] == [action, action - 1]


def test_a_second_run_writes_nothing_and_says_every_row_matches(
    hub_dir: Path, destination: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cmd_registry_migrate(_migrate_args(hub_dir, destination)) == 0
    first = _printed(capsys)
    before = _rows(destination)
    args = _migrate_args(hub_dir, destination)
    args.json = False
    assert cmd_registry_migrate(args) == 0
    out = capsys.readouterr().out
    assert f"already migrated: {first['rows']} rows in {first['tables']} tables match" in out
    assert "device logs: 3 of 3 checked, all verify" in out
    assert _rows(destination) == before


def test_an_interrupted_copy_resumes_to_the_same_end_state(
    monkeypatch: pytest.MonkeyPatch, source: Path, destination: str
) -> None:
    with _losing_connection(monkeypatch, chunks=20), pytest.raises(RegistryError):
        migrate_registry(source, destination, chunk=5)
    held = {
        name: len(rows) for name, rows in _rows(destination).items() if name not in DERIVED_TABLES
    }
    assert 0 < held["lineage_entries"] < LOG_SIZES["gw-001"]
    report = migrate_registry(source, destination, chunk=5)
    assert report.copy.matched == sum(held.values())
    assert report.copy.copied == report.copy.rows - report.copy.matched
    assert report.check.ok
    assert _rows(destination) == _rows(source)


def test_a_destination_holding_a_differing_row_is_refused_with_nothing_written(
    monkeypatch: pytest.MonkeyPatch, hub_dir: Path, destination: str
) -> None:
    with _losing_connection(monkeypatch, chunks=2), pytest.raises(RegistryError):
        migrate_registry(hub_dir / "hub.db", destination, chunk=2)
    _execute(destination, "UPDATE devices SET profile = ? WHERE id = ?", ("other", "gw-002"))
    before = _rows(destination)
    with pytest.raises(MigrationError) as refused:
        cmd_registry_migrate(_migrate_args(hub_dir, destination, chunk=2))
    assert refused.value.code == "registry_differs"
    assert "devices" in refused.value.message and "gw-002" in refused.value.message
    assert exit_code(refused.value) == EXIT_REFUSED
    assert _rows(destination) == before


def test_a_destination_of_another_schema_version_is_refused(source: Path, destination: str) -> None:
    open_registry(destination).close()
    if destination.startswith("postgresql://"):
        _execute(destination, f"UPDATE registry_meta SET value = {SCHEMA_VERSION + 1}")
    else:
        _execute(destination, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(MigrationError) as refused:
        migrate_registry(source, destination)
    assert refused.value.code == "registry_schema"
    assert refused.value.message.startswith("the destination ")
    assert f"schema {SCHEMA_VERSION + 1}" in refused.value.message
    assert "give an empty database" in refused.value.message


def test_a_source_of_another_schema_version_is_refused_naming_it_the_source(
    source: Path, destination: str
) -> None:
    _execute(str(source), f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(MigrationError) as refused:
        migrate_registry(source, destination)
    assert refused.value.code == "registry_schema"
    assert refused.value.message.startswith(f"the source {source} holds a registry of schema")
    assert "give an empty database" not in refused.value.message


def test_more_rows_at_the_destination_than_at_the_source_are_refused() -> None:
    devices = registry_tables()[0]
    with pytest.raises(MigrationError, match="holds 4 rows of devices, the source 3"):
        plan_copy((devices,), {"devices": 3}, {"devices": 4})


def test_a_hub_whose_serve_runs_is_not_copied(hub_dir: Path, destination: str) -> None:
    with HubDir(hub_dir).serve_file_claim() as claimed:
        assert claimed
        with pytest.raises(MigrationError) as refused:
            cmd_registry_migrate(_migrate_args(hub_dir, destination))
    assert refused.value.code == "hub_running"
    assert "stop every hub" in refused.value.message


def test_a_hub_whose_serve_runs_is_refused_naming_the_registry_it_serves(
    hub_dir: Path, destination: str
) -> None:
    settings = BrokerSettings.from_url("mqtt://127.0.0.1:1883")
    shown = str((hub_dir / "hub.db").absolute())
    HubDir(hub_dir).write_serve_info(ServeInfo(settings, os.getpid(), True, False, 60, shown))
    with pytest.raises(MigrationError) as refused:
        cmd_registry_migrate(_migrate_args(hub_dir, destination))
    assert refused.value.code == "hub_running"
    assert f"an edge-hub serve runs on {hub_dir} (on {shown})" in refused.value.message


@pytest.mark.asyncio
async def test_a_serve_on_another_hub_dir_using_the_registry_refuses_the_copy(
    hub_dir: Path, destination: str, tmp_path: Path
) -> None:
    other = make_hub_dir(tmp_path / "other-host", devices=())
    registry = str(hub_dir / "hub.db")
    config = HubConfig(other.path, registry=registry, port=0, client_id="hub-other-host")
    async with HubService(config) as hub:
        await hub.wait_ready()
        await wait_for(lambda: _holder(registry) == "hub-other-host")
        with pytest.raises(SourceInUse) as refused:
            await asyncio.to_thread(cmd_registry_migrate, _migrate_args(hub_dir, destination))
    message = refused.value.message
    assert exit_code(refused.value) == EXIT_UNAVAILABLE
    assert "held by hub-other-host until 20" in message
    assert "stop every hub serving this registry first" in message
    assert _held_rows(destination) == 0


def _holder(location: str) -> str | None:
    with open_registry(location) as registry:
        lease = registry.schedule_lease()
    return None if lease is None else lease.holder


def _claim(location: Path | str, holder: str, now: int, ttl_s: int) -> int:
    with open_registry(location) as registry:
        token = registry.claim_schedule_lease(holder, now, ttl_s).token
    assert token is not None
    return token


def test_a_source_whose_lease_is_held_is_refused_on_either_backend(
    source_location: Path | str, destination: str
) -> None:
    _claim(source_location, "hub-elsewhere", int(time.time()), 600)
    with pytest.raises(SourceInUse) as refused:
        migrate_registry(source_location, destination)
    assert "held by hub-elsewhere until " in refused.value.message
    assert refused.value.code == "registry_in_use"
    assert _held_rows(destination) == 0


@pytest.mark.parametrize("released", [False, True], ids=["expired", "released"])
def test_a_source_whose_lease_expired_or_was_released_is_copied(
    source_location: Path | str, destination: str, released: bool
) -> None:
    now = int(time.time())
    _claim(source_location, "hub-gone", now if released else now - 600, 600 if released else 5)
    if released:
        with open_registry(source_location) as registry:
            registry.release_schedule_lease("hub-gone")
    assert migrate_registry(source_location, destination).check.ok


def test_a_lease_claimed_while_the_source_is_copied_refuses_the_copy(
    monkeypatch: pytest.MonkeyPatch, source_location: Path | str, destination: str
) -> None:
    real = migrate_module.copy_tables

    def copy_while_a_hub_starts(*args: object, chunk: int) -> object:
        copied = real(*args, chunk=chunk)  # type: ignore[arg-type]
        _claim(source_location, "hub-late", int(time.time()) - 600, 5)
        return copied

    monkeypatch.setattr(migrate_module, "copy_tables", copy_while_a_hub_starts)
    with pytest.raises(SourceInUse, match="while it was copied"):
        migrate_registry(source_location, destination)


def _held_rows(location: str) -> int:
    """Rows of every table at ``location`` (0: an empty database, or one never created)."""
    if not location.startswith("postgresql://") and not Path(location).exists():
        return 0
    with open_tables(location, write=False) as store:
        if store.schema_version() is None:
            return 0
        return sum(store.count(t) for t in registry_tables() if t.name not in DERIVED_TABLES)


def test_check_names_the_device_whose_stored_entry_changed_and_exits_non_zero(
    source: Path, destination: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate_registry(source, destination)
    assert cmd_registry_check(_check_args(destination)) == 0
    capsys.readouterr()
    with open_registry(destination) as registry:
        entry = registry.entries("gw-002", 10, 11)[0]
    damaged = entry[:-1] + bytes([entry[-1] ^ 1])
    _execute(
        destination,
        "UPDATE lineage_entries SET data = ? WHERE device = ? AND seq = ?",
        (damaged, "gw-002", 10),
    )
    assert cmd_registry_check(_check_args(destination)) == EXIT_REFUSED
    logs = _printed(capsys)["logs"]
    assert isinstance(logs, dict)
    assert logs["failed"] == 1
    assert [failure["device"] for failure in logs["failures"]] == ["gw-002"]


def test_check_reports_schema_and_counts_and_samples_as_many_logs_as_asked(
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _check_args(str(source), sample=2)
    args.json = False
    assert cmd_registry_check(args) == 0
    out = capsys.readouterr().out
    assert f"registry {source}: schema {SCHEMA_VERSION}" in out
    assert "device logs: 2 of 3 checked, all verify" in out
    assert " lineage_entries " in out


def test_a_checkpoint_the_entries_do_not_reach_fails_the_check(
    source: Path, destination: str
) -> None:
    migrate_registry(source, destination)
    _execute(
        destination,
        "UPDATE lineage_checkpoints SET root = ? WHERE device = ? AND size = ?",
        (bytes(32), "gw-001", 40),
    )
    with open_registry(destination) as registry, open_tables(destination, write=False) as rows:
        check = check_registry(registry, rows)
    assert not check.ok
    assert [(f.device, f.problem) for f in check.failures] == [
        ("gw-001", "the entries do not reach the checkpoint root at size 40")
    ]


def test_the_parsers_row_bounds_are_the_migrations() -> None:
    assert registry_parser.MAX_CHUNK_ROWS == migrate_module.MAX_CHUNK_ROWS
    assert registry_parser.DEFAULT_CHUNK_ROWS == migrate_module.DEFAULT_CHUNK_ROWS


def test_a_chunk_outside_its_bounds_is_a_usage_error() -> None:
    assert chunk_arg("500") == 500
    for bad in ("0", "10001", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            chunk_arg(bad)


def test_a_registry_without_device_logs_checks_clean(tmp_path: Path) -> None:
    open_registry(tmp_path / "empty.db").close()
    with (
        open_registry(tmp_path / "empty.db") as registry,
        open_tables(tmp_path / "empty.db", write=False) as rows,
    ):
        check = check_registry(registry, rows)
    assert check.ok and check.logs == 0


def test_a_source_of_the_schema_before_the_lease_is_upgraded_then_copied(
    source: Path, destination: str
) -> None:
    _execute(str(source), "DROP TABLE schedule_lease")
    _execute(str(source), "PRAGMA user_version = 1")
    report = migrate_registry(source, destination)
    assert report.check.ok
    assert _rows(destination) == _rows(str(source))

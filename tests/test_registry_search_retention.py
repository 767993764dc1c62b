"""The lineage tables' partitioned layout (PostgreSQL) and the lineage search's retention
(both backends): a new PostgreSQL registry partitions the lineage tables, a row of a month
with no partition lands in the DEFAULT one and moves when its month is made, a prune drops
exactly the search rows of the months before its cut and never a device log's entries,
checkpoints or tree nodes, a search reaching before the cut says so, and a registry created
before partitioning opens, ingests and prunes as one table."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from hub.cli.main import main as hub_main
from hub.registry import Registry, RegistryError
from hub.registry.backends import open_registry, open_tables
from hub.registry.check import check_registry
from hub.registry.lineage_records import LineageQuery
from hub.registry.postgres import PostgresRegistry
from hub.registry.queries import search_retention
from hub.registry.rollout_records import RolloutRecord, RolloutState
from hub.registry.schema import DEVICE_PARTITIONS, SEARCH_TABLE, TABLES
from hub.registry.search_months import (
    MONTHS_AHEAD,
    month_of,
    months_ahead,
    months_between,
    retention_cut,
)
from tests.lineage_sim import NOW, DeviceLogSim, accepted_batch
from tests.postgres_support import PostgresServer

DAY = 86_400
MONTH_STARTS = [month_of(NOW - months * 31 * DAY).start for months in (7, 5, 3, 1, 0)]
"""Five months of shipped entries, the oldest seven months before NOW."""
PER_MONTH = 30


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A fresh registry of the backend: its hub.db path or URL."""
    if request.param == "sqlite":
        return tmp_path / "hub.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def registry(location: Path | str) -> Iterator[Registry]:
    with open_registry(location) as opened:
        yield opened


def _ship_months(registry: Registry, device: str, starts: list[int]) -> DeviceLogSim:
    """``PER_MONTH`` entries of ``device`` in each month of ``starts``, one batch a month."""
    log = DeviceLogSim(device)
    for start in starts:
        first = len(log.entries)
        log.add(PER_MONTH, time=start + 3600 - first)
        accepted = accepted_batch(registry, log, first, len(log.entries))
        assert registry.store_batch(accepted, expected_size=first, received_at=NOW)
    return log


def _times(registry: Registry) -> list[int]:
    return sorted(hit.time for hit in registry.iter_lineage(LineageQuery()))


def _entries(registry: Registry, log: DeviceLogSim) -> list[bytes]:
    return [e.data for e in registry.iter_entries(log.device_id)]


def _check(registry: Registry, location: Path | str) -> None:
    """``registry check``'s verification of every device log passes."""
    with open_tables(location, write=False) as rows:
        check = check_registry(registry, rows)
    assert check.ok and check.checked == check.logs > 0


# The layout of a new PostgreSQL registry.


def test_a_new_postgres_registry_partitions_the_lineage_tables_keyed_by_their_partition_column(
    postgres_url: str,
) -> None:
    with PostgresRegistry.open(postgres_url) as registry:
        layout = {t.table: t for t in registry.lineage_layout()}
    for table in ("lineage_entries", "lineage_checkpoints", "lineage_nodes"):
        assert (layout[table].partitioned, layout[table].partitions) == (
            "device",
            DEVICE_PARTITIONS,
        )
    search = layout["lineage_search"]
    assert search.partitioned == "month" and search.default_rows == 0
    assert len(search.months) >= MONTHS_AHEAD + 1
    assert search.partitions == len(search.months) + 1
    with psycopg.connect(postgres_url) as db:
        keys = db.execute(
            "SELECT c.relname, pg_get_partkeydef(c.oid), pg_get_constraintdef(k.oid) "
            "FROM pg_class c JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p' "
            "WHERE c.relkind = 'p'"
        ).fetchall()
    assert sorted(keys) == [
        ("lineage_checkpoints", "HASH (device)", "PRIMARY KEY (device, size)"),
        ("lineage_entries", "HASH (device)", "PRIMARY KEY (device, seq)"),
        ("lineage_nodes", "HASH (device)", "PRIMARY KEY (device, level, idx)"),
        ("lineage_search", 'RANGE ("time")', 'PRIMARY KEY ("time", device, seq)'),
    ]


def test_every_partitioned_table_keeps_its_partition_column_in_its_primary_key() -> None:
    for table in (*TABLES, SEARCH_TABLE):
        if table.partitioned is not None:
            assert table.partitioned.column in table.primary_key
    with pytest.raises(ValueError, match="not in its primary key"):
        replace(SEARCH_TABLE, primary_key=("device", "seq"))


def test_a_row_of_a_month_without_a_partition_lands_in_the_default_and_moves_when_it_is_made(
    postgres_url: str,
) -> None:
    far = month_of(NOW + 400 * DAY)
    with PostgresRegistry.open(postgres_url) as registry:
        assert far.label not in registry.lineage_layout()[3].months
        log = _ship_months(registry, "gw-far", [far.start])
        assert registry.lineage_layout()[3].default_rows == PER_MONTH
        assert registry.prepare_search_months(far.start, far.start) == [
            far.partition("lineage_search")
        ]
        assert registry.prepare_search_months(far.start, far.start) == []
        search = registry.lineage_layout()[3]
        assert far.label in search.months and search.default_rows == 0
        assert len(_times(registry)) == PER_MONTH
        with psycopg.connect(postgres_url) as db:
            held = db.execute(
                "SELECT tableoid::regclass::text, count(*) FROM lineage_search GROUP BY 1"
            ).fetchall()
        assert held == [(far.partition("lineage_search"), PER_MONTH)]
        _check(registry, postgres_url)
        assert len(_entries(registry, log)) == PER_MONTH


def test_opening_a_registry_makes_this_month_and_the_next_ones(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as db:
        now = int(db.execute("SELECT extract(epoch FROM now())::bigint").fetchone()[0])  # type: ignore[index]
    with PostgresRegistry.open(postgres_url) as registry:
        months = registry.lineage_layout()[3].months
    assert set(m.label for m in months_ahead(now)) <= set(months)


# Pruning the search.


def test_a_prune_drops_exactly_the_search_rows_of_the_months_before_its_cut_and_no_log_row(
    registry: Registry, location: Path | str
) -> None:
    registry.prepare_search_months(MONTH_STARTS[1], MONTH_STARTS[-1])
    logs = [_ship_months(registry, device, MONTH_STARTS) for device in ("gw-a", "gw-b")]
    entries = [_entries(registry, log) for log in logs]
    checkpoints = [list(registry.iter_checkpoints(log.device_id)) for log in logs]
    cut = retention_cut(NOW, 100)
    kept = [t for t in _times(registry) if t >= cut]
    assert 0 < len(kept) < len(_times(registry))

    pruned = registry.prune_search(cut, at=NOW, dry_run=False)

    assert _times(registry) == kept
    assert pruned.total_rows == 2 * PER_MONTH * sum(1 for s in MONTH_STARTS if s < cut)
    assert registry.search_retention() == cut
    assert [_entries(registry, log) for log in logs] == entries
    assert [list(registry.iter_checkpoints(log.device_id)) for log in logs] == checkpoints
    _check(registry, location)
    again = registry.prune_search(cut, at=NOW + 60, dry_run=False)
    assert (again.total_rows, again.months, again.previous_cut) == (0, (), cut)
    assert _times(registry) == kept


def test_a_prune_on_partitioned_postgres_drops_whole_months_and_deletes_the_default_rows(
    postgres_url: str,
) -> None:
    with PostgresRegistry.open(postgres_url) as registry:
        registry.prepare_search_months(MONTH_STARTS[1], MONTH_STARTS[-1])
        _ship_months(registry, "gw-a", MONTH_STARTS)
        cut = retention_cut(NOW, 100)
        assert registry.lineage_layout()[3].default_rows == PER_MONTH
        pruned = registry.prune_search(cut, at=NOW, dry_run=False)
        assert pruned.months == tuple(m.label for m in months_between(MONTH_STARTS[1], cut - 1))
        assert (pruned.month_rows, pruned.rows) == (PER_MONTH, PER_MONTH)
        search = registry.lineage_layout()[3]
        assert month_of(MONTH_STARTS[1]).label not in search.months
        assert search.default_rows == 0


def test_a_dry_run_counts_what_a_prune_would_drop_and_changes_nothing(
    registry: Registry,
) -> None:
    registry.prepare_search_months(MONTH_STARTS[1], MONTH_STARTS[-1])
    _ship_months(registry, "gw-a", MONTH_STARTS)
    before, layout = _times(registry), registry.lineage_layout()
    cut = retention_cut(NOW, 100)
    counted = registry.prune_search(cut, at=NOW, dry_run=True)
    assert counted.dry_run and counted.total_rows == sum(1 for t in before if t < cut)
    assert (_times(registry), registry.lineage_layout()) == (before, layout)
    assert registry.search_retention() is None
    done = registry.prune_search(cut, at=NOW, dry_run=False)
    assert (done.rows, done.months, done.month_rows) == (
        counted.rows,
        counted.months,
        counted.month_rows,
    )


def test_a_cut_that_is_not_a_month_start_is_refused_with_nothing_changed(
    registry: Registry,
) -> None:
    _ship_months(registry, "gw-a", MONTH_STARTS)
    before = _times(registry)
    with pytest.raises(ValueError, match="start of a month"):
        registry.prune_search(retention_cut(NOW, 100) + 1, at=NOW, dry_run=False)
    assert _times(registry) == before and registry.search_retention() is None


def test_an_earlier_cut_never_moves_the_retention_back(registry: Registry) -> None:
    _ship_months(registry, "gw-a", MONTH_STARTS)
    late, early = retention_cut(NOW, 40), retention_cut(NOW, 200)
    registry.prune_search(late, at=NOW, dry_run=False)
    again = registry.prune_search(early, at=NOW + 1, dry_run=False)
    assert again.previous_cut == late and registry.search_retention() == late


def test_a_search_reaching_before_the_retention_cut_says_so(registry: Registry) -> None:
    _ship_months(registry, "gw-a", MONTH_STARTS)
    assert registry.search_lineage(LineageQuery()).past_retention is None
    cut = retention_cut(NOW, 100)
    registry.prune_search(cut, at=NOW, dry_run=False)
    assert registry.search_lineage(LineageQuery()).past_retention == cut
    assert registry.search_lineage(LineageQuery(since=cut - 1)).past_retention == cut
    empty = registry.search_lineage(LineageQuery(since=0, until=cut))
    assert (empty.hits, empty.past_retention) == ((), cut)
    assert registry.search_lineage(LineageQuery(since=cut)).past_retention is None


# A registry created before partitioning.


@pytest.fixture
def unpartitioned_url(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A database holding a registry created as before partitioning and retention: every
    lineage table one table, no ``retention`` table."""
    name = postgres_server.unused_name()
    postgres_server.create_database(name, "template0")
    url = postgres_server.url(name)
    with monkeypatch.context() as patch:
        old = tuple(replace(t, partitioned=None) for t in TABLES if t.name != "retention")
        patch.setattr("hub.registry.postgres.schema.TABLES", old)
        patch.setattr(
            "hub.registry.postgres.schema.SEARCH_TABLE", replace(SEARCH_TABLE, partitioned=None)
        )
        PostgresRegistry.open(url).close()
    with psycopg.connect(url) as db:
        assert db.execute("SELECT to_regclass('retention')").fetchone() == (None,)
    yield url
    postgres_server.drop_database(name)


def test_an_unpartitioned_postgres_registry_opens_ingests_and_prunes_as_one_table(
    unpartitioned_url: str,
) -> None:
    with PostgresRegistry.open(unpartitioned_url) as registry:
        assert all(t.partitioned is None for t in registry.lineage_layout())
        assert registry.prepare_search_months(NOW, NOW + 400 * DAY) == []
        log = _ship_months(registry, "gw-old", MONTH_STARTS)
        cut = retention_cut(NOW, 100)
        kept = [t for t in _times(registry) if t >= cut]
        pruned = registry.prune_search(cut, at=NOW, dry_run=False)
        assert pruned.months == () and pruned.rows == len(MONTH_STARTS) * PER_MONTH - len(kept)
        assert _times(registry) == kept
        assert len(_entries(registry, log)) == len(MONTH_STARTS) * PER_MONTH
        _check(registry, unpartitioned_url)
    with psycopg.connect(unpartitioned_url) as db:
        assert db.execute("SELECT count(*) FROM pg_class WHERE relkind = 'p'").fetchone() == (0,)


# The commands: registry prune-search, registry check, registry migrate.


@pytest.fixture
def hub_dir(
    tmp_path: Path, location: Path | str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, list[str]]]:
    """A hub directory whose registry (``location``) holds two devices' entries of five
    months up to now, and the global options naming it (``$EDGEGOV_REGISTRY``, which the
    hub suite on PostgreSQL sets, is cleared: these tests name their registry)."""
    monkeypatch.delenv("EDGEGOV_REGISTRY", raising=False)
    path = tmp_path / "hub"
    path.mkdir(exist_ok=True)
    if isinstance(location, Path):
        location = path / "hub.db"
    now = int(time.time())
    starts = [month_of(now - months * 31 * DAY).start for months in (7, 5, 3, 1, 0)]
    with open_registry(location) as registry:
        registry.prepare_search_months(starts[1], now)
        for device in ("gw-a", "gw-b"):
            _ship_months(registry, device, starts)
    yield path, ["--hub-dir", str(path)] if isinstance(location, Path) else ["--registry", location]


def _search_rows(options: list[str], capsys: pytest.CaptureFixture[str]) -> int:
    assert hub_main([*options, "registry", "check", "--json"]) == 0
    tables: dict[str, dict[str, int]] = json.loads(capsys.readouterr().out)["tables"]
    return tables["lineage_search"]["rows"]


@pytest.mark.parametrize(
    "days", ["-5", "abc", "0", "36501", "1e3", "9" * 30, "", " 90", "٣٠"], ids=repr
)
def test_a_bad_older_than_is_refused_with_a_sentence_and_changes_nothing(
    hub_dir: tuple[Path, list[str]], days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, options = hub_dir
    rows = _search_rows(options, capsys)
    with pytest.raises(SystemExit) as exit_info:
        hub_main([*options, "registry", "prune-search", "--older-than", days, "--yes"])
    assert exit_info.value.code == 2
    assert "is not a number of days from 1 to 36500" in capsys.readouterr().err
    assert _search_rows(options, capsys) == rows


def test_prune_search_counts_without_yes_prunes_with_it_and_then_finds_nothing(
    hub_dir: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, options = hub_dir
    rows = _search_rows(options, capsys)
    prune = [*options, "registry", "prune-search", "--older-than", "100", "--json"]
    assert hub_main(prune) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["dry_run"] is True and counted["previous_cut"] is None
    assert _search_rows(options, capsys) == rows
    assert hub_main([*prune, "--yes"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["dry_run"] is False
    assert (done["rows_deleted"], done["month_rows"]) == (
        counted["rows_deleted"],
        counted["month_rows"],
    )
    gone = done["rows_deleted"] + done["month_rows"]
    assert gone == 2 * 2 * PER_MONTH
    assert _search_rows(options, capsys) == rows - gone
    assert hub_main([*options, "registry", "check", "--json"]) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["ok"] is True and check["logs"]["failed"] == 0
    assert check["search_retention"] == {"cut": done["cut"], "from": done["before"]}
    assert hub_main([*prune[:-1], "--yes"]) == 0
    out = capsys.readouterr().out
    assert "0 rows deleted" in out and "device logs (entries, checkpoints, tree nodes)" in out


def test_prune_search_is_refused_while_an_active_rollout_began_before_its_cut(
    hub_dir: tuple[Path, list[str]], location: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, options = hub_dir
    began = int(time.time()) - 200 * DAY
    with open_registry(path / "hub.db" if isinstance(location, Path) else location) as registry:
        registry.create_rollout(rollout_record(began))
    rows = _search_rows(options, capsys)
    assert hub_main([*options, "registry", "prune-search", "--older-than", "30", "--yes"]) == 1
    assert "finish or abort it first" in capsys.readouterr().err
    assert _search_rows(options, capsys) == rows
    assert hub_main([*options, "registry", "prune-search", "--older-than", "300", "--yes"]) == 0


def test_registry_check_reports_the_layout_of_the_lineage_tables(
    hub_dir: tuple[Path, list[str]], location: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, options = hub_dir
    assert hub_main([*options, "registry", "check"]) == 0
    out = capsys.readouterr().out
    if isinstance(location, Path):
        assert "lineage_search: one table (not partitioned)" in out
    else:
        assert f"lineage_entries: {DEVICE_PARTITIONS} hash partitions by device" in out
        assert "lineage_search: partitioned by month" in out
        assert "a default partition holding 60 rows" in out
    assert "lineage search retention: never pruned" in out


def test_a_registry_migrated_into_a_fresh_postgres_database_is_partitioned_month_by_month(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "hub"
    source.mkdir()
    now = int(time.time())
    starts = [month_of(now - months * 31 * DAY).start for months in (5, 3, 0)]
    with open_registry(source / "hub.db") as registry:
        _ship_months(registry, "gw-a", starts)
    migrate = ["registry", "migrate", "--to", postgres_url, "--from", str(source), "--json"]
    assert hub_main(migrate) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] is True
    layout = report["check"]["layout"]
    assert layout["lineage_entries"] == {"partitioned": "device", "partitions": 16}
    assert layout["lineage_search"]["default_rows"] == 0
    assert {month_of(s).label for s in starts} <= set(layout["lineage_search"]["months"])


def rollout_record(created_at: int) -> RolloutRecord:
    """A running rollout of eu-1 that began at ``created_at``."""
    return RolloutRecord(
        rollout_id="eu-1-v8",
        region="eu-1",
        state=RolloutState.RUNNING,
        created_at=created_at,
        updated_at=created_at,
        candidate=b"candidate",
        candidate_version=8,
        candidate_digest=b"\x08" * 32,
        rollback=b"rollback",
        channels=("group/line-a",),
        devices=("gw-a", "gw-b"),
        stages=("10", "100"),
        soak_s=60,
        halts=(),
        groups=("line-a",),
    )


def test_a_month_whose_default_partition_is_busy_is_left_for_the_next_call_without_waiting(
    postgres_url: str,
) -> None:
    far = month_of(NOW + 800 * DAY)
    with PostgresRegistry.open(postgres_url) as registry:
        _ship_months(registry, "gw-far", [far.start])
        with psycopg.connect(postgres_url) as holder:
            holder.execute("LOCK TABLE lineage_search_default IN ROW EXCLUSIVE MODE")
            started = time.monotonic()
            assert registry.prepare_search_months(far.start, far.start) == []
            assert time.monotonic() - started < 5
        assert registry.prepare_search_months(far.start, far.start) == [
            far.partition("lineage_search")
        ]
        assert registry.lineage_layout()[3].default_rows == 0
        assert len(_times(registry)) == PER_MONTH


def test_an_interrupted_prune_keeps_its_cut_and_running_it_again_finishes_it(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.prepare_search_months(MONTH_STARTS[1], MONTH_STARTS[-1])
    _ship_months(registry, "gw-a", MONTH_STARTS)
    every = _times(registry)
    cut = retention_cut(NOW, 100)
    kept = [t for t in every if t >= cut]
    monkeypatch.setattr(search_retention, "PRUNE_CHUNK_ROWS", 7)
    write = registry._write  # type: ignore[attr-defined]
    writes = 0

    def lost_on_the_third(what: str) -> object:
        nonlocal writes
        writes += 1
        if writes == 3:
            raise RegistryError("the connection was lost")
        return write(what)

    monkeypatch.setattr(registry, "_write", lost_on_the_third)
    with pytest.raises(RegistryError, match="connection was lost"):
        registry.prune_search(cut, at=NOW, dry_run=False)
    assert registry.search_retention() == cut
    assert len(kept) < len(_times(registry)) < len(every)
    assert registry.search_lineage(LineageQuery()).past_retention == cut
    monkeypatch.undo()
    registry.prune_search(cut, at=NOW, dry_run=False)
    assert _times(registry) == kept

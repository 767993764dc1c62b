"""The lineage search's retention on PostgreSQL against clocks that disagree and prunes that
race, and the command's hostile inputs: ``registry prune-search`` run on a machine whose
clock is ahead of the server's (which makes the months every hub on it writes to), two
prunes deleting the same rows, a batch stored while its month is made, and a prune named a
registry that is not there."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from hub.cli import registry_cmd
from hub.cli.main import main as hub_main
from hub.registry.postgres import PostgresRegistry, search_partitions
from hub.registry.queries import search_retention
from hub.registry.search_months import DAY_S, month_of, retention_cut
from tests.lineage_sim import NOW, DeviceLogSim, accepted_batch
from tests.postgres_support import PostgresServer
from tests.test_registry_search_retention import MONTH_STARTS, PER_MONTH, _ship_months, _times


def _server_now(url: str) -> int:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT extract(epoch FROM now())::bigint").fetchone()
    assert row is not None
    return int(row[0])


def test_a_prune_whose_clock_runs_ahead_of_the_database_server_keeps_its_current_month(
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("EDGEGOV_REGISTRY", raising=False)
    monkeypatch.chdir(tmp_path)
    server_now = _server_now(postgres_url)
    with PostgresRegistry.open(postgres_url) as registry:
        _ship_months(registry, "gw-a", [month_of(server_now).start])
        assert len(_times(registry)) == PER_MONTH
    ahead = server_now + 90 * DAY_S
    monkeypatch.setattr(registry_cmd, "time", SimpleNamespace(time=lambda: float(ahead)))
    prune = ["--registry", postgres_url, "registry", "prune-search", "--older-than", "1"]
    assert hub_main([*prune, "--yes"]) == 1
    assert "clock" in capsys.readouterr().err
    with PostgresRegistry.open(postgres_url) as registry:
        assert len(_times(registry)) == PER_MONTH
        assert registry.search_retention() is None


def test_a_prune_racing_another_one_finishes_the_rows_before_its_cut_whatever_the_other_does(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another prune (here a transaction deleting the first chunk's rows) commits while this
    one's first chunk waits for those rows: that chunk deletes none, and the prune must still
    go on to the rows after them rather than report the cut done."""
    monkeypatch.setattr(search_retention, "PRUNE_CHUNK_ROWS", 7)
    cut = retention_cut(NOW, 100)
    with PostgresRegistry.open(postgres_url) as registry:
        _ship_months(registry, "gw-a", MONTH_STARTS)
        before = sum(1 for t in _times(registry) if t < cut)
        # Every row before the cut is in the DEFAULT partition: no month is dropped whole.
        assert before > 7 and registry.lineage_layout()[3].months[0] >= month_of(cut).label
        with psycopg.connect(postgres_url) as other:
            other.execute(
                "DELETE FROM lineage_search WHERE (time, device, seq) IN (SELECT time, device, "
                "seq FROM lineage_search WHERE time < %s ORDER BY time, device, seq LIMIT 7)",
                (cut,),
            )
            pruning = threading.Thread(
                target=registry.prune_search, args=(cut,), kwargs={"at": NOW, "dry_run": False}
            )
            pruning.start()
            time.sleep(0.5)
            other.commit()
        pruning.join(timeout=30)
        assert not pruning.is_alive()
        assert [t for t in _times(registry) if t < cut] == []


def test_a_batch_stored_while_its_month_is_made_is_stored_not_refused(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub stores a row of a month whose partition another session is making: the row is
    routed to the DEFAULT partition when its statement starts and waits for that partition's
    lock; the month's partition is attached meanwhile. The batch must be stored (in the new
    month's partition), never refused as a row the DEFAULT partition may no longer hold."""
    far = month_of(NOW + 400 * DAY_S)
    held = search_partitions.months_held
    calls = 0

    def slow_inside_the_lock(db: psycopg.Connection[tuple[object, ...]]) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:  # inside _make_month, with the DEFAULT partition locked
            time.sleep(0.6)
        return held(db)

    with PostgresRegistry.open(postgres_url) as registry:
        log = DeviceLogSim("gw-far")
        log.add(PER_MONTH, time=far.start + 3600)
        batch = accepted_batch(registry, log, 0, PER_MONTH)
        monkeypatch.setattr(search_partitions, "months_held", slow_inside_the_lock)
        making = threading.Thread(
            target=registry.prepare_search_months, args=(far.start, far.start)
        )
        making.start()
        time.sleep(0.2)
        assert registry.store_batch(batch, expected_size=0, received_at=NOW)
        making.join(timeout=30)
        assert far.label in registry.lineage_layout()[3].months
        assert len(_times(registry)) == PER_MONTH


def test_prune_search_of_a_registry_that_is_not_there_is_refused_and_creates_none(
    tmp_path: Path,
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A mistyped ``--registry`` (a hub.db path nothing is at, an empty database) is refused
    as ``registry check`` refuses it, not answered "0 rows" from a registry made for it."""
    monkeypatch.delenv("EDGEGOV_REGISTRY", raising=False)
    monkeypatch.chdir(tmp_path)
    name = postgres_server.unused_name()
    postgres_server.create_database(name, "template0")
    empty = postgres_server.url(name)
    for location in (str(tmp_path / "typo.db"), empty):
        for yes in ([], ["--yes"]):
            prune = ["--registry", location, "registry", "prune-search", "--older-than", "30"]
            assert hub_main([*prune, *yes]) == 3
            assert "registry" in capsys.readouterr().err
    assert not (tmp_path / "typo.db").exists()
    with psycopg.connect(empty) as db:
        tables = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
    postgres_server.drop_database(name)

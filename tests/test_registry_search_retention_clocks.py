"""The lineage search's retention against clocks that disagree: ``registry prune-search``
run on a machine whose clock is ahead of the PostgreSQL server's, which makes the months
every hub on it writes to."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from hub.cli import registry_cmd
from hub.cli.main import main as hub_main
from hub.registry.postgres import PostgresRegistry
from hub.registry.search_months import DAY_S, month_of
from tests.test_registry_search_retention import PER_MONTH, _ship_months, _times


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

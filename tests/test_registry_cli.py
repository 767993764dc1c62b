"""``edge-hub registry migrate`` and ``registry check`` through the command line: a hub
directory's ``hub.db`` with shipped lineage moves to PostgreSQL, checks clean there, and
every command then reads it with ``--registry``; a bad URL is one line, exit 3, and never
shows its password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.cli.main import main as hub_main
from hub.registry.backends import open_registry
from tests.postgres_support import free_port
from tests.registry_fill import LOG_SIZES, fill_registry

SECRET = "s3cret-pw"


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    """A stopped hub's directory whose hub.db holds shipped lineage (and a row in every
    table)."""
    path = tmp_path / "hub"
    path.mkdir()
    with open_registry(path / "hub.db") as registry:
        fill_registry(registry)
    return path


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    document: dict[str, object] = json.loads(capsys.readouterr().out)
    return document


def test_migrate_then_check_moves_a_hub_to_postgres_where_every_command_reads_it(
    hub_dir: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate = ["registry", "migrate", "--to", postgres_url, "--from", str(hub_dir), "--json"]
    assert hub_main([*migrate, "--chunk", "50"]) == 0
    report = _json(capsys)
    assert report["verified"] is True and report["copied"] == report["rows"]
    assert hub_main([*migrate]) == 0
    assert _json(capsys)["already_migrated"] is True
    assert hub_main(["--registry", postgres_url, "registry", "check", "--json"]) == 0
    check = _json(capsys)
    assert check["ok"] is True
    logs = len(LOG_SIZES)
    assert check["logs"] == {"devices": logs, "checked": logs, "failed": 0, "failures": []}
    assert hub_main(["registry", "check", "--sample", "1", "--registry", postgres_url]) == 0
    assert "device logs: 1 of 3 checked, all verify" in capsys.readouterr().out
    shown = ["lineage", "show", "gw-001", "--json", "--hub-dir", str(hub_dir)]
    assert hub_main([*shown, "--registry", postgres_url]) == 0
    on_postgres = _json(capsys)
    assert hub_main(shown) == 0
    assert _json(capsys) == on_postgres


def test_migrate_takes_the_hub_dir_as_its_source_and_check_its_hub_db(
    hub_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy.db"
    hub = ["--hub-dir", str(hub_dir)]
    assert hub_main([*hub, "registry", "migrate", "--to", str(copy)]) == 0
    assert "copied " in capsys.readouterr().out
    assert hub_main([*hub, "registry", "check"]) == 0
    assert "device logs: 3 of 3 checked, all verify" in capsys.readouterr().out
    assert hub_main(["--registry", str(copy), "registry", "check"]) == 0


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://hub:{SECRET}@127.0.0.1:{{port}}/edgegov",
        f"postgresql://hub:{SECRET}@[bad/edgegov",
    ],
    ids=["unreachable", "malformed"],
)
@pytest.mark.parametrize("command", ["migrate", "check"])
def test_a_bad_registry_url_is_one_line_exit_3_and_no_password(
    url: str, command: str, hub_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = url.format(port=free_port())
    where = ["--to", given] if command == "migrate" else ["--registry", given]
    assert hub_main(["registry", command, *where, "--from", str(hub_dir)]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("edge-hub: error: "), err
    assert SECRET not in err


def test_a_chunk_out_of_bounds_is_a_usage_error(hub_dir: Path, postgres_url: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        hub_main(["registry", "migrate", "--to", postgres_url, "--chunk", "10001"])
    assert exit_info.value.code == 2


def test_check_refuses_a_hub_dir_without_a_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert hub_main(["registry", "check", "--from", str(tmp_path)]) == 3
    assert "holds no registry (hub.db)" in capsys.readouterr().err
    assert not (tmp_path / "hub.db").exists()


def test_migrate_refuses_the_registry_option_as_its_source(
    hub_dir: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate = ["registry", "migrate", "--to", postgres_url, "--from", str(hub_dir)]
    assert hub_main(["--registry", postgres_url, *migrate]) == 2
    assert "leave out --registry" in capsys.readouterr().err

"""Where a hub's registry is: ``--registry``, else ``$EDGEGOV_REGISTRY``, else the hub
directory's ``hub.db``; a PostgreSQL registry is opened without a ``hub.db``, a database
holding no registry is refused where a command only reads, and no message shows the URL's
password."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from edge_agent.protocol.keys import PrivateKey
from hub.cli.main import main as hub_main
from hub.hubdir.layout import HubDir, HubDirError, shown_registry
from tests.hub_support import make_hub_dir
from tests.postgres_support import PostgresServer, free_port

SECRET = "s3cret-pw"


def test_the_registry_option_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEGOV_REGISTRY", "postgresql://env@db/edgegov")
    assert HubDir.resolve(tmp_path, "postgresql://given@db/edgegov").registry == (
        "postgresql://given@db/edgegov"
    )
    assert HubDir.resolve(tmp_path).registry == "postgresql://env@db/edgegov"


def test_without_either_the_registry_is_the_hub_directorys_hub_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGEGOV_REGISTRY", raising=False)
    hub = HubDir.resolve(tmp_path)
    assert hub.registry is None
    assert hub.registry_location == tmp_path / "hub.db"


@pytest.mark.sqlite_only("names the registry itself (a hub.db path, $EDGEGOV_REGISTRY)")
def test_a_registry_path_names_another_hub_db(tmp_path: Path) -> None:
    make_hub_dir(tmp_path / "first")
    hub = HubDir(tmp_path / "elsewhere", str(tmp_path / "first" / "hub.db"))
    with hub.open_registry(create=False) as registry:
        assert [d.device_id for d in registry.devices()] == ["gw-001", "gw-002"]
    assert not (tmp_path / "elsewhere").exists()


def test_a_missing_registry_path_is_refused_where_a_command_only_reads(tmp_path: Path) -> None:
    hub = HubDir(tmp_path, str(tmp_path / "none.db"))
    with pytest.raises(HubDirError, match="no hub registry at"):
        hub.open_registry(create=False)
    assert not (tmp_path / "none.db").exists()


def test_a_postgres_registry_needs_no_hub_db(tmp_path: Path, postgres_url: str) -> None:
    hub = HubDir(tmp_path / "no-such-dir", postgres_url)
    with hub.open_registry(create=False) as registry:
        assert registry.devices() == []
    assert not (tmp_path / "no-such-dir").exists()


def test_a_database_holding_no_registry_is_refused_and_left_empty(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    name = postgres_server.new_database(template="template0")
    url = postgres_server.url(name)
    try:
        with pytest.raises(HubDirError, match="holds no hub registry"):
            HubDir(tmp_path, url).open_registry(create=False)
        with psycopg.connect(url) as db:
            tables = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            assert tables.fetchone() == (0,)
    finally:
        postgres_server.drop_database(name)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://hub:{SECRET}@127.0.0.1:{{port}}/edgegov",
        f"postgresql://hub:{SECRET}@[bad/edgegov",
        f"postgres://hub@127.0.0.1:{{port}}/edgegov?password={SECRET}",
    ],
    ids=["unreachable", "malformed", "password-in-query"],
)
def test_a_bad_registry_url_is_one_line_exit_3_and_no_password(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = url.format(port=free_port())
    code = hub_main(["--hub-dir", str(tmp_path), "--registry", given, "device", "list"])
    out, err = capsys.readouterr()
    assert code == 3
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("edge-hub: "), err
    assert SECRET not in err


def test_a_bad_registry_url_in_json_shows_no_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = f"postgresql://hub:{SECRET}@127.0.0.1:{free_port()}/edgegov"
    code = hub_main(["--hub-dir", str(tmp_path), "--registry", given, "fleet", "--json"])
    out, _ = capsys.readouterr()
    assert code == 3
    assert json.loads(out)["error"]
    assert SECRET not in out


def test_shown_registry_never_shows_a_password() -> None:
    assert shown_registry(f"postgresql://hub:{SECRET}@db:5433/edgegov") == (
        "postgresql://hub@db:5433/edgegov"
    )
    assert SECRET not in shown_registry(f"postgresql://hub:{SECRET}@[bad/edgegov")
    assert shown_registry(Path("/var/lib/edge-hub/hub.db")) == "/var/lib/edge-hub/hub.db"


@pytest.mark.sqlite_only("names the registry itself (a hub.db path, $EDGEGOV_REGISTRY)")
def test_the_environment_names_the_registry_of_every_command(
    tmp_path: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    pem = tmp_path / "gw.pem"
    pem.write_bytes(_public_pem())
    monkeypatch.setenv("EDGEGOV_REGISTRY", postgres_url)
    hub = ["--hub-dir", str(setup.path)]
    assert (
        hub_main(
            [
                *hub,
                "device",
                "add",
                "gw-pg",
                "--pubkey",
                str(pem),
                "--region",
                "eu-1",
                "--profile",
                "generic-x86_64",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert hub_main([*hub, "device", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["device"] for d in listed["devices"]] == ["gw-pg"]
    assert (
        hub_main([*hub, "--registry", str(setup.path / "hub.db"), "device", "list", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["devices"] == []


def test_the_registry_option_wins_over_a_bad_environment(
    tmp_path: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EDGEGOV_REGISTRY", f"postgresql://hub:{SECRET}@127.0.0.1:{free_port()}/x")
    assert hub_main(["--hub-dir", str(tmp_path), "--registry", postgres_url, "fleet"]) == 0
    assert SECRET not in capsys.readouterr().err


def _public_pem() -> bytes:
    return PrivateKey.generate().public.to_pem().encode()


@pytest.mark.sqlite_only("names the registry itself (a hub.db path, $EDGEGOV_REGISTRY)")
def test_console_tokens_are_kept_in_the_registry_the_option_names(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=(), url=postgres_url)
    hub = ["--hub-dir", str(setup.path), "--registry", postgres_url]
    assert hub_main([*hub, "console", "token", "add", "alice", "--role", "viewer"]) == 0
    capsys.readouterr()
    assert hub_main([*hub, "console", "token", "list", "--json"]) == 0
    assert "alice" in capsys.readouterr().out
    assert hub_main(["--hub-dir", str(setup.path), "console", "token", "list"]) == 3
    assert "holds no registry (hub.db)" in capsys.readouterr().err

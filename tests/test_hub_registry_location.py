"""Where a hub's registry is: ``--registry``, else ``$EDGEGOV_REGISTRY``, else the hub
directory's ``hub.db``; a PostgreSQL registry is opened without a ``hub.db``, a database
holding no registry is refused where a command only reads, and no message shows the URL's
password."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from edge_agent.protocol.keys import PrivateKey
from hub.cli.main import main as hub_main
from hub.hubdir.layout import HubDir, HubDirError, shown_registry
from hub.registry import RegistryError
from hub.registry.backends import UNRECOGNISED_LOCATION, parse_location
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
    (tmp_path / "second" / "keys").mkdir(parents=True)
    hub = HubDir(tmp_path / "second", str(tmp_path / "first" / "hub.db"))
    with hub.open_registry(create=False) as registry:
        assert [d.device_id for d in registry.devices()] == ["gw-001", "gw-002"]
    assert not (tmp_path / "second" / "hub.db").exists()


def test_a_missing_registry_path_is_refused_where_a_command_only_reads(tmp_path: Path) -> None:
    hub = HubDir(_keys_only(tmp_path), str(tmp_path / "none.db"))
    with pytest.raises(HubDirError, match="no hub registry at"):
        hub.open_registry(create=False)
    assert not (tmp_path / "none.db").exists()


def _foreign_database(path: Path, table: str) -> Path:
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute(f"INSERT INTO {table} (body) VALUES ('kept as it was')")
    db.commit()
    db.close()
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_READING = (["fleet"], ["lineage", "show", "gw-001"], ["device", "list"])
_WRITING = (
    [
        "device",
        "add",
        "gw-new",
        "--pubkey",
        "PEM",
        "--region",
        "eu-1",
        "--profile",
        "generic-x86_64",
    ],
)


@pytest.mark.parametrize("command", [*_READING, *_WRITING], ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("table", ["notes", "devices"])
def test_another_programs_sqlite_database_is_refused_and_left_byte_for_byte(
    command: list[str], table: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    other = _foreign_database(tmp_path / "other.db", table)
    before = _digest(other)
    pem = tmp_path / "gw.pem"
    pem.write_bytes(_public_pem())
    given = [str(pem) if word == "PEM" else word for word in command]
    code = hub_main(["--hub-dir", str(setup.path), "--registry", str(other), *given])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "another program's database" in err
    assert _digest(other) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.pem", "hub", "other.db"]


@pytest.mark.parametrize("command", _READING, ids=lambda c: " ".join(c[:2]))
def test_an_empty_file_is_refused_where_a_command_only_reads_and_stays_empty(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    empty = tmp_path / "empty.db"
    empty.touch()
    code = hub_main(["--hub-dir", str(setup.path), "--registry", str(empty), *command])
    assert code == 3
    assert "holds no hub registry" in capsys.readouterr().err
    assert empty.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "hub"]


def test_a_registry_of_an_unknown_schema_is_refused_where_a_command_only_reads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "future.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 9")
    db.execute("CREATE TABLE devices (device_id TEXT)")
    db.close()
    before = _digest(path)
    with pytest.raises(HubDirError, match="schema 9"):
        HubDir(_keys_only(tmp_path), str(path)).open_registry(create=False)
    assert _digest(path) == before


def test_a_postgres_registry_needs_no_hub_db(tmp_path: Path, postgres_url: str) -> None:
    with HubDir(_keys_only(tmp_path), postgres_url).open_registry(create=False) as registry:
        assert registry.devices() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]


def test_the_default_hub_dir_need_not_exist_with_a_registry_elsewhere(
    tmp_path: Path, postgres_url: str
) -> None:
    hub = HubDir(tmp_path / "no-such-dir", postgres_url, named=False)
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
            HubDir(_keys_only(tmp_path), url).open_registry(create=False)
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
    hub_dir = _keys_only(tmp_path)
    assert hub_main(["--hub-dir", str(hub_dir), "--registry", postgres_url, "fleet"]) == 0
    assert SECRET not in capsys.readouterr().err


def _keys_only(path: Path) -> Path:
    """``path`` made a hub directory whose registry is elsewhere: it holds ``keys/``."""
    (path / "keys").mkdir()
    return path


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


@pytest.mark.parametrize(
    "location",
    [
        f"POSTGRESQL://hub:{SECRET}@127.0.0.1:{{port}}/edgegov",
        f"postgresql:hub:{SECRET}@127.0.0.1",
        f"host=127.0.0.1 password={SECRET} dbname=edgegov",
    ],
    ids=["uppercase-scheme", "no-slashes", "libpq-keywords"],
)
@pytest.mark.parametrize(
    "command",
    [["fleet"], ["--json", "fleet"], ["-v", "fleet"], ["registry", "check", "--json"]],
    ids=["text", "json", "verbose", "check-json"],
)
def test_a_location_neither_path_nor_postgres_url_never_shows_its_password(
    location: str, command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = location.format(port=free_port())
    code = hub_main(["--hub-dir", str(tmp_path), "--registry", given, *command])
    out, err = capsys.readouterr()
    assert code == 3
    assert SECRET not in out + err
    assert list(tmp_path.iterdir()) == []


def test_an_uppercase_scheme_opens_the_postgres_registry(tmp_path: Path, postgres_url: str) -> None:
    scheme, rest = postgres_url.split("://", 1)
    hub = HubDir(_keys_only(tmp_path), f"{scheme.upper()}://{rest}")
    with hub.open_registry(create=False) as registry:
        assert registry.devices() == []


@pytest.mark.parametrize(
    "location",
    ["postgresql:hub:pw@db", "host=db password=pw", "sqlite:///tmp/hub.db", "user=hub"],
)
def test_a_location_neither_path_nor_postgres_url_is_refused_without_quoting_it(
    location: str,
) -> None:
    with pytest.raises(RegistryError) as refused:
        parse_location(location)
    assert str(refused.value) == UNRECOGNISED_LOCATION
    assert "neither" in shown_registry(location) and "pw" not in shown_registry(location)


def test_a_path_that_looks_like_neither_is_a_path() -> None:
    assert parse_location("./postgresql:hub.db") == Path("postgresql:hub.db")
    assert parse_location("/var/lib/edge-hub/hub.db") == Path("/var/lib/edge-hub/hub.db")


@pytest.mark.parametrize("command", [["fleet"], ["--json", "fleet"], ["-v", "fleet"]])
def test_a_url_whose_escapes_are_not_utf8_is_refused_as_malformed_without_its_password(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = f"postgresql://hub:{SECRET}%FFpw@127.0.0.1:{free_port()}/edgegov"
    code = hub_main(["--hub-dir", str(_keys_only(tmp_path)), "--registry", given, *command])
    out, err = capsys.readouterr()
    assert code == 3
    assert "not a PostgreSQL connection URL" in out + err
    assert SECRET not in out + err

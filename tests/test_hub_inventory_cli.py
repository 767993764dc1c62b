"""The hub's inventory commands (``device list|show|remove``, ``revoke list``), what ``device
add`` refuses, what ``fleet`` says of a silent device and of a wrong hub directory, and the
global options and JSON errors every ``edge-hub`` command shares."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import DeviceStatus
from edge_agent.support.logging_setup import LogfmtFormatter
from hub.cli import fabric, inventory
from hub.cli.main import main as hub_main
from hub.hubdir import profiles
from hub.registry import IssuedRevocation, RejectionCount
from hub.registry.backends import open_registry
from tests.factory import NOW
from tests.hub_support import REGISTRY_BACKENDS, HubSetup, backend_url, make_hub_dir
from tests.test_hub_cli import _store

NINETEEN_MINUTES = 19 * 60


@pytest.fixture(params=REGISTRY_BACKENDS)
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> HubSetup:
    """A hub directory, its registry its ``hub.db`` or a PostgreSQL database (``edge-hub
    --registry URL``)."""
    for module in (fabric, inventory):
        monkeypatch.setattr(module, "wall_clock", lambda: NOW)
    return make_hub_dir(
        tmp_path / "hub", [("gw-001", "line-a"), ("gw-002", "line-b")], url=backend_url(request)
    )


@pytest.fixture
def quiet_logging() -> Iterator[None]:
    """Put back the log levels a command configures."""
    names = ("", "amqtt", "aiomqtt", "uvicorn", "edge_agent", "hub")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _hub(setup: HubSetup, *args: str) -> int:
    return hub_main([*args, "--hub-dir", str(setup.path), *setup.registry_args])


def _status(setup: HubSetup, device: str, *, seen: int, online: bool = True) -> None:
    with open_registry(setup.registry) as registry:
        status = DeviceStatus(device, seen, online, 1, NOW + 3600, "open", 0, 0)
        assert registry.record_status(status, repr(status).encode(), seen)


def _revoke(setup: HubSetup, epoch: int, kind: str, value: str, reason: str = "") -> None:
    with open_registry(setup.registry) as registry:
        registry.record_revocation(
            IssuedRevocation("eu-1", epoch, kind, value, reason, b"sig", NOW - 60)
        )


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    captured = capsys.readouterr()
    assert captured.err == ""
    (line,) = captured.out.splitlines()
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


def test_device_list_shows_each_device_with_its_liveness(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    _status(setup, "gw-001", seen=NOW - NINETEEN_MINUTES)
    assert _hub(setup, "device", "list") == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["DEVICE", "REGION", "PROFILE"]
    assert "stale 19m ago" in first and "line-a" in first
    assert "never seen" in second and "line-b" in second
    assert _hub(setup, "device", "list", "--json") == 0
    listed = _json(capsys)["devices"]
    assert isinstance(listed, list)
    assert [(d["device"], d["online"], d["stale"]) for d in listed] == [
        ("gw-001", False, True),
        ("gw-002", None, True),
    ]
    assert listed[0]["key_id"] == setup.devices["gw-001"].key.public.key_id.hex()


def test_device_show_tells_everything_the_hub_holds_including_revocations_naming_it(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    _status(setup, "gw-001", seen=NOW - 5)
    _revoke(setup, 1, "group", "line-a", "leak")
    _revoke(setup, 2, "device", "gw-002")
    assert _hub(setup, "device", "show", "gw-001") == 0
    out = capsys.readouterr().out
    assert "state        online 5s ago" in out
    assert "gate         open (as its last signed status said)" in out
    assert "revocations  1\n  epoch 1 group line-a" in out and ": leak" in out
    assert _hub(setup, "device", "show", "gw-001", "--json") == 0
    shown = _json(capsys)
    assert (shown["device"], shown["online"], shown["stale"]) == ("gw-001", True, False)
    assert shown["revocations"] == [
        {
            "region": "eu-1",
            "epoch": 1,
            "kind": "group",
            "value": "line-a",
            "reason": "leak",
            "issued_at": NOW - 60,
        }
    ]
    assert _hub(setup, "device", "show", "gw-404", "--json") == 2
    error = _json(capsys)
    assert (error["error"], error["exit"]) == ("usage", 2)
    assert "not registered" in str(error["message"])


def test_device_remove_unregisters_and_keeps_the_lineage_as_evidence(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(setup, "gw-001", 4)
    with open_registry(setup.registry) as registry:
        registry.add_rejections([RejectionCount("gw-001", "bad_signature", 3, "x")], NOW)
    assert _hub(setup, "device", "remove", "gw-001") == 0
    out = capsys.readouterr().out
    assert "device gw-001 removed" in out
    assert "kept as evidence: its lineage (4 entries" in out
    assert "not revoked: it still decides" in out and "revoke --device gw-001" in out
    with open_registry(setup.registry) as registry:
        assert [d.device_id for d in registry.devices()] == ["gw-002"]
        assert registry.lineage_state("gw-001").size == 4
        assert [r.count for r in registry.rejections("gw-001")] == [3]
        directory = registry.directory("eu-1")
    assert directory is not None
    assert _hub(setup, "lineage", "show", "gw-001") == 0
    assert "device removed; its log is kept as evidence" in capsys.readouterr().out
    assert _hub(setup, "device", "list", "--json") == 0
    assert [d["device"] for d in _json(capsys)["devices"]] == ["gw-002"]  # type: ignore[union-attr]
    assert _hub(setup, "device", "remove", "gw-001") == 2
    assert "'gw-001' is not registered" in capsys.readouterr().err


def test_device_remove_json_names_what_was_kept(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _hub(setup, "device", "remove", "gw-002", "--json") == 0
    removed = _json(capsys)
    assert (removed["device"], removed["removed"], removed["lineage_entries_kept"]) == (
        "gw-002",
        True,
        0,
    )


def test_device_remove_json_says_the_device_is_not_revoked(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _hub(setup, "device", "remove", "gw-002", "--json") == 0
    removed = _json(capsys)
    assert removed["revoked"] is False
    assert removed["note"] == (
        "the device keeps deciding under its bundles until revoked: "
        "'edge-hub revoke --device gw-002 --force'"
    )


def test_revoke_list_shows_the_newest_revocation_per_scope(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _hub(setup, "revoke", "list") == 0
    assert capsys.readouterr().out == "no revocations issued\n"
    _revoke(setup, 1, "device", "gw-001", "stolen")
    _revoke(setup, 2, "device", "gw-001", "stolen again")
    _revoke(setup, 3, "bundle_version", "4")
    assert _hub(setup, "revoke", "list") == 0
    header, device, bundle = capsys.readouterr().out.splitlines()
    assert header.split() == ["REGION", "EPOCH", "KIND", "VALUE", "ISSUED", "REASON"]
    assert device.split()[:4] == ["eu-1", "2", "device", "gw-001"]
    assert device.endswith("stolen again") and bundle.endswith("-")
    assert _hub(setup, "revoke", "list", "--region", "eu-9", "--json") == 0
    assert _json(capsys)["revocations"] == []
    assert _hub(setup, "revoke", "list", "--json") == 0
    assert [r["epoch"] for r in _json(capsys)["revocations"]] == [2, 3]  # type: ignore[union-attr]


def test_revoke_without_a_scope_says_what_to_give(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _hub(setup, "revoke") == 2
    (error,) = capsys.readouterr().err.splitlines()
    assert "say what to revoke: --device ID" in error and "'edge-hub revoke list'" in error


def test_device_add_refuses_an_unknown_firmware_profile_and_lists_the_known_ones(
    setup: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = tmp_path / "gw-009.pub"
    pem.write_text(PrivateKey.generate().public.to_pem())
    add = ["device", "add", "gw-009", "--pubkey", str(pem), "--region", "eu-1"]
    assert _hub(setup, *add, "--profile", "rpi4") == 2
    (error,) = capsys.readouterr().err.splitlines()
    assert "unknown firmware profile 'rpi4'" in error
    assert "generic-x86_64, raspberry-pi-4" in error
    (setup.path / "firmware_profiles").mkdir()
    (setup.path / "firmware_profiles" / "plc-7.toml").write_text("name = 'plc-7'\n")
    assert _hub(setup, *add, "--profile", "plc-7", "--json") == 0
    added = _json(capsys)
    assert (added["device"], added["profile"]) == ("gw-009", "plc-7")


def test_the_shipped_profile_names_are_the_files_of_firmware_profiles() -> None:
    shipped = Path(__file__).resolve().parent.parent / "firmware_profiles"
    assert tuple(sorted(p.stem for p in shipped.glob("*.toml"))) == profiles.SHIPPED_PROFILES


def test_fleet_marks_a_device_silent_for_19_minutes_stale_never_online(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    _status(setup, "gw-001", seen=NOW - NINETEEN_MINUTES, online=True)
    assert _hub(setup, "fleet") == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.split()[:3] == ["gw-001", "eu-1", "stale"]
    assert "19m ago" in row and "yes" not in row.split()
    assert _hub(setup, "fleet", "--json") == 0
    (device, _) = _json(capsys)["devices"]  # type: ignore[misc]
    assert (device["online"], device["reported_online"], device["stale"]) == (False, True, True)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.sqlite_only(
    "a wrong --hub-dir holds no hub.db; a PostgreSQL registry needs no hub directory"
)
@pytest.mark.parametrize(
    "command",
    [["fleet"], ["device", "list"], ["device", "show", "gw-001"], ["revoke", "list"]],
    ids=["fleet", "device-list", "device-show", "revoke-list"],
)
def test_a_reading_command_on_a_wrong_hub_dir_exits_3_and_creates_nothing(
    setup: HubSetup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    as_json: bool,
) -> None:
    wrong = tmp_path / "not-a-hub"
    wrong.mkdir()
    args = [*command, "--hub-dir", str(wrong), *setup.registry_args]
    args += ["--json"] if as_json else []
    assert hub_main(args) == 3
    assert list(wrong.iterdir()) == []
    captured = capsys.readouterr()
    if as_json:
        error = json.loads(captured.out)
        assert (error["error"], error["code"], error["exit"]) == (
            "unavailable",
            "hub_dir_unavailable",
            3,
        )
        assert error["path"] == str(wrong) and captured.err == ""
    else:
        (line,) = captured.err.splitlines()
        assert line == (
            f"edge-hub: error: {wrong} is not a hub directory: it holds no registry (hub.db) "
            "and no keys (keys/); pass the hub's --hub-dir (or set $EDGE_HUB_DIR)"
        )


@pytest.mark.parametrize("command", [["fleet"], ["device", "add", "gw-009"]], ids=["read", "write"])
def test_a_hub_dir_that_does_not_exist_exits_3_on_every_backend(
    setup: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    missing = tmp_path / "no-such-hub"
    pem = tmp_path / "gw.pem"
    pem.write_bytes(PrivateKey.generate().public.to_pem().encode())
    extra = ["--pubkey", str(pem), "--region", "eu-1", "--profile", "generic-x86_64"]
    args = [*command, *(extra if "add" in command else []), "--hub-dir", str(missing)]
    assert hub_main([*args, *setup.registry_args]) == 3
    assert f"hub directory {missing} does not exist" in capsys.readouterr().err
    assert not missing.exists()
    with open_registry(setup.registry) as registry:
        assert [d.device_id for d in registry.devices()] == ["gw-001", "gw-002"]


def test_the_environments_hub_dir_is_checked_as_the_option_is(
    setup: HubSetup,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = tmp_path / "not-a-hub"
    wrong.mkdir()
    monkeypatch.setenv("EDGE_HUB_DIR", str(wrong))
    assert hub_main(["fleet", *setup.registry_args]) == 3
    assert f"{wrong} is not a hub directory" in capsys.readouterr().err
    monkeypatch.setenv("EDGE_HUB_DIR", str(setup.path))
    assert hub_main(["fleet", *setup.registry_args]) == 0


def test_the_default_hub_dir_reads_a_registry_elsewhere_from_any_directory(
    setup: HubSetup,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    elsewhere = tmp_path / "anywhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("EDGE_HUB_DIR", raising=False)
    registry = setup.url or str(setup.path / "hub.db")
    assert hub_main(["--registry", registry, "device", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["device"] for d in listed["devices"]] == ["gw-001", "gw-002"]
    assert list(elsewhere.iterdir()) == []
    monkeypatch.delenv("EDGEGOV_REGISTRY", raising=False)  # set under make test-postgres
    assert hub_main(["fleet"]) == 3
    assert "is not a hub directory" in capsys.readouterr().err
    monkeypatch.chdir(setup.path)
    assert hub_main(["fleet", *setup.registry_args]) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--ttl", "-1h"],
        ["--ttl=-1h"],
    ],
    ids=["separate", "joined"],
)
def test_a_negative_ttl_is_refused_in_a_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        hub_main(["keys", "init", "--out", str(tmp_path / "keys"), *args])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "edge-hub keys init: error: argument --ttl: '-1h' is negative: give a duration of 1s "
        "or more (such as 30s, 5m, 24h, 7d)"
    )
    assert not (tmp_path / "keys").exists()


def test_global_options_work_before_or_after_the_command(
    setup: HubSetup, capsys: pytest.CaptureFixture[str], quiet_logging: None
) -> None:
    hub = ["--hub-dir", str(setup.path), *setup.registry_args]
    assert hub_main([*hub, "-v", "device", "list", "--json"]) == 0
    before = _json(capsys)
    assert hub_main(["device", "list", "--json", "-v", *hub]) == 0
    assert _json(capsys) == before


@pytest.mark.parametrize(
    ("flags", "amqtt"),
    [([], logging.WARNING), (["-v"], logging.WARNING), (["-vv"], logging.NOTSET)],
    ids=["default", "v", "vv"],
)
def test_v_shows_edgegov_debug_and_vv_the_libraries_too(
    setup: HubSetup, quiet_logging: None, flags: list[str], amqtt: int
) -> None:
    assert _hub(setup, *flags, "device", "list") == 0
    assert logging.getLogger("amqtt").level == amqtt
    (stderr,) = [
        h for h in logging.getLogger().handlers if isinstance(h.formatter, LogfmtFormatter)
    ]
    assert stderr.level == (logging.DEBUG if flags else logging.ERROR)


def test_fleet_shows_an_open_gate_under_a_bundle_expired_since_as_bundle_expired(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    now = NOW
    with open_registry(setup.registry) as registry:
        for device, expires_at in (("gw-001", now - 60), ("gw-002", now + 3600)):
            status = DeviceStatus(device, now - 5, True, 1, expires_at, "open", 0, 0)
            assert registry.record_status(status, repr(status).encode(), now - 5)
    assert _hub(setup, "fleet") == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert "bundle_expired" in rows["gw-001"] and "open" not in rows["gw-001"]
    assert "open" in rows["gw-002"]
    assert _hub(setup, "fleet", "--json") == 0
    gates = {d["device"]: (d["gate"], d["reported_gate"]) for d in _json(capsys)["devices"]}  # type: ignore[index]
    assert gates["gw-001"] == ("bundle_expired", "open")
    assert gates["gw-002"] == ("open", "open")

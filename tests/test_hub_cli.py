"""The operator's fabric commands: device add, bundle push, revoke, fleet, lineage show, serve."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.agent import init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.revocation import verify_revocation
from edge_agent.protocol.roles import Role
from hub.cli.main import main as hub_main
from hub.core.ingest import ingest_batch
from hub.registry.backends import open_registry
from hub.registry.records import Accepted
from tests.hub_support import REGISTRY_BACKENDS, HubSetup, backend_url, make_bundle, make_hub_dir


@pytest.fixture(params=REGISTRY_BACKENDS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> HubSetup:
    """A hub directory, its registry its ``hub.db`` or a PostgreSQL database (``edge-hub
    --registry URL``)."""
    return make_hub_dir(tmp_path / "hub", url=backend_url(request))


ON_HUB_DB = pytest.mark.parametrize("setup", ["sqlite"], indirect=True)
"""A test that edits ``hub.db`` itself, or runs ``serve`` (on PostgreSQL:
tests/test_hub_registry_location.py)."""


def _hub(setup: HubSetup, *args: str) -> int:
    return hub_main([*args, "--hub-dir", str(setup.path), *setup.registry_args])


def _bundle_file(setup: HubSetup, version: int, **kwargs: object) -> Path:
    path = setup.path / f"b{version}-{len(list(setup.path.glob('b*.cbor')))}.cbor"
    path.write_bytes(make_bundle(setup.keys, version, **kwargs))  # type: ignore[arg-type]
    return path


def _store(setup: HubSetup, device_id: str, count: int) -> None:
    device = setup.devices[device_id]
    device.add(count)
    with open_registry(setup.registry) as registry:
        log = registry.lineage_state(device_id)
        result = ingest_batch(
            device.batch(0, count),
            device=device_id,
            key=device.key.public,
            origin=device.origin,
            log=log,
            stored=registry.stored_log(device_id),
        )
        assert isinstance(result, Accepted)
        registry.store_batch(result, expected_size=0, received_at=int(time.time()))


def test_device_add_registers_and_refuses_duplicates_and_bad_input(
    setup: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = tmp_path / "gw-009.pub"
    pub.write_text(PrivateKey.generate().public.to_pem())
    add = ["device", "add", "gw-009", "--pubkey", str(pub), "--region", "eu-1"]
    assert _hub(setup, *add, "--group", "line-b", "--profile", "raspberry-pi-4") == 0
    assert "device gw-009 registered" in capsys.readouterr().out
    assert _hub(setup, *add, "--profile", "raspberry-pi-4") == 2
    assert "registered already" in capsys.readouterr().err
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("not a key")
    assert (
        _hub(
            setup,
            "device",
            "add",
            "gw-010",
            "--pubkey",
            str(bad_key),
            "--region",
            "eu-1",
            "--profile",
            "generic-x86_64",
        )
        == 2
    )
    assert (
        _hub(
            setup,
            "device",
            "add",
            "gw/x",
            "--pubkey",
            str(pub),
            "--region",
            "eu-1",
            "--profile",
            "generic-x86_64",
        )
        == 2
    )
    assert (
        _hub(
            setup,
            "device",
            "add",
            "hub",
            "--pubkey",
            str(pub),
            "--region",
            "eu-1",
            "--profile",
            "generic-x86_64",
        )
        == 2
    )
    assert "reserved" in capsys.readouterr().err
    with open_registry(setup.registry) as registry:
        assert [d.device_id for d in registry.devices()] == ["gw-001", "gw-002", "gw-009"]


@pytest.mark.parametrize("device_id", [".", ".."])
def test_device_add_refuses_an_id_of_dots_only(
    setup: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str], device_id: str
) -> None:
    pub = tmp_path / "dots.pub"
    pub.write_text(PrivateKey.generate().public.to_pem())
    add = ["device", "add", device_id, "--pubkey", str(pub), "--region", "eu-1"]
    assert _hub(setup, *add, "--profile", "generic-x86_64") == 2
    assert "only dots" in capsys.readouterr().err
    with open_registry(setup.registry) as registry:
        assert registry.device(device_id) is None


def test_push_without_a_running_serve_records_for_later(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 1))) == 0
    out = capsys.readouterr().out
    assert "2 registered devices targeted" in out and "recorded only" in out
    with open_registry(setup.registry) as registry:
        (current,) = registry.current_bundles()
        assert (current.channel, current.version) == ("group/line-a", 1)
        assert registry.freshness("eu-1", "group/line-a") is not None


def test_push_refuses_a_rollback_and_a_changed_bundle_under_a_published_version(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    published = _bundle_file(setup, 3)
    assert _hub(setup, "bundle", "push", str(published)) == 0
    assert _hub(setup, "bundle", "push", str(published)) == 0
    assert "already current" in capsys.readouterr().out
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 2))) == 1
    assert "rollback" in capsys.readouterr().err
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 3, max_offline="30s"))) == 1
    assert "other contents" in capsys.readouterr().err
    with open_registry(setup.registry) as registry:
        assert [b.digest for b in registry.current_bundles()] == [
            b.digest for b in registry.current_bundles("eu-1")
        ]
        (current,) = registry.current_bundles()
        assert current.data == published.read_bytes()


def test_push_refuses_a_bundle_not_signed_under_the_hubs_root(
    setup: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = make_hub_dir(tmp_path / "other-hub")
    foreign = tmp_path / "foreign.cbor"
    foreign.write_bytes(make_bundle(other.keys, 1))
    garbage = tmp_path / "garbage.cbor"
    garbage.write_bytes(b"\xd8\x62\x84")
    assert _hub(setup, "bundle", "push", str(foreign)) == 1
    assert _hub(setup, "bundle", "push", str(garbage)) == 1
    assert "bundle" in capsys.readouterr().err
    with open_registry(setup.registry) as registry:
        assert registry.current_bundles() == []


def test_revoke_signs_increasing_epochs_a_device_accepts(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    policy_key = next(iter(setup.root.role(Role.POLICY).keys)).hex()
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 3))) == 0
    assert _hub(setup, "revoke", "--device", "gw-001", "--reason", "lost") == 0
    assert _hub(setup, "revoke", "--group", "line-a") == 0
    assert _hub(setup, "revoke", "--key", policy_key[:12], "--yes") == 0
    assert _hub(setup, "revoke", "--bundle", "3", "--yes") == 0
    assert "epoch 4 of eu-1: bundle 3" in capsys.readouterr().out
    assert _hub(setup, "revoke", "--device", "gw-404") == 2
    assert _hub(setup, "revoke", "--key", "abc") == 2
    with open_registry(setup.registry) as registry:
        issued = registry.current_revocations()
        assert registry.kill_epoch("eu-1") == 4
    last = 0
    for revocation in issued:
        verified = verify_revocation(revocation.data, root=setup.root, region="eu-1")
        assert verified.epoch > last
        last = verified.epoch
    assert [r.value for r in issued] == ["gw-001", "line-a", policy_key, "3"]


def _kill_epochs(setup: HubSetup, *regions: str) -> list[int]:
    with open_registry(setup.registry) as registry:
        return [registry.kill_epoch(region) for region in regions]


class _Terminal(io.StringIO):
    """A stdin that is a terminal, holding what the operator types."""

    def isatty(self) -> bool:
        return True


def test_device_add_refuses_a_key_registered_to_another_device(
    setup: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = tmp_path / "gw-001.pub"
    pub.write_text(setup.devices["gw-001"].key.public.to_pem())
    add = ["device", "add", "gw-003", "--pubkey", str(pub), "--region", "eu-1"]
    assert _hub(setup, *add, "--profile", "generic-x86_64") == 2
    (error,) = capsys.readouterr().err.splitlines()
    assert "registered already to device 'gw-001'" in error
    with open_registry(setup.registry) as registry:
        assert [d.device_id for d in registry.devices()] == ["gw-001", "gw-002"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--device", "gw-001", "--region", "eu-9"], "registered in region eu-1, not eu-9"),
        (["--device", "gw-404"], "'gw-404' is not registered"),
        (["--group", "line-x"], "no device of this hub is in group 'line-x'"),
        (["--group", "line-a", "--region", "eu-9"], "its devices are in eu-1"),
        (["--key", "POLICY", "--region", "eu-9", "--yes"], "no device, bundle or revocation"),
    ],
    ids=["device-elsewhere", "unknown-device", "unknown-group", "group-elsewhere", "key-nowhere"],
)
def test_revoke_refuses_a_scope_not_registered_in_its_region(
    setup: HubSetup, capsys: pytest.CaptureFixture[str], args: list[str], error: str
) -> None:
    policy_key = next(iter(setup.root.role(Role.POLICY).keys)).hex()
    args = [policy_key if a == "POLICY" else a for a in args]
    assert _hub(setup, "revoke", *args) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert error in line
    assert _kill_epochs(setup, "eu-1", "eu-9") == [0, 0]


def test_revoke_force_names_what_this_hub_never_registered_but_never_a_wrong_region(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _hub(setup, "revoke", "--device", "gw-404", "--force") == 0
    assert _hub(setup, "revoke", "--group", "line-x", "--region", "eu-9", "--force") == 0
    assert _hub(setup, "revoke", "--device", "gw-001", "--region", "eu-9", "--force") == 2
    assert "a revocation for eu-9 never reaches it" in capsys.readouterr().err
    assert _kill_epochs(setup, "eu-1", "eu-9") == [1, 1]


def test_revoke_bundle_refuses_a_version_never_pushed_unless_forced(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 1))) == 0
    capsys.readouterr()
    assert _hub(setup, "revoke", "--bundle", "999999", "--yes") == 2
    (error,) = capsys.readouterr().err.splitlines()
    assert "bundle version 999999 was never pushed to this hub (the highest there is 1)" in error
    assert "--force" in error
    assert _kill_epochs(setup, "eu-1") == [0]
    assert _hub(setup, "revoke", "--bundle", "999999", "--yes", "--force") == 0
    assert _kill_epochs(setup, "eu-1") == [1]


def test_revoke_bundle_or_key_without_a_terminal_or_yes_refuses_and_records_nothing(
    setup: HubSetup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_key = next(iter(setup.root.role(Role.POLICY).keys)).hex()
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 1))) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("revoke\n"))
    assert _hub(setup, "revoke", "--bundle", "1") == 2
    assert "cannot be undone" in capsys.readouterr().err
    assert _hub(setup, "revoke", "--key", policy_key) == 2
    assert "Add --yes" in capsys.readouterr().err
    assert _kill_epochs(setup, "eu-1") == [0]


def test_revoke_bundle_asks_at_a_terminal_and_goes_on_only_when_confirmed(
    setup: HubSetup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 1))) == 0
    monkeypatch.setattr(sys, "stdin", _Terminal("yes\n"))
    assert _hub(setup, "revoke", "--bundle", "1") == 2
    assert "not confirmed: nothing was revoked" in capsys.readouterr().err
    assert _kill_epochs(setup, "eu-1") == [0]
    monkeypatch.setattr(sys, "stdin", _Terminal("revoke\n"))
    assert _hub(setup, "revoke", "--bundle", "1") == 0
    assert "only a bundle version above 1 recovers it" in capsys.readouterr().err
    assert _kill_epochs(setup, "eu-1") == [1]


def test_push_refuses_a_bundle_a_revocation_voids(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    policy_key = next(iter(setup.root.role(Role.POLICY).keys)).hex()
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 1))) == 0
    assert _hub(setup, "revoke", "--bundle", "5", "--force", "--yes") == 0
    capsys.readouterr()
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 2))) == 1
    (error,) = capsys.readouterr().err.splitlines()
    assert "version 2 is void in eu-1: revocation epoch 1 (bundle 5)" in error
    assert "push a version above 5" in error
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 6))) == 0
    assert _hub(setup, "revoke", "--key", policy_key, "--yes") == 0
    capsys.readouterr()
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 7))) == 1
    assert f"revocation epoch 2 (key {policy_key})" in capsys.readouterr().err
    with open_registry(setup.registry) as registry:
        assert [b.version for b in registry.current_bundles()] == [6]


def test_push_refuses_a_bundle_issued_beyond_the_devices_clock_skew_and_records_nothing(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    honest = _bundle_file(setup, 5)
    assert _hub(setup, "bundle", "push", str(honest)) == 0
    with open_registry(setup.registry) as registry:
        token = registry.freshness("eu-1", "group/line-a")
    future = _bundle_file(setup, 6, now=int(time.time()) + 10 * 86400)
    capsys.readouterr()
    assert _hub(setup, "bundle", "push", str(future)) == 1
    (error,) = capsys.readouterr().err.splitlines()
    assert "bundle version 6 was issued" in error and "ahead of this device's trusted time" in error
    with open_registry(setup.registry) as registry:
        assert [b.version for b in registry.current_bundles()] == [5]
        assert registry.freshness("eu-1", "group/line-a") == token
        assert registry.bundle_versions("eu-1") == [5]
    assert _hub(setup, "bundle", "push", str(honest)) == 0
    assert "already current" in capsys.readouterr().out


def test_push_refuses_a_version_a_device_in_two_groups_already_gets_with_other_bytes(
    setup: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = tmp_path / "gw-003.pub"
    pub.write_text(PrivateKey.generate().public.to_pem())
    add = ["device", "add", "gw-003", "--pubkey", str(pub), "--region", "eu-1"]
    assert (
        _hub(setup, *add, "--group", "line-a", "--group", "line-b", "--profile", "generic-x86_64")
        == 0
    )
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 5))) == 0
    capsys.readouterr()
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 5, group="line-b"))) == 1
    (error,) = capsys.readouterr().err.splitlines()
    assert "device gw-003 gets version 5 with other contents on group/line-a" in error
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 4, group="line-b"))) == 1
    assert "which device gw-003 gets on group/line-a" in capsys.readouterr().err
    with open_registry(setup.registry) as registry:
        assert [(b.channel, b.version) for b in registry.current_bundles()] == [("group/line-a", 5)]
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 6, group="line-b"))) == 0


def test_push_that_would_lift_a_revocation_is_refused_unless_lift_revocations(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(time.time())
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 1, now=now - 100))) == 0
    assert _hub(setup, "revoke", "--device", "gw-001", "--reason", "stolen") == 0
    routine = _bundle_file(setup, 2, now=now + 60)
    capsys.readouterr()
    assert _hub(setup, "bundle", "push", str(routine)) == 2
    (error,) = capsys.readouterr().err.splitlines()
    assert "would lift revocation epoch 1 of eu-1 (device gw-001, reason 'stolen') on gw-001" in (
        error
    )
    assert "--lift-revocations" in error
    with open_registry(setup.registry) as registry:
        assert [b.version for b in registry.current_bundles()] == [1]
        assert registry.bundle_versions("eu-1") == [1]
    assert _hub(setup, "bundle", "push", str(routine), "--lift-revocations") == 0
    out = capsys.readouterr().out
    assert "lifts revocation epoch 1 of eu-1 (device gw-001, reason 'stolen') on gw-001" in out
    assert _hub(setup, "bundle", "push", str(_bundle_file(setup, 3, now=now + 120))) == 0
    assert "lifts" not in capsys.readouterr().out


def test_fleet_and_lineage_show_report_the_stored_log(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(setup, "gw-001", 12)
    assert _hub(setup, "fleet") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["DEVICE", "REGION", "ONLINE"]
    assert "?/12" in table[1] and "never" in table[2]
    assert _hub(setup, "lineage", "show", "gw-001", "--limit", "3", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["size"] == 12 and shown["verified"]
    assert [e["seq"] for e in shown["entries"]] == [9, 10, 11]
    assert shown["entries"][0]["subject"] == "svc:camera"
    assert _hub(setup, "lineage", "show", "gw-001") == 0
    assert "12 entries stored, chain and tree verified" in capsys.readouterr().out
    assert _hub(setup, "lineage", "show", "gw-404") == 2


@ON_HUB_DB
def test_lineage_show_refuses_a_tampered_stored_log(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(setup, "gw-001", 12)
    db = sqlite3.connect(setup.path / "hub.db")
    db.execute("UPDATE lineage_entries SET data = data || x'00' WHERE seq = 7")
    db.commit()
    db.close()
    assert _hub(setup, "lineage", "show", "gw-001") == 1
    assert "entry 7" in capsys.readouterr().err


@ON_HUB_DB
def test_serve_runs_until_sigterm_and_other_commands_publish_through_it(setup: HubSetup) -> None:
    env = {**os.environ, "EDGE_HUB_DIR": str(setup.path)}
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub.cli.main",
            "serve",
            "--port",
            "0",
            "--freshness-interval",
            "1s",
            "--token-ttl",
            "5s",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = serve.stdout.readline() if serve.stdout else ""
        assert banner.startswith("edge-hub serve: broker mqtt://127.0.0.1:")
        info = json.loads((setup.path / "serve.json").read_text())
        assert info["pid"] == serve.pid and info["token_ttl_s"] == 5
        push = subprocess.run(
            [sys.executable, "-m", "hub.cli.main", "bundle", "push", str(_bundle_file(setup, 1))],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert push.returncode == 0, push.stderr
        assert f"published to {info['broker']}" in push.stdout
    finally:
        os.kill(serve.pid, signal.SIGTERM)
        out, err = serve.communicate(timeout=30)
    assert serve.returncode == 0, err
    assert "stopped" in out
    assert not (setup.path / "serve.json").exists()


@ON_HUB_DB
def test_serve_logs_a_broker_refusal_at_its_default_level(setup: HubSetup) -> None:
    env = {**os.environ, "EDGE_HUB_DIR": str(setup.path)}
    serve = subprocess.Popen(
        [sys.executable, "-m", "hub.cli.main", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = serve.stdout.readline() if serve.stdout else ""
        port = int(banner.split()[3].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"\x10\xff\xff\xff\x7f")
            assert client.recv(16) == b""
    finally:
        os.kill(serve.pid, signal.SIGTERM)
        _, err = serve.communicate(timeout=30)
    assert serve.returncode == 0, err
    assert "embedded broker refused (message_too_large)" in err


@ON_HUB_DB
def test_break_glass_token_from_the_hub_installs_only_on_its_device(
    setup: HubSetup, tmp_path: Path
) -> None:
    token = tmp_path / "bg.cose"
    assert (
        hub_main(
            [
                "break-glass",
                "--hub-dir",
                str(setup.path),
                "--device",
                "gw-001",
                "--minutes",
                "30",
                "--reason",
                "site visit",
                "--out",
                str(token),
            ]
        )
        == 0
    )
    assert token.stat().st_mode & 0o777 == 0o600
    for device, expected in (("gw-001", 0), ("gw-002", 1)):
        state = tmp_path / device
        identity = DeviceIdentity(device, "eu-1", ("line-a",), "generic-x86_64")
        init_state_dir(state, identity, setup.root.raw, int(time.time()))
        code = agent_main(["break-glass", str(token), "--state-dir", str(state)])
        assert code == expected, device
    assert (
        hub_main(
            [
                "break-glass",
                "--hub-dir",
                str(setup.path),
                "--device",
                "gw-001",
                "--minutes",
                "600",
                "--reason",
                "x",
                "--out",
                str(token),
            ]
        )
        == 2
    )

"""``--json`` on the ``edge-hub`` commands that print a result: one JSON object on stdout,
nothing on stderr, with the fields documented in docs/mqtt.md ("Hub commands")."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.request import Request
from hub.cli.main import main as hub_main
from tests.factory import DEVICE, NOW, HubSim, raw_payload
from tests.hub_support import HubSetup, make_bundle, make_hub_dir

POLICY = """\
target: {region: eu-1, groups: [line-a]}
ttl: 24h
rules:
  - {id: only, effect: allow, subjects: ["*"], actions: [read], resources: ["/x"]}
"""


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    return make_hub_dir(tmp_path / "hub")


def _export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    sim = HubSim()
    state = tmp_path / "state"
    init_state_dir(state, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(state) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        agent.decide(Request("svc:camera", "exec", "/opt/camera/bin/capture"), NOW + 1)
    out = tmp_path / "export.cbor"
    assert agent_main(["log", "export", "--state-dir", str(state), "--out", str(out)]) == 0
    assert agent_main(["pubkey", "--state-dir", str(state)]) == 0
    key = tmp_path / "device.pub"
    key.write_text(capsys.readouterr().out)
    return ["lineage", "verify", str(out), "--device-key", str(key)]


Case = Callable[[HubSetup, Path, pytest.CaptureFixture[str]], list[str]]


def _pem(tmp_path: Path) -> str:
    pem = tmp_path / "new.pub"
    pem.write_text(PrivateKey.generate().public.to_pem())
    return str(pem)


def _policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return str(path)


def _bundle(setup: HubSetup, tmp_path: Path) -> str:
    path = tmp_path / "b1.cbor"
    path.write_bytes(make_bundle(setup.keys, 1))
    return str(path)


CASES: list[tuple[str, Case, set[str]]] = [
    (
        "keys init",
        lambda s, t, c: ["keys", "init", "--out", str(t / "k")],
        {"keys", "root", "root_version", "roles"},
    ),
    (
        "bundle build",
        lambda s, t, c: [
            "bundle",
            "build",
            _policy(t),
            "--keys",
            str(s.keys),
            "--version",
            "3",
            "--out",
            str(t / "b.cbor"),
        ],
        {"out", "version", "rules", "region", "expires_at", "digest", "size"},
    ),
    (
        "bundle push",
        lambda s, t, c: ["bundle", "push", _bundle(s, t), "--hub-dir", str(s.path)],
        {"version", "digest", "region", "channels", "targeted", "lifted", "published", "broker"},
    ),
    (
        "revoke",
        lambda s, t, c: [
            "revoke",
            "--device",
            "gw-001",
            "--reason",
            "lost",
            "--hub-dir",
            str(s.path),
        ],
        {"region", "epoch", "kind", "value", "reason", "issued_at", "published"},
    ),
    (
        "device add",
        lambda s, t, c: [
            "device",
            "add",
            "gw-009",
            "--pubkey",
            _pem(t),
            "--region",
            "eu-1",
            "--profile",
            "generic-arm64",
            "--hub-dir",
            str(s.path),
        ],
        {"device", "region", "groups", "profile", "key_id", "directory"},
    ),
    ("lineage verify", lambda s, t, c: _export(t, c), {"origin", "size", "verified"}),
    (
        "root rotate",
        lambda s, t, c: ["root", "rotate", "--keys", str(s.keys)],
        {"root", "root_version", "rotated"},
    ),
    (
        "console token add",
        lambda s, t, c: [
            "console",
            "token",
            "add",
            "ops",
            "--role",
            "viewer",
            "--hub-dir",
            str(s.path),
        ],
        {"name", "role", "token"},
    ),
    (
        "console token list",
        lambda s, t, c: ["console", "token", "list", "--hub-dir", str(s.path)],
        {"tokens"},
    ),
    (
        "break-glass",
        lambda s, t, c: [
            "break-glass",
            "--device",
            "gw-001",
            "--minutes",
            "5",
            "--reason",
            "INC-1",
            "--out",
            str(t / "bg.cbor"),
            "--hub-dir",
            str(s.path),
        ],
        {"out", "token", "device", "minutes", "expires_at"},
    ),
    (
        "device acl",
        lambda s, t, c: ["device", "acl", "--out", str(t / "acl"), "--hub-dir", str(s.path)],
        {"out", "devices", "acl"},
    ),
    (
        "attest tpm-ak",
        lambda s, t, c: ["attest", "tpm-ak", "gw-001", "--remove", "--hub-dir", str(s.path)],
        {"device", "tpm_ak_sha256"},
    ),
    (
        "keys export",
        lambda s, t, c: [
            "keys",
            "export",
            "witness",
            "--out",
            str(t / "w.pub"),
            "--hub-dir",
            str(s.path),
        ],
        {"out", "key_id", "role"},
    ),
]


@pytest.mark.parametrize(("name", "case", "fields"), CASES, ids=[c[0] for c in CASES])
def test_a_result_under_json_is_one_object_with_its_fields(
    setup: HubSetup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    case: Case,
    fields: set[str],
) -> None:
    argv = case(setup, tmp_path, capsys)
    capsys.readouterr()
    assert hub_main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    (line,) = captured.out.splitlines()
    assert fields <= set(json.loads(line))


def test_bundle_inspect_shows_a_hostile_payload_as_escaped_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = {
        "version": 1,
        "target": {"region": "eu-1", "groups": [b"\x01\x02"]},
        "policy": {
            "rules": [
                {"id": "evil\x1b[31m", "effect": "deny", "when": {"time_utc": "\x07", "z": [b"x"]}}
            ]
        },
    }
    path = tmp_path / "hostile.cbor"
    path.write_bytes(HubSim().sign_raw(raw_payload(payload)))
    assert hub_main(["bundle", "inspect", str(path), "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    shown = json.loads(line)
    assert shown["target"]["groups"] == ["0102"]
    assert shown["rules"][0]["when"] == {"time_utc": "\x07", "z": ["78"]}
    assert hub_main(["bundle", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "DENY evil\\x1b[31m" in out and "when time_utc \\x07 UTC" in out

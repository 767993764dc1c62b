"""Golden output of ``edge-hub fleet`` and ``edge-hub bundle inspect`` at 80 and 200
columns, on a fixed clock (``tests.factory.NOW``) and fixed keys.

A change to what these commands print shows here as a diff of ``tests/golden/*.txt``;
``EDGEGOV_UPDATE_GOLDEN=1`` rewrites the files (review the diff before committing it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.policy.compiler import policy_payload
from edge_agent.protocol.bundle import BundleTarget
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.roles import Role
from edge_agent.protocol.shipping import DeviceStatus
from hub.cli import fabric, signing
from hub.cli import main as hub_cli
from hub.registry import AttestationRecord, DeviceRecord, RejectionCount
from hub.registry.backends import open_registry
from hub.registry.records import ForkEvidence
from tests.factory import DAY, NOW, HubSim
from tests.hub_support import hub_registry

GOLDEN = Path(__file__).resolve().parent / "golden"
WIDTHS = (80, 200)

POLICY = policy_payload(
    groups={"sensors": ["svc:camera", "svc:thermo"]},
    workloads={"svc:camera": ["exe:/opt/camera/bin/capture", "uid:1001"]},
    rules=[
        {
            "id": "camera-exec",
            "effect": "allow",
            "subjects": ["svc:camera", "group:sensors"],
            "actions": ["exec"],
            "resources": ["/opt/camera/bin/*"],
            "when": {"time_utc": "06:00-22:00"},
        },
        {
            "id": "valve-open",
            "effect": "allow",
            "subjects": ["svc:plc"],
            "actions": ["open"],
            "resources": ["/valves/*"],
            "when": {
                "parent": {
                    "action": ["approve"],
                    "devices": ["group:line-a"],
                    "max_age": 30,
                    "max_depth": 2,
                },
                "context": {"zone": ["plant-a", "plant-b"]},
            },
        },
        {
            "id": "no-shells",
            "effect": "deny",
            "subjects": ["*"],
            "actions": ["exec"],
            "resources": ["/bin/sh", "/usr/bin/*sh"],
        },
    ],
)


def _key(n: int) -> PrivateKey:
    return PrivateKey(bytes([n]) * 32)


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("EDGEGOV_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs (EDGEGOV_UPDATE_GOLDEN=1 rewrites it)"


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (fabric, signing):
        monkeypatch.setattr(module, "wall_clock", lambda: NOW)


def _fleet_hub(path: Path) -> Path:
    path.mkdir()
    (path / "keys").mkdir()  # a hub directory, whichever backend holds its registry
    devices = [
        (
            "gw-001",
            ("line-a",),
            DeviceStatus("gw-001", NOW - 20, True, 7, NOW + DAY, "open", 42, 42),
        ),
        (
            "gw-002-long-device-name",
            ("line-a", "line-b"),
            DeviceStatus(
                "gw-002-long-device-name", NOW - 19 * 60, True, 7, NOW + 3600, "open", 9, 5
            ),
        ),
        (
            "gw-003",
            ("line-b",),
            DeviceStatus("gw-003", NOW - 30, False, 6, NOW - 60, "closed", 3, 3),
        ),
        ("gw-004", ("line-b",), None),
    ]
    with open_registry(hub_registry(path)) as registry:
        for n, (device, groups, status) in enumerate(devices, 1):
            registry.add_device(
                DeviceRecord(device, "eu-1", groups, "generic-x86_64", _key(n).public, 1, NOW - DAY)
            )
            if status is not None:
                registry.record_status(status, repr(status).encode(), status.time)
        registry.add_rejections(
            [
                RejectionCount("gw-003", "bad_signature", 4, "x"),
                RejectionCount("gw-003", "rate_limited", 120, "x"),
                RejectionCount("*", "unknown_device", 2, "x"),
            ],
            NOW - 100,
        )
        registry.record_fork(ForkEvidence("gw-002-long-device-name", "fork", None, "n", b"b"), NOW)
        registry.record_attestation(
            AttestationRecord(
                "gw-001",
                "pass",
                "all 6 measurements match",
                b"m" * 32,
                b"n" * 16,
                NOW - 70,
                NOW + 830,
                None,
                42,
                "{}",
                b"r",
                NOW - 70,
            )
        )
    return path


@pytest.mark.parametrize("width", WIDTHS)
def test_fleet_output_at_a_terminal_width(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fixed_clock: None,
    width: int,
) -> None:
    hub_dir = _fleet_hub(tmp_path / "hub")
    monkeypatch.setenv("COLUMNS", str(width))
    assert hub_cli.main(["fleet", "--hub-dir", str(hub_dir)]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= width for line in out.splitlines())
    _check(f"fleet-{width}.txt", out)


def _bundle_files(path: Path) -> tuple[Path, Path]:
    sim = HubSim(
        root_keys=[_key(1), _key(2), _key(3)],
        policy_keys=[_key(4)],
        online_keys={Role.FRESHNESS: [_key(5)], Role.VERIFIER: [_key(6)], Role.REVOKE: [_key(7)]},
    )
    target = BundleTarget(
        region="eu-1", groups=("line-a",), profiles=("generic-x86_64",), devices=("gw-001",)
    )
    bundle = path / "bundle.cbor"
    bundle.write_bytes(sim.bundle(7, target=target, policy=POLICY, max_offline=3600))
    root = path / "root.cbor"
    root.write_bytes(sim.root_bytes())
    return bundle, root


@pytest.mark.parametrize("width", WIDTHS)
def test_bundle_inspect_output_at_a_terminal_width(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fixed_clock: None,
    width: int,
) -> None:
    bundle, root = _bundle_files(tmp_path)
    monkeypatch.setenv("COLUMNS", str(width))
    assert hub_cli.main(["bundle", "inspect", str(bundle), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= width for line in out.splitlines())
    _check(f"bundle-inspect-{width}.txt", out)

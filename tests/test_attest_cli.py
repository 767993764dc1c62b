"""The attestation command-line story, as an operator and a technician would run it.

Measure a golden device (``edge-agent attest --json``), turn its report into expectations
(``edge-hub attest expect``), build a bundle carrying them (``bundle build --attestation``),
install it, and see ``attest`` and ``status`` report the verdict; tamper, and see it fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.cli import main as agent_main
from edge_agent.protocol.attestation import Evidence, LineageHead, sign_evidence
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.roles import Role
from hub.cli.main import main as hub_main
from hub.core.attestation_judging import read_evidence
from hub.hubdir.keys import load_role_keys, load_root
from hub.registry import DeviceRecord
from hub.registry.backends import open_registry
from hub.service.verifier import Verifier
from tests.attest_support import make_root, write_profile
from tests.hub_support import hub_registry

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policy.yaml"


class Device:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.keys, self.state = tmp_path / "keys", tmp_path / "state"
        self.root = make_root(tmp_path / "root")
        self.profile = write_profile(tmp_path / "generic-x86_64.toml", interval=60)
        assert hub_main(["keys", "init", "--out", str(self.keys)]) == 0
        assert (
            self.agent(
                "init",
                "--device-id",
                "gw-001",
                "--root",
                str(self.keys / "root.cbor"),
                "--region",
                "eu-1",
                "--group",
                "line-a",
                "--profile",
                "generic-x86_64",
            )
            == 0
        )

    def agent(self, *args: str) -> int:
        return agent_main([*args, "--state-dir", str(self.state)])

    def attest(self, *extra: str) -> int:
        return self.agent(
            "attest", "--profile-file", str(self.profile), "--measure-root", str(self.root), *extra
        )


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device(tmp_path)


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    value = json.loads(capsys.readouterr().out)
    assert isinstance(value, dict)
    return value


def test_golden_device_report_to_bundle_to_verdict(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert device.attest("--json") == 0
    report = _json(capsys)
    assert report["verdict"] == "not_required" and report["device"] == "gw-001"
    report_file = device.tmp / "gw-001.report.json"
    report_file.write_text(json.dumps(report))

    expectations = device.tmp / "expect.json"
    code = hub_main(
        [
            "attest",
            "expect",
            "--profile",
            str(device.profile),
            "--from-device-report",
            str(report_file),
            "--out",
            str(expectations),
        ]
    )
    assert code == 0
    expected = json.loads(expectations.read_text())["profiles"]["generic-x86_64"]
    assert set(expected["measurements"]) == {
        "agent-binary",
        "agent-config",
        "os-release",
        "kernel-release",
    }
    assert set(expected["devices"]["gw-001"]) == {"machine-id"}

    bundle = device.tmp / "bundle.cbor"
    build = ["bundle", "build", str(EXAMPLE), "--keys", str(device.keys), "--version", "1"]
    assert hub_main([*build, "--out", str(bundle), "--attestation", str(expectations)]) == 0
    assert device.agent("bundle", "install", str(bundle)) == 0
    capsys.readouterr()

    assert device.attest() == 0
    out = capsys.readouterr().out
    assert "match     agent-config" in out and "verdict PASS" in out

    # Required and not measured by the agent yet: the gate is closed, status exits 1.
    assert device.agent("status", "--json") == 1
    status = _json(capsys)
    attestation = status["attestation"]
    assert isinstance(attestation, dict) and attestation["required"] is True
    assert status["gate"] == "closed"
    assert device.agent("status") == 1
    assert "attest   required; not measured; no hub result" in capsys.readouterr().out

    (device.root / "etc/edge-agent/agent.toml").write_text("[sync]\nstatus_interval_s = 1\n")
    assert device.attest() == 1
    out = capsys.readouterr().out
    assert "mismatch  agent-config" in out and "verdict FAIL" in out


def test_expect_refuses_reports_that_cannot_be_used(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = device.tmp / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    code = hub_main(
        ["attest", "expect", "--profile", str(device.profile), "--from-device-report", str(bad)]
    )
    assert code == 2
    assert "cannot be used" in capsys.readouterr().err
    other = write_profile(device.tmp / "rpi.toml", name="raspberry-pi-4")
    capsys.readouterr()
    assert device.attest("--json") == 0
    report = device.tmp / "report.json"
    report.write_text(capsys.readouterr().out)
    code = hub_main(
        ["attest", "expect", "--profile", str(other), "--from-device-report", str(report)]
    )
    assert code == 2
    assert "measures profile 'generic-x86_64', not 'raspberry-pi-4'" in capsys.readouterr().err


def test_bundle_build_refuses_expectations_for_a_profile_it_does_not_target(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = device.tmp / "foreign.json"
    foreign.write_text(
        json.dumps({"profiles": {"raspberry-pi-4": {"measurements": {"a": ["00" * 32]}}}})
    )
    build = ["bundle", "build", str(EXAMPLE), "--keys", str(device.keys), "--version", "1"]
    out = str(device.tmp / "b.cbor")
    assert hub_main([*build, "--out", out, "--attestation", str(foreign)]) == 2
    assert "targets generic-x86_64" in capsys.readouterr().err
    malformed = device.tmp / "malformed.json"
    malformed.write_text(
        json.dumps({"profiles": {"generic-x86_64": {"measurements": {"a": ["zz"]}}}})
    )
    assert hub_main([*build, "--out", out, "--attestation", str(malformed)]) == 2
    assert "not a SHA-256 digest" in capsys.readouterr().err


def test_fleet_shows_each_devices_attestation_and_time_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub_dir = tmp_path / "hub"
    assert hub_main(["keys", "init", "--out", str(hub_dir / "keys")]) == 0
    root = load_root(hub_dir / "keys" / "root.cbor")
    key = PrivateKey.generate()
    with open_registry(hub_registry(hub_dir)) as registry:
        record = DeviceRecord("gw-001", "eu-1", ("line-a",), "generic-x86_64", key.public)
        registry.add_device(record)
        verifier = Verifier(
            registry, load_role_keys(hub_dir / "keys", Role.VERIFIER, root)[0], root=lambda: root
        )
        challenge = verifier.challenge(record, now=2_000_000_000, ttl_s=60).challenge
        evidence = Evidence("gw-001", challenge.nonce, 0, None, {}, LineageHead(0, b"\x00" * 32))
        verified = read_evidence(sign_evidence(evidence, key), record)
        verifier.verify(record, verified, now=2_000_000_000, ttl_s=60)
    capsys.readouterr()
    assert hub_main(["fleet", "--hub-dir", str(hub_dir), "--json"]) == 0
    row = _json(capsys)["devices"][0]  # type: ignore[index]
    assert row["attestation"]["verdict"] == "fail"
    assert "no bundle this hub published" in row["attestation"]["detail"]
    assert hub_main(["fleet", "--hub-dir", str(hub_dir)]) == 0
    assert "gw-001           FAILED" in capsys.readouterr().out


def test_challenge_without_a_running_hub_says_nothing_was_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub_dir = tmp_path / "hub"
    assert hub_main(["keys", "init", "--out", str(hub_dir / "keys")]) == 0
    with open_registry(hub_registry(hub_dir)) as registry:
        registry.add_device(
            DeviceRecord("gw-001", "eu-1", (), "generic-x86_64", PrivateKey.generate().public)
        )
    assert hub_main(["attest", "challenge", "gw-001", "--hub-dir", str(hub_dir)]) == 3
    assert "nothing sent" in capsys.readouterr().err

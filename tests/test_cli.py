"""The command-line story of the trust-core issue, run as a user would, with real files."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent
from edge_agent.cli import main as agent_main
from hub.cli.main import main as hub_main
from tests.system_tools import require

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policy.yaml"


def _agent(*args: str) -> int:
    return agent_main(list(args))


def _hub(*args: str) -> int:
    return hub_main(list(args))


@pytest.fixture
def enrolled(tmp_path: Path) -> tuple[Path, Path]:
    keys, state = tmp_path / "keys", tmp_path / "state"
    assert _hub("keys", "init", "--out", str(keys)) == 0
    assert (
        _agent(
            "init",
            "--state-dir",
            str(state),
            "--device-id",
            "gw-001",
            "--root",
            str(keys / "root.cbor"),
            "--region",
            "eu-1",
            "--group",
            "line-a",
            "--profile",
            "generic-x86_64",
        )
        == 0
    )
    return keys, state


def _build(keys: Path, out: Path, version: int, *extra: str) -> None:
    assert (
        _hub(
            "bundle",
            "build",
            str(EXAMPLE),
            "--keys",
            str(keys),
            "--version",
            str(version),
            "--out",
            str(out),
            *extra,
        )
        == 0
    )


def _decide(
    state: Path, capsys: pytest.CaptureFixture[str], resource: str, *extra: str
) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = _agent(
        "decide",
        "--state-dir",
        str(state),
        "--subject",
        "svc:camera",
        "--action",
        "exec",
        "--resource",
        resource,
        "--json",
        *extra,
    )
    return code, json.loads(capsys.readouterr().out)


def test_keys_init_writes_pem_keys_mode_0600_and_a_root(tmp_path: Path) -> None:
    assert _hub("keys", "init", "--out", str(tmp_path / "k")) == 0
    private = sorted((tmp_path / "k").glob("*-[0-9].pem"))
    assert [p.name for p in private] == [
        "freshness-1.pem",
        "policy-1.pem",
        "revoke-1.pem",
        "root-1.pem",
        "root-2.pem",
        "root-3.pem",
        "verifier-1.pem",
    ]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in private)
    assert (tmp_path / "k" / "root.cbor").is_file()
    assert _hub("keys", "init", "--out", str(tmp_path / "k")) == 2


def test_decide_exit_codes_and_json(
    enrolled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, state = enrolled
    code, out = _decide(state, capsys, "/opt/camera/bin/capture")
    assert (code, out["reason"]) == (1, "no_bundle")
    _build(keys, tmp_path / "b.cbor", 1)
    assert _agent("bundle", "install", str(tmp_path / "b.cbor"), "--state-dir", str(state)) == 0
    code, out = _decide(state, capsys, "/opt/camera/bin/capture")
    assert (code, out["decision"], out["rule"], out["bundle_version"]) == (
        0,
        "allow",
        "camera-exec",
        1,
    )
    assert isinstance(out["bundle_digest"], str) and len(out["bundle_digest"]) == 64
    code, out = _decide(state, capsys, "/bin/sh")
    assert (code, out["reason"], out["rule"]) == (1, "policy_denied", "no-shells")
    assert (
        _agent(
            "decide",
            "--state-dir",
            str(state),
            "--subject",
            "x",
            "--action",
            "exec",
            "--resource",
            "/x",
            "--context",
            "novalue",
        )
        == 2
    )


def test_decide_text_output_names_reason_rule_and_bundle(
    enrolled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, state = enrolled
    _build(keys, tmp_path / "b.cbor", 1)
    _agent("bundle", "install", str(tmp_path / "b.cbor"), "--state-dir", str(state))
    capsys.readouterr()
    _agent(
        "decide",
        "--state-dir",
        str(state),
        "--subject",
        "svc:camera",
        "--action",
        "exec",
        "--resource",
        "/bin/sh",
    )
    out = capsys.readouterr().out
    assert out.startswith("DENY policy_denied rule=no-shells bundle v1 sha256:")


def test_uninitialised_state_dir_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _agent(
        "decide",
        "--state-dir",
        str(tmp_path / "none"),
        "--subject",
        "s",
        "--action",
        "a",
        "--resource",
        "/r",
    )
    assert code == 3
    assert "edge-agent init" in capsys.readouterr().err


def test_refused_bundle_is_a_clear_error_without_traceback(
    enrolled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, state = enrolled
    (tmp_path / "junk").write_bytes(os.urandom(300))
    capsys.readouterr()
    assert _agent("bundle", "install", str(tmp_path / "junk"), "--state-dir", str(state)) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge-agent: error: not a signed bundle")
    assert "Traceback" not in err


def test_status_shows_version_signer_expiry_and_checks(
    enrolled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, state = enrolled
    _build(keys, tmp_path / "b.cbor", 1)
    _agent("bundle", "install", str(tmp_path / "b.cbor"), "--state-dir", str(state))
    capsys.readouterr()
    assert _agent("status", "--state-dir", str(state), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gate"] == "open"
    assert report["bundle"]["version"] == 1
    assert 86000 < report["bundle"]["expires_in_s"] <= 86400
    assert len(report["bundle"]["signers"]) == 1
    assert [c["check"] for c in report["checks"]] == [
        "state",
        "clock",
        "root",
        "bundle",
        "expiry",
        "attestation",
        "revocation",
    ]
    assert _agent("status", "--state-dir", str(state)) == 0
    assert "gate     OPEN" in capsys.readouterr().out


def test_status_derives_the_gate_from_the_checks_it_shows_at_an_expiry_boundary(
    enrolled: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys, state = enrolled
    _build(keys, tmp_path / "b.cbor", 1)
    _agent("bundle", "install", str(tmp_path / "b.cbor"), "--state-dir", str(state))
    capsys.readouterr()
    assert _agent("status", "--state-dir", str(state), "--json") == 0
    expires_at = json.loads(capsys.readouterr().out)["bundle"]["expires_at"]
    readings = iter([expires_at - 1])
    # Trusted time crosses the bundle's expiry between any two readings of it.
    monkeypatch.setattr(LocalAgent, "trusted_now", lambda self, wall: next(readings, expires_at))
    assert _agent("status", "--state-dir", str(state), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert all(c["passed"] for c in report["checks"])
    assert report["gate"] == "open"


def test_pubkey_prints_the_device_public_key_pem(
    enrolled: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, state = enrolled
    capsys.readouterr()
    assert _agent("pubkey", "--state-dir", str(state)) == 0
    out = capsys.readouterr().out
    assert out.startswith("-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE((state / "device.key").stat().st_mode) == 0o600


def test_state_dir_defaults_to_environment_variable(
    enrolled: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, state = enrolled
    monkeypatch.setenv("EDGE_AGENT_STATE_DIR", str(state))
    capsys.readouterr()
    code = agent_main(["status", "--json"])
    status = json.loads(capsys.readouterr().out)
    assert status["device"]["id"] == "gw-001"
    assert code == (0 if status["gate"] == "open" else 1)


def test_inspect_shows_version_target_signer_rules_and_digest(
    enrolled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, _ = enrolled
    _build(keys, tmp_path / "b.cbor", 7)
    capsys.readouterr()
    assert (
        _hub(
            "bundle",
            "inspect",
            str(tmp_path / "b.cbor"),
            "--json",
            "--root",
            str(keys / "root.cbor"),
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == 7
    assert out["target"]["region"] == "eu-1"
    assert [r["id"] for r in out["rules"]] == ["camera-exec", "sensor-data", "no-shells"]
    assert len(out["verified_signers"]) == 1 and len(out["digest"]) == 64
    assert _hub("bundle", "inspect", str(tmp_path / "b.cbor")) == 0
    assert "camera-exec" in capsys.readouterr().out


def test_root_rotate_then_install_on_device(
    enrolled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, state = enrolled
    assert _hub("root", "rotate", "--keys", str(keys), "--role", "root", "--role", "policy") == 0
    assert _agent("root", "install", str(keys / "root.cbor"), "--state-dir", str(state)) == 0
    _build(keys, tmp_path / "b.cbor", 1)
    assert _agent("bundle", "install", str(tmp_path / "b.cbor"), "--state-dir", str(state)) == 0
    assert _agent("root", "install", str(keys / "root-v1.cbor"), "--state-dir", str(state)) == 1


def test_bundle_signed_by_retired_policy_key_is_refused_after_rotation(
    enrolled: tuple[Path, Path], tmp_path: Path
) -> None:
    keys, state = enrolled
    _build(keys, tmp_path / "old.cbor", 1)
    assert _hub("root", "rotate", "--keys", str(keys), "--role", "policy") == 0
    assert _agent("root", "install", str(keys / "root.cbor"), "--state-dir", str(state)) == 0
    assert _agent("bundle", "install", str(tmp_path / "old.cbor"), "--state-dir", str(state)) == 1


def test_openssl_generated_policy_key_signs_bundles_that_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    openssl = require("openssl", "openssl")
    from edge_agent.protocol.keys import private_key_from_pem
    from edge_agent.protocol.roles import Role
    from hub.cli.operations import init_keys
    from hub.hubdir.keys import load_private_key, role_key_paths

    keys = tmp_path / "keys"
    init_keys(
        keys, root_keys=3, root_threshold=2, now=int(__import__("time").time()), ttl=86400 * 30
    )
    pem = tmp_path / "ops.pem"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(pem)], check=True)
    operator_key = private_key_from_pem(pem.read_text())
    # Make the operator's key the policy key: rotate with it in place of the generated one.
    for path in role_key_paths(keys, Role.POLICY):
        path.unlink()
    shutil.copy(pem, keys / "policy-1.pem")
    assert load_private_key(keys / "policy-1.pem") == operator_key
    assert _hub("root", "rotate", "--keys", str(keys), "--role", "root") == 0


def test_decide_has_no_way_to_change_now() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "decide", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--now" not in result.stdout and "time" not in result.stdout.lower()

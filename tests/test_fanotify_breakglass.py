"""Break-glass: only a verifier-signed token for this device, inside its window, opens audit
mode, never while the device is revoked; installed with ``edge-agent break-glass`` it is
picked up by a running enforcer and every exec it lets through is logged under its name."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.policy.compiler import policy_payload
from edge_agent.protocol import cose
from edge_agent.protocol.breakglass import (
    MAX_WINDOW_S,
    BreakGlassError,
    BreakGlassToken,
    break_glass_payload,
    sign_break_glass,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.roles import Role, content_type, external_aad
from edge_agent.trust.breakglass import verify_break_glass
from edge_agent.trust.state import TrustState
from tests.factory import DAY, DEVICE, HubSim
from tests.fanotify_helpers import (
    REPO,
    Sandbox,
    allow_rule,
    can_enforce,
    decisions,
    execute,
    run_in_sandbox,
)

HERE = "tests.test_fanotify_breakglass"


@pytest.fixture
def hub() -> HubSim:
    return HubSim()


@pytest.fixture
def state_dir(tmp_path: Path, hub: HubSim) -> Path:
    wall = int(time.time())
    root = hub.root_bytes(issued_at=wall - DAY, expires_at=wall + 365 * DAY)
    init_state_dir(tmp_path / "state", DEVICE, root, wall)
    bundle = hub.bundle(
        1,
        policy=policy_payload(groups={}, workloads={}, rules=[]),
        issued_at=wall - 60,
        expires_at=wall + DAY,
    )
    with LocalAgent.open(tmp_path / "state") as agent:
        agent.install_bundle(bundle, wall)
    return tmp_path / "state"


@pytest.fixture
def agent(state_dir: Path) -> Iterator[LocalAgent]:
    with LocalAgent.open(state_dir) as opened:
        yield opened


def _token(
    hub: HubSim,
    *,
    device: str = DEVICE.device_id,
    issued_at: int | None = None,
    window_s: int = 600,
    signers: list[PrivateKey] | None = None,
    scope_device: str | None = None,
) -> bytes:
    issued = int(time.time()) if issued_at is None else issued_at
    payload = break_glass_payload(
        BreakGlassToken(device, secrets.token_bytes(16), issued, issued + window_s, "site visit")
    )
    return sign_break_glass(
        payload,
        device_id=scope_device or device,
        signers=signers or hub.online_keys[Role.VERIFIER],
    )


def _state(agent: LocalAgent) -> TrustState:
    return agent.state


def test_a_verifier_signed_token_for_this_device_inside_its_window_is_accepted(
    hub: HubSim, agent: LocalAgent
) -> None:
    now = int(time.time())
    token = verify_break_glass(_token(hub), state=_state(agent), now=now)
    assert token.device == DEVICE.device_id
    assert token.expires_at - token.issued_at == 600
    assert token.reason == "site visit"


@pytest.mark.parametrize(
    ("build", "fault"),
    [
        (lambda hub: _token(hub, device="gw-002"), "do not verify for device 'gw-001'"),
        (lambda hub: _token(hub, device="gw-002", scope_device="gw-001"), "for device 'gw-002'"),
        (lambda hub: _token(hub, issued_at=int(time.time()) - 700), "expired"),
        (lambda hub: _token(hub, window_s=MAX_WINDOW_S + 1), "window must be"),
        (lambda hub: _token(hub, issued_at=int(time.time()) + 3600), "ahead of this device"),
        (lambda hub: _token(hub, signers=hub.online_keys[Role.REVOKE]), "verif"),
        (lambda hub: _token(hub, signers=[PrivateKey.generate()]), "verif|no key"),
    ],
    ids=[
        "other-device",
        "other-device-in-payload",
        "expired",
        "window-too-long",
        "issued-in-the-future",
        "revoke-role-key",
        "unknown-key",
    ],
)
def test_tokens_for_another_device_outside_their_window_or_badly_signed_are_refused(
    hub: HubSim, agent: LocalAgent, build: object, fault: str
) -> None:
    assert callable(build)
    with pytest.raises(BreakGlassError, match=fault):
        verify_break_glass(build(hub), state=_state(agent), now=int(time.time()))


def test_an_attestation_result_signature_cannot_pass_as_a_break_glass_token(
    hub: HubSim, agent: LocalAgent
) -> None:
    now = int(time.time())
    payload = break_glass_payload(
        BreakGlassToken(DEVICE.device_id, bytes(16), now, now + 600, "reuse")
    )
    forged = cose.sign(
        payload,
        keys=hub.online_keys[Role.VERIFIER],
        content_type=content_type(Role.VERIFIER),
        external_aad=external_aad(Role.VERIFIER, DEVICE.device_id),
    )
    with pytest.raises(BreakGlassError, match="refused"):
        verify_break_glass(forged, state=_state(agent), now=now)


def test_a_revoked_device_honours_no_break_glass_token(hub: HubSim, agent: LocalAgent) -> None:
    wall = int(time.time())
    agent.install_revocation(hub.revocation(1, issued_at=wall), wall)
    with pytest.raises(BreakGlassError, match="revocation outranks break-glass"):
        verify_break_glass(_token(hub), state=_state(agent), now=wall)


def test_a_token_signed_by_a_revoked_verifier_key_is_refused(
    hub: HubSim, agent: LocalAgent
) -> None:
    wall = int(time.time())
    key = hub.online_keys[Role.VERIFIER][0]
    revocation = hub.revocation(1, kind="key", value=key.public.key_id.hex(), issued_at=wall)
    agent.install_revocation(revocation, wall)
    with pytest.raises(BreakGlassError, match="0 valid verifier key"):
        verify_break_glass(_token(hub), state=_state(agent), now=wall)


def test_setting_the_clock_back_below_the_trusted_floor_cannot_revive_an_old_token(
    hub: HubSim, agent: LocalAgent
) -> None:
    floor = agent.state.floor.seconds
    old = _token(hub, issued_at=floor - 700)
    with pytest.raises(BreakGlassError, match="expired"):
        verify_break_glass(old, state=_state(agent), now=floor - 650)


def test_the_cli_installs_a_good_token_and_refuses_a_bad_one(
    hub: HubSim, state_dir: Path, tmp_path: Path
) -> None:
    good, bad = tmp_path / "good.cose", tmp_path / "bad.cose"
    good.write_bytes(_token(hub))
    bad.write_bytes(_token(hub, device="gw-002", scope_device="gw-001"))
    command = [sys.executable, "-m", "edge_agent.cli", "break-glass", "--state-dir", str(state_dir)]
    refused = subprocess.run([*command, str(bad)], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 1
    assert "for device 'gw-002'" in refused.stderr
    assert not (state_dir / "break-glass.cose").exists()
    done = subprocess.run([*command, str(good)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "runs in audit" in done.stdout
    assert (state_dir / "break-glass.cose").read_bytes() == good.read_bytes()
    assert os.stat(state_dir / "break-glass.cose").st_mode & 0o777 == 0o600


def scenario_break_glass(sandbox: Sandbox) -> dict[str, object]:
    sandbox.enroll([allow_rule("workloads", f"{sandbox.work}/ok/*")])
    stranger = sandbox.binary("other/tool")
    process = sandbox.start_enforce("--json")
    before = execute(stranger)
    token = sandbox.var / "token.cose"
    token.write_bytes(_token(sandbox.hub))
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "break-glass",
            "--state-dir",
            str(sandbox.state),
            str(token),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    during = before
    deadline = time.monotonic() + 20
    while during != {"rc": 0, "out": ""} and time.monotonic() < deadline:
        time.sleep(0.2)
        during = execute(stranger)
    _, stats, _ = sandbox.stop(process)
    entries = decisions(sandbox.state)
    return {
        "installed": installed.returncode,
        "before": before,
        "during": during,
        "last_entry": (entries[-1]["allowed"], entries[-1]["detail"]),
        "stats": stats,
    }


@pytest.mark.skipif(not can_enforce(), reason="needs root, fanotify and unshare")
def test_an_installed_token_puts_a_running_enforcer_in_audit_and_logs_under_its_name(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_break_glass", tmp_path)
    assert result["installed"] == 0
    assert result["before"] == {"errno": "EPERM"}
    assert result["during"] == {"rc": 0, "out": ""}
    allowed, detail = result["last_entry"]  # type: ignore[misc]
    assert allowed is False
    assert detail.startswith("break-glass ")
    assert "enforce would have denied it" in detail
    assert '"effective_mode": "audit"' in str(result["stats"])

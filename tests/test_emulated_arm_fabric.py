"""The packaged ARM agent's ``edge-agent run`` against an amd64 ``edge-hub serve`` over MQTT.

The hub (this checkout's, native, with its embedded amqtt broker on 127.0.0.1) registers an
emulated gateway, pushes a bundle; the gateway installs it, answers this process through its
decision socket, ships its lineage, which the hub verifies and acknowledges, and, once the
hub is gone, lets a short-TTL bundle expire into deny. Every step runs the command a user
would; only the agent runs under qemu-user (tests/arm_emulation.py).

The policy names its workload by ``uid:`` (the caller here is this test process): the
emulated agent reads its callers' ``/proc/PID/exe`` correctly, but under emulation nothing
else about it may rely on executables. Marked ``emulated``: only ``make test-arm`` runs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edge_agent.client import decide
from edge_agent.socket.wire import DecisionResult
from tests.arm_emulation import TARGETS, EmulatedAgent, emulated_agent

pytestmark = [pytest.mark.slow, pytest.mark.emulated]

HUB = [sys.executable, "-m", "hub.cli.main"]
# Emulated start-up, install and status reports take seconds each on a shared x86 core.
WAIT_S = 90.0
SOCKET_TIMEOUT_S = 10.0
SHORT_TTL = "30s"
POLICY = """\
target: {region: eu-1, groups: [line-a], profiles: [PROFILE]}
ttl: 24h
workloads:
  svc:camera: ["uid:UID"]
rules:
  - id: camera-exec
    effect: allow
    subjects: [svc:camera]
    actions: [exec]
    resources: ["/opt/camera/bin/*"]
  - id: no-shells
    effect: deny
    subjects: ["*"]
    actions: [exec]
    resources: ["/bin/sh", "/usr/bin/*sh"]
"""


def _hub(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*HUB, *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def _fabric(hub_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """An operator command on the hub directory ``hub_dir``."""
    return _hub(*args, "--hub-dir", str(hub_dir))


def _wait(condition: Callable[[], bool], what: str, gateway: subprocess.Popen[str]) -> None:
    """Until ``condition`` holds; fails at once when the agent has stopped."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if gateway.poll() is not None:
            raise AssertionError(f"the agent exited {gateway.returncode} waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S:g} s waiting for {what}")
        time.sleep(0.2)


@contextmanager
def _process(command: list[str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[str]]:
    """``command`` running until the block ends (SIGTERM, then wait); its stderr in ``log``."""
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=out, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            process.communicate(timeout=60)


def _fleet_row(hub_dir: Path) -> dict[str, object]:
    rows: list[dict[str, object]] = json.loads(_fabric(hub_dir, "fleet", "--json").stdout)[
        "devices"
    ]
    return rows[0]


def _ask(sock: Path, resource: str) -> DecisionResult:
    return decide(action="exec", resource=resource, path=sock, timeout=SOCKET_TIMEOUT_S)


@pytest.fixture(params=sorted(TARGETS))
def agent(request: pytest.FixtureRequest, tmp_path: Path) -> EmulatedAgent:
    arch: str = request.param
    return emulated_agent(arch, tmp_path / f"deb-{arch}")


def _enrol(agent: EmulatedAgent, work: Path, hub_dir: Path, broker: str) -> None:
    init = ["init", "--state-dir", "state", "--device-id", "gw-arm", "--root"]
    init += [str(hub_dir / "keys" / "root.cbor"), "--region", "eu-1", "--group", "line-a"]
    agent.run(work, *init, "--profile", agent.profile, "--broker", broker)
    (work / "gw-arm.pub").write_text(agent.run(work, "pubkey", "--state-dir", "state").stdout)
    add = ["device", "add", "gw-arm", "--pubkey", str(work / "gw-arm.pub"), "--region", "eu-1"]
    _fabric(hub_dir, *add, "--group", "line-a", "--profile", agent.profile)


def _push(hub_dir: Path, work: Path, version: int, *extra: str) -> None:
    out = work / f"bundle-v{version}.cbor"
    build = ["bundle", "build", str(work / "policy.yaml"), "--keys", str(hub_dir / "keys")]
    _hub(*build, "--version", str(version), "--out", str(out), *extra)
    assert "published" in _fabric(hub_dir, "bundle", "push", str(out)).stdout


def test_emulated_agent_run_syncs_with_the_amd64_hub_and_fails_closed_at_expiry(
    agent: EmulatedAgent, tmp_path: Path
) -> None:
    hub_dir, sock = tmp_path / "hub", tmp_path / "state" / "agent.sock"
    policy = POLICY.replace("PROFILE", agent.profile).replace("UID", str(os.getuid()))
    (tmp_path / "policy.yaml").write_text(policy)
    _hub("keys", "init", "--out", str(hub_dir / "keys"))
    serve = [*HUB, "serve", "--hub-dir", str(hub_dir), "--port", "0"]
    serve += ["--freshness-interval", "1s", "--token-ttl", "5s"]
    with _process(serve, tmp_path, tmp_path / "hub.log") as hub:
        assert hub.stdout is not None
        banner = hub.stdout.readline()
        assert banner.startswith("edge-hub serve: broker mqtt://127.0.0.1:"), banner
        _enrol(agent, tmp_path, hub_dir, banner.split()[3])
        run = agent.command("run", "--state-dir", "state", "--socket", str(sock))
        with _process(run, tmp_path, tmp_path / "agent.log") as gateway:
            _wait(sock.exists, "the emulated agent's decision socket", gateway)
            assert _ask(sock, "/opt/camera/bin/capture").reason == "no_bundle"

            _push(hub_dir, tmp_path, 1)
            _wait(lambda: _ask(sock, "/bin/sh").bundle_version == 1, "bundle v1 installed", gateway)
            allowed = _ask(sock, "/opt/camera/bin/capture")
            assert (allowed.allowed, allowed.rule) == (True, "camera-exec")
            assert f"uid:{os.getuid()}" in allowed.selectors
            denied = _ask(sock, "/bin/sh")
            assert (denied.allowed, denied.reason) == (False, "policy_denied")

            def lineage_acked() -> bool:
                """The device's whole log (its last status says its size) stored at the hub."""
                row, stored = _fleet_row(hub_dir), _lineage(hub_dir)["size"]
                return row["bundle_version"] == 1 and row["lineage_device"] == stored > 0

            _wait(lineage_acked, "the lineage verified and acknowledged by the hub", gateway)
            row = _fleet_row(hub_dir)
            assert (row["device"], row["gate"], row["fork"]) == ("gw-arm", "open", False)
            assert row["rejections"] == {}
            assert row["lineage_acked"] == row["lineage_device"]
            entries: list[dict[str, object]] = _lineage(hub_dir)["entries"]
            kinds = {entry["kind"] for entry in entries}
            assert {"bundle_installed", "decision"} <= kinds

            _push(hub_dir, tmp_path, 2, "--ttl", SHORT_TTL)
            _wait(lambda: _ask(sock, "/bin/sh").bundle_version == 2, "bundle v2 installed", gateway)
            os.kill(hub.pid, signal.SIGTERM)
            assert hub.wait(timeout=60) == 0
            assert _ask(sock, "/opt/camera/bin/capture").allowed
            _wait(
                lambda: _ask(sock, "/opt/camera/bin/capture").reason == "bundle_expired",
                f"the {SHORT_TTL} bundle to expire with the hub gone",
                gateway,
            )
            assert not _ask(sock, "/opt/camera/bin/capture").allowed
            os.kill(gateway.pid, signal.SIGTERM)
            assert gateway.wait(timeout=60) == 0, (tmp_path / "agent.log").read_text()
    assert not sock.exists()
    assert "lineage OK" in agent.run(tmp_path, "log", "verify", "--state-dir", "state").stdout


def _lineage(hub_dir: Path) -> dict[str, Any]:
    """The gateway's log as the hub stored it: ``lineage show`` verifies the chain and the
    tree against the device's signed checkpoint first (exit 1 otherwise)."""
    shown = _fabric(hub_dir, "lineage", "show", "gw-arm", "--limit", "10000", "--json").stdout
    view: dict[str, Any] = json.loads(shown)
    return view

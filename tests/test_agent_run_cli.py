"""``edge-agent run`` as a user starts it: a process with MQTT sync and the decision socket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.client import decide
from edge_agent.protocol import topics
from edge_agent.support.mqtt import connect
from tests.brokers import mosquitto_broker
from tests.factory import DAY, HubSim

AGENT = [sys.executable, "-m", "edge_agent.cli"]
WAIT_S = 20.0


def _init(tmp_path: Path, hub: HubSim, *extra: str) -> tuple[Path, int]:
    root = tmp_path / "root.cbor"
    root.write_bytes(hub.root_bytes())
    state = tmp_path / "state"
    result = subprocess.run(
        [
            *AGENT,
            "init",
            "--state-dir",
            str(state),
            "--device-id",
            "gw-001",
            "--root",
            str(root),
            "--region",
            "eu-1",
            "--group",
            "line-a",
            "--profile",
            "generic-x86_64",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return state, result.returncode


async def _wait(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_run_syncs_serves_the_socket_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    hub = HubSim()
    async with mosquitto_broker() as broker:
        state, code = _init(tmp_path, hub, "--broker", broker.url)
        assert code == 0
        sock = state / "agent.sock"
        process = subprocess.Popen(
            [*AGENT, "run", "--state-dir", str(state), "--socket", str(sock)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            await _wait(sock.exists, "the decision socket")
            answer = decide(action="exec", resource="/opt/camera/bin/capture", path=sock)
            assert answer.reason == "no_bundle"
            now = int(time.time())
            bundle = hub.bundle(1, issued_at=now - 60, expires_at=now + DAY)
            channel = topics.Channel(topics.ChannelKind.GROUP, "line-a")
            async with connect(broker.settings, client_id="test-hub") as connection:
                await connection.publish(topics.bundle_topic("eu-1", channel), bundle, retain=True)

            def installed() -> bool:
                reason = decide(action="exec", resource="/bin/sh", path=sock).reason
                return reason != "no_bundle"

            await _wait(installed, "the pushed bundle")
            denied = decide(action="exec", resource="/bin/sh", path=sock)
            assert (denied.allowed, denied.reason) == (False, "policy_denied")
            assert denied.subject.startswith("exe:")
        finally:
            os.kill(process.pid, signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert not sock.exists()
    verify = subprocess.run(
        [*AGENT, "log", "verify", "--state-dir", str(state)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_init_refuses_a_device_id_that_cannot_be_a_topic_level(tmp_path: Path) -> None:
    _, code = _init(tmp_path, HubSim(), "--device-id", "gw/001")
    assert code == 2


def test_init_refuses_a_malformed_broker_url(tmp_path: Path) -> None:
    _, code = _init(tmp_path, HubSim(), "--broker", "http://hub:80")
    assert code == 2
    assert not (tmp_path / "state" / "state.db").exists()


def test_run_without_a_broker_says_how_to_configure_one(tmp_path: Path) -> None:
    state, code = _init(tmp_path, HubSim())
    assert code == 0
    result = subprocess.run(
        [*AGENT, "run", "--state-dir", str(state), "--socket", str(state / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--broker" in result.stderr


def test_run_refuses_an_unknown_config_field(tmp_path: Path) -> None:
    state, _ = _init(tmp_path, HubSim(), "--broker", "mqtt://127.0.0.1:1")
    config = tmp_path / "agent.toml"
    config.write_text("[sync]\nship_every = 3\n")
    result = subprocess.run(
        [*AGENT, "run", "--state-dir", str(state), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "sync.ship_every" in result.stderr


def _datagrams(sock: socket.socket, seconds: float) -> list[str]:
    messages = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return messages


def test_run_notifies_systemd_ready_status_and_watchdog_from_the_decision_loop(
    tmp_path: Path,
) -> None:
    state, _ = _init(tmp_path, HubSim(), "--broker", "mqtt://127.0.0.1:1")
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "600000"}
        sock = state / "agent.sock"
        process = subprocess.Popen(
            [*AGENT, "run", "--state-dir", str(state), "--socket", str(sock)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            first = _datagrams(notify, 15.0)[:1]
            assert first and first[0].startswith("READY=1")
            assert "STATUS=no bundle; gate CLOSED: no_bundle" in first[0]
            assert sock.exists(), "READY came before the agent could decide"
            pings = [m for m in _datagrams(notify, 2.0) if m == "WATCHDOG=1"]
            assert len(pings) >= 3
            os.kill(process.pid, signal.SIGSTOP)
            try:
                _datagrams(notify, 0.5)
                assert _datagrams(notify, 1.5) == []
            finally:
                os.kill(process.pid, signal.SIGCONT)
            assert "WATCHDOG=1" in _datagrams(notify, 2.0)
            os.kill(process.pid, signal.SIGTERM)
            assert any(m.startswith("STOPPING=1") for m in _datagrams(notify, 10.0))
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def test_run_logs_one_json_object_per_line_with_log_format_json(tmp_path: Path) -> None:
    state, _ = _init(tmp_path, HubSim(), "--broker", "mqtt://127.0.0.1:1")
    process = subprocess.Popen(
        [
            *AGENT,
            "run",
            "--state-dir",
            str(state),
            "--socket",
            str(state / "s"),
            "--log-format",
            "json",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("reconnecting" in x for x in lines):
            lines.append(process.stderr.readline())
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)
    records = [json.loads(line) for line in lines if line.strip()]
    assert any("reconnecting" in record["msg"] for record in records)
    assert all({"level", "logger", "msg"} <= set(record) for record in records)


def test_run_refuses_exec_enforcement_without_mounts(tmp_path: Path) -> None:
    state, _ = _init(tmp_path, HubSim(), "--broker", "mqtt://127.0.0.1:1")
    result = subprocess.run(
        [*AGENT, "run", "--state-dir", str(state), "--exec-enforcement", "enforce"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--exec-mounts" in result.stderr


def test_run_refuses_to_mark_the_root_filesystem(tmp_path: Path) -> None:
    state, _ = _init(tmp_path, HubSim(), "--broker", "mqtt://127.0.0.1:1")
    result = subprocess.run(
        [
            *AGENT,
            "run",
            "--state-dir",
            str(state),
            "--socket",
            str(state / "s"),
            "--exec-enforcement",
            "enforce",
            "--exec-mounts",
            "/",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert not (state / "s").exists()

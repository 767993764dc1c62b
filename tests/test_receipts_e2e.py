"""End to end over MQTT: a decision's receipt, verified with nothing but public keys.

A real hub service and a real agent daemon on the embedded amqtt broker: the bundle is
pushed through the hub, a decision is made through ``edge-agent decide`` (the CLI, a
process of its own on the daemon's state directory), the daemon ships it, the hub verifies
the batch, cosigns the checkpoint as witness and acknowledges it with the cosigned note,
which the device keeps. Then, every tool a process of its own:

- at the hub, ``edge-hub lineage receipt`` writes the receipt (signed by the witness key);
- on the device, ``edge-agent log receipt`` writes its own (signed by the device key,
  carrying the witness's cosignature it kept);
- an auditor's directory holding only the device's public key, the hub witness's public
  key and ``root.cbor`` (and the receipt) runs ``edge-verify receipt`` on each: exit 0,
  every step held, the cosignature among them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.receipt import Step
from edge_agent.sync.daemon import AgentDaemon
from hub.hubdir.keys import ROOT_FILE
from hub.service.server import HubService
from tests.agent_fleet import agent_fleet
from tests.brokers import amqtt_broker
from tests.hub_support import hub_config, make_bundle, make_hub_dir, run_cli, wait_for

pytestmark = pytest.mark.asyncio

AGENT = (sys.executable, "-m", "edge_agent.cli")
HUB = (sys.executable, "-m", "hub.cli.main")
VERIFY = (sys.executable, "-m", "edge_agent.verify.cli")
WAIT_S = 30.0
TOOL_TIMEOUT_S = 120.0
ALL_STEPS = {str(step) for step in Step}
"""What the hub's receipt proves (the bundle embedded, checked under the policy role); the
device's own receipt carries no bundle, so that step alone is skipped there."""


async def _tool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run one of the command-line tools as a process of its own (off the event loop, so
    the broker, hub and daemon go on serving meanwhile)."""
    return await asyncio.to_thread(
        subprocess.run,
        list(args),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def _last_decision(daemon: AgentDaemon) -> int:
    lineage = daemon.agent.lineage
    assert lineage is not None and lineage.store is not None
    for seq, data, _ in lineage.store.iter_rows(0, limit=10, descending=True):
        if decode_entry(data, seq).kind is Kind.DECISION:
            return seq
    raise AssertionError("no decision in the device's lineage")


def _acked(daemon: AgentDaemon) -> bool:
    """The hub acknowledged every entry the log holds (the decision included: the CLI
    committed it before it returned)."""
    lineage = daemon.agent.lineage
    assert lineage is not None
    return lineage.acknowledged == lineage.size


async def _verified(auditor: Path, receipt: Path) -> dict[str, Any]:
    """``edge-verify receipt`` in the auditor's directory, with its keys; the JSON report."""
    shutil.copy(receipt, auditor / receipt.name)
    assert sorted(p.name for p in auditor.iterdir()) == sorted(
        ["device.pub", "hub.pub", "root.cbor", receipt.name]
    )
    done = await _tool(
        *VERIFY,
        "receipt",
        receipt.name,
        "--device-key",
        "device.pub",
        "--witness-key",
        "hub.pub",
        "--root",
        "root.cbor",
        "--json",
        cwd=auditor,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (auditor / receipt.name).unlink()
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["ok"] is True
    return report


async def test_a_decision_receipt_from_the_hub_and_the_device_verifies_with_public_keys_only(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    state = tmp_path / "gw-001"
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    async with (
        amqtt_broker() as broker,
        HubService(hub_config(setup, broker)) as hub,
        agent_fleet(tmp_path, setup.root.raw, broker.settings, setup.registry) as fleet,
    ):
        await hub.wait_ready()
        daemon = fleet.add("gw-001")
        bundle = tmp_path / "bundle-v1.cbor"
        bundle.write_bytes(make_bundle(setup.keys, 1))
        assert await run_cli("bundle", "push", str(bundle), "--hub-dir", str(setup.path)) == 0
        await wait_for(lambda: daemon.agent.state.bundle is not None, WAIT_S)

        decided = await _tool(
            *AGENT,
            "decide",
            "--state-dir",
            str(state),
            "--subject",
            "svc:camera",
            "--action",
            "exec",
            "--resource",
            "/opt/camera/bin/capture",
        )
        assert decided.returncode == 0, decided.stdout + decided.stderr
        seq = _last_decision(daemon)
        await wait_for(lambda: _acked(daemon), WAIT_S)

        at_hub, on_device = tmp_path / "at-hub.receipt", tmp_path / "on-device.receipt"
        hub_dir = ("--hub-dir", str(setup.path))
        exported = await _tool(
            *HUB, "keys", "export", "witness", "--out", str(auditor / "hub.pub"), *hub_dir
        )
        assert exported.returncode == 0, exported.stderr
        fetched = await _tool(
            *HUB,
            "lineage",
            "receipt",
            "gw-001",
            str(seq),
            "--include-bundle",
            "--out",
            str(at_hub),
            *hub_dir,
        )
        assert fetched.returncode == 0, fetched.stderr
        made = await _tool(
            *AGENT, "log", "receipt", str(seq), "--state-dir", str(state), "--out", str(on_device)
        )
        assert made.returncode == 0, made.stderr
        assert "cosigned by the hub witness" in made.stdout
        pubkey = await _tool(*AGENT, "pubkey", "--state-dir", str(state))
        assert pubkey.returncode == 0, pubkey.stderr

    (auditor / "device.pub").write_text(pubkey.stdout)
    shutil.copy(setup.keys / ROOT_FILE, auditor / "root.cbor")
    for receipt, proven in ((at_hub, ALL_STEPS), (on_device, ALL_STEPS - {"bundle"})):
        report = await _verified(auditor, receipt)
        held = {step["step"] for step in report["steps"] if step["status"] == "held"}
        assert held == proven, report["steps"]
        assert report["entry"]["seq"] == seq and report["entry"]["kind"] == "decision"
        assert report["entry"]["request"]["resource"] == "/opt/camera/bin/capture"
        assert report["cosignature"] is not None

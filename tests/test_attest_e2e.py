"""Attestation through the whole fabric: ``HubService`` and a real agent daemon over a broker.

Intervals are short (the agent re-measures every second, the hub challenges every second,
results live three seconds), so each scenario takes a few seconds. Deadlines bound each wait;
the tamper case's deadline is one re-measure interval plus scheduling slack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.attest.config import AttestationConfig, Attestor, open_attestor
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol import topics
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.sync.daemon import AgentDaemon
from edge_agent.trust.gate import Reason
from hub.cli.attest import build_expectations
from hub.cli.operations import build_bundle
from hub.core.bundles import with_expectations
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root
from hub.registry import DeviceRecord
from hub.registry.backends import open_registry
from hub.service.config import HubConfig
from hub.service.server import HubService
from tests.agent_fleet import FAST_SYNC, stop_daemon
from tests.attest_support import make_root, write_profile
from tests.brokers import amqtt_broker, mosquitto_broker
from tests.hub_support import POLICY, HubSetup, make_hub_dir, run_cli, wait_for, watching

pytestmark = pytest.mark.asyncio

REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")
INTERVAL = 1
RESULT_TTL = 3
WAIT_S = 30.0
SLACK_S = 2.0
"""Scheduling slack on top of one interval: a loaded CI machine, the thread hop to measure."""


def _now() -> int:
    return int(time.time())


@dataclass
class Fixture:
    setup: HubSetup
    broker: BrokerSettings
    root: Path
    attestor: Attestor
    daemon: AgentDaemon

    def hub(self, attest_interval_s: int = INTERVAL, attest_ttl_s: int = RESULT_TTL) -> HubService:
        return HubService(
            HubConfig(
                self.setup.path,
                registry=self.setup.url,
                broker=self.broker,
                freshness_interval_s=0.3,
                token_ttl_s=5,
                attest_interval_s=attest_interval_s,
                attest_ttl_s=attest_ttl_s,
                attest_retry_s=0.5,
            )
        )

    def reason(self) -> Reason:
        return self.daemon.agent.decide(REQUEST, _now()).reason

    def transitions(self) -> list[tuple[Kind, bool]]:
        lineage = self.daemon.agent.lineage
        assert lineage is not None and lineage.store is not None
        entries = [decode_entry(data) for _, data, _ in lineage.store.iter_rows()]
        return [(e.kind, e.allowed) for e in entries if e.kind is not Kind.DECISION]


async def _push_attested_bundle(setup: HubSetup, tmp_path: Path, attestor: Attestor) -> None:
    """Build a bundle carrying expectations from the device's own first measurement (as a
    golden device), sign it with the hub's policy key and push it through the CLI."""
    keys = setup.keys
    root = load_root(keys / ROOT_FILE)
    signers = load_role_keys(keys, Role.POLICY, root)
    source = load_policy_source(POLICY.format(group="line-a", extra=""))
    _, bundle = build_bundle(source, root=root, signers=signers, version=1, ttl=None, now=_now())
    expectations = build_expectations(attestor.profile, [("gw-001", attestor.first.digests)])
    data, _ = with_expectations(bundle, source.policy, expectations, root=root, signers=signers)
    path = tmp_path / "bundle-v1.cbor"
    path.write_bytes(data)
    assert await run_cli("bundle", "push", str(path), "--hub-dir", str(setup.path)) == 0


@contextlib.asynccontextmanager
async def _fabric(tmp_path: Path, broker: BrokerSettings) -> AsyncIterator[Fixture]:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    identity = DeviceIdentity("gw-001", "eu-1", ("line-a",), "generic-x86_64")
    state_dir = tmp_path / "gw-001"
    public = init_state_dir(state_dir, identity, setup.root.raw, _now())
    with open_registry(setup.registry) as registry:
        registry.add_device(DeviceRecord("gw-001", "eu-1", ("line-a",), "generic-x86_64", public))
    root = make_root(tmp_path / "device-root")
    config = AttestationConfig(
        profile_file=str(write_profile(tmp_path / "profile.toml", INTERVAL)),
        measure_root=str(root),
    )
    attestor = open_attestor(config, identity, machine="x86_64")
    assert attestor is not None
    await _push_attested_bundle(setup, tmp_path, attestor)
    daemon = AgentDaemon(LocalAgent.open(state_dir), broker, FAST_SYNC, attestor=attestor)
    task = asyncio.create_task(daemon.run(), name="gw-001")
    try:
        yield Fixture(setup, broker, root, attestor, daemon)
    finally:
        await stop_daemon(daemon, task)


@contextlib.asynccontextmanager
async def _broker(kind: str) -> AsyncIterator[BrokerSettings]:
    if kind == "amqtt":
        async with amqtt_broker() as amqtt:
            yield amqtt.settings
    else:
        async with mosquitto_broker() as mosquitto:
            yield mosquitto.settings


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto"])
async def test_tamper_denies_within_one_interval_and_a_fresh_challenge_restores(
    tmp_path: Path, kind: str
) -> None:
    async with _broker(kind) as broker, _fabric(tmp_path, broker) as fx, fx.hub() as hub:
        await hub.wait_ready()
        await wait_for(lambda: fx.reason() is Reason.ALLOWED, WAIT_S)
        config = fx.root / "etc/edge-agent/agent.toml"
        original = config.read_bytes()
        config.write_bytes(original + b"# tampered\n")
        await wait_for(lambda: fx.reason() is Reason.ATTESTATION_FAILED, INTERVAL + SLACK_S)
        assert (Kind.ATTESTATION_FAILED, True) in fx.transitions()
        await wait_for(
            lambda: (
                {r.device_id: r.gate for r in hub.registry.fleet()}["gw-001"]
                == "attestation_failed"
            ),
            WAIT_S,
        )
        await wait_for(
            lambda: (
                (record := hub.registry.attestation("gw-001")) is not None
                and record.verdict == "fail"
            ),
            WAIT_S,
        )
        failed = hub.registry.attestation("gw-001")
        assert failed is not None and "agent-config" in failed.detail
        config.write_bytes(original)
        await wait_for(lambda: fx.reason() is Reason.ALLOWED, WAIT_S)
        passed = hub.registry.attestation("gw-001")
        assert passed is not None and passed.verdict == "pass" and passed.nonce != failed.nonce
        assert fx.transitions()[-1] == (Kind.ATTESTATION_PASSED, True)


async def test_hub_gone_past_the_result_ttl_goes_stale_after_deciding_offline(
    tmp_path: Path,
) -> None:
    async with amqtt_broker() as broker, _fabric(tmp_path, broker.settings) as fx:
        async with fx.hub() as hub:
            await hub.wait_ready()
            await wait_for(lambda: fx.reason() is Reason.ALLOWED, WAIT_S)
        offline_allowed = 0
        async with asyncio.timeout(RESULT_TTL + SLACK_S + 1):
            while (reason := fx.reason()) is Reason.ALLOWED:
                offline_allowed += 1
                await asyncio.sleep(0.1)
        assert reason is Reason.ATTESTATION_STALE
        assert offline_allowed > 0
        await wait_for(lambda: (Kind.ATTESTATION_STALE, True) in fx.transitions(), WAIT_S)
        async with fx.hub() as hub:
            await hub.wait_ready()
            await wait_for(lambda: fx.reason() is Reason.ALLOWED, WAIT_S)


async def test_evidence_replayed_over_mqtt_is_refused_by_the_hub(tmp_path: Path) -> None:
    async with amqtt_broker() as broker, _fabric(tmp_path, broker.settings) as fx:
        evidence_topic = topics.device_topic("eu-1", "gw-001", topics.DeviceLeaf.EVIDENCE)
        async with watching(broker.settings, [evidence_topic]) as watcher, fx.hub() as hub:
            await hub.wait_ready()
            captured = await watcher.next(evidence_topic)
            await wait_for(lambda: hub.registry.attestation("gw-001") is not None, WAIT_S)
            await watcher.connection.publish(evidence_topic, captured.payload, qos=1)
            await wait_for(lambda: hub.stats.rejections.get("evidence_replay", 0) >= 1, WAIT_S)


async def test_an_operator_challenges_on_demand_and_takes_a_golden_device_as_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The hub's own challenges come a minute apart here: `attest challenge --wait` waits for
    # the outcome of its nonce, which a round re-challenging the device replaces (the
    # registry keeps a device's last outcome), and at a round a second a loaded machine let
    # the replacement come before the command's next look.
    async with (
        amqtt_broker() as broker,
        _fabric(tmp_path, broker.settings) as fx,
        fx.hub(attest_interval_s=60, attest_ttl_s=120) as hub,
    ):
        await hub.wait_ready()
        await wait_for(lambda: fx.reason() is Reason.ALLOWED, WAIT_S)
        hub_dir = str(fx.setup.path)
        assert (
            await run_cli("attest", "challenge", "gw-001", "--wait", "20s", "--hub-dir", hub_dir)
            == 0
        )
        assert "PASSED" in capsys.readouterr().out
        assert await run_cli("attest", "challenge", "gw-404", "--hub-dir", hub_dir) == 2
        profile = str(tmp_path / "profile.toml")
        out = tmp_path / "expect.json"
        code = await run_cli(
            "attest",
            "expect",
            "--profile",
            profile,
            "--from-device",
            "gw-001",
            "--hub-dir",
            hub_dir,
            "--out",
            str(out),
        )
        assert code == 0
        expected = json.loads(out.read_text())["profiles"]["generic-x86_64"]["measurements"]
        assert expected["agent-config"] == [fx.attestor.first.digests["agent-config"].hex()]

"""The whole fabric: ``HubService`` and real agent daemons over amqtt and Mosquitto.

Push through the hub, freshness keeping ``max_offline`` bundles alive until the hub stops,
revocation through ``edge-hub revoke``, and lineage shipped, verified, acknowledged and
resumed across broker, hub and agent restarts with nothing lost or stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_agent.protocol.request import Request
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.sync.daemon import AgentDaemon
from edge_agent.trust.gate import Reason
from hub.registry.backends import open_registry
from hub.service.config import HubConfig
from hub.service.server import HubService
from tests.agent_fleet import AgentFleet, agent_fleet
from tests.brokers import amqtt_broker, mosquitto_broker
from tests.hub_support import HubSetup, make_bundle, make_hub_dir, run_cli, wait_for

pytestmark = pytest.mark.asyncio

REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")
WAIT_S = 30.0


def _now() -> int:
    return int(time.time())


@pytest.fixture(params=["amqtt", "mosquitto"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def _broker(kind: str) -> AsyncIterator[object]:
    if kind == "amqtt":
        async with amqtt_broker() as handle:
            yield handle
    else:
        async with mosquitto_broker() as handle:
            yield handle


def _hub_config(setup: HubSetup, broker: BrokerSettings) -> HubConfig:
    return HubConfig(
        setup.path, registry=setup.url, broker=broker, freshness_interval_s=0.3, token_ttl_s=5
    )


@contextlib.asynccontextmanager
async def _agents(
    tmp_path: Path, setup: HubSetup, broker: BrokerSettings
) -> AsyncIterator[AgentFleet]:
    async with agent_fleet(tmp_path, setup.root.raw, broker, setup.registry) as fleet:
        yield fleet


def _version(daemon: AgentDaemon) -> int | None:
    bundle = daemon.agent.state.bundle
    return None if bundle is None else bundle.version


def _stored(setup: HubSetup, device_id: str) -> int:
    with open_registry(setup.registry) as registry:
        return registry.lineage_state(device_id).size


def _acked(daemon: AgentDaemon) -> int:
    assert daemon.agent.lineage is not None
    return daemon.agent.lineage.acknowledged


def _size(daemon: AgentDaemon) -> int:
    assert daemon.agent.lineage is not None
    return daemon.agent.lineage.size


async def _push(setup: HubSetup, tmp_path: Path, version: int, **kwargs: str) -> None:
    path = tmp_path / f"bundle-v{version}.cbor"
    path.write_bytes(make_bundle(setup.keys, version, **kwargs))
    assert await run_cli("bundle", "push", str(path), "--hub-dir", str(setup.path)) == 0


async def _decide_many(daemon: AgentDaemon, count: int) -> None:
    for index in range(count):
        await asyncio.to_thread(daemon.agent.decide, REQUEST, _now())
        if index % 100 == 0:
            await asyncio.sleep(0)


async def test_push_decide_revoke_and_ship_lineage_through_the_hub(
    tmp_path: Path, broker_kind: str
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    async with _broker(broker_kind) as handle:
        broker = handle.settings  # type: ignore[attr-defined]
        async with HubService(_hub_config(setup, broker)) as hub:
            await hub.wait_ready()
            async with _agents(tmp_path, setup, broker) as agents:
                for device_id in ("gw-001", "gw-002", "gw-003"):
                    agents.enrol(device_id)
                    agents.start(device_id)
                await _push(setup, tmp_path, 1)
                daemons = agents.daemons
                await wait_for(lambda: all(_version(d) == 1 for d in daemons.values()), WAIT_S)
                await _decide_many(daemons["gw-001"], 700)
                code = await run_cli(
                    "revoke",
                    "--device",
                    "gw-002",
                    "--reason",
                    "stolen",
                    "--hub-dir",
                    str(setup.path),
                )
                assert code == 0
                revoked = daemons["gw-002"]
                await wait_for(
                    lambda: revoked.agent.decide(REQUEST, _now()).reason is Reason.REVOKED,
                    WAIT_S,
                )
                assert daemons["gw-003"].agent.decide(REQUEST, _now()).allowed
                for device_id, daemon in daemons.items():
                    await wait_for(lambda d=daemon: _acked(d) == _size(d), WAIT_S)
                    assert _stored(setup, device_id) == _size(daemon)
                fleet = {row.device_id: row for row in hub.registry.fleet()}
                assert fleet["gw-001"].online
                assert fleet["gw-001"].forks == 0
                assert fleet["gw-002"].gate == "revoked"


@pytest.mark.parametrize("max_offline", [3, pytest.param(30, marks=pytest.mark.slow)])
async def test_hub_stopped_means_max_offline_deny_then_restart_brings_allow_back(
    tmp_path: Path, max_offline: int
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    async with mosquitto_broker() as handle, _agents(tmp_path, setup, handle.settings) as agents:
        agents.enrol("gw-001")
        daemon = agents.start("gw-001")
        async with HubService(_hub_config(setup, handle.settings)) as hub:
            await hub.wait_ready()
            await _push(setup, tmp_path, 1, max_offline=f"{max_offline}s")
            await wait_for(lambda: _version(daemon) == 1, WAIT_S)
            await asyncio.sleep(max_offline + 1)
            assert daemon.agent.decide(REQUEST, _now()).allowed
        stopped = time.monotonic()
        await wait_for(
            lambda: daemon.agent.decide(REQUEST, _now()).reason is Reason.FRESHNESS_EXPIRED,
            max_offline + 10,
        )
        assert time.monotonic() - stopped < max_offline + 2
        bundle = daemon.agent.state.bundle
        assert bundle is not None and bundle.expires_at - _now() > 3600
        async with HubService(_hub_config(setup, handle.settings)) as hub:
            await hub.wait_ready()
            await wait_for(lambda: daemon.agent.decide(REQUEST, _now()).allowed, WAIT_S)


async def test_broker_hub_and_agent_restarts_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    async with mosquitto_broker() as handle, _agents(tmp_path, setup, handle.settings) as agents:
        agents.enrol("gw-001")
        daemon = agents.start("gw-001")
        hub = HubService(_hub_config(setup, handle.settings))
        async with hub:
            await hub.wait_ready()
            await _push(setup, tmp_path, 1)
            await wait_for(lambda: _version(daemon) == 1, WAIT_S)
            shipping = asyncio.create_task(_decide_many(daemon, 1500))
            await asyncio.sleep(0.3)
            await handle.stop(kill=True)
            await asyncio.sleep(0.5)
            await handle.start()
            await shipping
            await wait_for(lambda: _acked(daemon) == _size(daemon), WAIT_S)
        assert daemon.agent.decide(REQUEST, _now()).allowed
        await _decide_many(daemon, 300)
        await agents.kill("gw-001")
        acked_before_restart = _stored(setup, "gw-001")
        daemon = agents.start("gw-001")
        assert _acked(daemon) <= _size(daemon)
        async with HubService(_hub_config(setup, handle.settings)) as hub:
            await hub.wait_ready()
            await wait_for(lambda: _acked(daemon) == _size(daemon), WAIT_S)
        assert _stored(setup, "gw-001") == _size(daemon) >= acked_before_restart + 300
        with open_registry(setup.registry) as registry:
            seqs = [e.seq for e in registry.iter_entries("gw-001")]
        assert seqs == list(range(len(seqs)))

"""The agent daemon against real brokers (amqtt in-process, Mosquitto as a subprocess).

The test plays the hub's publishing side with signed objects from :class:`HubSim`: bundles,
freshness tokens and revocations, all retained, as ``edge-hub`` publishes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.errors import TransportError
from edge_agent.protocol import topics
from edge_agent.protocol.request import Request
from edge_agent.protocol.shipping import DeviceStatus, verify_status
from edge_agent.protocol.topics import Channel, ChannelKind
from edge_agent.support.mqtt import BrokerSettings, connect
from edge_agent.sync.daemon import AgentDaemon
from edge_agent.trust.gate import Reason
from tests.agent_fleet import FAST_SYNC, AgentFleet, agent_fleet
from tests.brokers import TlsFiles, amqtt_broker, mosquitto_broker
from tests.factory import DAY, HubSim
from tests.tls_certs import ThrowawayCA

pytestmark = pytest.mark.asyncio

REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")
GROUP = Channel(ChannelKind.GROUP, "line-a")
WAIT_S = 20.0


def _now() -> int:
    return int(time.time())


@contextlib.asynccontextmanager
async def _broker(kind: str, tmp_path: Path) -> AsyncIterator[BrokerSettings]:
    if kind == "amqtt":
        async with amqtt_broker() as handle:
            yield handle.settings
    else:
        async with mosquitto_broker() as handle:
            yield handle.settings


@pytest.fixture(params=["amqtt", "mosquitto"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def _fleet(tmp_path: Path, hub: HubSim, broker: BrokerSettings) -> AsyncIterator[AgentFleet]:
    async with agent_fleet(tmp_path, hub.root_bytes(), broker) as fleet:
        yield fleet


async def _publish(broker: BrokerSettings, *messages: tuple[str, bytes]) -> None:
    async with connect(broker, client_id=f"test-hub-{time.monotonic_ns()}") as connection:
        for topic, payload in messages:
            await connection.publish(topic, payload, qos=1, retain=True)


async def _until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> float:
    """Wait until ``condition`` holds; return how long it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def _version(daemon: AgentDaemon) -> int | None:
    bundle = daemon.agent.state.bundle
    return None if bundle is None else bundle.version


async def test_pushed_bundle_reaches_50_agents_and_a_late_one_from_retained(
    tmp_path: Path, broker_kind: str
) -> None:
    hub = HubSim()
    async with _broker(broker_kind, tmp_path) as broker, _fleet(tmp_path, hub, broker) as fleet:
        for index in range(50):
            fleet.add(f"gw-{index:03d}")
        await _until(
            lambda: all(d.connected.is_set() for d in fleet.daemons.values()), "all connected"
        )
        bundle = hub.bundle(1, issued_at=_now() - 60, expires_at=_now() + DAY)
        await _publish(broker, (topics.bundle_topic("eu-1", GROUP), bundle))
        await _until(
            lambda: all(_version(d) == 1 for d in fleet.daemons.values()), "all 50 installed"
        )
        assert all(d.agent.decide(REQUEST, _now()).allowed for d in fleet.daemons.values())
        late = fleet.add("gw-late")
        await _until(lambda: _version(late) == 1, "the late agent installed from retained")


async def test_revocation_denies_that_device_while_neighbours_allow(
    tmp_path: Path, broker_kind: str
) -> None:
    hub = HubSim()
    async with _broker(broker_kind, tmp_path) as broker, _fleet(tmp_path, hub, broker) as fleet:
        bundle = hub.bundle(1, issued_at=_now() - 60, expires_at=_now() + DAY)
        await _publish(broker, (topics.bundle_topic("eu-1", GROUP), bundle))
        target, neighbour = fleet.add("gw-001"), fleet.add("gw-002")
        await _until(lambda: _version(target) == 1 and _version(neighbour) == 1, "installed")
        revocation = hub.revocation(1, "device", "gw-001", issued_at=_now())
        await _publish(broker, (topics.revocation_topic("eu-1", "device", "gw-001"), revocation))
        await _until(
            lambda: target.agent.decide(REQUEST, _now()).reason is Reason.REVOKED,
            "the revoked device denying",
        )
        assert neighbour.agent.decide(REQUEST, _now()).allowed
        newer = hub.bundle(2, issued_at=_now() + 1, expires_at=_now() + DAY)
        await _publish(broker, (topics.bundle_topic("eu-1", GROUP), newer))
        await _until(lambda: target.agent.decide(REQUEST, _now()).allowed, "lifted by v2")
        await _publish(broker, (topics.revocation_topic("eu-1", "device", "gw-001"), revocation))
        await asyncio.sleep(0.5)
        assert target.agent.decide(REQUEST, _now()).allowed


async def test_status_is_published_when_it_changes_not_for_every_broadcast(
    tmp_path: Path,
) -> None:
    hub = HubSim()
    status_topic = topics.device_topic("eu-1", "gw-001", topics.DeviceLeaf.STATUS)
    received: list[DeviceStatus] = []

    async def watch(broker: BrokerSettings, subscribed: asyncio.Event) -> None:
        async with connect(broker, client_id="test-status-watcher") as connection:
            await connection.subscribe([status_topic])
            subscribed.set()
            async for message in connection.messages():
                if message.topic == status_topic:
                    key = fleet.daemons["gw-001"].agent.device_key.public
                    received.append(verify_status(message.payload, device="gw-001", key=key))

    async with amqtt_broker() as handle, _fleet(tmp_path, hub, handle.settings) as fleet:
        broker = handle.settings
        bundle = hub.bundle(1, issued_at=_now() - 60, expires_at=_now() + DAY)
        await _publish(broker, (topics.bundle_topic("eu-1", GROUP), bundle))
        # No heartbeat inside the test: every status it sees was published for a change.
        quiet = replace(FAST_SYNC, status_interval_s=3600)
        device = fleet.add("gw-001", quiet)
        await _until(lambda: _version(device) == 1, "installed")
        subscribed = asyncio.Event()
        watcher = asyncio.create_task(watch(broker, subscribed))
        try:
            await asyncio.wait_for(subscribed.wait(), WAIT_S)
            await _until(lambda: any(s.bundle_version == 1 for s in received), "status v1")
            before = len(received)
            fresh_topic = topics.freshness_topic("eu-1", GROUP)
            hub_times = [_now() + offset for offset in range(3)]
            for hub_time in hub_times:
                token = hub.freshness(bundle, hub_time=hub_time, ttl=600)
                await _publish(broker, (fresh_topic, token))
            other = hub.revocation(1, "device", "gw-999", issued_at=_now())
            await _publish(broker, (topics.revocation_topic("eu-1", "device", "gw-999"), other))
            await _until(lambda: device.agent.state.fresh_time == hub_times[-1], "tokens applied")
            await asyncio.sleep(1.0)
            assert len(received) == before
            newer = hub.bundle(2, issued_at=_now() + 1, expires_at=_now() + DAY)
            await _publish(broker, (topics.bundle_topic("eu-1", GROUP), newer))
            await _until(lambda: any(s.bundle_version == 2 for s in received), "status v2")
            assert received[-1].gate == "open"
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def test_freeze_without_freshness_denies_at_max_offline_not_at_ttl(
    tmp_path: Path, broker_kind: str
) -> None:
    hub = HubSim()
    max_offline = 3
    async with _broker(broker_kind, tmp_path) as broker, _fleet(tmp_path, hub, broker) as fleet:
        issued = _now()
        bundle = hub.bundle(1, issued_at=issued, expires_at=issued + DAY, max_offline=max_offline)
        await _publish(broker, (topics.bundle_topic("eu-1", GROUP), bundle))
        daemon = fleet.add("gw-001")
        await _until(lambda: _version(daemon) == 1, "installed")
        for _ in range(3):
            token = hub.freshness(bundle, hub_time=_now(), ttl=30)
            await _publish(broker, (topics.freshness_topic("eu-1", GROUP), token))
            await asyncio.sleep(1.0)
            assert daemon.agent.decide(REQUEST, _now()).allowed
        frozen_at = _now()
        await _until(
            lambda: daemon.agent.decide(REQUEST, _now()).reason is Reason.FRESHNESS_EXPIRED,
            "max_offline deny after the hub went quiet",
            timeout=max_offline + 3,
        )
        assert _now() - frozen_at <= max_offline + 1
        assert "max_offline" in daemon.agent.decide(REQUEST, _now()).message


async def test_agent_keeps_deciding_while_the_broker_is_down_and_reconnects(
    tmp_path: Path,
) -> None:
    hub = HubSim()
    async with mosquitto_broker() as handle, _fleet(tmp_path, hub, handle.settings) as fleet:
        bundle = hub.bundle(1, issued_at=_now() - 60, expires_at=_now() + DAY)
        await _publish(handle.settings, (topics.bundle_topic("eu-1", GROUP), bundle))
        daemon = fleet.add("gw-001")
        await _until(lambda: _version(daemon) == 1, "installed")
        await handle.stop(kill=True)
        await _until(lambda: not daemon.connected.is_set(), "disconnect noticed")
        assert daemon.agent.decide(REQUEST, _now()).allowed
        await handle.start()
        await _until(daemon.connected.is_set, "reconnected")
        newer = hub.bundle(2, issued_at=_now() - 30, expires_at=_now() + DAY)
        await _publish(handle.settings, (topics.bundle_topic("eu-1", GROUP), newer))
        await _until(lambda: _version(daemon) == 2, "v2 after reconnect")


async def test_agent_over_mutual_tls_installs_and_a_client_without_a_certificate_is_refused(
    tmp_path: Path,
) -> None:
    ca = ThrowawayCA(tmp_path / "pki")
    server_cert, server_key = ca.issue("broker", server=True)
    tls = TlsFiles(ca.ca_file, server_cert, server_key)
    hub = HubSim()
    async with mosquitto_broker(tls=tls) as handle:
        cert, key = ca.issue("gw-001")
        device = replace(
            handle.settings, ca_file=str(ca.ca_file), cert_file=str(cert), key_file=str(key)
        )
        hub_cert, hub_key = ca.issue("hub")
        publisher = replace(device, cert_file=str(hub_cert), key_file=str(hub_key))
        bundle = hub.bundle(1, issued_at=_now() - 60, expires_at=_now() + DAY)
        await _publish(publisher, (topics.bundle_topic("eu-1", GROUP), bundle))
        async with _fleet(tmp_path, hub, device) as fleet:
            daemon = fleet.add("gw-001")
            await _until(lambda: _version(daemon) == 1, "installed over TLS")
        anonymous = replace(handle.settings, ca_file=str(ca.ca_file))
        with pytest.raises(TransportError):
            await _publish(anonymous, (topics.bundle_topic("eu-1", GROUP), bundle))
        with pytest.raises(TransportError):
            await _publish(replace(device, tls=False), (topics.bundle_topic("eu-1", GROUP), bundle))


async def test_a_cleanly_stopped_agent_leaves_a_signed_offline_status_newer_than_its_last(
    tmp_path: Path,
) -> None:
    hub = HubSim()
    status_topic = topics.device_topic("eu-1", "gw-001", topics.DeviceLeaf.STATUS)
    async with amqtt_broker() as handle, _fleet(tmp_path, hub, handle.settings) as fleet:
        daemon = fleet.add("gw-001")
        key = daemon.agent.device_key.public
        await _until(daemon.connected.is_set, "connected")
        async with connect(handle.settings, client_id="test-status-watcher") as connection:
            await connection.subscribe([status_topic])
            messages = connection.messages()
            online = verify_status((await anext(messages)).payload, device="gw-001", key=key)
            assert online.online
            await fleet.kill("gw-001")
            async with asyncio.timeout(WAIT_S):
                last = verify_status((await anext(messages)).payload, device="gw-001", key=key)
    assert not last.online and last.time >= online.time

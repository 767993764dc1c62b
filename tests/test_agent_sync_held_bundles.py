"""A bundle refused only because trusted time is behind it is tried again, not forgotten.

The daemon remembers refused payloads so a retained bad object is verified and logged once.
A refusal that depends on the device's time rather than on the bytes (``bundle_future``:
issued more than 300 s ahead of trusted time) must not be remembered that way: once a
freshness token raises the floor, or the clock reaches it, the same retained bundle installs,
with no restart and no re-delivery from the broker; and not sooner, so a bundle from the far
future is not verified and logged again on every token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.protocol.lineage_entries import decode_entry
from edge_agent.protocol.request import Request
from edge_agent.support.mqtt import BrokerSettings, Incoming
from edge_agent.sync.config import SyncConfig
from edge_agent.sync.daemon import AgentDaemon
from tests.factory import DAY, DEVICE, NOW, HubSim

REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")
BASE = "edgegov/v1/eu-1"
BUNDLE_TOPIC = f"{BASE}/bundle/group/line-a"
FRESH_TOPIC = f"{BASE}/fresh/group/line-a"
BOOTED_AT_1970 = 0


@pytest.fixture
def hub() -> HubSim:
    return HubSim()


@pytest.fixture
def daemon(tmp_path: Path, hub: HubSim) -> Iterator[AgentDaemon]:
    """A device enrolled with a root issued a day ago, whose clock now reads 1970: its
    trusted time is the root's issue time, a day behind the hub."""
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, DEVICE, hub.root_bytes(issued_at=NOW - DAY), NOW - DAY)
    agent = LocalAgent.open(state_dir)
    try:
        yield AgentDaemon(
            agent, BrokerSettings("127.0.0.1", 1), SyncConfig(), wall=lambda: BOOTED_AT_1970
        )
    finally:
        agent.close()


def _send(daemon: AgentDaemon, topic: str, payload: bytes) -> None:
    daemon.handle(Incoming(topic, payload, retain=True))


def _rejections(daemon: AgentDaemon) -> list[str]:
    lineage = daemon.agent.lineage
    assert lineage is not None and lineage.store is not None
    entries = [decode_entry(data) for _, data, _ in lineage.store.iter_rows()]
    return [e.reason for e in entries if str(e.kind) == "bundle_rejected"]


def test_a_bundle_issued_ahead_installs_once_a_freshness_token_raises_the_floor(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    bundle = hub.bundle(1, issued_at=NOW)
    _send(daemon, BUNDLE_TOPIC, bundle)
    assert daemon.agent.state.bundle is None
    assert _rejections(daemon) == ["bundle_future"]
    _send(daemon, FRESH_TOPIC, hub.freshness(bundle, hub_time=NOW))
    installed = daemon.agent.state.bundle
    assert installed is not None and installed.version == 1
    assert daemon.agent.decide(REQUEST, NOW).allowed
    assert _rejections(daemon) == ["bundle_future"]


def test_a_bundle_issued_ahead_is_verified_again_when_delivered_again(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    bundle = hub.bundle(1, issued_at=NOW)
    _send(daemon, BUNDLE_TOPIC, bundle)
    daemon.agent.install_freshness(hub.freshness(bundle, hub_time=NOW), BOOTED_AT_1970)
    _send(daemon, BUNDLE_TOPIC, bundle)
    installed = daemon.agent.state.bundle
    assert installed is not None and installed.version == 1


def test_a_held_bundle_is_dropped_when_its_topic_carries_a_newer_one(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    second = hub.bundle(2, issued_at=NOW - DAY)
    _send(daemon, BUNDLE_TOPIC, hub.bundle(1, issued_at=NOW))
    _send(daemon, FRESH_TOPIC, hub.freshness(second, hub_time=NOW - DAY))
    _send(daemon, BUNDLE_TOPIC, second)
    _send(daemon, FRESH_TOPIC, hub.freshness(second, hub_time=NOW))
    installed = daemon.agent.state.bundle
    assert installed is not None and installed.version == 2
    assert _rejections(daemon) == ["bundle_future"]


def test_a_bundle_from_the_far_future_is_not_tried_again_on_every_token(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    current = hub.bundle(1, issued_at=NOW - 60)
    _send(daemon, FRESH_TOPIC, hub.freshness(current, hub_time=NOW - 60))
    _send(daemon, BUNDLE_TOPIC, current)
    _send(daemon, BUNDLE_TOPIC, hub.bundle(2, issued_at=NOW + DAY, expires_at=NOW + 2 * DAY))
    for tick in range(5):
        _send(daemon, FRESH_TOPIC, hub.freshness(current, hub_time=NOW + 10 * tick))
    installed = daemon.agent.state.bundle
    assert installed is not None and installed.version == 1
    assert _rejections(daemon) == ["bundle_future"]


def test_a_bundle_ahead_of_the_clock_installs_once_the_clock_reaches_it(
    tmp_path: Path, hub: HubSim
) -> None:
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, DEVICE, hub.root_bytes(), NOW)
    clock = [NOW]
    with LocalAgent.open(state_dir) as agent:
        daemon = AgentDaemon(
            agent, BrokerSettings("127.0.0.1", 1), SyncConfig(), wall=lambda: clock[0]
        )
        _send(daemon, BUNDLE_TOPIC, hub.bundle(1, issued_at=NOW + 600))
        assert agent.state.bundle is None

        async def one_clock_check() -> None:
            watcher = asyncio.create_task(daemon._watch_clock())
            await asyncio.sleep(0)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

        asyncio.run(one_clock_check())
        assert agent.state.bundle is None
        clock[0] = NOW + 300
        asyncio.run(one_clock_check())
        installed = agent.state.bundle
        assert installed is not None and installed.version == 1
        assert _rejections(daemon) == ["bundle_future"]

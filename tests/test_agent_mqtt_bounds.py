"""An agent bounds what a broker makes it hold before anything is verified: a packet over
``MAX_PACKET_BYTES`` ends the connection before its body is read, the incoming queue holds at
most its byte bound, and the daemon drops a payload over ``MAX_MESSAGE_BYTES`` unread. A
broker serving huge retained messages on trust topics costs a reconnecting agent reconnects,
never its memory."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.errors import TransportError
from edge_agent.protocol import topics
from edge_agent.protocol.topics import Channel, ChannelKind
from edge_agent.support.mqtt import (
    MAX_MESSAGE_BYTES,
    MAX_PACKET_BYTES,
    BrokerSettings,
    Incoming,
    connect,
)
from edge_agent.sync.config import SyncConfig
from edge_agent.sync.daemon import AgentDaemon
from tests.agent_fleet import agent_fleet
from tests.brokers import mosquitto_broker
from tests.factory import DEVICE, NOW, HubSim
from tests.hub_support import wait_for

OVERSIZED = b"x" * (MAX_PACKET_BYTES + 1)
GROUP_BUNDLE = topics.bundle_topic("eu-1", Channel(ChannelKind.GROUP, "line-a"))
TRUST_TOPICS = [GROUP_BUNDLE] + [
    topics.revocation_topic("eu-1", "device", f"gw-{n:03d}") for n in range(9)
]
"""Ten retained trust topics an agent of group line-a subscribes to."""


async def _retain(settings: BrokerSettings, messages: dict[str, bytes]) -> None:
    async with connect(settings, client_id="publisher") as publisher:
        for topic, payload in messages.items():
            await publisher.publish(topic, payload, retain=True)


def _over_limit(caplog: pytest.LogCaptureFixture) -> int:
    return sum("over the" in r.getMessage() for r in caplog.records if r.name.endswith("mqtt"))


@pytest.mark.asyncio
async def test_a_packet_over_the_limit_ends_the_connection_before_its_body_is_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    received = []
    async with mosquitto_broker(max_packet_bytes=None) as broker:
        await _retain(broker.settings, {GROUP_BUNDLE: OVERSIZED})
        with pytest.raises(TransportError):
            async with connect(broker.settings, client_id="gw-001") as connection:
                await connection.subscribe([GROUP_BUNDLE])
                async for message in connection.messages():
                    received.append(len(message.payload))
    assert received == []
    assert _over_limit(caplog) == 1


@pytest.mark.asyncio
async def test_the_incoming_queue_holds_at_most_its_byte_bound() -> None:
    mebibyte = b"m" * 1024 * 1024
    marker = f"{topics.PREFIX}/eu-1/fresh/all/_"
    async with mosquitto_broker(max_packet_bytes=None) as broker:
        await _retain(broker.settings, dict.fromkeys(TRUST_TOPICS[:6], mebibyte))
        async with connect(
            broker.settings, client_id="gw-001", incoming_bytes=3 * len(mebibyte) + 1024
        ) as connection:
            await connection.subscribe([f"{topics.PREFIX}/eu-1/revoke/#", GROUP_BUNDLE, marker])
            async with connect(broker.settings, client_id="publisher") as publisher:
                await publisher.publish(marker, b"end")
            await wait_for(lambda: connection.backlog >= 4)
            messages = connection.messages()
            held = [len((await anext(messages)).payload) for _ in range(connection.backlog)]
    assert held == [len(mebibyte)] * 3 + [3]


def test_the_daemon_drops_a_payload_over_the_message_limit_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    init_state_dir(tmp_path, DEVICE, HubSim().root_bytes(), NOW)
    agent = LocalAgent.open(tmp_path)
    try:
        daemon = AgentDaemon(agent, BrokerSettings("127.0.0.1", 1), SyncConfig(), wall=lambda: NOW)
        before = agent.lineage.size if agent.lineage else 0
        with caplog.at_level(logging.WARNING):
            daemon.handle(Incoming(GROUP_BUNDLE, b"b" * (MAX_MESSAGE_BYTES + 1), retain=True))
        assert (agent.lineage.size if agent.lineage else 0) == before
        assert agent.state.bundle is None
        assert "unread" in caplog.text
    finally:
        agent.close()


@pytest.mark.asyncio
async def test_a_reconnecting_agent_facing_huge_retained_trust_messages_holds_none_of_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = HubSim()
    async with mosquitto_broker(max_packet_bytes=None) as broker:
        await _retain(broker.settings, dict.fromkeys(TRUST_TOPICS, OVERSIZED))
        async with agent_fleet(tmp_path, hub.root_bytes(), broker.settings) as fleet:
            daemon = fleet.add("gw-001")
            await wait_for(lambda: _over_limit(caplog) >= 2, timeout=60)
            assert daemon.agent.state.bundle is None
            assert daemon.agent.lineage is not None
            assert daemon.agent.lineage.size == 0

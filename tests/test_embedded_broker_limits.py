"""The embedded broker's limits (hub/service/broker.py, hub/core/limits.py), against real amqtt.

Clients that overshoot are raw sockets speaking MQTT 3.1.1 bytes, so a test can announce a
100 MB packet without sending it and see exactly when the broker hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.protocol import topics
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.support.mqtt import BrokerSettings, Connection, Incoming, connect
from hub.service.broker import _connection_limit, _RefusalLog
from hub.service.broker_limits import (
    FD_RESERVE,
    MAX_CONNECTIONS,
    MAX_MESSAGE_BYTES,
    MAX_TOPIC_BYTES,
    MAX_TOPIC_LEVELS,
    REFUSAL_LOG_BURST,
    REFUSAL_LOG_INTERVAL_S,
    BrokerLimits,
)
from tests.brokers import AmqttHandle, amqtt_broker
from tests.hub_support import WAIT_S, wait_for

ACCEPTED = 0
IDENTIFIER_REJECTED = 2
PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"


def _length(value: int) -> bytes:
    encoded = bytearray()
    while True:
        value, byte = divmod(value, 128)
        encoded.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _length(len(body)) + body


def _connect(client_id: str, *, clean: bool = True, will: tuple[str, bytes] | None = None) -> bytes:
    flags = (0x02 if clean else 0) | (0x04 if will else 0)
    body = _string("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big") + _string(client_id)
    if will is not None:
        body += _string(will[0]) + _string(will[1])
    return _packet(0x10, body)


def _publish(topic: str, payload: bytes, *, retain: bool = False) -> bytes:
    return _packet(0x30 | retain, _string(topic) + payload)


def _subscribe(topic_filter: str) -> bytes:
    return _packet(0x82, (1).to_bytes(2, "big") + _string(topic_filter) + b"\x00")


@dataclass
class RawClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    connack: int | None
    """The CONNACK return code, ``None`` if the broker hung up without one."""

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def alive(self) -> bool:
        """Whether the broker still answers a PINGREQ on this connection."""
        self.send(PINGREQ)
        async with asyncio.timeout(WAIT_S):
            return await self.reader.read(2) == PINGRESP

    async def dropped(self) -> bool:
        """Whether the broker closes this connection (reading whatever it sends before)."""
        async with asyncio.timeout(WAIT_S):
            try:
                while await self.reader.read(4096):
                    pass
            except ConnectionResetError:
                pass
        return True


@contextlib.asynccontextmanager
async def raw_client(
    settings: BrokerSettings, client_id: str, **connect_options: object
) -> AsyncIterator[RawClient]:
    """A TCP connection that has sent CONNECT and read the CONNACK (or the broker's hang-up)."""
    reader, writer = await asyncio.open_connection(settings.host, settings.port)
    try:
        writer.write(_connect(client_id, **connect_options))  # type: ignore[arg-type]
        async with asyncio.timeout(WAIT_S):
            try:
                connack = await reader.read(4)
            except ConnectionResetError:
                connack = b""
        yield RawClient(reader, writer, connack[3] if len(connack) == 4 else None)
    finally:
        writer.transport.abort()


async def _next(connection: Connection, timeout: float = WAIT_S) -> Incoming:
    async with asyncio.timeout(timeout):
        async for message in connection.messages():
            return message
    raise AssertionError("the connection ended")


MARKER = topics.root_topic("eu-1", 999_999)
"""A retained topic published first, subscribed last: its message ends what a subscriber gets."""
RETAINED = f"{topics.PREFIX}/eu-1/revoke/device/+"
"""The filter of the retained topics these tests fill the store with."""


def _r(name: str) -> str:
    """A retained edgegov topic (a device revocation's) of its own for each ``name``."""
    return topics.revocation_topic("eu-1", "device", name)


async def _retained(settings: BrokerSettings, topic_filter: str) -> dict[str, bytes]:
    """The retained messages matching ``topic_filter``, as a new subscriber gets them: those
    of ``MARKER`` (retained first) come next, its subscription coming next."""
    async with connect(settings, client_id="late-subscriber") as late:
        await late.subscribe([topic_filter])
        await late.subscribe([MARKER])
        received: dict[str, bytes] = {}
        while (message := await _next(late)).topic != MARKER:
            received[message.topic] = message.payload
        return received


async def _publish_all(connection: Connection, messages: list[tuple[str, bytes]]) -> None:
    """Publish retained, then wait for the echo of a later message: the broker handles one
    client's publishes in order, so every retained one has been stored by then."""
    await connection.subscribe(["sync/+"])
    for topic, payload in messages:
        await connection.publish(topic, payload, retain=True)
    await connection.publish("sync/done", b"")
    while (await _next(connection)).topic != "sync/done":
        pass


# --- message size ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_publish_announcing_100_mb_is_dropped_after_its_fixed_header(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hub.service.broker")
    async with amqtt_broker() as broker, raw_client(broker.settings, "gw-001") as client:
        assert client.connack == ACCEPTED
        client.send(b"\x30" + _length(100_000_000) + b"\x00\x05topic")
        assert await client.dropped()
        async with raw_client(broker.settings, "gw-002") as other:
            assert other.connack == ACCEPTED and await other.alive()
    assert any("message_too_large" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_a_connect_announcing_more_than_the_limit_is_dropped_without_a_connack() -> None:
    async with amqtt_broker() as broker:
        reader, writer = await asyncio.open_connection(broker.settings.host, broker.port)
        writer.write(b"\x10" + _length(MAX_MESSAGE_BYTES + 1) + b"\x00\x04MQTT")
        client = RawClient(reader, writer, None)
        async with asyncio.timeout(WAIT_S):
            assert await reader.read(4) == b""
        assert await client.dropped()


@pytest.mark.parametrize("over", [0, 1], ids=["at the limit: delivered", "one byte over: dropped"])
@pytest.mark.asyncio
async def test_the_size_limit_counts_the_whole_remaining_length(over: int) -> None:
    limits = BrokerLimits(message_bytes=1024)
    async with amqtt_broker(limits) as broker, raw_client(broker.settings, "gw-001") as client:
        payload = b"x" * (1024 - len(_string("fleet/big")) + over)
        client.send(_publish("fleet/big", payload))
        assert await (client.dropped() if over else client.alive())


@pytest.mark.asyncio
async def test_a_remaining_length_longer_than_four_bytes_is_dropped() -> None:
    async with amqtt_broker() as broker, raw_client(broker.settings, "gw-001") as client:
        client.send(b"\x30\xff\xff\xff\xff\x01")
        assert await client.dropped()


def test_the_size_limit_admits_the_largest_bundle_on_the_longest_bundle_topic() -> None:
    name = "n" * 64
    topic = topics.bundle_topic(name, topics.Channel(topics.ChannelKind.DEVICE, name))
    assert len(_string(topic)) + 2 + MAX_BUNDLE_BYTES <= MAX_MESSAGE_BYTES


# --- topics ---------------------------------------------------------------------------------

DEEPEST = "/".join(["l"] * MAX_TOPIC_LEVELS)
LONGEST = "t" * MAX_TOPIC_BYTES


@pytest.mark.parametrize(
    ("topic", "topic_filter", "dropped"),
    [
        pytest.param(DEEPEST, "l/#", False, id="deepest allowed"),
        pytest.param(DEEPEST + "/l", "l/#", True, id="one level too deep"),
        pytest.param(LONGEST, "+", False, id="longest allowed"),
        pytest.param(LONGEST + "t", "+", True, id="one byte too long"),
    ],
)
@pytest.mark.asyncio
async def test_a_publish_topic_over_the_limits_drops_the_publisher(
    topic: str, topic_filter: str, dropped: bool
) -> None:
    async with (
        amqtt_broker() as broker,
        connect(broker.settings, client_id="watcher") as watcher,
    ):
        await watcher.subscribe([topic_filter, "sync/done"])
        async with raw_client(broker.settings, "gw-001") as client:
            client.send(_publish(topic, b"payload"))
            assert await (client.dropped() if dropped else client.alive())
        async with connect(broker.settings, client_id="marker") as marker:
            await marker.publish("sync/done", b"")
        delivered = []
        while (message := await _next(watcher)).topic != "sync/done":
            delivered.append((message.topic, message.payload))
    assert delivered == ([] if dropped else [(topic, b"payload")])


@pytest.mark.parametrize(
    ("topic_filter", "dropped"),
    [
        pytest.param("/".join(["+"] * MAX_TOPIC_LEVELS), False, id="deepest allowed"),
        pytest.param("/".join(["+"] * (MAX_TOPIC_LEVELS + 1)), True, id="one level too deep"),
        pytest.param("f" * (MAX_TOPIC_BYTES + 1), True, id="one byte too long"),
    ],
)
@pytest.mark.asyncio
async def test_a_subscription_over_the_limits_drops_the_subscriber(
    topic_filter: str, dropped: bool
) -> None:
    async with amqtt_broker() as broker, raw_client(broker.settings, "gw-001") as client:
        client.send(_subscribe(topic_filter))
        if dropped:
            assert await client.dropped()
        else:
            async with asyncio.timeout(WAIT_S):
                assert await client.reader.readexactly(5) == b"\x90\x03\x00\x01\x00"
            assert await client.alive()


@pytest.mark.asyncio
async def test_a_will_topic_over_the_limits_is_refused_at_connect() -> None:
    async with amqtt_broker() as broker:
        will = (DEEPEST + "/l", b"offline")
        async with raw_client(broker.settings, "gw-001", will=will) as client:
            assert client.connack is None
            assert await client.dropped()


# --- retained store -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_retained_messages_stop_at_the_count_limit_and_replacing_or_clearing_still_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hub.service.broker")
    async with amqtt_broker(BrokerLimits(retained_messages=3)) as broker:
        async with connect(broker.settings, client_id="hub") as hub:
            await _publish_all(
                hub, [(MARKER, b"end"), (_r("1"), b"one"), (_r("2"), b"two"), (_r("3"), b"3")]
            )
            assert await _retained(broker.settings, RETAINED) == {
                _r("1"): b"one",
                _r("2"): b"two",
            }
            await _publish_all(hub, [(_r("1"), b"one again"), (_r("2"), b""), (_r("4"), b"4")])
        assert await _retained(broker.settings, RETAINED) == {_r("1"): b"one again", _r("4"): b"4"}
    assert any("retained_full" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_retained_messages_stop_at_the_byte_limit_counting_topic_and_payload() -> None:
    # The marker (27 + 3 bytes) + a (31 + 40) = 101; b (31 + 40) would make 172, over 150;
    # with a down to 10 bytes, b fits: 30 + 41 + 71 = 142.
    assert (len(MARKER), len(_r("a"))) == (27, 31)
    async with amqtt_broker(BrokerLimits(retained_bytes=150)) as broker:
        async with connect(broker.settings, client_id="hub") as hub:
            await _publish_all(hub, [(MARKER, b"end"), (_r("a"), b"a" * 40), (_r("b"), b"b" * 40)])
            assert await _retained(broker.settings, RETAINED) == {_r("a"): b"a" * 40}
            await _publish_all(hub, [(_r("a"), b"a" * 10), (_r("b"), b"b" * 40)])
        assert await _retained(broker.settings, RETAINED) == {
            _r("a"): b"a" * 10,
            _r("b"): b"b" * 40,
        }


@pytest.mark.asyncio
async def test_a_message_refused_for_retention_still_reaches_current_subscribers() -> None:
    limits = BrokerLimits(retained_messages=1)
    async with amqtt_broker(limits) as broker, connect(broker.settings, client_id="hub") as hub:
        await _publish_all(hub, [(MARKER, b"end")])
        async with connect(broker.settings, client_id="gw-001") as device:
            await device.subscribe([RETAINED])
            await hub.publish(_r("1"), b"live", retain=True)
            message = await _next(device)
    assert (message.topic, message.payload) == (_r("1"), b"live")


@pytest.mark.parametrize(
    "topic",
    [
        "junk/1",
        topics.PREFIX + "/eu-1/junk/1",
        topics.device_topic("eu-1", "gw-001", topics.DeviceLeaf.LINEAGE),
        topics.device_topic("eu-1", "gw-001", topics.DeviceLeaf.CHALLENGE),
        topics.bundle_topic("eu-1", topics.Channel(topics.ChannelKind.ALL)) + "/deeper",
    ],
)
@pytest.mark.asyncio
async def test_only_edgegovs_retained_topics_retain(topic: str) -> None:
    kept = [
        topics.root_topic("eu-1", 1),
        topics.bundle_topic("eu-1", topics.Channel(topics.ChannelKind.GROUP, "line-a")),
        topics.freshness_topic("eu-1", topics.Channel(topics.ChannelKind.ALL)),
        _r("gw-001"),
        *(topics.device_topic("eu-1", "gw-001", leaf) for leaf in ("status", "ack", "attestation")),
    ]
    async with amqtt_broker() as broker:
        async with connect(broker.settings, client_id="anyone") as anyone:
            # Stored last, the marker comes last to a "#" subscription too.
            await _publish_all(anyone, [(topic, b"junk"), *((t, b"object") for t in kept)])
            await _publish_all(anyone, [(MARKER, b"end")])
        assert await _retained(broker.settings, "#") == {t: b"object" for t in kept}


@pytest.mark.asyncio
async def test_the_hubs_own_connection_is_never_refused_retention_for_capacity() -> None:
    limits = BrokerLimits(retained_messages=2)
    async with amqtt_broker(limits, unthrottled=frozenset({"hub"})) as broker:
        async with connect(broker.settings, client_id="filler") as filler:
            await _publish_all(filler, [(MARKER, b"end"), (_r("junk"), b"junk")])
        async with connect(broker.settings, client_id="hub") as hub:
            await _publish_all(hub, [(_r("gw-001"), b"revoked"), (_r("gw-002"), b"revoked")])
        assert await _retained(broker.settings, RETAINED) == {
            _r("junk"): b"junk",
            _r("gw-001"): b"revoked",
            _r("gw-002"): b"revoked",
        }


# --- device-topic publish budget -------------------------------------------------------------

BUDGET = BrokerLimits(device_publish_rate=1, device_publish_burst=5)
STATUS_TOPIC = topics.device_topic("eu-1", "gw-001", topics.DeviceLeaf.STATUS)


async def _delivered(broker: AmqttHandle, client_id: str, topic: str, sent: int) -> int:
    """How many of ``sent`` publishes on ``topic`` by ``client_id`` reach a subscriber: the
    count up to the echo of a marker sent after them (one client's publishes are handled in
    order)."""
    async with connect(broker.settings, client_id="watcher") as watcher:
        await watcher.subscribe([topic, "sync/done"])
        async with connect(broker.settings, client_id=client_id) as publisher:
            for n in range(sent):
                await publisher.publish(topic, b"%d" % n)
            await publisher.publish("sync/done", b"")
        count = 0
        while (await _next(watcher)).topic != "sync/done":
            count += 1
        return count


@pytest.mark.asyncio
async def test_a_connection_flooding_device_topics_gets_through_only_its_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hub.service.broker")
    async with amqtt_broker(BUDGET) as broker:
        delivered = await _delivered(broker, "flooder", STATUS_TOPIC, 40)
    assert 5 <= delivered <= 10
    assert any("device_publish_rate" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_the_hubs_own_connection_and_other_topics_have_no_device_budget() -> None:
    async with amqtt_broker(BUDGET, unthrottled=frozenset({"hub"})) as broker:
        assert await _delivered(broker, "hub", STATUS_TOPIC, 40) == 40
        bundle_topic = topics.bundle_topic("eu-1", topics.Channel(topics.ChannelKind.ALL))
        assert await _delivered(broker, "cli", bundle_topic, 40) == 40


# --- client ids -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_second_connection_with_a_connected_client_id_is_refused_every_time() -> None:
    async with amqtt_broker() as broker, raw_client(broker.settings, "gw-001") as device:
        assert device.connack == ACCEPTED
        for clean in (True, False, True):
            async with raw_client(broker.settings, "gw-001", clean=clean) as intruder:
                assert intruder.connack == IDENTIFIER_REJECTED
                assert await intruder.dropped()
        assert await device.alive()


@pytest.mark.asyncio
async def test_a_refused_connection_does_not_change_the_holders_last_will() -> None:
    async with amqtt_broker() as broker, connect(broker.settings, client_id="hub") as hub:
        await hub.subscribe(["will/+"])
        async with raw_client(broker.settings, "gw-001", will=("will/gw-001", b"offline")) as dev:
            assert dev.connack == ACCEPTED
            will = ("will/gw-001", b"hijacked")
            async with raw_client(broker.settings, "gw-001", clean=False, will=will) as intruder:
                assert intruder.connack == IDENTIFIER_REJECTED
        message = await _next(hub)
    assert (message.topic, message.payload) == ("will/gw-001", b"offline")


@pytest.mark.asyncio
async def test_a_client_id_is_free_again_once_its_connection_is_gone() -> None:
    async with amqtt_broker() as broker, connect(broker.settings, client_id="hub") as hub:
        await hub.subscribe(["will/+"])
        async with raw_client(broker.settings, "gw-001", will=("will/gw-001", b"gone")) as first:
            assert first.connack == ACCEPTED
        assert (await _next(hub)).payload == b"gone"
        async with raw_client(broker.settings, "gw-001") as second:
            assert second.connack == ACCEPTED and await second.alive()


# --- connections ----------------------------------------------------------------------------

CONNECT_BYTE = b"\x10"
"""The first byte of a CONNECT, and all that a slowloris client sends."""


async def _half_connect(broker: AmqttHandle) -> RawClient:
    """A TCP connection that has sent one byte of CONNECT and nothing more."""
    reader, writer = await asyncio.open_connection(broker.settings.host, broker.port)
    writer.write(CONNECT_BYTE)
    await writer.drain()
    return RawClient(reader, writer, None)


def _close_wait_sockets(port: int) -> int:
    """This process's TCP sockets on ``port`` in CLOSE-WAIT (the peer closed, we did not)."""
    count = 0
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        count += int(local.rsplit(":", 1)[1], 16) == port and state == "08"
    return count


@pytest.mark.asyncio
async def test_a_connection_that_sends_no_whole_connect_in_time_is_dropped() -> None:
    async with amqtt_broker(BrokerLimits(connect_timeout_s=0.2)) as broker:
        slow = await _half_connect(broker)
        assert await slow.dropped()
        async with raw_client(broker.settings, "gw-001") as honest:
            assert honest.connack == ACCEPTED and await honest.alive()


@pytest.mark.asyncio
async def test_a_client_that_hangs_up_before_its_connect_leaves_no_socket_open() -> None:
    async with amqtt_broker() as broker:
        clients = [await _half_connect(broker) for _ in range(20)]
        for client in clients:
            client.writer.close()
        for client in clients:
            await client.writer.wait_closed()
        await wait_for(lambda: _close_wait_sockets(broker.port) == 0)
        async with raw_client(broker.settings, "gw-001") as honest:
            assert honest.connack == ACCEPTED


@pytest.mark.asyncio
async def test_the_oldest_pending_connection_is_dropped_for_a_new_one() -> None:
    async with amqtt_broker(BrokerLimits(pending_connections=3)) as broker:
        slow = [await _half_connect(broker) for _ in range(3)]
        async with raw_client(broker.settings, "gw-001") as honest:
            assert honest.connack == ACCEPTED
            assert await slow[0].dropped()
            assert await honest.alive()
        for client in slow:
            client.writer.transport.abort()


@pytest.mark.asyncio
async def test_past_the_connection_limit_a_new_connection_is_closed_unread_at_accept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hub.service.broker")
    async with (
        amqtt_broker(BrokerLimits(connections=2)) as broker,
        raw_client(broker.settings, "gw-001") as first,
    ):
        async with raw_client(broker.settings, "gw-002") as second:
            async with raw_client(broker.settings, "gw-003") as third:
                assert third.connack is None
            assert await first.alive() and await second.alive()
        await wait_for(lambda: broker.broker.open_connections == 1)
        async with raw_client(broker.settings, "gw-003") as third:
            assert third.connack == ACCEPTED
    assert any("too_many_connections" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_pending_connections_make_way_even_when_the_connection_limit_is_reached() -> None:
    async with (
        amqtt_broker(BrokerLimits(connections=2)) as broker,
        raw_client(broker.settings, "gw-001") as first,
    ):
        slow = await _half_connect(broker)
        async with raw_client(broker.settings, "gw-002") as second:
            assert second.connack == ACCEPTED
            assert await slow.dropped()
            assert await first.alive()


def test_the_connection_limit_stays_below_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert _connection_limit(MAX_CONNECTIONS) == 1024 - FD_RESERVE
    assert _connection_limit(500) == 500


# --- refusal logging ------------------------------------------------------------------------


def test_refusals_are_logged_in_a_short_burst_then_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hub.service.broker")
    refusals = _RefusalLog()
    for _ in range(1000):
        refusals.refuse("message_too_large", 100.0, "a packet from %s", "peer")
    refusals.refuse("topic_too_deep", 100.0, "a topic from %s", "peer")
    refusals.refuse("message_too_large", 100.0 + REFUSAL_LOG_INTERVAL_S, "a packet from %s", "p")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == REFUSAL_LOG_BURST + 2
    assert lines[-1].endswith(f"[{1000 - REFUSAL_LOG_BURST} more not logged since]")
    assert "topic_too_deep" in lines[-2]


def test_every_edgegov_topic_and_filter_fits_the_topic_limits() -> None:
    name = "n" * 64
    channel = topics.Channel(topics.ChannelKind.DEVICE, name)
    names = [topics.device_topic(name, name, leaf) for leaf in topics.DeviceLeaf] + [
        topics.bundle_topic(name, channel),
        topics.freshness_topic(name, channel),
        topics.revocation_topic(name, "device", name),
        *topics.hub_subscriptions(name, True),
        *topics.agent_subscriptions(name, name, [name]),
    ]
    assert max(len(topic.encode()) for topic in names) <= MAX_TOPIC_BYTES
    assert max(topic.count("/") + 1 for topic in names) <= MAX_TOPIC_LEVELS

"""The embedded MQTT broker ``edge-hub serve`` starts when no ``--broker`` is given: amqtt 0.12.

One command, no install, MQTT 3.1.1, in the hub's own event loop. What amqtt 0.12 does and
does not do, as the hub relies on it (checked against its source and pinned by tests):

- retained messages: kept in memory, delivered on subscribe, replaced by a newer retained
  publish, cleared by an empty one; **lost when the broker stops** (the hub re-publishes
  everything retained whenever it connects);
- QoS 1 both ways, and the last will (retained too) on an abnormal disconnect;
- **no shared subscriptions**: a ``$share/group/filter`` subscription is granted but taken
  as a literal filter that never matches, so the hub subscribes directly on amqtt
  (:attr:`EmbeddedBroker.shared_subscriptions` is ``False``);
- anonymous access, bound to loopback by default: it is for one host (a demo, a lab, a hub
  beside its devices). Production fleets use Mosquitto or a cluster with credentials and
  an ACL (``packaging/mosquitto/``).

Two amqtt 0.12 defects are worked around here (:class:`_Broker`, pinned by
``tests/test_embedded_broker.py``): on every connect it sent the new client the retained
messages matching *any* client's subscriptions (every agent got every other agent's acks,
and a fleet connecting cost the square of its size), and it walks its subscription table
across awaits, so a client subscribing or leaving meanwhile aborted that walk with
``RuntimeError: dictionary changed size during iteration`` (and the connecting client's
session with it).

Limits (:class:`hub.service.broker_limits.BrokerLimits`; docs/mqtt.md gives the figures behind
them). amqtt 0.12 has none: one 100 MB publish took the hub from 60 MB to 940 MB. Here:

1. **Packet size.** :class:`_FramedReader` follows the MQTT framing of every byte amqtt reads
   and drops the connection as soon as a fixed header announces a remaining length over
   ``message_bytes`` (or a malformed one), before amqtt reads the body: what a client sends
   past that header stays in socket buffers (asyncio pauses reading at 128 KiB, twice its
   64 KiB limit).
2. **Topics.** A PUBLISH topic, a SUBSCRIBE filter or a will topic over ``topic_bytes``
   UTF-8 bytes or ``topic_levels`` levels drops the connection (a subscription gets
   failure code 0x80 first); nothing of the publish is delivered or retained.
3. **Retained store.** Only edgegov's retained topics retain (roots, bundles, shadow
   bundles, tokens, revocations, and a device's status, ack and attestation result); a
   retained publish anywhere else is delivered but not retained. One that would take the store past
   ``retained_messages`` messages or ``retained_bytes`` topic and payload bytes is delivered
   to current subscribers but not retained (replacing or clearing one is always allowed),
   unless it comes from the hub's own connection (``unthrottled``), whose retained objects
   the registry bounds. The publisher stays connected: the store is shared, and dropping
   the hub would only make it reconnect and publish the same objects again.
4. **Client ids.** A client id belongs to the connection that holds it: a second connection
   with a client id that is connected is refused (CONNACK 2, identifier rejected) before
   any session state is touched, instead of amqtt's take-over. On loopback the broker sees a
   client's connection end as soon as its process does, so a legitimate client never needs
   to take over; a take-over would only let anyone kick a device off, again and again, and
   two agents misconfigured with one id would kick each other forever.

5. **Connections.** A connection must send its whole CONNECT within ``connect_timeout_s`` of
   being accepted, or it is dropped. At most ``connections`` are open (fewer if the
   open-file limit is lower) and ``pending_connections`` have not sent their CONNECT yet; a
   connection beyond either drops the oldest pending one, and with every open connection
   CONNECTed it is closed at accept, unread. Every connection's socket is closed when its
   session ends, however it ended.

Each refusal is logged with its reason, rate-limited per reason (:class:`_RefusalLog`).
What remains: each subscriber's outgoing queue is not bounded here, ``connections``
CONNECTed clients keep anyone else out, and a local client can still squat a device's client
id while the device is away (anonymous access: Mosquitto with credentials and an ACL is the
broker for networks).

amqtt is imported only here (and only by the hub: the agent never runs a broker).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Iterator
from types import TracebackType

from amqtt.adapters import (  # type: ignore[import-untyped]
    StreamReaderAdapter,
    StreamWriterAdapter,
    WriterAdapter,
)
from amqtt.broker import Broker, RetainedApplicationMessage  # type: ignore[import-untyped]
from amqtt.errors import BrokerError, MQTTError  # type: ignore[import-untyped]
from amqtt.mqtt.connack import IDENTIFIER_REJECTED, ConnackPacket  # type: ignore[import-untyped]
from amqtt.mqtt.protocol.broker_handler import (  # type: ignore[import-untyped]
    BrokerProtocolHandler,
)
from amqtt.session import ApplicationMessage, Session  # type: ignore[import-untyped]
from amqtt.utils import gen_client_id  # type: ignore[import-untyped]

from edge_agent.errors import TransportError
from edge_agent.protocol import topics
from edge_agent.support.mqtt import BrokerSettings
from hub.core.limits import RateLimiter
from hub.service.broker_limits import (
    FD_RESERVE,
    REFUSAL_LOG_BURST,
    REFUSAL_LOG_INTERVAL_S,
    BrokerLimits,
)

__all__ = ["EmbeddedBroker"]

logger = logging.getLogger(__name__)

_LISTENER = "default"
_DEFAULT_LIMITS = BrokerLimits()
_SUBSCRIPTION_REFUSED = 0x80
_LENGTH_BYTES = 4
STOP_GRACE_S = 5.0
"""Seconds amqtt's shutdown may take before every client socket is aborted (see ``stop``)."""
_DEVICE_TOPICS = f"{topics.PREFIX}/"
"""What every device topic starts with (its fourth level is ``device``)."""
"""An MQTT remaining length takes 1 to 4 bytes of 7 bits each."""
_RETAINED_LEVELS = {"root": 5, "bundle": 6, "shadow": 6, "fresh": 6, "revoke": 6, "trust": 5}
"""Retained edgegov topic families (the fourth level) and how many levels their topics have."""
_RETAINED_DEVICE_LEAVES = frozenset(
    {topics.DeviceLeaf.STATUS, topics.DeviceLeaf.ACK, topics.DeviceLeaf.ATTESTATION}
)
_SESSION_FIELDS_FROM_CONNECT = (
    "will_flag",
    "will_message",
    "will_topic",
    "will_qos",
    "keep_alive",
    "username",
    "password",
)


class _RefusalLog:
    """Refusals logged at most ``REFUSAL_LOG_BURST`` at once and then one per
    ``REFUSAL_LOG_INTERVAL_S`` per reason, each line counting those left unlogged since the
    last; a flood of bad packets costs a few lines and one counter per reason."""

    def __init__(self) -> None:
        self._limiter = RateLimiter(rate=1.0 / REFUSAL_LOG_INTERVAL_S, burst=REFUSAL_LOG_BURST)
        self._unlogged: dict[str, int] = {}

    def refuse(self, reason: str, now: float, message: str, *args: object) -> None:
        """Log one refusal for ``reason`` (``message % args`` says whose and what) unless
        this reason's budget is spent, at monotonic time ``now``."""
        if not self._limiter.allow(reason, now):
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return
        unlogged = self._unlogged.pop(reason, 0)
        logger.warning(
            "embedded broker refused (%s): " + message + " [%d more not logged since]",
            reason,
            *args,
            unlogged,
        )


class _FramedReader(StreamReaderAdapter):  # type: ignore[misc]
    """amqtt's TCP reader, following the MQTT framing of the bytes amqtt reads through it, to
    drop the connection at the fixed header of a packet over the size limit.

    amqtt reads a fixed header a byte at a time, then the body in as many reads as it
    needs. Here a remaining length over the limit (or longer than 4 bytes) is refused at
    its last byte: the read returns end-of-stream and the connection is aborted, so amqtt
    ends the session as for a client gone, without reading any of the body.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_packet_bytes: int,
        refusals: _RefusalLog,
    ) -> None:
        super().__init__(reader)
        self._writer = writer
        self._max_packet_bytes = max_packet_bytes
        self._refusals = refusals
        self._length: int | None = None
        """The remaining length being decoded; ``None`` while a packet's first byte is due."""
        self._length_bytes = 0
        self._body_left = 0
        self.dropped = False

    async def read(self, n: int = -1) -> bytes:
        if self.dropped:
            return b""
        data: bytes = await super().read(n)
        refused = self._follow(data)
        if refused is None:
            return data
        self.drop(*refused)
        return b""

    @property
    def closed(self) -> bool:
        """Whether this connection has ended (dropped here, or closed or reset by the peer),
        whether or not amqtt has finished with its session yet."""
        return self.dropped or self._reader.at_eof() or self._reader.exception() is not None

    def drop(self, reason: str, detail: str) -> None:
        """Refuse this connection: log why, abort the socket and read nothing more."""
        self._refusals.refuse(
            reason, time.monotonic(), "%s from %s", detail, self._writer.get_extra_info("peername")
        )
        self.dropped = True
        self._writer.transport.abort()

    def _follow(self, data: bytes) -> tuple[str, str] | None:
        """Advance the framing over ``data``; the refusal (reason, detail) if a header breaks it."""
        pos = 0
        while pos < len(data):
            if self._body_left:
                step = min(self._body_left, len(data) - pos)
                self._body_left -= step
                pos += step
                continue
            byte = data[pos]
            pos += 1
            if self._length is None:
                self._length, self._length_bytes = 0, 0
                continue
            self._length |= (byte & 0x7F) << (7 * self._length_bytes)
            self._length_bytes += 1
            if byte & 0x80:
                if self._length_bytes == _LENGTH_BYTES:
                    return "malformed_packet", "a remaining length longer than 4 bytes"
                continue
            if self._length > self._max_packet_bytes:
                return (
                    "message_too_large",
                    f"a packet of {self._length} bytes (limit {self._max_packet_bytes})",
                )
            self._body_left, self._length = self._length, None
        return None


class _RetainedStore(dict[str, RetainedApplicationMessage]):
    """amqtt's retained messages (topic -> message), counting their topic and payload bytes
    as they are stored, replaced and deleted (amqtt empties a message before deleting it)."""

    def __init__(self) -> None:
        super().__init__()
        self._sizes: dict[str, int] = {}
        self.total_bytes = 0

    def size_after(self, topic: str, data_bytes: int) -> tuple[int, int]:
        """(messages, bytes) held if ``data_bytes`` of payload were retained on ``topic``."""
        size = len(topic.encode()) + data_bytes
        count = len(self) + (topic not in self)
        return count, self.total_bytes - self._sizes.get(topic, 0) + size

    def __setitem__(self, topic: str, message: RetainedApplicationMessage) -> None:
        _, self.total_bytes = self.size_after(topic, len(message.data))
        self._sizes[topic] = len(topic.encode()) + len(message.data)
        super().__setitem__(topic, message)

    def __delitem__(self, topic: str) -> None:
        super().__delitem__(topic)
        self.total_bytes -= self._sizes.pop(topic)

    def clear(self) -> None:
        super().clear()
        self._sizes.clear()
        self.total_bytes = 0


class _SubscriptionTable(dict[str, list[tuple[Session, int]]]):
    """amqtt's filter -> subscribers table, iterated over snapshots: amqtt loops over it
    with awaits inside, while other clients' subscribes and disconnects change it."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def items(self) -> list[tuple[str, list[tuple[Session, int]]]]:  # type: ignore[override]
        return list(super().items())


class _Broker(Broker):  # type: ignore[misc]
    """amqtt's broker with the subscription table above, retained messages sent to a client
    only for its own subscriptions (amqtt tried every client's on each connect), and the
    limits of the module docstring."""

    def __init__(
        self,
        limits: BrokerLimits,
        unthrottled: frozenset[str],
        *args: object,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _SubscriptionTable()
        self._retained_messages = _RetainedStore()
        self._limits = limits
        self._refusals = _RefusalLog()
        self._unthrottled = unthrottled
        self._device_publishes = RateLimiter(
            limits.device_publish_rate, limits.device_publish_burst
        )
        self._max_connections = _connection_limit(limits.connections)
        self._max_pending = min(limits.pending_connections, self._max_connections)
        self.open_connections: set[_FramedReader] = set()
        """Connections being served, CONNECTed or not."""
        self._pending: dict[_FramedReader, None] = {}
        """Connections whose CONNECT is not read yet, oldest first."""

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        """Admit the connection within the connection limits, run amqtt's session on it,
        and close its socket whatever ended the session: amqtt left the socket of a client
        that hung up before its CONNECT was read open (CLOSE-WAIT until garbage collection)."""
        if not self._admit_connection(writer):
            return
        framed = _FramedReader(reader, writer, self._limits.message_bytes, self._refusals)
        self.open_connections.add(framed)
        self._pending[framed] = None
        try:
            await self._client_connected(listener_name, framed, StreamWriterAdapter(writer))
        finally:
            self.open_connections.discard(framed)
            self._pending.pop(framed, None)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def close_listener(self) -> None:
        """Stop accepting connections (an abandoned shutdown; see ``EmbeddedBroker.stop``).

        amqtt keeps its servers in a private mapping; pinned to amqtt 0.12, as
        :func:`_bound_port` reads it."""
        server = self._servers.get(_LISTENER)
        if server is not None:
            await server.close_instance()

    def abort_connections(self) -> None:
        """Abort every client's socket now (a shutdown that is stuck; see ``stop``)."""
        for framed in list(self.open_connections):
            framed.drop("broker_stopping", "the broker is stopping")

    def _admit_connection(self, writer: asyncio.StreamWriter) -> bool:
        """Whether a new TCP connection may be served: with ``connections`` open and none
        of them pending it is refused (closed at once, nothing read); with ``connections``
        open or ``pending_connections`` pending, the oldest pending one is dropped for it."""
        full = len(self.open_connections) >= self._max_connections
        if full and not self._pending:
            self._refusals.refuse(
                "too_many_connections",
                time.monotonic(),
                "a connection from %s: %d are open (limit %d); closed at accept",
                writer.get_extra_info("peername"),
                len(self.open_connections),
                self._max_connections,
            )
            writer.transport.abort()
            return False
        if full or len(self._pending) >= self._max_pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            self.open_connections.discard(oldest)
            oldest.drop(
                "connect_pending",
                f"a connection with no CONNECT yet, dropped for a new one ({len(self._pending) + 1}"
                f" pending, limit {self._max_pending}; {len(self.open_connections) + 1} open)",
            )
        return True

    async def _initialize_client_session(
        self, reader: _FramedReader, writer: WriterAdapter, address: str, port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """amqtt 0.12's session set-up, with the connect rules checked after the CONNECT
        packet is read and before any existing session is touched (amqtt's own method
        deletes or updates the session of a client id first, and takes it over later).
        amqtt's ``timeout-disconnect-delay`` step is left out: this broker's config has none
        (it lengthens the keep-alive; amqtt has no deadline for the CONNECT itself, which
        ``connect_timeout_s`` is).

        Raises:
            MQTTError: the CONNECT is invalid or refused (the connection is closed).
        """
        try:
            async with asyncio.timeout(self._limits.connect_timeout_s):
                handler, session = await BrokerProtocolHandler.init_from_connect(
                    reader, writer, self.plugins_manager
                )
        except TimeoutError as exc:
            reader.drop(
                "connect_timeout", f"no CONNECT within {self._limits.connect_timeout_s:g} s"
            )
            raise MQTTError("no CONNECT in time") from exc
        except MQTTError:
            await writer.close()
            raise
        finally:
            self._pending.pop(reader, None)
        await self._admit(reader, writer, session)
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for field in _SESSION_FIELDS_FROM_CONNECT:
                setattr(existing, field, getattr(session, field))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        return handler, session

    async def _admit(self, reader: _FramedReader, writer: WriterAdapter, session: Session) -> None:
        """Refuse a client id held by a live connection (CONNACK 2) and a will topic over the
        limits.

        Raises:
            MQTTError: refused; the connection is closed.
        """
        holder = self._sessions.get(session.client_id) if session.client_id else None
        if holder is not None and _holds_connection(*holder):
            self._refusals.refuse(
                "client_id_in_use",
                time.monotonic(),
                "client id %r from %s: it is connected already",
                session.client_id,
                writer.get_peer_info(),
            )
            await ConnackPacket.build(0, IDENTIFIER_REJECTED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"client id {session.client_id!r} is connected already")
        refused = self._topic_refusal(session.will_topic) if session.will_flag else None
        if refused is not None:
            reader.drop(refused[0], f"the will topic of {session.client_id!r}: {refused[1]}")
            raise MQTTError(f"the will topic of {session.client_id!r} is over the limits")

    async def _handle_message_delivery(
        self,
        client_session: Session,
        handler: BrokerProtocolHandler,
        wait_deliver: asyncio.Future[ApplicationMessage | None],
    ) -> bool:
        message = wait_deliver.result()
        refused = None if message is None else self._topic_refusal(message.topic)
        if refused is not None:
            _drop(handler, refused[0], f"a publish by {client_session.client_id!r}: {refused[1]}")
            return True
        if message is not None and self._over_device_budget(client_session, message.topic):
            return True
        return bool(await super()._handle_message_delivery(client_session, handler, wait_deliver))

    def _over_device_budget(self, session: Session, topic: str) -> bool:
        """Whether this publish on a device topic is one too many for its connection (then
        dropped, delivered to no one and counted); the hub's own connection has no budget."""
        if session.client_id in self._unthrottled or not topic.startswith(_DEVICE_TOPICS):
            return False
        if topic.split("/", 4)[3] != "device":
            return False
        if self._device_publishes.allow(session.client_id, time.monotonic()):
            return False
        self._refusals.refuse(
            "device_publish_rate",
            time.monotonic(),
            "a publish on %s by %r: over %g device-topic messages a second; dropped",
            topic,
            session.client_id,
            self._limits.device_publish_rate,
        )
        return True

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        refused = self._topic_refusal(subscription[0])
        if refused is None:
            return int(await super().add_subscription(subscription, session))
        holder = self._sessions.get(session.client_id)
        if holder is not None:
            _drop(holder[1], refused[0], f"a subscription by {session.client_id!r}: {refused[1]}")
        return _SUBSCRIPTION_REFUSED

    async def retain_message(
        self,
        source_session: Session | None,
        topic_name: str | None,
        data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:
        if data and topic_name is not None and not _is_retained_topic(topic_name):
            self._refusals.refuse(
                "not_retained",
                time.monotonic(),
                "retaining on %r by %r: no edgegov object is retained there; delivered, "
                "not retained",
                topic_name,
                getattr(source_session, "client_id", None),
            )
            return
        hub = getattr(source_session, "client_id", None) in self._unthrottled
        if data and topic_name is not None and not hub:
            count, size = self._retained_messages.size_after(topic_name, len(data))
            if count > self._limits.retained_messages or size > self._limits.retained_bytes:
                self._refusals.refuse(
                    "retained_full",
                    time.monotonic(),
                    "retaining %d bytes on %r by %r: the store would hold %d messages, "
                    "%d bytes (limits %d, %d); delivered, not retained",
                    len(data),
                    topic_name,
                    getattr(source_session, "client_id", None),
                    count,
                    size,
                    self._limits.retained_messages,
                    self._limits.retained_bytes,
                )
                return
        await super().retain_message(source_session, topic_name, data, qos)

    def retained(self, topic: str) -> bytes | None:
        """The payload held retained on ``topic``, if any."""
        held = self._retained_messages.get(topic)
        return None if held is None else bytes(held.data)

    def _topic_refusal(self, topic: str | None) -> tuple[str, str] | None:
        """The refusal (reason, detail) of a topic name or filter over the limits, if it is."""
        if topic is None:
            return None
        size = len(topic.encode())
        if size > self._limits.topic_bytes:
            return "topic_too_long", f"a topic of {size} bytes (limit {self._limits.topic_bytes})"
        levels = topic.count("/") + 1
        if levels > self._limits.topic_levels:
            return (
                "topic_too_deep",
                f"a topic of {levels} levels (limit {self._limits.topic_levels})",
            )
        return None

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        subscribers = self._subscriptions.get(subscription[0], ())
        if any(s.client_id == session.client_id for s, _ in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)


class EmbeddedBroker:
    """An amqtt broker listening on ``host:port`` (port 0: a free port, fixed at first start),
    within ``limits``.

    Use ``async with EmbeddedBroker() as broker:`` or :meth:`start` / :meth:`stop`; a stopped
    broker can be started again on the same port (its retained messages are gone).
    """

    shared_subscriptions = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: BrokerLimits = _DEFAULT_LIMITS,
        unthrottled: frozenset[str] = frozenset(),
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not a TCP port")
        self.host = host
        self.port = port
        self.limits = limits
        self.unthrottled = unthrottled
        """Client ids with no device-topic publish budget (the hub's own connection)."""
        self._broker: Broker | None = None

    @property
    def running(self) -> bool:
        return self._broker is not None

    def retains(self, topic: str, payload: bytes) -> bool:
        """Whether the broker holds exactly ``payload`` retained on ``topic`` now."""
        return self._broker is not None and self._broker.retained(topic) == payload

    @property
    def open_connections(self) -> int:
        """TCP connections being served now, CONNECTed or not (0 when stopped)."""
        return 0 if self._broker is None else len(self._broker.open_connections)

    @property
    def settings(self) -> BrokerSettings:
        """How to connect to it (valid once started)."""
        if self._broker is None:
            raise RuntimeError("the embedded broker is not running")
        return BrokerSettings(self.host, self.port)

    async def start(self) -> BrokerSettings:
        """Start listening.

        Raises:
            TransportError: the address cannot be bound (port in use, bad host).
        """
        if self._broker is not None:
            raise RuntimeError("the embedded broker is running already")
        broker = _Broker(
            self.limits,
            self.unthrottled,
            self._config(),
            plugin_namespace="edgegov.hub.broker.plugins",
        )
        try:
            await broker.start()
        except BrokerError as exc:
            raise TransportError(
                f"cannot start the embedded MQTT broker on {self.host}:{self.port}: "
                f"{exc.__cause__ or exc} (choose another --port, or 0 for a free one)"
            ) from exc
        self._broker = broker
        self.port = _bound_port(broker, self.port)
        logger.info("embedded amqtt broker listening on %s:%d", self.host, self.port)
        return self.settings

    async def stop(self) -> None:
        """Stop the broker and close every client connection (idempotent).

        amqtt stops each session's handler in turn; on Python 3.11 a handler whose read loop
        is cancelled as a packet arrives can wait for ever (its ``wait_for`` loses the
        cancellation, or its reader task ends without signalling that it stopped). So after
        ``STOP_GRACE_S`` every client's socket is aborted, which ends any read still waiting;
        a shutdown still stuck ``STOP_GRACE_S`` later is abandoned and the listener closed,
        so the hub always exits and its port is free again."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        shutdown = asyncio.ensure_future(broker.shutdown())
        if not await _finished(shutdown, STOP_GRACE_S):
            logger.warning(
                "the embedded broker did not stop within %g s; closing every client connection",
                STOP_GRACE_S,
            )
            broker.abort_connections()
            if not await _finished(shutdown, STOP_GRACE_S):
                logger.error(
                    "the embedded broker's shutdown is stuck in amqtt (a session handler that "
                    "never stops); abandoning it and closing the listener"
                )
                shutdown.cancel()
                await _finished(shutdown, STOP_GRACE_S)
                await broker.close_listener()
                return
        shutdown.result()
        logger.info("embedded amqtt broker on %s:%d stopped", self.host, self.port)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _config(self) -> dict[str, object]:
        return {
            "listeners": {
                _LISTENER: {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}
            },
            # Only anonymous access; amqtt's event/packet loggers and $SYS publisher stay off.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }


def _is_retained_topic(topic: str) -> bool:
    """Whether edgegov retains anything on ``topic``: a root, a channel's bundle, shadow
    bundle or token, a revocation, the device directory, or a device's status, ack or
    attestation result (docs/mqtt.md, "Topics")."""
    parts = topic.split("/")
    if len(parts) < 5 or f"{parts[0]}/{parts[1]}" != topics.PREFIX:
        return False
    family = parts[3]
    if family == "device":
        return len(parts) == 6 and parts[5] in _RETAINED_DEVICE_LEAVES
    return len(parts) == _RETAINED_LEVELS.get(family, 0)


def _connection_limit(wanted: int) -> int:
    """``wanted``, or fewer where the open-file limit would run out first: past it the
    listener cannot accept anyone (asyncio retries each second) and the hub cannot open its
    own files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - FD_RESERVE >= wanted:
        return wanted
    allowed = max(1, soft - FD_RESERVE)
    logger.warning(
        "the embedded broker takes at most %d connections, not %d: the open-file limit is %d "
        "(raise it with ulimit -n, or LimitNOFILE= in the systemd unit)",
        allowed,
        wanted,
        soft,
    )
    return allowed


def _holds_connection(session: Session, handler: BrokerProtocolHandler) -> bool:
    """Whether ``session`` is connected on a connection that has not ended: amqtt marks a
    session disconnected only after publishing its will, a few steps after the end."""
    reader = handler.reader
    return bool(session.transitions.is_connected()) and reader is not None and not reader.closed


async def _finished(task: asyncio.Future[None], timeout: float) -> bool:
    """Whether ``task`` ends within ``timeout`` seconds (waiting is shielded: cancelling the
    caller leaves ``task`` running)."""
    done, _ = await asyncio.shield(asyncio.wait([task], timeout=timeout))
    return bool(done)


def _drop(handler: BrokerProtocolHandler, reason: str, detail: str) -> None:
    """Drop the connection behind ``handler``: its reader is a :class:`_FramedReader`, as
    every connection comes through :meth:`_Broker.stream_connected` (one TCP listener)."""
    handler.reader.drop(reason, detail)


def _bound_port(broker: Broker, requested: int) -> int:
    """The port the listener actually bound (differs from ``requested`` only for 0).

    amqtt exposes its servers only as a private mapping; pinned to amqtt 0.12, checked here.
    """
    if requested:
        return requested
    server = getattr(broker, "_servers", {}).get(_LISTENER)
    sockets = getattr(getattr(server, "instance", None), "sockets", None)
    if not sockets:
        raise TransportError("the embedded MQTT broker did not report its listening port")
    return int(sockets[0].getsockname()[1])

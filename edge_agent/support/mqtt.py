"""The one module that imports aiomqtt: connect, publish, subscribe, receive, reconnect.

Everything above it sees :class:`Connection` and :class:`Incoming` and catches
:class:`~edge_agent.errors.TransportError`. aiomqtt's in-memory queues are never trusted with
anything that must not be lost (DESIGN.md section 5): retained topics are re-delivered on
every reconnect, and lineage stays in SQLite until the hub acknowledges it. The incoming
queue is still bounded and sized so that a burst of retained messages fits.

What a broker sends is bounded before anything is verified: a packet whose announced length
exceeds :data:`MAX_PACKET_BYTES` ends the connection before its body is read (MQTT 3.1.1 has
no way to skip one packet), and the incoming queue holds at most
:data:`MAX_QUEUED_INCOMING_BYTES` of payload, so a broker serving huge retained messages
costs the agent a reconnect, never its memory.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt

from edge_agent.errors import ConfigError, TransportError
from edge_agent.protocol.limits import MAX_MESSAGE_BYTES, MAX_PACKET_BYTES

__all__ = [
    "DEFAULT_INCOMING_QUEUE",
    "MAX_MESSAGE_BYTES",
    "MAX_PACKET_BYTES",
    "MAX_QUEUED_INCOMING_BYTES",
    "BrokerSettings",
    "Connection",
    "Incoming",
    "LastWill",
    "backoff_delays",
    "check_tls",
    "connect",
    "stay_connected",
]

DEFAULT_INCOMING_QUEUE = 10_000
"""Messages aiomqtt may hold before it discards (aiomqtt issue 108); nothing lost there
matters, but a full queue would delay trust updates, so it is sized far above one burst."""
MAX_QUEUED_INCOMING_BYTES = 16 * 1024 * 1024
"""Payload bytes held in the incoming queue at once: eight largest messages; beyond it a
message is discarded like one over the count (retained topics come again on reconnect)."""
CONNECT_TIMEOUT_S = 10.0
_SCHEMES = {"mqtt": (1883, False), "mqtts": (8883, True)}

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how to connect. ``password`` is never logged or printed."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_url(cls, url: str, **extra: str | None) -> BrokerSettings:
        """Parse ``mqtt://host[:port]`` or ``mqtts://host[:port]`` (user info allowed).

        Raises:
            ConfigError: another scheme, no host, or a bad port.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"broker URL {url!r} is malformed: {exc}") from exc
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigError(
                f"broker URL {url!r} must look like mqtt://host:1883 or mqtts://host:8883"
            )
        default_port, tls = _SCHEMES[parts.scheme]
        return cls(
            host=parts.hostname,
            port=port or default_port,
            tls=tls,
            username=unquote(parts.username) if parts.username else extra.get("username"),
            password=unquote(parts.password) if parts.password else extra.get("password"),
            ca_file=extra.get("ca_file"),
            cert_file=extra.get("cert_file"),
            key_file=extra.get("key_file"),
        )

    @property
    def url(self) -> str:
        """The URL without credentials (safe to print)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LastWill:
    topic: str
    payload: bytes
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    retain: bool


class Connection:
    """An open MQTT session: publish, subscribe and iterate incoming messages."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish and, for QoS 1, wait for the broker's PUBACK.

        Raises:
            TransportError: the connection is gone.
        """
        requests = _cancel_requests()
        try:
            await self._client.publish(
                topic, payload, qos=qos, retain=retain, timeout=CONNECT_TIMEOUT_S
            )
        except aiomqtt.MqttError as exc:
            raise TransportError(f"publish to {topic} failed: {exc}") from exc
        _deliver_cancellation_since(requests)

    async def subscribe(self, filters: Sequence[str], *, qos: int = 1) -> None:
        """Subscribe to every filter in one request.

        Raises:
            TransportError: the connection is gone or the broker refused a filter.
        """
        requests = _cancel_requests()
        try:
            granted = await self._client.subscribe(
                [(f, qos) for f in filters], timeout=CONNECT_TIMEOUT_S
            )
        except aiomqtt.MqttError as exc:
            raise TransportError(f"subscribe failed: {exc}") from exc
        _deliver_cancellation_since(requests)
        refused = [f for f, code in zip(filters, granted, strict=False) if _refused(code)]
        if refused:
            raise TransportError(f"the broker refused the subscription(s) {', '.join(refused)}")

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        """Drop every filter in one request and wait for the broker's UNSUBACK.

        Messages the broker queued for a filter before it processed the request may still
        arrive (MQTT 3.1.1 section 3.10.4: it MAY deliver what it had buffered).

        Raises:
            TransportError: the connection is gone.
        """
        requests = _cancel_requests()
        try:
            await self._client.unsubscribe(list(filters), timeout=CONNECT_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"unsubscribe failed: {exc}") from exc
        _deliver_cancellation_since(requests)

    @property
    def backlog(self) -> int:
        """Messages received and not yet taken from :meth:`messages`."""
        return len(self._client.messages)

    @property
    def retained_at(self) -> float:
        """Monotonic time at which the last message with the RETAIN flag arrived (0.0: none
        yet), queued or not. A broker sets the flag only on what it sends because a
        subscription is new (MQTT 3.1.1 [MQTT-3.3.1-8] and [MQTT-3.3.1-9]), so this tells
        when the retained burst of the latest subscriptions last moved."""
        queue = self._client._queue
        return queue.retained_at if isinstance(queue, _BoundedQueue) else 0.0

    async def messages(self) -> AsyncIterator[Incoming]:
        """Incoming messages until the connection drops.

        Raises:
            TransportError: the connection dropped.
        """
        try:
            async for message in self._client.messages:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = b"" if payload is None else str(payload).encode()
                yield Incoming(message.topic.value, bytes(payload), bool(message.retain))
        except aiomqtt.MqttError as exc:
            raise TransportError(f"connection lost: {exc}") from exc


class _BoundedQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming queue, bounded in payload bytes as well as in messages: a message
    that would take it over ``max_bytes`` is refused (``QueueFull``: aiomqtt discards it).
    It also notes when a retained message last arrived (:attr:`Connection.retained_at`)."""

    max_bytes = MAX_QUEUED_INCOMING_BYTES

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.bytes = 0
        self.retained_at = 0.0

    def put_nowait(self, item: aiomqtt.Message) -> None:
        if item.retain:
            self.retained_at = time.monotonic()
        if self.bytes + _payload_bytes(item) > self.max_bytes:
            raise asyncio.QueueFull
        super().put_nowait(item)

    def _put(self, item: aiomqtt.Message) -> None:
        super()._put(item)
        self.bytes += _payload_bytes(item)

    def _get(self) -> aiomqtt.Message:
        item = super()._get()
        self.bytes -= _payload_bytes(item)
        return item


def _queue_type(max_bytes: int) -> type[_BoundedQueue]:
    return type("_IncomingQueue", (_BoundedQueue,), {"max_bytes": max_bytes})


def _payload_bytes(message: aiomqtt.Message) -> int:
    payload = message.payload
    return len(payload) if isinstance(payload, bytes | bytearray) else 0


def _bound_incoming_packets(client: aiomqtt.Client, max_bytes: int) -> None:
    """Make paho refuse a packet longer than ``max_bytes`` once its length is read, before
    reading its body: paho (2.x) would otherwise buffer up to 256 MiB per packet, and
    MQTT 3.1.1 cannot tell the broker a limit. Refusing ends the connection (paho reports
    a lost connection, aiomqtt an :class:`aiomqtt.MqttError`)."""
    paho = client._client
    receive = paho._sock_recv

    def bounded_receive(bufsize: int) -> bytes:
        packet = paho._in_packet
        if packet["have_remaining"] and packet["remaining_length"] > max_bytes:
            logger.warning(
                "the broker sent a %d-byte packet, over the %d-byte limit: disconnecting",
                packet["remaining_length"],
                max_bytes,
            )
            raise OSError(f"incoming packet larger than {max_bytes} bytes")
        return receive(bufsize)

    paho._sock_recv = bounded_receive  # type: ignore[method-assign]


def _cancel_requests() -> int:
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def _deliver_cancellation_since(requests: int) -> None:
    """Raise a cancellation requested since ``requests`` was counted that aiomqtt swallowed.

    On Python 3.11, ``asyncio.wait_for`` returns the result instead of raising when its task
    is cancelled in the loop iteration the awaited future completes (CPython gh-86296, fixed
    in 3.12): a PUBACK, SUBACK or CONNACK racing a stop. The task would then go on serving
    and whoever stops it would wait forever; ``Task.cancelling()`` still counts the request.
    The count is compared with the one taken before the call, not with zero: a 3.11
    TaskGroup whose child fails while it is exiting leaves its parent's count raised.
    """
    if _cancel_requests() > requests:
        raise asyncio.CancelledError


def _refused(code: object) -> bool:
    value = getattr(code, "value", code)
    return isinstance(value, int) and value >= 0x80


@asynccontextmanager
async def connect(
    settings: BrokerSettings,
    *,
    client_id: str,
    will: LastWill | None = None,
    clean_session: bool = True,
    incoming_queue: int = DEFAULT_INCOMING_QUEUE,
    incoming_bytes: int = MAX_QUEUED_INCOMING_BYTES,
    max_packet_bytes: int = MAX_PACKET_BYTES,
    keepalive_s: int = 30,
) -> AsyncIterator[Connection]:
    """Connect to the broker for the duration of the ``async with`` block (MQTT 3.1.1).

    At most ``incoming_queue`` messages and ``incoming_bytes`` of payload wait in the
    incoming queue; a packet over ``max_packet_bytes`` ends the connection unread.

    Raises:
        TransportError: the broker is unreachable, refused the credentials, or the
            connection dropped inside the block.
        ConfigError: a TLS file cannot be loaded.
    """
    client = aiomqtt.Client(
        settings.host,
        settings.port,
        identifier=client_id,
        username=settings.username,
        password=settings.password,
        will=None if will is None else aiomqtt.Will(will.topic, will.payload, 1, will.retain),
        clean_session=clean_session,
        keepalive=keepalive_s,
        timeout=CONNECT_TIMEOUT_S,
        max_queued_incoming_messages=incoming_queue,
        queue_type=_queue_type(incoming_bytes),
        tls_context=_tls_context(settings),
        protocol=aiomqtt.ProtocolVersion.V311,
    )
    _bound_incoming_packets(client, max_packet_bytes)
    requests = _cancel_requests()
    try:
        async with client:
            _deliver_cancellation_since(requests)
            yield Connection(client)
    except aiomqtt.MqttError as exc:
        raise TransportError(f"broker {settings.url}: {exc}") from exc


def check_tls(settings: BrokerSettings) -> None:
    """Load the TLS files now, so a misconfiguration stops the agent at start instead of
    failing every reconnect.

    Raises:
        ConfigError: a TLS file cannot be loaded.
    """
    _tls_context(settings)


def _tls_context(settings: BrokerSettings) -> ssl.SSLContext | None:
    if not settings.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS files for {settings.url}: {exc}") from exc
    return context


def backoff_delays(
    initial_s: float = 0.5, maximum_s: float = 60.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Reconnect delays: capped exponential backoff with full jitter, forever."""
    rng = rng or random.Random()
    ceiling = initial_s
    while True:
        yield rng.uniform(0, ceiling)
        ceiling = min(maximum_s, ceiling * 2)


async def stay_connected(
    session: Callable[[Callable[[], None]], Awaitable[None]],
    *,
    url: str,
    initial_s: float,
    maximum_s: float,
    on_lost: Callable[[Exception], None],
    stop: asyncio.Event | None = None,
    rng: random.Random | None = None,
) -> None:
    """Run ``session`` again and again, reconnecting in one place for the hub and the agent.

    ``session`` connects, serves, and returns or raises when the connection is gone; it
    calls the function it is given once it is connected, which starts the backoff afresh.
    Between two sessions the loop waits a capped exponential backoff with full jitter
    (:func:`backoff_delays` from ``initial_s`` to ``maximum_s``) and logs it. A session that
    fails (a :class:`~edge_agent.errors.TransportError`, or an exception group from its
    task group) is handed to ``on_lost``, which logs it in its caller's words, or raises to
    end the loop (a :class:`~edge_agent.errors.ConfigError` will not heal by retrying).
    Returns once ``stop`` is set (checked before each session); runs until cancelled
    without one. Cancellation always propagates. ``rng`` draws the jitter.
    """
    delays = backoff_delays(initial_s, maximum_s, rng)
    while stop is None or not stop.is_set():
        connected = False

        def on_connected() -> None:
            nonlocal connected
            connected = True

        try:
            await session(on_connected)
        except Exception as exc:
            on_lost(exc)
        if connected:
            delays = backoff_delays(initial_s, maximum_s, rng)
        delay = next(delays)
        logger.info("reconnecting to %s in %.1f s", url, delay)
        await asyncio.sleep(delay)

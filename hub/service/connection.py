"""The hub's broker connection: connect, subscribe, reconnect.

The hub connects forever, with capped exponential backoff and full jitter
(:func:`~edge_agent.support.mqtt.stay_connected`, the agent's loop too). On every
connection it decides shared or direct device subscriptions (configured, the embedded
broker's answer, or probed once on any other broker), subscribes to the device topics of
every region it knows (:class:`Subscriptions`), has everything retained published again,
and only then is ready and hands the connection to the intake. A TLS file it cannot load
(:class:`~edge_agent.errors.ConfigError`) does not heal by retrying: the service stops.

With shared subscriptions a status reaches one hub process, but a shared subscription
delivers nothing retained, so on connecting (and for a region that appears later) the hub
also holds a direct status subscription and drops it once the broker has been quiet for
:data:`RETAINED_QUIET_S`: it has read every status the broker holds, a dead device's last
will included. Until then a live status may reach two hubs; the second ``record_status`` of
the same bytes changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from edge_agent.errors import ConfigError, TransportError
from edge_agent.protocol import topics
from edge_agent.support.mqtt import BrokerSettings, Connection, connect, stay_connected
from hub.core.routing import HUB_DEVICE_LEAVES
from hub.registry import Registry
from hub.registry.gateway import RegistryGateway
from hub.service.announce import ServeAnnouncer
from hub.service.broker import EmbeddedBroker
from hub.service.config import HubConfig, HubStats

__all__ = [
    "INCOMING_QUEUE",
    "PROBE_TIMEOUT_S",
    "RETAINED_QUIET_S",
    "HubConnection",
    "Subscriptions",
]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0
"""How long the shared-subscription probe waits for its own message (once per service)."""
INCOMING_QUEUE = 100_000
"""Messages aiomqtt may hold for the hub: at connect it gets every device's retained status
and every retained trust object (and its own snapshot back) before it starts consuming."""
RETAINED_QUIET_S = 2.0
"""How long no retained message must have arrived (since the direct status subscription was
granted) before the hub drops it. MQTT gives no sign that the retained burst of a
subscription is complete: the SUBACK may come before it, and a broker may discard what it
buffered for a filter once the filter is unsubscribed (MQTT 3.1.1 section 3.10.4, MQTT 5
section 3.10.4: it "MAY continue to deliver any existing messages buffered"). What it does
guarantee is the RETAIN flag on exactly those messages ([MQTT-3.3.1-8], [MQTT-3.3.1-9]), so
the hub waits for them to stop; keeping the read longer costs only duplicate statuses."""


class Subscriptions:
    """The regions the hub is subscribed to on this connection, shared or direct, and the
    direct status reads it still holds."""

    def __init__(self, registry: Registry, db: RegistryGateway, stats: HubStats) -> None:
        self._registry = registry
        self._db = db
        self._stats = stats
        self._subscribed: set[str] = set()
        self._reads: set[str] = set()
        self._reads_since = 0.0
        self._reading = asyncio.Event()
        self.shared = False
        """Whether lineage, status and evidence come through shared subscriptions."""

    async def update(self, conn: Connection) -> None:
        """Subscribe to the topics of every region the registry knows and ``conn`` does not
        have yet (with shared subscriptions, a direct status read of each as well).

        Raises:
            TransportError: the broker refused or the connection is gone.
        """
        new = [r for r in await self._db(self._registry.regions) if r not in self._subscribed]
        filters = [
            f
            for region in new
            for f in (*topics.hub_subscriptions(region, self.shared), *_watched_filters(region))
        ]
        reads = [f for region in new for f in topics.hub_status_reads(region, self.shared)]
        if filters:
            await conn.subscribe([*filters, *reads])
            self._subscribed.update(new)
        if reads:
            self._reads.update(reads)
            self._reads_since = time.monotonic()
            self._reading.set()

    async def end_reads(self, conn: Connection) -> None:
        """For as long as ``conn`` serves: drop the direct status reads once no retained
        message has arrived for :data:`RETAINED_QUIET_S` since they were granted.

        A read the broker does not acknowledge dropping stays, and the connection with it:
        statuses then reach this hub twice, which changes nothing.
        """
        while True:
            await self._reading.wait()
            while (quiet := time.monotonic() - max(self._reads_since, conn.retained_at)) < (
                RETAINED_QUIET_S
            ):
                await asyncio.sleep(RETAINED_QUIET_S - quiet)
            ending = sorted(self._reads)
            try:
                await conn.unsubscribe(ending)
            except TransportError as exc:
                logger.warning("the direct status subscription stays: %s", exc)
                return
            self._reads.difference_update(ending)
            if not self._reads:
                self._reading.clear()
            self._stats.status_reads += len(ending)
            logger.info("retained statuses read; statuses now come shared: %s", ending)

    def forget(self) -> None:
        """The connection is gone (a new one starts with no subscription)."""
        self._subscribed.clear()
        self._reads.clear()
        self._reading.clear()


class HubConnection:
    """Keeps the hub connected; ``publish_all`` runs on each connection before it is
    ready, ``serve`` consumes it, ``on_shared`` hears whether subscriptions are shared."""

    def __init__(
        self,
        config: HubConfig,
        stats: HubStats,
        settings: BrokerSettings,
        client_id: str,
        subscriptions: Subscriptions,
        *,
        embedded: bool,
        publish_all: Callable[[Connection], Awaitable[None]],
        serve: Callable[[Connection], Awaitable[None]],
        on_shared: Callable[[], None],
        forget: Callable[[], None],
        announcer: ServeAnnouncer | None = None,
    ) -> None:
        self._config = config
        self._stats = stats
        self._settings = settings
        self._client_id = client_id
        self._subscriptions = subscriptions
        self._embedded = embedded
        self._publish_all = publish_all
        self._serve = serve
        self._on_shared = on_shared
        self._forget = forget
        self._announcer = announcer
        self._probed: bool | None = None
        self._conn: Connection | None = None
        self.ready = asyncio.Event()
        self.fatal: ConfigError | None = None
        """Why the hub stopped connecting, if it did (its TLS files cannot be loaded)."""

    def current(self) -> Connection | None:
        """The connection once ready (subscribed, everything retained republished)."""
        return self._conn if self.ready.is_set() else None

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set; on a :class:`ConfigError`, record it as
        :attr:`fatal`, set ``stop`` and return."""
        try:
            await stay_connected(
                self._session,
                url=self._settings.url,
                initial_s=self._config.reconnect_initial_s,
                maximum_s=self._config.reconnect_max_s,
                on_lost=self._on_lost,
                stop=stop,
            )
        except ConfigError as exc:
            logger.error("cannot connect to %s: %s", self._settings.url, exc)
            self.fatal = exc
            stop.set()

    def _on_lost(self, exc: Exception) -> None:
        if not isinstance(exc, TransportError):
            raise exc
        logger.warning("hub connection to %s: %s; reconnecting", self._settings.url, exc)
        if self._announcer is not None:
            self._announcer.lost(str(exc))

    async def _session(self, connected: Callable[[], None]) -> None:
        try:
            async with connect(
                self._settings,
                client_id=self._client_id,
                clean_session=True,
                incoming_queue=INCOMING_QUEUE,
            ) as conn:
                await self._on_connected(conn)
                connected()
                await self._serve_and_end_reads(conn)
        finally:
            self._conn = None
            self.ready.clear()
            self._subscriptions.forget()
            self._forget()

    async def _serve_and_end_reads(self, conn: Connection) -> None:
        """Serve ``conn``; meanwhile drop the direct status reads once they are done."""
        reads = asyncio.create_task(
            self._subscriptions.end_reads(conn), name=f"{self._client_id}-status-reads"
        )
        try:
            await self._serve(conn)
        finally:
            reads.cancel()
            await asyncio.wait([reads])
            if not reads.cancelled() and reads.exception() is not None:
                logger.error("status reads failed", exc_info=reads.exception())

    async def _on_connected(self, conn: Connection) -> None:
        self._stats.connections += 1
        self._subscriptions.shared = await self._decide_shared(conn)
        self._on_shared()
        await self._subscriptions.update(conn)
        await self._publish_all(conn)
        self._conn = conn
        self.ready.set()
        if self._announcer is not None:
            self._announcer.connected(self._subscriptions.shared)
        logger.info(
            "hub connected to %s (%s device subscriptions)",
            self._settings.url,
            "shared" if self._subscriptions.shared else "direct",
        )

    async def _decide_shared(self, conn: Connection) -> bool:
        if self._config.shared_subscriptions is not None:
            return self._config.shared_subscriptions
        if self._embedded:
            return EmbeddedBroker.shared_subscriptions
        if self._probed is None:
            self._probed = await _probe_shared(conn, self._client_id)
        return self._probed


async def _probe_shared(conn: Connection, client_id: str) -> bool:
    """Whether the broker delivers through ``$share/`` subscriptions: subscribe to a probe
    topic of our own through one, publish to it, and wait for it to come back."""
    suffix = "".join(c if c.isalnum() or c in "-_." else "_" for c in client_id)[:64]
    topic = f"{topics.PREFIX}/_probe/{suffix}"
    try:
        await conn.subscribe([f"$share/{topics.SHARED_GROUP}/{topic}"])
    except TransportError as exc:
        if "refused" not in str(exc):
            raise
        return False
    await conn.publish(topic, b"probe", qos=1)
    messages = conn.messages()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            while (await anext(messages)).topic != topic:
                pass
            return True
    except TimeoutError:
        pass
    logger.info("the broker does not deliver shared subscriptions: subscribing directly")
    return False


def _watched_filters(region: str) -> tuple[str, ...]:
    """Retained families the hub owns beyond ``topics.hub_subscriptions``' trust topics:
    freshness tokens and the device leaves only the hub publishes on. The hub watches them
    to clear what it did not publish (its own messages come back to it too: one token per
    channel a round, each ack, challenge and result once)."""
    base = f"{topics.PREFIX}/{region}"
    return (f"{base}/fresh/#", *(f"{base}/device/+/{leaf}" for leaf in HUB_DEVICE_LEAVES))

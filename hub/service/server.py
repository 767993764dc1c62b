"""``edge-hub serve``: the hub's MQTT service (DESIGN.md section 5).

While it runs, the hub:

1. starts the embedded amqtt broker, unless it is given a broker;
2. connects to the broker, forever, with capped exponential backoff and full jitter;
3. on every connection: decides shared or direct lineage subscriptions, subscribes to the
   device topics of every region it knows, and re-publishes everything retained it is the
   source of (roots, bundles, revocations, acks), so a restarted broker loses nothing;
4. verifies each lineage batch against the device's stored log (:mod:`hub.core.ingest`), stores
   it in one transaction and only then publishes the signed, retained ack; records each
   device-signed status that is fresh (signed near the hub's time, newer than the one held:
   the only thing that moves "last heard from");
5. every ``freshness_interval_s`` publishes a signed freshness token for every channel with a
   bundle (whether or not the registry can record it), picks up devices, regions, bundles
   and revocations added by other commands, and flushes the rejection counters;
6. attestation (:mod:`hub.service.attest`): every ``attest_interval_s`` challenges every registered
   device with a fresh nonce, and at once (at most every ``attest_retry_s``) a device whose
   signed status reports ``attestation_failed`` or ``attestation_stale``; verifies each
   answer and publishes the signed, retained result;
7. clears (an empty retained message) what is retained on a trust or freshness topic of its
   regions that it does not publish on, and what it did not publish on a device's ack,
   challenge or attestation topic (a registered device's ack is restored instead), so
   agents do not fetch and refuse it on every reconnect.

Every message is bounded before it is parsed: a size cap per topic, then a signature check
paid from a budget of its own (:class:`~hub.core.limits.VerificationBudget`), and only for what
verified a token bucket per device, so traffic that is not a device's never spends that
device's budget. A message that fails is counted as a rejection against the registered
device whose topic it came on (one counter per code per device), or per code only when it
names no registered device, never acknowledged as that device's. Nothing a device sends can
stop the service: a message that fails in an unexpected way is logged and counted as
``internal_error``. docs/mqtt.md ("The hub under attack") has the rules and measurements.

Use it in-process as ``async with HubService(HubConfig(hub_dir)) as hub: await
hub.wait_ready()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from edge_agent.errors import ConfigError, EdgeGovError, TransportError
from edge_agent.protocol import topics
from edge_agent.protocol.attestation import (
    MAX_EVIDENCE_BYTES,
    AttestationError,
    Evidence,
    verify_challenge,
    verify_evidence,
    verify_result,
)
from edge_agent.protocol.checkpoint import origin_for
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import TrustRoot
from edge_agent.protocol.shipping import (
    MAX_BATCH_BYTES,
    MAX_STATUS_BYTES,
    DeviceStatus,
    LineageBatch,
    ShippingError,
    verify_ack,
    verify_status,
)
from edge_agent.protocol.topics import DeviceLeaf
from edge_agent.support.mqtt import BrokerSettings, Connection, Incoming, backoff_delays, connect
from hub.core.ingest import Duplicate, IngestError, RejectCode, ingest_opened, open_batch
from hub.core.limits import FairQueue, RateLimiter, RejectionCounter, VerificationBudget
from hub.core.publications import Publication, ack_publication, parse_channel
from hub.hubdir.keys import load_role_keys
from hub.hubdir.layout import HubDir, HubKeys, ServeInfo
from hub.registry import UNREGISTERED, DeviceRecord, Registry, RegistryError
from hub.registry.records import DeviceLog
from hub.service.attest import DEFAULT_CHALLENGE_TTL_S, Verifier
from hub.service.broker import EmbeddedBroker
from hub.service.broker_limits import BrokerLimits
from hub.service.publish import ack_snapshot, issue_freshness, retained_snapshot

__all__ = ["HubConfig", "HubService", "HubStats"]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0
"""How long the shared-subscription probe waits for its own message (once per service)."""
PUBLISH_CHUNK = 64
"""QoS 1 publishes in flight at once when publishing many retained messages."""
CANCEL_RETRY_S = 0.5
"""Seconds to wait for cancelled tasks before cancelling them again (see ``_cancel_all``)."""
MAX_REMEMBERED = 100_000
"""Retained topics whose current bytes the hub remembers; past that it republishes."""
FULL_REPUBLISH_S = 600.0
"""How often the schedule republishes every retained object regardless (see ``_tick``)."""
INCOMING_QUEUE = 100_000
"""Messages aiomqtt may hold for the hub: at connect it gets every device's retained status
and every retained trust object (and its own snapshot back) before it starts consuming."""
GROUP_MAX = 256
"""Most incoming messages handled in one registry transaction (one fsync)."""
GROUP_MAX_S = 0.2
"""Longest a burst holds the registry's write lock before committing (other ``edge-hub``
commands and hub processes wait for it; fewer, larger commits are what carry the ingest
rate: at 50 ms the hub stored a third fewer entries a second)."""
WRITER_PAUSE_S = 0.025
"""Pause between two groups of one long burst, in which other writers take the lock."""
STORE_RETRIES = 3
"""Times a batch is re-verified when another hub process stored one of that device's
batches between verification and commit."""
_FLOOD_CODES = frozenset(
    {"rate_limited", "oversize", "unknown_device", "bad_topic", "malformed", "unverified_flood"}
)
"""Codes logged at debug level only: anyone reaching the broker can cause them at will."""
WARNINGS_PER_MINUTE = 6.0
"""Warnings logged per (device, code) a minute at most (after a burst of 3); the rest at
debug level, counted all the same."""
_SIGN1_HEAD = b"\xd2\x84"
"""What every device-signed message starts with: CBOR tag 18 (COSE_Sign1), an array of 4."""
_MAX_PAYLOAD = {
    DeviceLeaf.LINEAGE: MAX_BATCH_BYTES,
    DeviceLeaf.STATUS: MAX_STATUS_BYTES,
    DeviceLeaf.EVIDENCE: MAX_EVIDENCE_BYTES,
}
_ATTESTATION_GATES = frozenset({"attestation_failed", "attestation_stale"})
_HUB_DEVICE_LEAVES = (DeviceLeaf.ACK, DeviceLeaf.CHALLENGE, DeviceLeaf.ATTESTATION)
"""Device topics only the hub publishes on."""
STRAY_CLEAR_S = 1.0
"""Least seconds between two rounds clearing retained trust objects the hub does not own."""
CHALLENGE_RETENTION_S = 3600
"""Seconds spent or expired challenge nonces are kept (for the replay counters' messages)."""


@dataclass(frozen=True, slots=True)
class HubConfig:
    """How ``edge-hub serve`` runs. ``broker=None`` starts the embedded amqtt broker on
    ``bind:port`` (port 0: a free one)."""

    hub_dir: Path
    broker: BrokerSettings | None = None
    bind: str = "127.0.0.1"
    port: int = 0
    keys_dir: Path | None = None
    freshness_interval_s: float = 10.0
    token_ttl_s: int = 60
    shared_subscriptions: bool | None = None
    """``None``: direct on the embedded broker, probed on any other."""
    device_rate: float = 20.0
    """Messages per second each device may send (sustained); ``device_burst`` at once."""
    device_burst: int = 100
    unknown_rate: float = 20.0
    """Lookups per second for messages naming a device this process does not know yet."""
    unverified_topic_rate: float = 512 * 1024
    """Bytes a second that signature checks of messages which then fail to verify may cost
    on one device topic (a burst of four seconds' worth; see :class:`VerificationBudget`)."""
    unverified_total_rate: float = 32 * 1024 * 1024
    """The same, shared by all topics once a topic's own share is spent."""
    status_window_s: int = 120
    """A signed status is recorded only if its signed time is this close to the hub's."""
    client_id: str | None = None
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    write_serve_file: bool = True
    attest_interval_s: float = 300.0
    """Seconds between rounds challenging every registered device."""
    attest_ttl_s: int = 900
    """Seconds an attestation result is valid: a device denies when it is not renewed."""
    attest_retry_s: float = 10.0
    """Least seconds between on-demand challenges of one device (its status asked)."""
    challenge_ttl_s: int = DEFAULT_CHALLENGE_TTL_S
    broker_limits: BrokerLimits = field(default_factory=BrokerLimits)
    """The embedded broker's limits (unused with ``broker``)."""

    def __post_init__(self) -> None:
        if self.freshness_interval_s <= 0 or self.token_ttl_s <= 0:
            raise ValueError("the freshness interval and token TTL must be positive")
        if self.token_ttl_s <= self.freshness_interval_s:
            raise ValueError("tokens must live longer than the interval they are refreshed at")
        if min(self.attest_interval_s, self.attest_retry_s, self.challenge_ttl_s) <= 0:
            raise ValueError("the attestation interval, retry and challenge TTL must be positive")
        if self.attest_ttl_s <= self.attest_interval_s:
            raise ValueError(
                "attestation results must live longer than the interval devices are challenged at"
            )


@dataclass(slots=True)
class HubStats:
    """Counters since start (for tests, logs and benchmarks)."""

    connections: int = 0
    batches_accepted: int = 0
    entries_stored: int = 0
    duplicates: int = 0
    acks_published: int = 0
    strays_cleared: int = 0
    """Retained messages the hub did not publish, cleared (or, on an ack topic, replaced)."""
    statuses: int = 0
    stale_statuses: int = 0
    """Verified statuses not recorded: older than the one held, or signed too far from now."""
    freshness_published: int = 0
    challenges_sent: int = 0
    attestations: dict[str, int] = field(default_factory=dict)
    """Results published, by verdict."""
    rejections: dict[str, int] = field(default_factory=dict)
    queue_dropped: int = 0
    """Messages dropped on arrival: their device already had its share waiting."""


class HubService:
    """The running hub: embedded broker (optional), MQTT connection loop, schedule."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.hub_dir = HubDir(config.hub_dir)
        self.stats = HubStats()
        self.shared = False
        self._probed: bool | None = None
        self._fatal: ConfigError | None = None
        self._client_id = config.client_id or _default_client_id()
        self._broker: EmbeddedBroker | None = None
        self._settings: BrokerSettings | None = config.broker
        self._registry: Registry | None = None
        self._keys: HubKeys | None = None
        self._verifier: Verifier | None = None
        self._last_challenge: dict[str, float] = {}
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._conn: Connection | None = None
        self._subscribed: set[str] = set()
        self._published: dict[str, bytes] = {}
        """What the broker holds on each retained trust topic (sha256), on this connection."""
        self._republished_all_at = 0.0
        self._outbox: dict[str, Publication] = {}
        """What the burst being stored publishes once it is committed (newest per topic)."""
        self._owned: set[str] = set()
        """The retained trust topics the hub publishes on (as of its last snapshot)."""
        self._strays: set[str] = set()
        """Owned topics seen holding something the hub did not publish (see ``_noted``)."""
        self._strays_due = 0.0
        """Monotonic time before which strays wait (they are cleared at most every
        ``STRAY_CLEAR_S``: each round re-reads the registry and the roots)."""
        self._devices: dict[str, DeviceRecord] = {}
        self._limiter = RateLimiter(config.device_rate, config.device_burst)
        self._lookups = RateLimiter(config.unknown_rate, max(1, int(config.unknown_rate)))
        self._unverified = VerificationBudget(
            config.unverified_topic_rate, config.unverified_total_rate
        )
        self._rejections = RejectionCounter()
        self._warnings = RateLimiter(WARNINGS_PER_MINUTE / 60, 3)

    # Lifecycle.

    @property
    def settings(self) -> BrokerSettings:
        """The broker the hub connects to (the embedded one's address once started)."""
        if self._settings is None:
            raise RuntimeError("the hub service is not started")
        return self._settings

    @property
    def url(self) -> str:
        return self.settings.url

    @property
    def embedded_broker(self) -> EmbeddedBroker | None:
        return self._broker

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise RuntimeError("the hub service is not started")
        return self._registry

    async def __aenter__(self) -> HubService:
        """Load keys, open the registry, start the broker (if embedded) and the tasks.

        Raises:
            ConfigError: the hub directory, keys or registry are not usable.
            TransportError: the embedded broker cannot listen.
        """
        try:
            self._keys = self.hub_dir.load_keys(self.config.keys_dir)
            self._registry = self._stack.enter_context(self.hub_dir.open_registry())
            self._stack.callback(self._flush_rejections)
            if self.config.broker is None:
                self._broker = EmbeddedBroker(
                    self.config.bind,
                    self.config.port,
                    self.config.broker_limits,
                    unthrottled=frozenset({self._client_id}),
                )
                self._settings = await self._broker.start()
                self._stack.push_async_callback(self._broker.stop)
            self._refresh_devices()
            self._verifier = self._open_verifier(self._keys, self._registry)
            if self.config.write_serve_file:
                self._write_serve_file()
                self._stack.callback(self.hub_dir.remove_serve_info, os.getpid())
            group = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._tasks = [
                group.create_task(self._connection_loop(), name="edge-hub-mqtt"),
                group.create_task(self._schedule_loop(), name="edge-hub-schedule"),
                group.create_task(self._attest_loop(), name="edge-hub-attest"),
            ]
        except BaseException:
            await self._stack.aclose()
            raise
        logger.info("hub serving on %s as %s", self.settings.url, self._client_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        await _cancel_all(self._tasks)
        await self._stack.aclose()

    async def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until connected, subscribed and every retained message re-published.

        Raises:
            TimeoutError: not ready within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    def request_stop(self) -> None:
        """Make :meth:`serve_forever` return (signal handlers call this)."""
        self._stop.set()

    async def serve_forever(self) -> None:
        """Run until :meth:`request_stop`.

        Raises:
            ConfigError: the broker settings cannot be used (TLS files unreadable).
        """
        await self._stop.wait()
        if self._fatal is not None:
            raise self._fatal

    async def tick(self) -> None:
        """Run one round of the schedule now (freshness, reconciliation, counters)."""
        await self._tick()

    async def challenge_all(self) -> int:
        """Challenge every registered device now; return how many were challenged."""
        return await self._challenge_round()

    # The connection.

    def _delays(self) -> Iterator[float]:
        return backoff_delays(self.config.reconnect_initial_s, self.config.reconnect_max_s)

    async def _connection_loop(self) -> None:
        delays = self._delays()
        while not self._stop.is_set():
            try:
                async with connect(
                    self.settings,
                    client_id=self._client_id,
                    clean_session=True,
                    incoming_queue=INCOMING_QUEUE,
                ) as conn:
                    await self._on_connected(conn)
                    delays = self._delays()
                    await self._consume(conn)
            except TransportError as exc:
                logger.warning("hub connection to %s: %s; reconnecting", self.settings.url, exc)
            except ConfigError as exc:
                logger.error("cannot connect to %s: %s", self.settings.url, exc)
                self._fatal = exc
                self._stop.set()
                return
            finally:
                self._conn = None
                self._ready.clear()
                self._subscribed.clear()
                self._published = {}
                self._strays = set()
            await asyncio.sleep(next(delays))

    async def _on_connected(self, conn: Connection) -> None:
        self.stats.connections += 1
        self._republished_all_at = time.monotonic()
        self.shared = await self._decide_shared(conn)
        if self.config.write_serve_file:
            self._write_serve_file()
        await self._subscribe_regions(conn)
        keys = self._require_keys()
        now = _wall()
        await self._publish(conn, self._snapshot(keys.roots), remember=True)
        await self._publish(conn, ack_snapshot(self.registry, key=keys.freshness, now=now))
        await self._publish_freshness(conn, now)
        self._conn = conn
        self._ready.set()
        logger.info(
            "hub connected to %s (%s lineage subscriptions)",
            self.settings.url,
            "shared" if self.shared else "direct",
        )

    async def _decide_shared(self, conn: Connection) -> bool:
        if self.config.shared_subscriptions is not None:
            return self.config.shared_subscriptions
        if self._broker is not None:
            return EmbeddedBroker.shared_subscriptions
        if self._probed is None:
            self._probed = await _probe_shared(conn, self._client_id)
        return self._probed

    async def _subscribe_regions(self, conn: Connection) -> None:
        new = [r for r in self.registry.regions() if r not in self._subscribed]
        filters = [
            f
            for region in new
            for f in (*topics.hub_subscriptions(region, self.shared), *_watched_filters(region))
        ]
        if filters:
            await conn.subscribe(filters)
            self._subscribed.update(new)

    async def _publish(
        self, conn: Connection, publications: Sequence[Publication], *, remember: bool = False
    ) -> None:
        """Publish (QoS 1, a chunk in flight at a time); with ``remember``, skip what the
        broker holds with the same bytes already. Every topic's digest is noted, so that the
        hub tells its own messages coming back from those it did not publish (``_noted``).

        The digest is noted before the publish, so whatever reaches the broker after it (by
        anyone, seen on the hub's own subscription) overrides it in broker order; a failed
        publish forgets it. The map belongs to this connection: a reconnect starts afresh.
        """
        published = self._published
        todo = []
        for publication in publications:
            digest = hashlib.sha256(publication.payload).digest()
            if remember and published.get(publication.topic) == digest:
                continue
            if publication.topic in published or len(published) < MAX_REMEMBERED:
                published[publication.topic] = digest
            todo.append((publication, digest))
        for start in range(0, len(todo), PUBLISH_CHUNK):
            chunk = todo[start : start + PUBLISH_CHUNK]
            results = await asyncio.gather(
                *(conn.publish(p.topic, p.payload, qos=p.qos, retain=p.retain) for p, _ in chunk),
                return_exceptions=True,
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                if remember:
                    for publication, digest in todo[start:]:
                        if published.get(publication.topic) == digest:
                            del published[publication.topic]
                raise failed[0]

    async def _publish_freshness(self, conn: Connection, now: int) -> None:
        publications = issue_freshness(
            self.registry,
            key=self._require_keys().freshness,
            now=now,
            ttl_s=self.config.token_ttl_s,
        )
        await self._publish(conn, publications)
        self.stats.freshness_published += len(publications)

    # The schedule.

    async def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.config.freshness_interval_s)
            try:
                await self._tick()
            except TransportError as exc:
                logger.warning("scheduled publish failed: %s (republished on reconnect)", exc)
            except EdgeGovError as exc:
                logger.error("scheduled round failed: %s", exc)

    async def _tick(self) -> None:
        self._refresh_devices()
        self._flush_rejections()
        conn = self._conn
        if conn is None or not self._ready.is_set():
            return
        keys = self._require_keys()
        now = _wall()
        await self._subscribe_regions(conn)
        if time.monotonic() - self._republished_all_at >= FULL_REPUBLISH_S:
            # What the broker holds is known only from what it delivered: a retained message
            # it lost, or one cleared and then published without retain, looks the same.
            self._published = {}
            self._republished_all_at = time.monotonic()
        await self._publish(conn, self._snapshot(keys.roots), remember=True)
        await self._publish_freshness(conn, now)
        if self._strays:
            await self._clear_strays(conn)

    # Incoming messages.

    async def _consume(self, conn: Connection) -> None:
        """Handle incoming messages in bursts taken fairly from every device that has some
        waiting (:class:`~hub.core.limits.FairQueue`): what aiomqtt holds already is queued per
        device first (a device's messages beyond its share are dropped there, unread), then
        a burst takes one message per device in turn, up to ``GROUP_MAX``, and is handled in
        one registry transaction without a single await inside it (so no other task writes
        into it and the write lock is held for no longer than the work), so a burst of
        lineage batches costs one fsync. What the burst publishes (acks, challenges,
        attestation results) goes out after the commit that made it durable, and is dropped
        with the burst if the commit fails. A device flooding its own topics therefore
        delays only itself: every other device's next message is in the next burst."""
        waiting: FairQueue[Incoming] = FairQueue()
        messages = conn.messages()
        async for first in messages:
            self._queue(waiting, first)
            while conn.backlog:
                self._queue(waiting, await anext(messages))
            if self._strays and time.monotonic() >= self._strays_due:
                await self._clear_strays(conn)
            while waiting:
                burst = waiting.take(GROUP_MAX)
                await self._store_and_publish(conn, burst)
                while burst:
                    # Still busy after a whole group: leave the write lock free a moment so
                    # that `edge-hub revoke` and other hub processes get their turn.
                    await asyncio.sleep(WRITER_PAUSE_S)
                    await self._store_and_publish(conn, burst)
                while conn.backlog:
                    self._queue(waiting, await anext(messages))

    def _queue(self, waiting: FairQueue[Incoming], message: Incoming) -> None:
        """Queue ``message`` under the device its topic names (retained trust objects are
        only noted); one over that device's share is dropped unread and counted."""
        if self._noted(message):
            return
        parts = message.topic.split("/", 5)
        key = parts[4] if len(parts) > 4 and parts[3] == "device" else ""
        if not waiting.put(key, message):
            self.stats.queue_dropped += 1

    async def _store_and_publish(self, conn: Connection, burst: deque[Incoming]) -> None:
        """Handle messages from ``burst`` for at most ``GROUP_MAX_S`` in one transaction,
        then publish what they queued."""
        self._outbox.clear()
        started = time.monotonic()
        try:
            with self.registry.write_group():
                while burst and time.monotonic() - started < GROUP_MAX_S:
                    self._handle(burst.popleft())
        except RegistryError as exc:
            self._outbox.clear()
            logger.error("messages not stored (devices resend lineage until acked): %s", exc)
            return
        except BaseException:
            self._outbox.clear()
            raise
        outbox, self._outbox = list(self._outbox.values()), {}
        await self._publish(conn, outbox)
        leaves = [p.topic.rsplit("/", 1)[-1] for p in outbox]
        self.stats.acks_published += leaves.count(DeviceLeaf.ACK)
        self.stats.challenges_sent += leaves.count(DeviceLeaf.CHALLENGE)

    def _handle(self, message: Incoming) -> None:
        try:
            self._dispatch(message)
        except EdgeGovError as exc:
            logger.error("message on %s not processed: %s", message.topic, exc)
            self._reject_unregistered(None, "internal_error", str(exc))
        except Exception:
            logger.exception("unexpected failure on a message on %s", message.topic)
            self._reject_unregistered(
                None, "internal_error", f"unexpected failure on {message.topic}"
            )

    def _dispatch(self, message: Incoming) -> None:
        """Route one message on a device topic, cheapest checks first: 1. the topic; 2. the
        size cap; 3. a registered device (an oversize message is never worth a registry
        lookup); 4. its region; 5. the signature (:meth:`_verified`); 6. only then the
        device's rate budget, so that what is not the device's never spends it."""
        payload = message.payload
        try:
            parsed = topics.parse_device_topic(message.topic)
        except ValueError:
            if not message.topic.startswith(f"{topics.PREFIX}/_probe/"):
                self._reject_unregistered(None, "bad_topic", f"message on {message.topic[:200]!r}")
            return
        if not payload or parsed.leaf not in _MAX_PAYLOAD:
            return
        oversize = len(payload) > _MAX_PAYLOAD[parsed.leaf]
        device = self._devices.get(parsed.device_id) if oversize else self._device(parsed.device_id)
        if oversize:
            detail = f"{len(payload)} bytes on {parsed.leaf}"
            if device is None:
                self._reject_unregistered(parsed.device_id, "oversize", detail)
            else:
                self._reject(device.device_id, "oversize", detail)
            return
        if device is None:
            self._reject_unregistered(
                parsed.device_id, "unknown_device", f"message for {parsed.device_id!r}"
            )
            return
        if parsed.region != device.region:
            self._reject(
                device.device_id,
                RejectCode.IMPERSONATION,
                f"message on region {parsed.region}, device is registered in {device.region}",
            )
            return
        verified = self._verified(message.topic, parsed.leaf, device, payload)
        if verified is None:
            return
        if not self._limiter.allow(device.device_id, time.monotonic()):
            self._reject(device.device_id, "rate_limited", f"{parsed.leaf} over the rate limit")
            return
        if isinstance(verified, LineageBatch):
            self._on_lineage(device, verified, payload)
        elif isinstance(verified, DeviceStatus):
            self._on_status(device, verified, payload)
        else:
            self._on_evidence(device, payload)

    def _verified(
        self, topic: str, leaf: DeviceLeaf, device: DeviceRecord, payload: bytes
    ) -> LineageBatch | DeviceStatus | Evidence | None:
        """Check that ``payload`` is signed by ``device``'s registered key: the batch,
        status or evidence it holds, or ``None``, counted as a rejection (``impersonation``;
        ``evidence_rejected`` on the evidence topic, as :mod:`hub.service.attest` counts it).

        A payload that is not even shaped as a ``COSE_Sign1`` costs nothing more. The
        signature check is paid from the verification budget of ``topic`` (or the shared
        one) and refunded when it verifies: messages that are not the device's can spend
        only that budget, and past it they are dropped unchecked (``unverified_flood``)."""
        device_id = device.device_id
        if payload[:2] != _SIGN1_HEAD:
            self._reject(device_id, "malformed", f"{leaf} is not a COSE_Sign1 envelope")
            return None
        charged = self._unverified.take(topic, payload, time.monotonic())
        if charged is None:
            self._reject(device_id, "unverified_flood", f"{leaf} dropped before its check")
            return None
        verified: LineageBatch | DeviceStatus | Evidence
        try:
            if leaf is DeviceLeaf.LINEAGE:
                verified = open_batch(payload, device_id, device.public_key)
            elif leaf is DeviceLeaf.STATUS:
                verified = verify_status(payload, device=device_id, key=device.public_key)
            else:
                verified = verify_evidence(payload, device=device_id, key=device.public_key)
        except (IngestError, ShippingError) as exc:
            self._reject(device_id, RejectCode.IMPERSONATION, f"{leaf} refused: {exc}")
            return None
        except AttestationError as exc:
            self._reject(device_id, "evidence_rejected", f"{leaf} refused: {exc}")
            return None
        self._unverified.refund(charged, payload)
        return verified

    def _noted(self, message: Incoming) -> bool:
        """Whether ``message`` is on a retained trust topic; if so, remember what the broker
        now holds there, whoever published it, so the schedule does not send the same bytes
        to every device again. Foreign bytes only differ from what the hub would publish,
        which it then does. On the embedded broker the hub asks it what it holds: a publish
        delivered but not retained (its store full) is no reason to skip the topic."""
        leaf = _hub_device_leaf(message.topic)
        if leaf is not None:
            self._note_device_leaf(message, leaf)
            return True
        if not _is_watched_trust_topic(message.topic):
            return False
        broker = self._broker
        if not message.payload or (
            broker is not None and not broker.retains(message.topic, message.payload)
        ):
            # Cleared, or delivered but not retained (the embedded broker's store was full
            # for `edge-hub bundle push`'s own connection): this round publishes it again.
            self._published.pop(message.topic, None)
            return True
        if message.topic not in self._owned and len(self._strays) < MAX_REMEMBERED:
            self._strays.add(message.topic)
        if message.topic in self._published or len(self._published) < MAX_REMEMBERED:
            self._published[message.topic] = hashlib.sha256(message.payload).digest()
        return True

    def _note_device_leaf(self, message: Incoming, leaf: DeviceLeaf) -> None:
        """Note a message on a device's ack, challenge or attestation topic (which only the
        hub publishes on) as a stray unless it is what this hub published there, or signed
        by its trust root as another hub's would be (checked, for registered devices only,
        within the verification budget: past it, it is a stray; restoring an ack costs one
        publish)."""
        topic, payload = message.topic, message.payload
        if not payload:
            self._published.pop(topic, None)
            return
        if self._published.get(topic) == hashlib.sha256(payload).digest():
            return
        if len(self._strays) >= MAX_REMEMBERED:
            return
        device_id = topic.split("/")[4]
        if device_id not in self._devices:
            self._strays.add(topic)
            return
        charged = self._unverified.take(topic, payload, time.monotonic())
        if charged is not None and self._signed_by_a_hub(leaf, device_id, payload):
            self._unverified.refund(charged, payload)
            return
        self._strays.add(topic)

    def _signed_by_a_hub(self, leaf: DeviceLeaf, device_id: str, payload: bytes) -> bool:
        root = self._require_keys().root
        try:
            if leaf is DeviceLeaf.ACK:
                verify_ack(payload, root=root, device=device_id)
            elif leaf is DeviceLeaf.ATTESTATION:
                verify_result(payload, root=root, device=device_id)
            else:
                verify_challenge(payload, root=root, device=device_id, now=_wall())
        except EdgeGovError:
            return False
        return True

    def _snapshot(self, roots: Sequence[TrustRoot]) -> list[Publication]:
        """:func:`retained_snapshot`, noting its topics and the current bundles' token
        topics as the ones the hub owns."""
        snapshot = retained_snapshot(self.registry, roots=roots)
        self._owned = {p.topic for p in snapshot} | {
            topics.freshness_topic(b.region, parse_channel(b.channel))
            for b in self.registry.current_bundles()
        }
        return snapshot

    async def _clear_strays(self, conn: Connection) -> None:
        """Clear (an empty retained message) whatever is retained on a trust topic the hub
        subscribes to but does not publish on: a root version it does not hold, a channel
        with no bundle or its token, a revocation it never issued; and what it did not
        publish on a device's ack, challenge or attestation topic (a registered device's ack
        is replaced by its current one: :meth:`_replacement`). Left there, every agent would
        fetch it, refuse it and log it again on each reconnect. What the hub owns is read afresh
        first (the registry, and the roots in its keys directory), so what another
        ``edge-hub`` command recorded and then published is never cleared."""
        strays, self._strays = self._strays, set()
        self._strays_due = time.monotonic() + STRAY_CLEAR_S
        roots = self._require_keys().roots
        try:
            roots = self.hub_dir.load_keys(self.config.keys_dir).roots
        except EdgeGovError as exc:
            logger.warning("trust roots not re-read (%s): using those loaded at start", exc)
        self._snapshot(roots)
        self._refresh_devices()
        foreign = sorted(strays - self._owned)
        if not foreign:
            return
        publications = [self._replacement(topic) for topic in foreign]
        await self._publish(conn, publications)
        self.stats.strays_cleared += len(foreign)
        warn = self._warnings.allow("*/strays", time.monotonic())
        logger.log(
            logging.WARNING if warn else logging.DEBUG,
            "replaced %d retained message(s) this hub did not publish (cleared; a registered "
            "device's ack restored): %s",
            len(foreign),
            ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else ""),
        )

    def _replacement(self, topic: str) -> Publication:
        """What replaces a stray on ``topic``: a registered device's current ack on its ack
        topic (if it has shipped anything), else an empty retained message (cleared)."""
        parts = topic.split("/")
        device = self._devices.get(parts[4]) if len(parts) == 6 else None
        if device is None or device.region != parts[2] or parts[5] != DeviceLeaf.ACK:
            return Publication(topic, b"")
        log = self.registry.lineage_state(device.device_id)
        if not log.size:
            return Publication(topic, b"")
        return ack_publication(
            region=device.region,
            device=device.device_id,
            acked=log.size,
            root=log.root,
            key=self._require_keys().freshness,
            now=_wall(),
        )

    def _device(self, device_id: str) -> DeviceRecord | None:
        device = self._devices.get(device_id)
        if device is None and self._lookups.allow("", time.monotonic()):
            device = self.registry.device(device_id)
            if device is not None:
                self._devices[device_id] = device
        return device

    def _on_lineage(self, device: DeviceRecord, batch: LineageBatch, payload: bytes) -> None:
        """Ingest a batch whose envelope verified. A duplicate is acknowledged again but
        says nothing about the device being alive now (it may be a replay)."""
        registry, device_id = self.registry, device.device_id
        origin = origin_for(device_id, device.key_epoch)
        for _ in range(STORE_RETRIES):
            log = registry.lineage_state(device_id)
            now = _wall()
            try:
                result = ingest_opened(
                    batch,
                    payload,
                    key=device.public_key,
                    origin=origin,
                    log=log,
                    stored=registry.stored_log(device_id),
                )
            except IngestError as exc:
                self._on_refused(device, exc, now)
                return
            if isinstance(result, Duplicate):
                self.stats.duplicates += 1
                self._ack(device, log, now)
                return
            if registry.store_batch(result, expected_size=log.size, received_at=now):
                self.stats.batches_accepted += 1
                self.stats.entries_stored += len(result.entries)
                logger.debug(
                    "lineage of %s: stored %d..%d",
                    device_id,
                    result.first_seq,
                    result.acked - 1,
                )
                self._ack(device, result.log, now)
                return
        logger.warning(
            "lineage batch of %s raced other hubs %d times; dropped", device_id, STORE_RETRIES
        )

    def _on_refused(self, device: DeviceRecord, exc: IngestError, now: int) -> None:
        level = logging.ERROR if exc.fork is not None else logging.WARNING
        logger.log(level, "lineage batch of %s refused: %s", device.device_id, exc)
        if exc.fork is not None:
            self.registry.record_fork(exc.fork, now)
        self._reject(device.device_id, exc.reject_code, str(exc))
        if exc.reack:
            self._ack(device, self.registry.lineage_state(device.device_id), now)

    def _ack(self, device: DeviceRecord, log: DeviceLog, now: int) -> None:
        """Queue the signed ack of ``log`` (the newest per device wins); it is published
        after the registry commit that made the acknowledged entries durable."""
        publication = ack_publication(
            region=device.region,
            device=device.device_id,
            acked=log.size,
            root=log.root,
            key=self._require_keys().freshness,
            now=now,
        )
        self._outbox[publication.topic] = publication

    def _on_status(self, device: DeviceRecord, status: DeviceStatus, payload: bytes) -> None:
        """Record a verified status if it is fresh: signed within ``status_window_s`` of the
        hub's time and not older than the one held (:meth:`Registry.record_status`).
        Anything else (a replay, a last will signed at connect and delivered after newer
        heartbeats, the retained status of a device that stopped long ago) is not news and
        changes nothing, liveness included."""
        now = _wall()
        if abs(status.time - now) > self.config.status_window_s:
            self.stats.stale_statuses += 1
            logger.debug(
                "status of %s signed at %d ignored: hub time is %d",
                device.device_id,
                status.time,
                now,
            )
            return
        if not self.registry.record_status(status, payload, now):
            self.stats.stale_statuses += 1
            logger.debug("status of %s signed at %d is not newer", device.device_id, status.time)
            return
        self.stats.statuses += 1
        if status.online and status.gate in _ATTESTATION_GATES:
            self._challenge_soon(device)

    # Attestation.

    def _open_verifier(self, keys: HubKeys, registry: Registry) -> Verifier | None:
        verifier_keys = load_role_keys(
            self.config.keys_dir or self.hub_dir.keys, Role.VERIFIER, keys.root
        )
        if not verifier_keys:
            logger.warning(
                "no verifier key of trust root version %d: devices are not challenged and "
                "bundles that require attestation deny",
                keys.root.version,
            )
            return None
        return Verifier(registry, verifier_keys[0])

    async def _attest_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.config.attest_interval_s)
            try:
                await self._challenge_round()
            except TransportError as exc:
                logger.warning("attestation round not published: %s", exc)
            except EdgeGovError as exc:
                logger.error("attestation round failed: %s", exc)

    async def _challenge_round(self) -> int:
        conn, verifier = self._conn, self._verifier
        if conn is None or verifier is None or not self._ready.is_set():
            return 0
        now = _wall()
        self.registry.prune_challenges(now - CHALLENGE_RETENTION_S)
        devices = list(self._devices.values())
        publications = [
            verifier.challenge(d, now=now, ttl_s=self.config.challenge_ttl_s)[1] for d in devices
        ]
        started = time.monotonic()
        self._last_challenge.update((d.device_id, started) for d in devices)
        await self._publish(conn, publications)
        self.stats.challenges_sent += len(publications)
        return len(publications)

    def _challenge_soon(self, device: DeviceRecord) -> None:
        """Queue a challenge to ``device`` unless it was challenged less than
        ``attest_retry_s`` ago (a device cannot make the hub sign without bound)."""
        verifier = self._verifier
        started = time.monotonic()
        last = self._last_challenge.get(device.device_id)
        if verifier is None or (last is not None and started - last < self.config.attest_retry_s):
            return
        self._last_challenge[device.device_id] = started
        _, publication = verifier.challenge(device, now=_wall(), ttl_s=self.config.challenge_ttl_s)
        self._outbox[publication.topic] = publication

    def _on_evidence(self, device: DeviceRecord, payload: bytes) -> None:
        verifier = self._verifier
        if verifier is None:
            self._reject(device.device_id, "evidence_rejected", "this hub has no verifier key")
            return
        try:
            result, publication = verifier.verify(
                device, payload, now=_wall(), ttl_s=self.config.attest_ttl_s
            )
        except AttestationError as exc:
            self._reject(device.device_id, exc.code, str(exc))
            return
        verdict = str(result.verdict)
        self.stats.attestations[verdict] = self.stats.attestations.get(verdict, 0) + 1
        log = logger.info if result.passed else logger.warning
        log("attestation of %s: %s (%s)", device.device_id, verdict, result.detail)
        self._outbox[publication.topic] = publication

    # Bookkeeping.

    def _reject(self, device: str, code: str, detail: str) -> None:
        """Count a rejection of a message from the registered ``device``; warn (a few a
        minute per device and code) and record at once unless anyone could flood it."""
        self._rejections.add(device, code, detail)
        self._log_rejection(device, code, detail)

    def _reject_unregistered(self, claimed: str | None, code: str, detail: str) -> None:
        """Count a rejection of a message naming no registered device (``claimed``: the id
        it named): per code only, never a row per made-up id."""
        self._rejections.add_unregistered(claimed, code, detail)
        self._log_rejection(UNREGISTERED, code, detail)

    def _log_rejection(self, device: str, code: str, detail: str) -> None:
        self.stats.rejections[code] = self.stats.rejections.get(code, 0) + 1
        if code in _FLOOD_CODES or not self._warnings.allow(f"{device}/{code}", time.monotonic()):
            logger.debug("rejected (%s) from %s: %s", code, device, detail)
            return
        logger.warning("rejected (%s) from %s: %s", code, device, detail)
        self._flush_rejections()

    def _flush_rejections(self) -> None:
        counts = self._rejections.drain()
        if self._registry is None or not counts:
            return
        try:
            self._registry.add_rejections(counts, _wall())
        except EdgeGovError as exc:
            logger.error("rejection counters not recorded: %s", exc)

    def _refresh_devices(self) -> None:
        self._devices = {d.device_id: d for d in self.registry.devices()}

    def _require_keys(self) -> HubKeys:
        if self._keys is None:
            raise RuntimeError("the hub service is not started")
        return self._keys

    def _write_serve_file(self) -> None:
        self.hub_dir.write_serve_info(
            ServeInfo(
                self.settings,
                os.getpid(),
                self._broker is not None,
                self.shared,
                self.config.token_ttl_s,
            )
        )


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


async def _cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until each has finished, cancelling again as needed: in
    Python 3.11 ``asyncio.wait_for`` (inside aiomqtt's publish) swallows a cancellation that
    races the PUBACK it waits for (CPython gh-86296), and the task would then keep serving."""
    pending = [t for t in tasks if not t.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_RETRY_S)
        pending = [t for t in pending if not t.done()]


def _watched_filters(region: str) -> tuple[str, ...]:
    """Retained families the hub owns beyond ``topics.hub_subscriptions``' trust topics:
    freshness tokens and the device leaves only the hub publishes on. The hub watches them
    to clear what it did not publish (its own messages come back to it too: one token per
    channel a round, each ack, challenge and result once)."""
    base = f"{topics.PREFIX}/{region}"
    return (f"{base}/fresh/#", *(f"{base}/device/+/{leaf}" for leaf in _HUB_DEVICE_LEAVES))


def _is_watched_trust_topic(topic: str) -> bool:
    """Whether ``topic`` is a root, bundle, revocation or freshness topic."""
    parts = topic.split("/")
    return topics.is_retained_trust_topic(topic) or (
        len(parts) >= 5 and f"{parts[0]}/{parts[1]}" == topics.PREFIX and parts[3] == "fresh"
    )


def _hub_device_leaf(topic: str) -> DeviceLeaf | None:
    """The leaf of a device topic only the hub publishes on (ack, challenge, attestation)."""
    parts = topic.split("/")
    if len(parts) != 6 or f"{parts[0]}/{parts[1]}" != topics.PREFIX or parts[3] != "device":
        return None
    return next((leaf for leaf in _HUB_DEVICE_LEAVES if leaf == parts[5]), None)


def _default_client_id() -> str:
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-.")[:32]
    return f"edge-hub-{host}-{os.getpid()}-{os.urandom(3).hex()}"


def _wall() -> int:
    return int(time.time())

"""``edge-agent run``: keep the device in sync with its hub over MQTT, forever, offline-safe.

What it does, in one session per broker connection:

1. subscribe (directly: retained messages must arrive) to the region's roots, revocations,
   device directory, the device's ack topic, and the bundle, shadow and freshness topics of
   every channel it is on;
2. publish its signed status, retained, with a pre-signed "offline" status as last will;
3. apply what arrives through the agent's verified install paths — roots in version order,
   bundles, shadow bundles (verified as bundles, held beside the active one: an empty
   message clears one), revocations, freshness tokens, the device directory (kept in the
   state directory for verifying parents offline), acks — each refused object logged as a
   rejection and changing nothing;
4. ship unacknowledged lineage in signed batches, one in flight, resent until the hub's
   signed ack (stored *and* verified) arrives; acks move the lineage watermark, and the
   hub witness's cosigned checkpoint an ack carries is verified and kept (one that fails a
   check is logged and ignored), so the device's own receipts carry the cosignature;
5. with a firmware profile (an :class:`~edge_agent.attest.config.Attestor`): re-measure on
   the profile's interval (a mismatch turns the gate to ``attestation_failed`` within one
   interval, is logged as a trust transition and reported in the next status), answer each
   verified hub challenge with a fresh measurement as signed evidence, and install the hub's
   signed result. Measuring reads files: it runs in a worker thread, never on the loop.

The connection is reconnected with capped exponential backoff and full jitter, forever.
Nothing here is on the decision path: the agent keeps deciding from its installed bundle
while the broker or the hub is away, and fails closed at ``max_offline`` or expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from edge_agent.agent import LocalAgent
from edge_agent.attest.config import Attestor
from edge_agent.errors import EdgeGovError, LineageError, RootError, StateError, TransportError
from edge_agent.lineage.log import LineageLog
from edge_agent.protocol import topics
from edge_agent.protocol.attestation import with_quote
from edge_agent.protocol.roles import Role
from edge_agent.protocol.shipping import (
    Ack,
    DeviceStatus,
    LineageBatch,
    ShippingError,
    sign_batch,
    sign_status,
    verify_ack,
)
from edge_agent.support.mqtt import (
    MAX_MESSAGE_BYTES,
    BrokerSettings,
    Connection,
    Incoming,
    LastWill,
    stay_connected,
)
from edge_agent.support.mqtt import connect as mqtt_connect
from edge_agent.sync.config import SyncConfig
from edge_agent.trust.state import BundleAheadError

__all__ = ["AgentDaemon"]

logger = logging.getLogger(__name__)

MAX_REMEMBERED_REJECTIONS = 4096
"""Digests of refused payloads remembered (least recently delivered beyond are forgotten),
so a retained bad object is logged once, not again on every reconnect: the broker sends
every retained object on each one, so this must exceed the bad objects a broker may hold."""
MAX_HELD_BUNDLES = 16
"""Bundle topics whose last payload is held until trusted time reaches it (see ``_held``)."""
MAX_REMEMBERED_APPLIED = 4096
"""Retained trust topics whose last applied payload is remembered (LRU)."""
MAX_PENDING_ROOTS = 16
MAX_ACK_BACKOFF = 8
"""The longest wait before resending an unacknowledged batch, in ack timeouts."""
MAX_PENDING_CHALLENGES = 8
"""Challenges queued for an answer; more arriving meanwhile are dropped (the hub re-asks)."""
CLOCK_CHECK_S = 1.0
OFFLINE_STATUS_TIMEOUT_S = 1.0
"""How long a stopping agent waits for its signed offline status to be acknowledged."""


class AgentDaemon:
    """The sync loop of one agent. ``wall`` reads the clock (a parameter for tests);
    ``attestor`` measures the device (``None``: no firmware profile, nothing measured)."""

    def __init__(
        self,
        agent: LocalAgent,
        broker: BrokerSettings,
        config: SyncConfig,
        *,
        wall: Callable[[], int] = lambda: int(time.time()),
        attestor: Attestor | None = None,
    ) -> None:
        self.agent = agent
        self.broker = broker
        self.config = config
        self.wall = wall
        self.attestor = attestor
        self.device = agent.state.device
        self._shadow_topics = frozenset(
            topics.shadow_topic(self.device.region, channel)
            for channel in topics.agent_channels(self.device.device_id, self.device.groups)
        )
        """The shadow topics this device subscribes to: one held shadow at most each."""
        self.connected = asyncio.Event()
        self.changed = asyncio.Event()
        """Set whenever the trust state changed (tests and the status publisher wait on it)."""
        self._rejected: OrderedDict[bytes, None] = OrderedDict()
        self._held: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        """Bundles refused only for being issued ahead of trusted time (``bundle_future``),
        the last per topic, with the time they become admissible. They are not remembered as
        refused: the broker delivers a retained bundle once per subscription, so one must
        install without a reconnect once a freshness token raises the floor or the clock
        reaches it, and be tried no sooner (a bundle from the far future is logged once).
        Other refusals depend on the bytes, on the root (forgotten when it changes) or on
        what only moves up (the installed version, the pin), so they stay refused."""
        self._applied: OrderedDict[str, bytes] = OrderedDict()
        """Digest of the payload last applied per retained trust topic: the broker sends
        every retained message again on each reconnect and hub restart, and verifying the
        same signed bytes again would change nothing."""
        self._pending_roots: dict[int, tuple[str, bytes]] = {}
        """Roots waiting for their predecessor, by version: (topic, payload)."""
        self._acked = asyncio.Event()
        self._challenges: asyncio.Queue[bytes] = asyncio.Queue(MAX_PENDING_CHALLENGES)
        self._measuring = asyncio.Lock()
        """One measurement at a time: a slow one begun before a change must not finish
        after, and replace, the fresh one a challenge's answer took once it was made."""
        self._reported: DeviceStatus | None = None

    async def run(self) -> None:
        """Stay connected (reconnecting forever), watch the clock, apply retention and
        re-measure, until cancelled."""
        if self.attestor is not None:
            self.agent.record_measurement(
                self.attestor.first, self.wall(), self.attestor.interval_s
            )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._stay_connected(), name="connection")
            tasks.create_task(self._watch_clock(), name="clock")
            tasks.create_task(self._retain(), name="retention")
            tasks.create_task(self._audit_lineage(), name="lineage-audit")
            if self.attestor is not None:
                tasks.create_task(self._remeasure(self.attestor), name="attestation")

    async def _watch_clock(self) -> None:
        while True:
            self.check_clock()
            await asyncio.sleep(CLOCK_CHECK_S)

    def check_clock(self) -> None:
        """What the agent does every second: take in what another process changed in the
        state (an idle agent too: the exec enforcer and the status read the state directly),
        check the clock, the attestation verdict and the held bundles."""
        if self.agent.refresh():
            self.changed.set()
        wall = self.wall()
        self.agent.observe_clock(wall)
        if self.agent.observe_attestation(wall):
            self.changed.set()
        self._retry_held()

    async def _remeasure(self, attestor: Attestor) -> None:
        while True:
            await asyncio.sleep(attestor.interval_s)
            await self._measure(attestor)

    async def _measure(self, attestor: Attestor) -> None:
        """Measure afresh and record it, after any measurement still running (the periodic
        one, or another challenge's) has recorded its own."""
        async with self._measuring:
            measured = await asyncio.to_thread(attestor.measure)
            wall = self.wall()
            self.agent.record_measurement(measured, wall, attestor.interval_s)
        if self.agent.observe_attestation(wall):
            self.changed.set()

    async def _retain(self) -> None:
        """Apply the lineage retention caps now and then (they only ever drop entries the
        hub has acknowledged); the age cap uses trusted time, never a clock behind it."""
        lineage = self.agent.lineage
        while lineage is not None:
            await asyncio.sleep(self.config.retention_interval_s)
            now = self.agent.earliest_now(self.wall())
            try:
                pruned = await asyncio.to_thread(lineage.apply_retention, now)
            except EdgeGovError as exc:
                logger.warning("lineage retention not applied: %s", exc)
                continue
            if pruned:
                logger.info("lineage retention pruned %d acknowledged entries", pruned)

    async def _audit_lineage(self) -> None:
        """Verify the whole lineage against the head recorded in the state, once after
        start and then every ``audit_every_s``: start-up only checks the tail, so an entry
        edited before the last checkpoint is found here (and closes the gate). It reads a
        snapshot in a worker thread; deciders keep appending meanwhile."""
        lineage = self.agent.lineage
        while lineage is not None and lineage.fault is None:
            fault = await asyncio.to_thread(lineage.audit)
            if fault is not None:
                logger.error("lineage audit closed the gate: %s", fault)
                self.changed.set()
                return
            if lineage.config.audit_every_s == 0:
                return
            await asyncio.sleep(lineage.config.audit_every_s)

    async def _stay_connected(self) -> None:
        """Run sessions until cancelled, reconnecting after each failure
        (:func:`~edge_agent.support.mqtt.stay_connected`).

        A cancellation that reaches a session while one of its tasks fails (SIGTERM as the
        broker goes away) comes out of the session's task group as that failure alone
        (Python 3.11's ``TaskGroup``), and ``Task.cancelling()`` cannot tell it from a
        failure alone (that task group leaves the count raised either way); the loop then
        reconnects, and ``edge-agent run``'s stop cancels every task left after its grace
        (:class:`edge_agent.sync.cli.Stop`).
        """
        await stay_connected(
            self._session,
            url=self.broker.url,
            initial_s=self.config.reconnect_initial_s,
            maximum_s=self.config.reconnect_max_s,
            on_lost=self._on_lost,
        )

    def _on_lost(self, exc: Exception) -> None:
        """Log why a session ended: the broker, or (an error, logged as one) anything else;
        decisions are unaffected either way."""
        group = exc if isinstance(exc, ExceptionGroup) else ExceptionGroup("session", [exc])
        lost, failed = group.split(TransportError)
        if lost is not None:
            logger.warning("broker %s unreachable or lost: %s", self.broker.url, lost.exceptions[0])
        if failed is not None:
            logger.error(
                "sync session failed; reconnecting (decisions are unaffected): %r",
                failed.exceptions[0],
            )

    @property
    def client_id(self) -> str:
        """The MQTT client id: the broker username (the device id unless configured), the
        same string Mosquitto enforces with ``use_username_as_clientid``, so a client id
        never names a device another login could claim (docs/deploy.md)."""
        return self.broker.username or self.device.device_id

    async def _session(self, on_connected: Callable[[], None]) -> None:
        """One broker connection; :attr:`connected` is set while it is up."""
        offline = sign_status(self._status(online=False), self.agent.device_key)
        will = LastWill(self._status_topic, offline)
        try:
            async with mqtt_connect(
                self.broker,
                client_id=self.client_id,
                will=will,
                keepalive_s=self.config.keepalive_s,
            ) as connection:
                await connection.subscribe(
                    topics.agent_subscriptions(
                        self.device.region, self.device.device_id, self.device.groups
                    )
                )
                self.connected.set()
                on_connected()
                logger.info("connected to %s", self.broker.url)
                await self._publish_status(connection, self._status(online=True))
                try:
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._receive(connection), name="receive")
                        tasks.create_task(self._ship(connection), name="ship")
                        tasks.create_task(self._report(connection), name="status")
                        tasks.create_task(self._answer(connection), name="challenges")
                except asyncio.CancelledError:
                    await self._say_offline(connection)
                    raise
        finally:
            self.connected.clear()

    async def _say_offline(self, connection: Connection) -> None:
        """On a clean stop, publish a signed offline status, newer than every heartbeat.
        The broker drops the last will on a clean disconnect, and the will is signed at
        connect anyway: older than the heartbeats since, so the hub would not take it."""
        with contextlib.suppress(TransportError, TimeoutError):
            async with asyncio.timeout(OFFLINE_STATUS_TIMEOUT_S):
                await self._publish_status(connection, self._status(online=False))

    # --- incoming -----------------------------------------------------------------------

    async def _receive(self, connection: Connection) -> None:
        async for message in connection.messages():
            self.handle(message)

    def handle(self, message: Incoming) -> None:
        """Apply one incoming message; never raises for bad input (it is logged). An empty
        message on a shadow topic clears the shadow held from there; a shadow on a topic
        the device does not subscribe to (another device's, group's or region's, which a
        misbehaving broker delivered) is ignored, so no more shadows are held than the
        device has channels."""
        if _topic_kind(message.topic) == "shadow" and message.topic not in self._shadow_topics:
            logger.warning("ignored a shadow bundle on %s: not one of this device's", message.topic)
            return
        if not message.payload:
            if _topic_kind(message.topic) == "shadow":
                self._applied.pop(message.topic, None)
                self._held.pop(message.topic, None)
                self.agent.clear_shadow(message.topic)
            return
        if len(message.payload) > MAX_MESSAGE_BYTES:
            logger.warning(
                "dropped a %d-byte message on %s unread: over the %d-byte limit",
                len(message.payload),
                message.topic,
                MAX_MESSAGE_BYTES,
            )
            return
        digest = _message_digest(message.topic, message.payload)
        if digest in self._rejected:
            self._rejected.move_to_end(digest)
            return
        kind = _topic_kind(message.topic)
        if kind in _RETAINED_TRUST and self._applied.get(message.topic) == digest:
            return
        reloads = self.agent.reloads
        if kind not in _INSTALLED:
            self.agent.refresh()
        self._held.pop(message.topic, None)
        try:
            changed = self._apply(kind, message)
        except StateError as exc:
            # Not the payload's fault (a locked or full disk): the next delivery retries it.
            # A revocation is in force already (its gate denies): the status says so.
            logger.error("cannot record %s from %s now: %s", kind, message.topic, exc)
            self.changed.set()
            return
        except BundleAheadError as exc:
            self._hold(message, exc.admissible_at)
            logger.warning("holding bundle from %s for later: %s", message.topic, exc)
            return
        except EdgeGovError as exc:
            self._remember_rejection(digest)
            logger.warning("refused %s from %s: %s", kind, message.topic, exc)
            return
        except Exception:
            logger.exception("unexpected failure handling %s; nothing changed", message.topic)
            return
        finally:
            if self.agent.reloads != reloads:
                self.changed.set()
        if kind in _RETAINED_TRUST:
            self._remember_applied(message.topic, digest)
        if self.agent.observe_attestation(self.wall()) or changed:
            self.changed.set()
        self._retry_held()

    def _apply(self, kind: str, message: Incoming) -> bool:
        wall = self.wall()
        if kind == "bundle":
            return not self.agent.install_bundle(message.payload, wall).unchanged
        if kind == "shadow":
            self.agent.install_shadow(message.topic, message.payload, wall)
            return False
        if kind == "fresh":
            before = self.agent.state
            self.agent.install_freshness(message.payload, wall)
            return self.agent.state.fresh_time != before.fresh_time
        if kind == "revoke":
            return self.agent.install_revocation(message.payload, wall) is not None
        if kind == "root":
            return self._apply_root(message.topic, message.payload, wall)
        if kind == "ack":
            self._apply_ack(message.payload)
            return False
        if kind == "attestation":
            held = self.agent.state.attestation_result
            return self.agent.install_attestation_result(message.payload, wall) is not held
        if kind == "challenge":
            self._queue_challenge(message.payload)
            return False
        if kind == "directory":
            directory = self.agent.directory.current()
            return self.agent.install_directory(message.payload, wall) is not directory
        logger.debug("ignoring a message on %s", message.topic)
        return False

    def _queue_challenge(self, data: bytes) -> None:
        try:
            self._challenges.put_nowait(data)
        except asyncio.QueueFull:
            logger.warning(
                "attestation challenge dropped: %d already waiting", self._challenges.qsize()
            )

    def _apply_root(self, topic: str, data: bytes, wall: int) -> bool:
        """Roots arrive retained in any order; install them one version at a time (the
        version in the topic only routes: verification checks the signed one).

        A buffered root that turns out to be refused is logged and remembered under its own
        topic, never under the message that let it be tried; only this message's own root
        failing is raised (and so attributed to this message by :meth:`handle`).

        Raises:
            RootError: this message's root was refused.
        """
        label = topic.rsplit("/", 1)[-1]
        if not label.isdigit() or int(label) <= self.agent.state.root.version:
            return False
        version = int(label)
        self._pending_roots[version] = (topic, data)
        while len(self._pending_roots) > MAX_PENDING_ROOTS:
            del self._pending_roots[max(self._pending_roots)]
        changed = False
        refused: RootError | None = None
        buffered_refused: list[bytes] = []
        while (nxt := self._pending_roots.pop(self.agent.state.root.version + 1, None)) is not None:
            nxt_topic, nxt_data = nxt
            try:
                self.agent.install_root(nxt_data, wall)
            except RootError as exc:
                if (nxt_topic, nxt_data) == (topic, data):
                    refused = exc
                else:
                    logger.warning("refused root from %s: %s", nxt_topic, exc)
                    buffered_refused.append(_message_digest(nxt_topic, nxt_data))
                break
            changed = True
        if changed:
            current = self.agent.state.root.version
            self._pending_roots = {v: d for v, d in self._pending_roots.items() if v > current}
            # Objects refused under the old root may verify under the new one.
            self._rejected.clear()
            self.changed.set()
        for digest in buffered_refused:
            self._remember_rejection(digest)
        if refused is not None:
            raise refused
        return changed

    def _apply_ack(self, data: bytes) -> None:
        ack = verify_ack(data, root=self.agent.state.root, device=self.device.device_id)
        lineage = self.agent.lineage
        if lineage is None:
            return
        if ack.acked <= lineage.acknowledged:
            self._keep_cosigned(lineage, ack)
            self._acked.set()
            return
        if ack.acked > lineage.size:
            raise ShippingError(
                f"the hub acknowledged {ack.acked} entries but this log holds {lineage.size}"
            )
        if lineage.root_at(ack.acked) != ack.root:
            raise ShippingError(
                f"the hub's tree root at size {ack.acked} differs from this device's: the hub "
                "holds a different history (fork evidence is kept at the hub)"
            )
        lineage.acknowledge(ack.acked)
        logger.debug("hub acknowledged lineage up to %d", ack.acked)
        self._keep_cosigned(lineage, ack)
        self._acked.set()

    def _keep_cosigned(self, lineage: LineageLog, ack: Ack) -> None:
        """Keep the hub witness's cosigned checkpoint ``ack`` carries (see
        :meth:`LineageLog.keep_cosigned`), verified against the witness keys of the current
        trust root (its verifier role). One that fails a check is logged and ignored: the
        ack's watermark has been handled already, and the log keeps the device's own note.
        """
        if ack.checkpoint is None:
            return
        witnesses = self.agent.state.root.role(Role.VERIFIER).keys.values()
        try:
            cosignature = lineage.keep_cosigned(
                ack.checkpoint,
                size=ack.acked,
                root=ack.root,
                witnesses=tuple(witnesses),
                now=self.wall(),
            )
        except LineageError as exc:
            logger.warning(
                "cosigned checkpoint at size %d from the hub ignored (%s): %s",
                ack.acked,
                exc.code,
                exc,
            )
            return
        logger.info(
            "lineage checkpoint at size %d cosigned by the hub witness at %d kept",
            ack.acked,
            cosignature.time,
        )

    def _remember_applied(self, topic: str, digest: bytes) -> None:
        self._applied[topic] = digest
        self._applied.move_to_end(topic)
        while len(self._applied) > MAX_REMEMBERED_APPLIED:
            self._applied.popitem(last=False)

    def _remember_rejection(self, digest: bytes) -> None:
        self._rejected[digest] = None
        while len(self._rejected) > MAX_REMEMBERED_REJECTIONS:
            self._rejected.popitem(last=False)

    def _hold(self, message: Incoming, admissible_at: int) -> None:
        self._held[message.topic] = (message.payload, admissible_at)
        while len(self._held) > MAX_HELD_BUNDLES:
            self._held.popitem(last=False)

    def _retry_held(self) -> None:
        """Handle again, as if delivered again, each held bundle that trusted time has
        reached (the time :meth:`LocalAgent.install_bundle` judges by)."""
        if not self._held:
            return
        now = self.agent.earliest_now(self.wall())
        for topic in [t for t, (_, at) in self._held.items() if at <= now]:
            held = self._held.pop(topic, None)
            if held is not None:
                logger.info("trusted time reached the bundle held from %s; trying it again", topic)
                self.handle(Incoming(topic, held[0], retain=True))

    # --- outgoing -----------------------------------------------------------------------

    async def _answer(self, connection: Connection) -> None:
        """Answer queued challenges one at a time: verify, measure afresh, publish evidence."""
        while True:
            data = await self._challenges.get()
            try:
                evidence = await self._evidence(data)
            except EdgeGovError as exc:
                logger.warning("attestation challenge not answered: %s", exc)
                continue
            if evidence is not None:
                await connection.publish(
                    topics.device_topic(
                        self.device.region, self.device.device_id, topics.DeviceLeaf.EVIDENCE
                    ),
                    evidence,
                    qos=1,
                )

    async def _evidence(self, data: bytes) -> bytes | None:
        """The evidence answering challenge ``data``, with a TPM quote over the nonce when
        the profile has a ``[tpm]`` table; ``None`` when it was answered already (a
        redelivery) or there is nothing to measure with.

        Raises:
            AttestationError: the challenge was refused, or the TPM cannot quote.
        """
        challenge = self.agent.evidence.check(data, self.wall())
        if self.agent.evidence.answered(challenge.nonce):
            return None
        if self.attestor is None:
            logger.info("attestation challenge ignored: no firmware profile is configured")
            return None
        await self._measure(self.attestor)
        evidence = self.agent.evidence.answer(challenge, self.wall())
        quote = await asyncio.to_thread(self.attestor.quote, challenge.device, challenge.nonce)
        if quote is None:
            return evidence
        return with_quote(evidence, quote, device=challenge.device, key=self.agent.device_key)

    async def _ship(self, connection: Connection) -> None:
        """Ship one batch at a time, resent until the hub acknowledges it. The wait before a
        resend doubles while the hub stays silent (up to ``MAX_ACK_BACKOFF`` times the
        configured timeout), so a fleet does not bury a hub that is slow to come back."""
        lineage = self.agent.lineage
        if lineage is None:
            return
        patience = self.config.ack_timeout_s
        while True:
            try:
                batch = self._next_batch()
            except LineageError as exc:
                logger.warning("lineage not shipped: %s", exc)
                batch = None
            if batch is None:
                await asyncio.sleep(self.config.ship_interval_s)
                continue
            self._acked.clear()
            await connection.publish(
                topics.device_topic(
                    self.device.region, self.device.device_id, topics.DeviceLeaf.LINEAGE
                ),
                sign_batch(batch, self.agent.device_key),
                qos=1,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(patience):
                    while lineage.acknowledged < batch.first_seq + len(batch.entries):
                        await self._acked.wait()
                        self._acked.clear()
            if lineage.acknowledged > batch.first_seq:
                patience = self.config.ack_timeout_s
            else:
                patience = min(patience * 2, self.config.ack_timeout_s * MAX_ACK_BACKOFF)

    def _next_batch(self) -> LineageBatch | None:
        lineage = self.agent.lineage
        assert lineage is not None
        pending = lineage.unacknowledged(self.config.batch_entries)
        if not pending:
            return None
        first = pending[0][0]
        size = first + len(pending)
        return LineageBatch(
            device=self.device.device_id,
            first_seq=first,
            entries=tuple(data for _, data in pending),
            checkpoint=lineage.checkpoint_note(size, self.wall()),
        )

    async def _report(self, connection: Connection) -> None:
        """Publish status on every heartbeat interval, and at once after a trust event that
        changed what it says (bundle, expiry, gate, lineage head or acknowledged size).
        Trust traffic that changes none of it (a freshness token, another device's
        revocation, on an idle device) publishes nothing, or a fleet would answer each such
        broadcast with one status message a device."""
        loop = asyncio.get_running_loop()
        interval = self.config.status_interval_s
        if self.attestor is not None:
            interval = min(interval, self.attestor.profile.heartbeat_interval_s)
        heartbeat_at = loop.time() + interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(heartbeat_at):
                    await self.changed.wait()
            self.changed.clear()
            status = self._status(online=True)
            if loop.time() >= heartbeat_at or _untimed(status) != self._reported:
                await self._publish_status(connection, status)
                heartbeat_at = loop.time() + interval

    async def _publish_status(self, connection: Connection, status: DeviceStatus) -> None:
        await connection.publish(
            self._status_topic, sign_status(status, self.agent.device_key), qos=1, retain=True
        )
        self._reported = _untimed(status)

    @property
    def _status_topic(self) -> str:
        return topics.device_topic(
            self.device.region, self.device.device_id, topics.DeviceLeaf.STATUS
        )

    def _status(self, *, online: bool) -> DeviceStatus:
        wall = self.wall()
        state = self.agent.state
        bundle = state.bundle
        lineage = self.agent.lineage
        return DeviceStatus(
            device=self.device.device_id,
            time=wall,
            online=online,
            bundle_version=bundle.version if bundle else None,
            expires_at=bundle.expires_at if bundle else None,
            gate=str(self.agent.gate_state(wall)),
            lineage_size=lineage.size if lineage else 0,
            acked=lineage.acknowledged if lineage else 0,
        )


def _message_digest(topic: str, payload: bytes) -> bytes:
    """What a message is remembered by (applied or refused): its topic and payload."""
    return hashlib.sha256(topic.encode() + b"\0" + payload).digest()


def _untimed(status: DeviceStatus) -> DeviceStatus:
    """``status`` without its timestamp: what decides whether it is news."""
    return replace(status, time=0)


_INSTALLED = frozenset({"bundle", "shadow", "fresh", "revoke", "attestation", "directory"})
"""Topics whose message goes straight to one of the agent's installs, which takes in what
another process changed (under the agent's lock, right before the change) itself: the
daemon refreshing the state first as well would check it twice. The others (roots, read
against the installed version first; acks; challenges) read the state directly."""
_RETAINED_TRUST = frozenset({"bundle", "shadow", "revoke", "directory"})
"""Topics whose payload, once applied, changes nothing when applied again. Roots and tokens
are not among them: a root may wait for its predecessor, a token for its bundle."""


def _topic_kind(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) >= 4 and parts[3] in ("bundle", "shadow", "fresh", "revoke", "root"):
        return parts[3]
    if len(parts) == 5 and parts[3] == "trust" and parts[4] == "directory":
        return "directory"
    if len(parts) == 6 and parts[3] == "device":
        return parts[5]
    return "unknown"

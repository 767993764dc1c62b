"""The intake: take incoming messages fairly, route them, and store them in bursts.

Every message is bounded before it is parsed: the pure router (:mod:`hub.core.routing`)
checks the topic and the size cap, then the device and its region; the signature check is
paid from a budget of its own (:class:`~hub.core.limits.VerificationBudget`), and only what
verified spends the device's rate budget, so traffic that is not a device's never spends
that device's. A refused message is counted (:mod:`hub.service.rejections`), never
acknowledged as the device's. Nothing a device sends can stop the service: a message that
fails in an unexpected way is logged and counted as ``internal_error``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from edge_agent.errors import EdgeGovError
from edge_agent.protocol.attestation import AttestationError, Evidence
from edge_agent.protocol.cose import MalformedEnvelopeError
from edge_agent.protocol.shipping import DeviceStatus, LineageBatch, ShippingError, verify_status
from edge_agent.protocol.topics import DeviceLeaf
from edge_agent.support.mqtt import Connection, Incoming, backoff_delays
from hub.core.attestation_judging import read_evidence
from hub.core.codes import RejectCode
from hub.core.ingest import IngestError, open_batch
from hub.core.limits import FairQueue, RateLimiter
from hub.core.routing import Claim, Reject, Route, admit, claim, flooded, queue_key, refused, route
from hub.registry import DeviceRecord, RegistryError
from hub.service.context import ServiceContext
from hub.service.evidence import EvidenceHandler
from hub.service.lineage import LineageHandler
from hub.service.schedule import Schedule
from hub.service.status import StatusHandler
from hub.service.trust import TrustTopics

__all__ = [
    "GROUP_MAX",
    "GROUP_MAX_S",
    "STORE_RETRY_INITIAL_S",
    "STORE_RETRY_MAX_S",
    "WRITER_PAUSE_S",
    "Intake",
]

logger = logging.getLogger(__name__)

GROUP_MAX = 256
"""Most incoming messages handled in one registry transaction (one fsync)."""
GROUP_MAX_S = 0.2
"""Longest a burst holds the registry's write lock before committing (other ``edge-hub``
commands and hub processes wait for it; fewer, larger commits are what carry the ingest
rate: at 50 ms the hub stored a third fewer entries a second)."""
WRITER_PAUSE_S = 0.025
"""Pause between two groups of one long burst, in which other writers take the lock."""
STORE_RETRY_INITIAL_S = 0.5
STORE_RETRY_MAX_S = 5.0
"""After a group the registry could not store, the intake waits a capped exponential
back-off with full jitter (from ``STORE_RETRY_INITIAL_S`` up to ``STORE_RETRY_MAX_S``,
afresh after a group is stored) before the next: a registry that is away (a PostgreSQL
server restarting) is asked again a few times a second at most, never in a hot loop. What
arrives meanwhile waits in the fair queue (each device's share bounded); the devices resend
whatever was not acknowledged."""


class Intake:
    """Consumes a connection: queue, route, verify, hand to the family's handler, store."""

    def __init__(
        self,
        context: ServiceContext,
        schedule: Schedule,
        *,
        trust: TrustTopics,
        lineage: LineageHandler,
        status: StatusHandler,
        evidence: EvidenceHandler,
    ) -> None:
        self._context = context
        self._schedule = schedule
        self._trust = trust
        self._lineage = lineage
        self._status = status
        self._evidence = evidence
        self._limiter = RateLimiter(context.config.device_rate, context.config.device_burst)
        self._retry_delays = backoff_delays(STORE_RETRY_INITIAL_S, STORE_RETRY_MAX_S)

    async def consume(self, conn: Connection) -> None:
        """Handle incoming messages in bursts taken fairly from every device that has some
        waiting (:class:`~hub.core.limits.FairQueue`): what aiomqtt holds already is queued
        per device first (a device's messages beyond its share are dropped there, unread),
        then a burst takes one message per device in turn, up to ``GROUP_MAX``, and is
        handled in one registry transaction without a single await inside it (so no other
        task writes into it and the write lock is held for no longer than the work), so a
        burst of lineage batches costs one fsync; that transaction runs on the registry
        gateway's worker (:mod:`hub.registry.gateway`) while the loop goes on. What the burst
        publishes (acks, challenges, attestation results) goes out after the commit that
        made it durable,
        and is dropped with the burst if the commit fails. A device flooding its own topics
        therefore delays only itself: every other device's next message is in the next
        burst."""
        retained = self._context.retained
        waiting: FairQueue[Incoming] = FairQueue()
        messages = conn.messages()
        async for first in messages:
            self._queue(waiting, first)
            while conn.backlog:
                self._queue(waiting, await anext(messages))
            if retained.strays and time.monotonic() >= retained.strays_due:
                await self._schedule.clear_strays(conn)
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
            self._context.stats.backlog_since = None

    def _queue(self, waiting: FairQueue[Incoming], message: Incoming) -> None:
        """Queue ``message`` under the device its topic names (retained trust objects are
        only noted); one over that device's share is dropped unread and counted."""
        stats = self._context.stats
        stats.messages += 1
        if self._trust.noted(message):
            return
        if not waiting and stats.backlog_since is None:
            stats.backlog_since = time.monotonic()
        if not waiting.put(queue_key(message.topic), message):
            self._context.stats.queue_dropped += 1

    async def _store_and_publish(self, conn: Connection, burst: deque[Incoming]) -> None:
        """Handle messages from ``burst`` for at most ``GROUP_MAX_S`` in one transaction,
        then publish what they queued."""
        context = self._context
        context.outbox.clear()
        try:
            await context.db(self._store, burst)
        except RegistryError as exc:
            context.outbox.clear()
            delay = next(self._retry_delays)
            logger.error(
                "messages not stored (devices resend lineage until acked; the next group in "
                "%.1f s): %s",
                delay,
                exc,
            )
            await asyncio.sleep(delay)
            return
        except BaseException:
            context.outbox.clear()
            raise
        self._retry_delays = backoff_delays(STORE_RETRY_INITIAL_S, STORE_RETRY_MAX_S)
        outbox, context.outbox = list(context.outbox.values()), {}
        await context.retained.publish(conn, outbox)
        leaves = [p.topic.rsplit("/", 1)[-1] for p in outbox]
        context.stats.acks_published += leaves.count(DeviceLeaf.ACK)
        context.stats.challenges_sent += leaves.count(DeviceLeaf.CHALLENGE)

    def _store(self, burst: deque[Incoming]) -> None:
        """Handle messages from ``burst`` for at most ``GROUP_MAX_S`` in one write group: one
        registry operation, run on the registry gateway's worker, never on the loop.

        Raises:
            RegistryError: the group could not be committed (nothing of it is durable).
        """
        started = time.monotonic()
        with self._context.registry.write_group():
            while burst and time.monotonic() - started < GROUP_MAX_S:
                self.handle(burst.popleft())

    def handle(self, message: Incoming) -> None:
        """Handle one message inside the burst's transaction; never raises for it."""
        rejections = self._context.rejections
        try:
            self.dispatch(message)
        except EdgeGovError as exc:
            logger.error("message on %s not processed: %s", message.topic, exc)
            rejections.reject_unregistered(None, RejectCode.INTERNAL_ERROR, str(exc))
        except Exception:
            logger.exception("unexpected failure on a message on %s", message.topic)
            rejections.reject_unregistered(
                None, RejectCode.INTERNAL_ERROR, f"unexpected failure on {message.topic}"
            )

    def dispatch(self, message: Incoming) -> None:
        """Route one message (:mod:`hub.core.routing`, cheapest checks first) and hand what
        verified and is within the device's rate to its family's handler."""
        payload = message.payload
        claimed = claim(message.topic, payload)
        if not isinstance(claimed, Claim):
            if claimed is not None:
                self._context.rejections.count(claimed)
            return
        devices = self._context.devices
        lookup = devices.cached if claimed.oversize else devices.lookup
        routed = route(claimed, lookup(claimed.device_id))
        if isinstance(routed, Reject):
            self._context.rejections.count(routed)
            return
        verified = self._verified(message.topic, routed, payload)
        if isinstance(verified, Reject):
            self._context.rejections.count(verified)
            return
        device = routed.device
        admitted = admit(
            routed, rate_allowed=self._limiter.allow(device.device_id, time.monotonic())
        )
        if isinstance(admitted, Reject):
            self._context.rejections.count(admitted)
        elif isinstance(verified, LineageBatch):
            self._lineage.handle(device, verified, payload)
        elif isinstance(verified, DeviceStatus):
            self._status.handle(device, verified, payload)
        else:
            self._evidence.handle(device, verified)

    def _verified(
        self, topic: str, routed: Route[DeviceRecord], payload: bytes
    ) -> LineageBatch | DeviceStatus | Evidence | Reject:
        """Check that ``payload`` is signed by the device's registered key: the batch,
        status or evidence it holds, or why not.

        The signature check is paid from the verification budget of ``topic`` (or the
        shared one) and refunded when it verifies: messages that are not the device's can
        spend only that budget, and past it they are dropped unchecked."""
        device, budget = routed.device, self._context.budget
        charged = budget.take(topic, payload, time.monotonic())
        if charged is None:
            return flooded(routed)
        verified: LineageBatch | DeviceStatus | Evidence
        try:
            if routed.leaf is DeviceLeaf.LINEAGE:
                verified = open_batch(payload, device.device_id, device.public_key)
            elif routed.leaf is DeviceLeaf.STATUS:
                verified = verify_status(payload, device=device.device_id, key=device.public_key)
            else:
                verified = read_evidence(payload, device)
        except IngestError as exc:
            return refused(routed, str(exc), malformed=exc.reject_code is RejectCode.MALFORMED)
        except (ShippingError, AttestationError) as exc:
            malformed = isinstance(exc.__cause__, MalformedEnvelopeError)
            return refused(routed, str(exc), malformed=malformed)
        budget.refund(charged, payload)
        return verified

"""The publish schedule: freshness tokens, the retained snapshot, and clearing strays.

Every ``freshness_interval_s`` (:meth:`Schedule.tick`) the hub re-reads the devices and
the trust roots in its keys directory (the newest is what recorded bundles are verified
under: :attr:`~hub.service.context.ServiceContext.current_root`), records the rejection
counters and subscribes to regions added by other commands: every hub does, since every hub
ingests lineage. The hub that leads the schedule (:mod:`hub.service.lease`: one among every
``edge-hub serve`` on the registry) also republishes what changed of everything retained it
is the source of (roots, bundles, revocations, the device directory of each region, issuing
a new version first where one is due; every object again each :data:`FULL_REPUBLISH_S`),
publishes a signed freshness token for every channel with a bundle (whether or not the
registry can record it), and clears the strays the trust topics family noted
(:mod:`hub.service.trust`). On every connection each hub publishes a fresh ack of every
device's log, and the leader all the rest, so a restarted broker loses nothing. Once per
:data:`PREPARE_MONTHS_S` the leader also makes the lineage search's partitions of the
coming months where the registry keeps one per month (partitioned PostgreSQL;
:data:`~hub.registry.search_months.MONTHS_AHEAD`), after publishing: a failure there is
logged and tried again next round, never in the way of what the round publishes.

Every hub claims the lease every :attr:`~hub.service.lease.LeaseTiming.check_s`; one that
gains it runs a round at once, so after a leader dies another publishes within one
interval. Right before publishing what a round signed, the leader renews the lease and
publishes only if its fencing token is still the one the round began under.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from edge_agent.protocol import topics
from edge_agent.protocol.root import TrustRoot
from edge_agent.protocol.topics import DeviceLeaf, DeviceTopic, parse_device_topic
from edge_agent.support.mqtt import Connection
from hub.core.publications import Publication, ack_publication, parse_channel
from hub.registry import DeviceRecord
from hub.registry.search_months import months_ahead
from hub.service.connection import Subscriptions
from hub.service.context import CurrentConnection, ServiceContext, every, wall
from hub.service.lease import ScheduleLease
from hub.service.publish import (
    ack_snapshot,
    issue_directories,
    issue_freshness,
    publishable_bundles,
    retained_snapshot,
)
from hub.service.retained import STRAY_CLEAR_S

__all__ = ["FULL_REPUBLISH_S", "MAX_STRAY_LOOKUPS", "PREPARE_MONTHS_S", "Schedule"]

logger = logging.getLogger(__name__)

FULL_REPUBLISH_S = 600.0
"""How often the schedule republishes every retained object regardless (see ``tick``)."""
PREPARE_MONTHS_S = 3600.0
"""How often the leader makes the lineage search's coming month partitions (when missing:
checking costs one catalog query)."""
MAX_STRAY_LOOKUPS = 1_000
"""Most devices a round clearing strays reads one by one; past that it reads the device table
once (on PostgreSQL 1,000 reads of one device cost about what reading 10,000 devices does)."""


class Schedule:
    """What the hub publishes on its own, on connecting and on every round: as the leader
    (``lease``), all of it; otherwise only the acks of the device logs it ingests."""

    def __init__(
        self, context: ServiceContext, subscriptions: Subscriptions, lease: ScheduleLease
    ) -> None:
        self._context = context
        self._subscriptions = subscriptions
        self.lease = lease
        self._republished_all_at = 0.0
        self._months_prepared_at: float | None = None

    async def run(self, current: CurrentConnection, stop: asyncio.Event) -> None:
        """Claim the lease every :attr:`~hub.service.lease.LeaseTiming.check_s` while
        connected (let it lapse while not), run a round every ``freshness_interval_s`` and
        at once on gaining the lease, until ``stop``; release the lease on the way out."""
        db, interval = self._context.db, self._context.config.freshness_interval_s
        due = time.monotonic() + interval

        async def check() -> None:
            nonlocal due
            led = self.lease.leading
            if current() is None:
                # Without a broker it cannot publish: another hub that has one should lead.
                await db(self.lease.lapse)
            else:
                await db(self.lease.claim, wall())
            if time.monotonic() >= due or (self.lease.leading and not led):
                due = time.monotonic() + interval
                await self.tick(current())

        try:
            await every(
                self.lease.timing.check_s,
                check,
                stop,
                unpublished="scheduled publish failed: %s (republished on reconnect)",
                failed="scheduled round failed: %s",
            )
        finally:
            await db(self.lease.release)

    async def publish_all(self, conn: Connection) -> None:
        """On a new connection: every device's ack; as the leader, everything retained the
        hub is the source of and a freshness token per channel too."""
        context = self._context
        now = wall()
        acks = await context.db(ack_snapshot, context.registry, key=context.keys.freshness, now=now)
        await context.retained.publish(conn, acks)
        token = await context.db(self.lease.claim, now)
        if token is None:
            return
        self._republished_all_at = time.monotonic()
        await self._publish_signed(conn, token, now)

    async def tick(self, conn: Connection | None) -> None:
        """One round (``conn`` ``None``: not connected, only the bookkeeping; not leading:
        the bookkeeping and the subscriptions)."""
        context = self._context
        await context.db(self._bookkeeping)
        if conn is None:
            return
        now = wall()
        await self._subscriptions.update(conn)
        token = await context.db(self.lease.claim, now)
        if token is None:
            # The leader clears them; what is noted here would only grow.
            context.retained.strays = set()
            return
        if time.monotonic() - self._republished_all_at >= FULL_REPUBLISH_S:
            # What the broker holds is known only from what it delivered: a retained message
            # it lost, or one cleared and then published without retain, looks the same.
            context.retained.published = {}
            self._republished_all_at = time.monotonic()
        await self._publish_signed(conn, token, now)
        if context.retained.strays:
            await self.clear_strays(conn)
        await self._prepare_months(now)

    async def _prepare_months(self, now: int) -> None:
        """As the leader, once per :data:`PREPARE_MONTHS_S`: the lineage search's partitions
        of this month and the ones after it (:func:`months_ahead`)."""
        prepared = self._months_prepared_at
        if prepared is not None and time.monotonic() - prepared < PREPARE_MONTHS_S:
            return
        months = months_ahead(now)
        registry = self._context.registry
        made = await self._context.db(
            registry.prepare_search_months, months[0].start, months[-1].start
        )
        self._months_prepared_at = time.monotonic()
        if made:
            logger.info("lineage search partitions made: %s", ", ".join(made))

    def _bookkeeping(self) -> None:
        """Re-read the devices and the trust roots, record the rejection counters: one
        registry operation (on the gateway's worker)."""
        context = self._context
        context.devices.refresh()
        context.reread_roots()
        context.rejections.flush()

    async def _publish_signed(self, conn: Connection, token: int, now: int) -> None:
        """The retained snapshot, directories and freshness tokens made under the lease's
        fencing ``token``, published only while this hub still leads under it."""
        context = self._context
        retained, freshness = await context.db(self._signed, now)
        if not await context.db(self.lease.holds, token, wall()):
            return
        await context.retained.publish(conn, retained, remember=True)
        if retained and not await context.db(self.lease.holds, token, wall()):
            return
        await context.retained.publish(conn, freshness)
        context.stats.freshness_published += len(freshness)

    def _signed(self, now: int) -> tuple[list[Publication], list[Publication]]:
        """The retained snapshot with the directories, and the freshness tokens, signed at
        ``now``: one registry operation (on the gateway's worker)."""
        context = self._context
        retained = self.snapshot(context.keys.roots) + self.directories(now)
        freshness = issue_freshness(
            context.registry,
            key=context.keys.freshness,
            now=now,
            ttl_s=context.config.token_ttl_s,
        )
        return retained, freshness

    def snapshot(self, roots: Sequence[TrustRoot]) -> list[Publication]:
        """:func:`retained_snapshot`, noting its topics, the current bundles' token topics
        and every region's directory topic as the ones the hub owns."""
        registry = self._context.registry
        snapshot = retained_snapshot(registry, roots=roots)
        self._context.retained.owned = (
            {p.topic for p in snapshot}
            | {
                topics.freshness_topic(b.region, parse_channel(b.channel))
                for b in publishable_bundles(registry)
            }
            | {topics.directory_topic(region) for region in registry.regions()}
        )
        return snapshot

    def directories(self, now: int) -> list[Publication]:
        """Every region's current device directory, a new version issued where one is due
        (:func:`issue_directories`); none while the hub holds no verifier key to sign with."""
        context = self._context
        key = context.keys.witness
        if key is None:
            return []
        return issue_directories(
            context.registry, key=key, now=now, ttl_s=context.config.directory_ttl_s
        )

    async def clear_strays(self, conn: Connection) -> None:
        """Clear (an empty retained message) whatever is retained on a trust topic the hub
        subscribes to but does not publish on: a root version it does not hold, a channel
        with no bundle or its token, a revocation it never issued; and what it did not
        publish on a device's ack, challenge or attestation topic (a registered device's ack
        is replaced by its current one: :meth:`_replacement`). Left there, every agent would
        fetch it, refuse it and log it again on each reconnect. What the hub owns is read
        afresh first (the registry, and the roots in its keys directory), so what another
        ``edge-hub`` command recorded and then published is never cleared. Only the
        leader clears them, its lease renewed right before; another hub forgets them."""
        context = self._context
        retained = context.retained
        strays, retained.strays = retained.strays, set()
        retained.strays_due = time.monotonic() + STRAY_CLEAR_S
        token = self.lease.token
        if token is None or not await context.db(self.lease.holds, token, wall()):
            return
        foreign, publications = await context.db(self._replacements, strays)
        if not foreign:
            return
        await retained.publish(conn, publications)
        context.stats.strays_cleared += len(foreign)
        warn = context.rejections.warning_allowed("*/strays")
        logger.log(
            logging.WARNING if warn else logging.DEBUG,
            "replaced %d retained message(s) this hub did not publish (cleared; a registered "
            "device's ack restored): %s",
            len(foreign),
            ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else ""),
        )

    def _replacements(self, strays: set[str]) -> tuple[list[str], list[Publication]]:
        """The strays not owned once what the hub owns is read afresh, and what replaces
        each: one registry operation (on the gateway's worker). Only the devices named by
        stray ack topics are read, not the device table: a round runs after every
        ``edge-hub bundle push`` or ``revoke`` (what they publish is a stray until the
        snapshot is read again), and re-reading 10,000 devices (0.12-0.16 s of CPU) held
        the worker, and so the intake, that long in each. Past :data:`MAX_STRAY_LOOKUPS`
        named devices the table is read once instead: a flood of acks naming made-up
        devices costs no more than that."""
        context = self._context
        self.snapshot(context.reread_roots())
        foreign = sorted(strays - context.retained.owned)
        acked = {topic.device_id for topic in map(_acked, foreign) if topic is not None}
        registry = context.registry
        if len(acked) > MAX_STRAY_LOOKUPS:
            named = {d.device_id: d for d in registry.devices() if d.device_id in acked}
        else:
            named = {d.device_id: d for d in map(registry.device, sorted(acked)) if d is not None}
        return foreign, [self._replacement(topic, named) for topic in foreign]

    def _replacement(self, topic: str, named: dict[str, DeviceRecord]) -> Publication:
        """What replaces a stray on ``topic``: a registered device's current ack on its ack
        topic (if it has shipped anything), else an empty retained message (cleared).
        ``named``: the registered devices the round's stray acks name."""
        context = self._context
        acked = _acked(topic)
        device = None if acked is None else named.get(acked.device_id)
        if acked is None or device is None or device.region != acked.region:
            return Publication(topic, b"")
        log = context.registry.lineage_state(device.device_id)
        if not log.size:
            return Publication(topic, b"")
        return ack_publication(
            region=device.region,
            device=device.device_id,
            acked=log.size,
            root=log.root,
            key=context.keys.freshness,
            now=wall(),
        )


def _acked(topic: str) -> DeviceTopic | None:
    """The parts of ``topic`` if it is a device's ack topic, else ``None``."""
    try:
        parsed = parse_device_topic(topic)
    except ValueError:
        return None
    return parsed if parsed.leaf is DeviceLeaf.ACK else None

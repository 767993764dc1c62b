"""Which hub leads the schedule: the registry's schedule lease, claimed and renewed.

Several ``edge-hub serve`` processes may run on one registry (several hosts on PostgreSQL,
or a standby on the same ``hub.db``). Each ingests lineage, but only one at a time issues
and publishes what the schedule signs (freshness tokens, directories, the retained
snapshot, stray clearing): the one holding the lease
(:meth:`hub.registry.interface.Registry.claim_schedule_lease`). Every hub claims it every
:attr:`LeaseTiming.check_s`; the holder's claim renews it, another's takes it once it has
expired, and a hub stopping cleanly releases it so the next claim takes it at once. A lease
ending further ahead than any correct holder writes (a hub whose clock ran ahead, a tampered
row: :data:`hub.registry.lease_sql.LEASE_SKEW_LIMIT_S`) is taken over at once, with a
warning naming its holder and expiry; a standby names the holder and when its lease ends.

A hub that cannot reach the registry cannot prove it leads, so it stops scheduling until it
can again (agents keep their last freshness until their ``max_offline``), and says so once
per outage. Every gain and loss of the lease is logged and said on the status lines.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.support.cli import utc_text
from hub.registry import Registry, RegistryError, ScheduleLeaseHolder
from hub.registry.lease_sql import LEASE_SKEW_LIMIT_S

__all__ = ["MIN_LEASE_TTL_S", "LeaseTiming", "ScheduleLease", "lease_timing"]

logger = logging.getLogger(__name__)

MIN_LEASE_TTL_S = 2
"""The shortest lease: times are whole seconds, so a lease of ``ttl`` seconds runs between
``ttl - 1`` and ``ttl`` seconds of real time, and one of a second could run out at once."""


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """How long a claim holds the lease (``ttl_s``) and how often every hub claims it."""

    ttl_s: int
    check_s: float

    @property
    def handover_s(self) -> float:
        """The longest from the leader's death to another hub leading (and publishing: a
        hub that gains the lease runs a round at once): its last renewal's lease runs out
        at most ``ttl_s`` after it, and another hub claims at most ``check_s`` later."""
        return self.ttl_s + self.check_s


def lease_timing(freshness_interval_s: float) -> LeaseTiming:
    """The lease for a schedule run every ``freshness_interval_s``: half the interval, in
    whole seconds, at least :data:`MIN_LEASE_TTL_S`, claimed every third of the lease.

    Why: a dead leader's lease must run out and another hub claim it within one interval,
    so that agents see no more than one round without a token: ``ttl + ttl/3`` is at most
    two thirds of the interval, the rest leaving room for the new leader's round. The
    leader renews three times per lease, so one slow or failed renewal (a busy registry)
    does not lose it, even with a lease a second shorter from whole-second times. With an
    interval under ``4 * MIN_LEASE_TTL_S / 3`` seconds (tests), the handover takes
    :attr:`LeaseTiming.handover_s` of the shortest lease instead: 2.7 s.
    """
    ttl_s = max(MIN_LEASE_TTL_S, math.floor(freshness_interval_s / 2))
    return LeaseTiming(ttl_s, ttl_s / 3)


class ScheduleLease:
    """This hub's claim on the schedule lease, under the name ``holder`` (unique per
    process: its MQTT client id), and what it last knew of it."""

    def __init__(
        self,
        registry: Registry,
        holder: str,
        timing: LeaseTiming,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self._registry = registry
        self.holder = holder
        self.timing = timing
        self._say = say
        self.token: int | None = None
        """The fencing token while this hub leads, ``None`` while it does not."""
        self._unreachable = False
        self._claimed = False

    @property
    def leading(self) -> bool:
        return self.token is not None

    def claim(self, now: int) -> int | None:
        """Claim (or renew) the lease at ``now``: the fencing token if this hub leads."""
        try:
            # Read while standing by only: to say who leads, and whose lease was taken.
            before = None if self.leading else self._registry.schedule_lease()
            token = self._registry.claim_schedule_lease(self.holder, now, self.timing.ttl_s)
        except RegistryError as exc:
            self._lost(exc)
            return None
        self._reached()
        if token is None:
            self._follow(before)
        elif token != self.token:
            self._took_over(before, now)
            self._lead(token)
        self._claimed = True
        self.token = token
        return token

    def holds(self, token: int, now: int) -> bool:
        """Whether this hub still leads under ``token`` (the lease renewed at ``now``):
        asked right before publishing what a round under ``token`` signed, so a hub that
        lost the lease meanwhile (paused, its registry away) publishes none of it, nor
        what it signed before losing and regaining it."""
        held = self.claim(now)
        if held != token:
            logger.warning(
                "what this round made is not published: the schedule lease was lost "
                "meanwhile (fencing token %d, now %s)",
                token,
                held,
            )
            return False
        return True

    def lapse(self) -> None:
        """Stop leading without a word to the registry (this hub lost its broker: it cannot
        publish): the lease runs out unless this hub claims it again first, and another
        hub with a broker takes it."""
        if self.token is None:
            return
        logger.warning(
            "the schedule lease (fencing token %d) is left to run out: this hub has no broker",
            self.token,
        )
        self.token = None
        self._status("without the broker: leaves the schedule lease to run out")

    def release(self) -> None:
        """Free the lease if this hub holds it (stopping cleanly), for another hub to take
        at once."""
        if self.token is None:
            return
        self.token = None
        self._status("released the schedule lease")
        try:
            self._registry.release_schedule_lease(self.holder)
        except RegistryError as exc:
            logger.warning(
                "schedule lease not released (%s): another hub takes it when it expires", exc
            )
            return
        logger.info("schedule lease released")

    def _lead(self, token: int) -> None:
        logger.info("this hub leads the schedule now (fencing token %d)", token)
        self._status(f"leads the schedule (fencing token {token}): publishes freshness")

    def _took_over(self, before: ScheduleLeaseHolder | None, now: int) -> None:
        if before is None or before.holder in ("", self.holder):
            return
        if before.expires_at > now + self.timing.ttl_s + LEASE_SKEW_LIMIT_S:
            logger.warning(
                "took over the schedule lease of %s (fencing token %d), which claimed to "
                "run until %s: further ahead of this hub's clock than any hub writes (more "
                "than %d s past a lease's length); its clock runs ahead, or the row was "
                "tampered with",
                before.holder,
                before.token,
                utc_text(before.expires_at, "%Y-%m-%dT%H:%M:%SZ"),
                LEASE_SKEW_LIMIT_S,
            )

    def _follow(self, lease: ScheduleLeaseHolder | None) -> None:
        who = (
            "another hub leads the schedule"
            if lease is None or not lease.holder
            else f"another hub leads the schedule ({lease.holder}, its lease ending "
            f"{utc_text(lease.expires_at, '%Y-%m-%dT%H:%M:%SZ')})"
        )
        if self.token is not None:
            logger.warning(
                "this hub no longer leads the schedule (fencing token %d): another hub "
                "took the lease",
                self.token,
            )
            self._status(f"{who}: this one ingests and stands by")
        elif not self._claimed:
            logger.info("%s: this one ingests and stands by", who)
            self._status(f"{who}: this one ingests and stands by")

    def _lost(self, exc: RegistryError) -> None:
        was, self.token = self.token, None
        self._claimed = True
        if self._unreachable:
            logger.debug("schedule lease not claimed: %s", exc)
            return
        self._unreachable = True
        led = "" if was is None else f" (it led under fencing token {was})"
        logger.warning(
            "the registry cannot be reached: this hub does not schedule until it can "
            "prove it leads%s; agents keep their last freshness until max_offline: %s",
            led,
            exc,
        )
        self._status(
            "registry unreachable: not scheduling (agents keep their last freshness "
            "until max_offline)"
        )

    def _reached(self) -> None:
        if self._unreachable:
            self._unreachable = False
            logger.warning("the registry is reachable again: claiming the schedule lease")
            self._status("registry reachable again")

    def _status(self, line: str) -> None:
        if self._say is not None:
            self._say(line)

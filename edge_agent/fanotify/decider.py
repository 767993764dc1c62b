"""One exec permission event -> allow or deny, in memory, and the decision handed to the lineage.

Per event (on the responder thread; nothing here logs, blocks or waits on the disk):

1. read the agent's trust state **once** (``agent.state``: an immutable snapshot the agent
   swaps whole when a bundle, revocation or freshness token arrives);
2. read the time from :class:`SteadyClock`: never earlier than the wall clock, and never
   earlier than the clock at start plus the monotonic time elapsed since, so setting the
   wall clock back cannot stretch a bundle's TTL (the expiry is checked against a
   monotonic deadline on every event). It is not trusted time (nothing signed vouches for
   the start): the gate raises it to the signed floor, as for every decision;
3. identify the file and the caller (:mod:`edge_agent.fanotify.identity`) and decide with
   the gate (:func:`edge_agent.trust.gate.decide`): the same checks and rules as every other
   decision, so a closed gate (expired bundle, failed attestation, revocation) denies every
   exec. The gate is a pure function of the state, the request and the second, so a request
   identical to one already decided in the same second under the same state is given that
   decision again without asking the gate (an exec storm of one program costs one gate call
   per second);
4. hand the decision to the lineage queue; a full queue, or a lineage that cannot be
   written, denies (``lineage_unavailable``);
5. return the answer: the decision in ``enforce``; always allow in ``audit`` (configured, or
   while a break-glass window is open), the logged entry saying what ``enforce`` would have
   done. The logged verdict, reason and rule are the gate's own, so replaying audit entries
   gives the same verdicts; only the entry's message notes the mode.

Audit allows even what cannot be logged (a full queue): it is the mode for rolling out a
policy, and by configuration it enforces nothing; such execs are counted as unlogged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Protocol

from edge_agent.fanotify.handoff import LineageHandoff
from edge_agent.fanotify.identity import EXEC_ACTION, ExecIdentifier
from edge_agent.lineage.log import LineageLog
from edge_agent.protocol.request import Request
from edge_agent.socket.errors import IdentityError
from edge_agent.trust.clock import steady_now
from edge_agent.trust.gate import Decision, Reason, decide, lineage_unavailable
from edge_agent.trust.state import TrustState

__all__ = [
    "DECISIONS_REMEMBERED",
    "AgentView",
    "BreakGlassWindow",
    "Counters",
    "ExecDecider",
    "SteadyClock",
]

DECISIONS_REMEMBERED = 1024
"""Distinct requests whose decision is remembered within one second under one state."""


class AgentView(Protocol):
    """What the decider reads from the agent: two attributes, each read once per event."""

    @property
    def state(self) -> TrustState: ...

    @property
    def lineage(self) -> LineageLog | None: ...


class SteadyClock:
    """Unix seconds that never go back within this process
    (:func:`edge_agent.trust.clock.steady_now`); not trusted time, which the gate derives
    from it and the signed floor."""

    def __init__(self) -> None:
        self._wall0 = int(time.time())
        self._mono0 = time.monotonic()

    def now(self) -> int:
        return steady_now(int(time.time()), self._wall0, self._mono0, time.monotonic())


@dataclass(frozen=True, slots=True)
class BreakGlassWindow:
    """An open break-glass window: audit mode until ``until_mono`` (monotonic seconds)."""

    token_id: str
    until_mono: float
    until_wall: int
    reason: str


@dataclass(slots=True)
class Counters:
    """What the responder has done since the enforcer started (written by one thread)."""

    events: int = 0
    allowed: int = 0
    denied: int = 0
    audit_would_deny: int = 0
    queue_full: int = 0
    unlogged: int = 0
    unidentified: int = 0


class ExecDecider:
    """Decides exec events for one enforcer; ``audit`` is the configured mode."""

    def __init__(
        self,
        agent: AgentView,
        identifier: ExecIdentifier,
        handoff: LineageHandoff,
        *,
        audit: bool,
        clock: SteadyClock | None = None,
    ) -> None:
        self.audit = audit
        self.break_glass: BreakGlassWindow | None = None
        """Set and cleared whole by the enforcer."""
        self.counters = Counters()
        self._agent = agent
        self._identifier = identifier
        self._handoff = handoff
        self._clock = clock or SteadyClock()
        self._known: dict[Request, Decision] = {}
        self._known_under: tuple[TrustState, int] | None = None

    def __call__(self, fd: int, pid: int) -> bool:
        """Whether the exec of the file open as ``fd`` by process ``pid`` may proceed."""
        counters = self.counters
        counters.events += 1
        state = self._agent.state
        now = self._clock.now()
        try:
            decision = self._decide(state, self._identifier.request(fd, pid), now)
        except IdentityError as exc:
            counters.unidentified += 1
            decision = _unidentified(state, fd, pid, now, exc.message)
        note = self._audit_note() if self.audit or self.break_glass is not None else None
        lineage = self._agent.lineage
        if lineage is None or lineage.fault is not None:
            why = "the lineage is not open" if lineage is None else lineage.fault
            decision = lineage_unavailable(decision, why or "the lineage is unavailable")
            logged = False
        else:
            logged = self._handoff.offer(decision if note is None else _noted(decision, note))
            if not logged:
                counters.queue_full += 1
                decision = lineage_unavailable(decision, "the lineage queue is full")
        if not logged:
            counters.unlogged += 1
        if note is not None:
            if not decision.allowed:
                counters.audit_would_deny += 1
            counters.allowed += 1
            return True
        if decision.allowed:
            counters.allowed += 1
        else:
            counters.denied += 1
        return decision.allowed

    def _decide(self, state: TrustState, request: Request, now: int) -> Decision:
        """The gate's decision, remembered for the rest of this second under this state.

        The gate is a pure function of the state (an immutable snapshot), the request and
        the second, so an exec storm of one program by one caller asks it once per second
        and gets the very decision it would have been given; a new state or a new second
        forgets everything.
        """
        under = self._known_under
        if under is None or under[0] is not state or under[1] != now:
            self._known.clear()
            self._known_under = (state, now)
        decision = self._known.get(request)
        if decision is None:
            decision = decide(state, request, now)
            if len(self._known) < DECISIONS_REMEMBERED:
                self._known[request] = decision
        return decision

    def _audit_note(self) -> str | None:
        if self.audit:
            return "audit mode"
        window = self.break_glass
        if window is not None and time.monotonic() < window.until_mono:
            return f"break-glass {window.token_id}"
        return None


def _noted(decision: Decision, note: str) -> Decision:
    verdict = "allowed" if decision.allowed else "denied"
    return replace(
        decision,
        message=f"{note}: exec allowed; enforce would have {verdict} it: {decision.message}",
    )


def _unidentified(state: TrustState, fd: int, pid: int, now: int, why: str) -> Decision:
    """The deny for an exec whose file or caller cannot be identified."""
    try:
        resource = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        resource = "(unknown file)"
    bundle = state.bundle
    return Decision(
        False,
        Reason.INTERNAL_ERROR,
        f"the exec could not be identified: {why}",
        None,
        bundle.version if bundle is not None else None,
        bundle.digest if bundle is not None else None,
        Request(f"pid:{pid}", EXEC_ACTION, resource),
        now,
    )

"""From the responder thread to the durable lineage: a bounded queue and one writer task.

The responder answers the kernel first and logs after (an exec must not wait on a disk), so
its decisions reach the lineage through this queue, which it fills without blocking
(:meth:`LineageHandoff.offer`, a deque append; one :meth:`LineageHandoff.wake` per batch of
answers, after they are written) and the agent's event loop drains
(:meth:`LineageHandoff.run`): after letting decisions gather for :data:`LINGER_S`, every
queued decision is handed to ``LineageLog.record_decision_numbered_soon``, all of a batch
at once, so they share one transaction and one fsync with each other and with the
socket's decisions (group commit).

Bounded, and fail closed: :meth:`offer` refuses once ``capacity`` decisions are waiting, and
the responder then denies. A write that fails keeps its decisions at the head of the queue
and is retried with capped backoff, so a stalled or full disk loses nothing: it only lets
the queue fill, after which execs are denied, not hung. (A batch commits as one transaction,
so it fails as a whole; should part of one fail, the retried part is logged after the rest.)
What the queue holds when the agent loses power (at most ``capacity`` answered execs) is the
price of not waiting on the disk per exec; the reply-first design of the issue accepts it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable

from edge_agent.lineage.log import LineageLog
from edge_agent.protocol.lineage_entries import Entry
from edge_agent.trust.gate import Decision

__all__ = ["BATCH_ENTRIES", "DEFAULT_CAPACITY", "LineageHandoff"]

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 8192
"""Decisions waiting for the lineage before execs are denied (about 1 s of a sustained
exec storm; a few MiB of memory)."""

BATCH_ENTRIES = 1024
"""Decisions written concurrently (one group commit) per round."""

LINGER_S = 0.02
"""How long the writer lets decisions gather after it is woken, unless a full batch is
already waiting. One commit per exec (an fsync'd transaction each) costs the agent more
CPU than the decision itself; the answer never waits for the commit, so gathering only
delays durability, by at most this much plus the commit."""

_RETRY_FIRST_S, _RETRY_MAX_S = 0.05, 2.0


class LineageHandoff:
    """The queue between the responder (one producer thread) and the lineage (the loop)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("the lineage queue holds at least one decision")
        self.capacity = capacity
        self.written = 0
        self.problem: str | None = None
        """Why the last write failed (cleared by the next success)."""
        self._queue: deque[Decision] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._signalled = False
        self._woken_at: float | None = None
        """Loop time of the wake-up the waiting decisions caused (their gathering starts)."""

    @property
    def backlog(self) -> int:
        """Decisions answered but not yet durable."""
        return len(self._queue)

    def offer(self, decision: Decision) -> bool:
        """Queue ``decision`` for the lineage; ``False`` when the queue is full (deny).

        Called from the responder thread; never blocks, never logs. The writer is woken
        by :meth:`wake`, which the responder calls once the answers of its batch are
        written, so the event loop does not compete with it for the interpreter before
        then.
        """
        if len(self._queue) >= self.capacity or self._loop is None:
            return False
        self._queue.append(decision)
        return True

    def wake(self) -> None:
        """Wake the writer if decisions wait and it has not been woken (responder thread)."""
        loop = self._loop
        if self._signalled or loop is None or not self._queue:
            return
        self._signalled = True
        try:
            loop.call_soon_threadsafe(self._notify)
        except RuntimeError:
            self._signalled = False

    def _notify(self) -> None:
        if self._wake is not None:
            if self._woken_at is None and self._loop is not None:
                self._woken_at = self._loop.time()
            self._wake.set()

    def attach(self) -> None:
        """Start accepting decisions for the running event loop (call on that loop, before
        the responder starts)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()

    async def run(
        self,
        lineage: Callable[[], LineageLog | None],
        divergence: Callable[[Decision], Entry | None],
    ) -> None:
        """Write queued decisions until cancelled; ``lineage()`` gives the log to write to,
        ``divergence(decision)`` the ``shadow_divergence`` entry to log right after a
        decision (a shadow bundle held and deciding it otherwise; evaluated here, on the
        loop, off the exec path).

        Each round writes what had gathered when it began; decisions that arrive while it
        commits gather for the rest of their own :data:`LINGER_S` (counted from the
        wake-up they caused) and go in the next round's commit, instead of a small commit
        of their own right after this one.
        """
        if self._wake is None:
            raise RuntimeError("attach() the handoff to the event loop first")
        loop = asyncio.get_running_loop()
        retry = _RETRY_FIRST_S
        while True:
            await self._wake.wait()
            woken = self._woken_at
            linger = LINGER_S if woken is None else woken + LINGER_S - loop.time()
            if linger > 0 and len(self._queue) < BATCH_ENTRIES:
                await asyncio.sleep(linger)
            self._wake.clear()
            self._woken_at = None
            self._signalled = False
            gathered = len(self._queue)
            while gathered > 0 and self._queue:
                taken = min(gathered, BATCH_ENTRIES)
                if await self._write_batch(lineage(), taken, divergence):
                    gathered -= taken
                    retry = _RETRY_FIRST_S
                else:
                    await asyncio.sleep(retry)
                    retry = min(_RETRY_MAX_S, retry * 2)

    async def _write_batch(
        self,
        log: LineageLog | None,
        entries: int,
        divergence: Callable[[Decision], Entry | None],
    ) -> bool:
        """Write the first ``entries`` queued decisions as one batch, each with its shadow
        divergence; whether all were."""
        batch = list(itertools.islice(self._queue, entries))
        if log is None:
            self.problem = "the lineage is not open"
            return False
        # Futures, not coroutines: no task per decision; the lineage commits the batch as
        # one and resolves them in order.
        recorded = [log.record_decision_numbered_soon(d, divergence(d)) for d in batch]
        failed = [d for d, future in zip(batch, recorded, strict=True) if (await future)[1] is None]
        for _ in batch:
            self._queue.popleft()
        self.written += len(batch) - len(failed)
        if not failed:
            self.problem = None
            return True
        self._queue.extendleft(reversed(failed))
        problem = log.status() or "the lineage write failed"
        if problem != self.problem:
            logger.error(
                "exec decisions not yet durable (%d waiting, retrying): %s",
                len(self._queue),
                problem,
            )
        self.problem = problem
        return False

    async def flush(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the queue to empty; the decisions still waiting."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._wake is not None:
            self._woken_at = loop.time() - LINGER_S
            self._wake.set()
        while self._queue and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return len(self._queue)

    def close(self) -> int:
        """Stop accepting decisions; the number that will never be written."""
        self._loop = None
        lost = len(self._queue)
        self._queue.clear()
        return lost

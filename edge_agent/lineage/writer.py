"""Group commit: many concurrent deciders in one process share one transaction and one fsync.

Leader/follower, no background thread. A caller queues its draft; if no batch is being
written it becomes the leader, takes up to :data:`MAX_BATCH_ENTRIES` queued drafts, writes
them in one transaction and wakes their callers. While it writes (the fsync releases the
GIL), new callers prepare and queue theirs, so the next batch grows with the load. When the
leader's own draft is done it hands the lead to the first caller still queued, so no caller
waits for more than the batches ahead of it. Each caller returns only after the batch
holding its draft committed (or failed: then every caller of that batch gets the error).
Several processes are serialised by SQLite's write lock, bounded by the store's busy timeout.

Waiting uses one plain lock per caller, released by the leader: waking a batch costs one
release per caller, with no shared condition for all of them to contend on.

Code on an event loop uses :class:`AsyncGroupCommitWriter` instead: the same batching, with
callbacks in place of sleeping threads; a small batch is committed on the event loop itself
when no lock has to be waited for, a bigger one (or one that would wait) by the writer's own
long-lived thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable

from edge_agent.errors import LineageError
from edge_agent.lineage.store import Appended, WouldWait
from edge_agent.protocol.lineage_entries import Draft

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_BATCH_ENTRIES",
    "MAX_ON_LOOP_ENTRIES",
    "ON_LOOP_BUDGET_S",
    "AsyncGroupCommitWriter",
    "GroupCommitWriter",
]

MAX_BATCH_ENTRIES = 1024
"""Most entries committed in one transaction: bounds a batch's memory and latency."""

MAX_ON_LOOP_ENTRIES = 2
"""Largest batch committed on the event loop. A lone decider's commit is mostly the fsync:
doing it on the loop saves the two thread hand-offs around it (about 0.05-0.1 ms of a
0.5 ms round trip through the decision socket). A bigger batch means concurrent deciders:
the writer thread commits it while the loop reads and decides the next ones."""

ON_LOOP_BUDGET_S = 0.002
"""Longest commit worth making on the loop. When the last commit took longer (a slow disk:
an SD card's fsync can take tens of milliseconds), batches go to the writer thread until a
commit is quick again, so the loop is never held long to save two thread switches."""

BatchWrite = Callable[[list[Draft]], Appended]


class _Slot:
    """One caller's drafts (written one after the other), the outcome of the first, and the
    lock it sleeps on until woken."""

    __slots__ = ("done", "drafts", "error", "seq", "wake")

    def __init__(self, drafts: tuple[Draft, ...]) -> None:
        self.drafts = drafts
        self.seq: int | None = None
        self.error: LineageError | None = None
        self.done = False
        self.wake = threading.Lock()
        self.wake.acquire()

    def outcome(self) -> int:
        if self.error is not None:
            raise self.error
        if self.seq is None:
            raise LineageError("the lineage write was interrupted")
        return self.seq


class GroupCommitWriter:
    """Appends drafts through ``write_batch`` (one transaction per call), batching callers."""

    def __init__(self, write_batch: BatchWrite) -> None:
        self._write_batch = write_batch
        self._mutex = threading.Lock()
        self._pending: list[_Slot] = []
        self._leading = False

    def append(self, draft: Draft, *following: Draft) -> int:
        """Append one draft durably, and ``following`` right after it (the next seqs, in the
        same transaction); return its seq.

        Raises:
            LineageError: the batch holding these drafts could not be written.
        """
        slot = _Slot((draft, *following))
        with self._mutex:
            self._pending.append(slot)
            follower, self._leading = self._leading, True
        if follower:
            slot.wake.acquire()
            if slot.done:
                return slot.outcome()
        self._lead(slot)
        return slot.outcome()

    def _lead(self, own: _Slot) -> None:
        """Write batches until ``own`` is done, then pass the lead on (or give it up)."""
        while True:
            with self._mutex:
                batch = self._pending[:MAX_BATCH_ENTRIES]
                del self._pending[:MAX_BATCH_ENTRIES]
            try:
                self._commit(batch)
            finally:
                for slot in batch:
                    if not slot.done:
                        slot.error = LineageError("the lineage write was interrupted")
                        slot.done = True
                    if slot is not own:
                        slot.wake.release()
                with self._mutex:
                    successor = self._pending[0] if self._pending and own.done else None
                    self._leading = bool(self._pending)
                if successor is not None:
                    successor.wake.release()
            if own.done:
                return

    def _commit(self, batch: list[_Slot]) -> None:
        outcome = _outcome(self._write_batch, [draft for slot in batch for draft in slot.drafts])
        offset = 0
        for slot in batch:
            if isinstance(outcome, LineageError):
                slot.error = outcome
            else:
                slot.seq = outcome.first_seq + offset
            offset += len(slot.drafts)
            slot.done = True


class AsyncGroupCommitWriter:
    """The same group commit for the drafts of one event loop, with callbacks in place of
    sleeping threads.

    :meth:`submit` queues a draft with the callback that gets its outcome, and schedules one
    flush (a plain loop callback, no task) if none is pending; every draft queued before the
    flush runs shares its batch. A batch of at most :data:`MAX_ON_LOOP_ENTRIES` drafts is
    committed by the flush itself through ``write_now`` when that need not wait for a lock
    (the loop must never sleep on another writer) and the last commit took at most
    ``on_loop_budget_s`` (nor be held long by a slow disk). Any other batch goes to this
    writer's own thread (started on first use, ended by :meth:`close`), so the loop keeps
    accepting decisions while SQLite commits; the thread reports back with one
    ``call_soon_threadsafe`` and the next flush starts. Outcomes are reported on the loop,
    in submission order, each exactly once (unless the loop is closed before the thread
    reports).

    A decider that stops waiting may still have its entry written (a logged decision that
    was never returned is harmless; the reverse is what must never happen).
    """

    def __init__(
        self,
        write_batch: BatchWrite,
        write_now: BatchWrite | None = None,
        *,
        on_loop_budget_s: float = ON_LOOP_BUDGET_S,
    ) -> None:
        """``write_now`` is ``write_batch`` that raises
        :class:`~edge_agent.lineage.store.WouldWait` instead of waiting for a lock; without
        it every batch goes to the writer thread."""
        self._write_batch = write_batch
        self._write_now = write_now
        self._on_loop_budget_s = on_loop_budget_s
        self._last_commit_s = 0.0
        """How long the last commit took, on the loop or on the thread."""
        self._pending: list[tuple[Draft, Report]] = []
        self._flushing_on: asyncio.AbstractEventLoop | None = None
        """The loop a flush is scheduled on or a batch is being written for, if any."""
        self._batches: queue.SimpleQueue[_Handoff | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    def close(self) -> None:
        """End the writer thread once the batch it holds is written (new appends start a
        new one)."""
        with self._thread_lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._batches.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def submit(self, draft: Draft, report: Report) -> None:
        """Queue ``draft``; ``report`` is called on this loop with its seq once it is durable,
        or with the :class:`LineageError` of the batch that held it. Call it on the loop."""
        loop = asyncio.get_running_loop()
        self._pending.append((draft, report))
        if self._flushing_on is not loop:
            # None, or a loop that closed while the thread held its batch: start here.
            self._flushing_on = loop
            loop.call_soon(self._flush)

    async def append(self, draft: Draft) -> int:
        """Append one draft durably and return its seq.

        Raises:
            LineageError: the batch holding this draft could not be written.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.submit(draft, functools.partial(_resolve, future))
        return await future

    def _flush(self) -> None:
        """Commit the queued drafts: small batches here, then at most one batch handed to the
        writer thread, whose report flushes again."""
        batch: list[tuple[Draft, Report]] = []
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH_ENTRIES]
                del self._pending[:MAX_BATCH_ENTRIES]
                drafts = [draft for draft, _ in batch]
                write_now = self._on_loop_writer(batch)
                if write_now is not None:
                    started = time.monotonic()
                    with contextlib.suppress(WouldWait):
                        outcome = _outcome(write_now, drafts)
                        self._last_commit_s = time.monotonic() - started
                        _report(batch, outcome)
                        batch = []
                        continue
                self._hand_over(batch)
                return
        except BaseException:
            self._flushing_on = None
            interrupted = LineageError("the lineage write was interrupted")
            _report(batch, interrupted)
            _report(self._pending, interrupted)
            self._pending.clear()
            raise
        self._flushing_on = None

    def _on_loop_writer(self, batch: list[tuple[Draft, Report]]) -> BatchWrite | None:
        """``write_now`` if ``batch`` may be committed on the loop: small, and the last
        commit was quick."""
        if len(batch) <= MAX_ON_LOOP_ENTRIES and self._last_commit_s <= self._on_loop_budget_s:
            return self._write_now
        return None

    def _hand_over(self, batch: list[tuple[Draft, Report]]) -> None:
        """Give ``batch`` to the writer thread; it reports to :meth:`_handed_back`."""
        loop = asyncio.get_running_loop()
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(
                    target=self._write_batches, name="lineage-group-commit", daemon=True
                )
                thread.start()
                self._thread = thread
            self._batches.put(_Handoff(batch, loop))

    def _handed_back(
        self, batch: list[tuple[Draft, Report]], outcome: _Outcome, took_s: float
    ) -> None:
        self._last_commit_s = took_s
        _report(batch, outcome)
        # Not flushed right here: the answers just resolved are written first, then the
        # next batch (which may be committed on the loop) is taken.
        asyncio.get_running_loop().call_soon(self._flush)

    def _write_batches(self) -> None:
        """The writer thread: commit each batch handed over, report back to its loop."""
        while (handoff := self._batches.get()) is not None:
            started = time.monotonic()
            try:
                outcome = _outcome(self._write_batch, [draft for draft, _ in handoff.batch])
            except BaseException as exc:  # still reported: nobody may be left waiting
                outcome = LineageError(f"unexpected failure writing the lineage: {exc!r}")
            # A closed loop raises RuntimeError: nobody is waiting for this batch any more.
            with contextlib.suppress(RuntimeError):
                handoff.loop.call_soon_threadsafe(
                    self._handed_back, handoff.batch, outcome, time.monotonic() - started
                )


Report = Callable[[int | LineageError], None]
"""Gets a draft's seq once it is durable, or the error of the batch that held it."""

_Outcome = Appended | LineageError


class _Handoff:
    """A batch for the writer thread and the loop to report its outcome on."""

    __slots__ = ("batch", "loop")

    def __init__(self, batch: list[tuple[Draft, Report]], loop: asyncio.AbstractEventLoop) -> None:
        self.batch = batch
        self.loop = loop


def _outcome(write: BatchWrite, drafts: list[Draft]) -> _Outcome:
    """Write ``drafts``; where they landed, or the failure as a :class:`LineageError`.

    Raises:
        WouldWait: the write refused to wait for a lock; nothing was written.
    """
    try:
        return write(drafts)
    except WouldWait:
        raise
    except LineageError as exc:
        return exc
    except Exception as exc:
        return LineageError(f"unexpected failure writing the lineage: {exc}")


def _report(batch: list[tuple[Draft, Report]], outcome: _Outcome) -> None:
    """Give each draft of ``batch`` its outcome; a report that fails is logged and does not
    keep the others from theirs."""
    for index, (_, report) in enumerate(batch):
        try:
            report(outcome if isinstance(outcome, LineageError) else outcome.first_seq + index)
        except Exception:
            logger.exception("reporting a lineage write's outcome failed")


def _resolve(future: asyncio.Future[int], outcome: int | LineageError) -> None:
    if future.done() or future.get_loop().is_closed():
        return
    if isinstance(outcome, LineageError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

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

Coroutines use :class:`AsyncGroupCommitWriter` instead: the same batching, with futures in
place of threads; a small batch is committed on the event loop itself when no lock has to be
waited for, a bigger one (or one that would wait) by the writer's own long-lived thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable

from edge_agent.errors import LineageError
from edge_agent.lineage.entries import Draft
from edge_agent.lineage.store import Appended, WouldWait

__all__ = [
    "MAX_BATCH_ENTRIES",
    "MAX_ON_LOOP_ENTRIES",
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

BatchWrite = Callable[[list[Draft]], Appended]


class _Slot:
    """One caller's draft, its outcome, and the lock it sleeps on until woken."""

    __slots__ = ("done", "draft", "error", "seq", "wake")

    def __init__(self, draft: Draft) -> None:
        self.draft = draft
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

    def append(self, draft: Draft) -> int:
        """Append one draft durably and return its seq.

        Raises:
            LineageError: the batch holding this draft could not be written.
        """
        slot = _Slot(draft)
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
        try:
            appended = self._write_batch([slot.draft for slot in batch])
        except LineageError as exc:
            for slot in batch:
                slot.error, slot.done = exc, True
            return
        except Exception as exc:
            error = LineageError(f"unexpected failure writing the lineage: {exc}")
            for slot in batch:
                slot.error, slot.done = error, True
            return
        for seq, slot in enumerate(batch, appended.first_seq):
            slot.seq, slot.done = seq, True


class AsyncGroupCommitWriter:
    """The same group commit for the coroutines of one event loop.

    A coroutine queues its draft and awaits a future; one drain task writes the queued
    drafts in batches and resolves the futures. A batch of at most
    :data:`MAX_ON_LOOP_ENTRIES` drafts is committed on the loop through ``write_now`` when
    that need not wait for a lock (the loop must never sleep on another writer). Any other
    batch is committed by this writer's own thread (started on first use, ended by
    :meth:`close`), so the loop keeps accepting decisions while SQLite commits; handing a
    batch over costs one queue put and one ``call_soon_threadsafe``, not an executor
    submission and a chain of futures. Waking a coroutine costs a future, not a thread
    switch, which is what lets many concurrent deciders share one fsync cheaply.

    A decider cancelled while waiting may still have its entry written (a logged decision
    that was never returned is harmless; the reverse is what must never happen). If the
    drain task itself is cancelled, every draft it had not committed fails.
    """

    def __init__(self, write_batch: BatchWrite, write_now: BatchWrite | None = None) -> None:
        """``write_now`` is ``write_batch`` that raises
        :class:`~edge_agent.lineage.store.WouldWait` instead of waiting for a lock; without
        it every batch goes to the writer thread."""
        self._write_batch = write_batch
        self._write_now = write_now
        self._pending: list[tuple[Draft, asyncio.Future[int]]] = []
        self._drainer: asyncio.Task[None] | None = None
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

    async def append(self, draft: Draft) -> int:
        """Append one draft durably and return its seq.

        Raises:
            LineageError: the batch holding this draft could not be written.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((draft, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain(), name="lineage-group-commit")
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[Draft, asyncio.Future[int]]] = []
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH_ENTRIES]
                del self._pending[:MAX_BATCH_ENTRIES]
                try:
                    appended = await self._commit([d for d, _ in batch])
                except LineageError as exc:
                    _settle(batch, exc)
                except Exception as exc:
                    _settle(batch, LineageError(f"unexpected failure writing the lineage: {exc}"))
                else:
                    for seq, (_, future) in enumerate(batch, appended.first_seq):
                        if not future.done():
                            future.set_result(seq)
                batch = []
        finally:
            interrupted = LineageError("the lineage write was interrupted")
            _settle(batch, interrupted)
            _settle(self._pending, interrupted)
            self._pending.clear()

    async def _commit(self, drafts: list[Draft]) -> Appended:
        """Commit ``drafts``: here when small and nothing has to be waited for, else on the
        writer thread."""
        if self._write_now is not None and len(drafts) <= MAX_ON_LOOP_ENTRIES:
            with contextlib.suppress(WouldWait):
                return self._write_now(drafts)
        return await self._hand_over(drafts)

    def _hand_over(self, drafts: list[Draft]) -> asyncio.Future[Appended]:
        """Hand ``drafts`` to the writer thread; the future resolves on this loop."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Appended] = loop.create_future()
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(
                    target=self._write_batches, name="lineage-group-commit", daemon=True
                )
                thread.start()
                self._thread = thread
            self._batches.put(_Handoff(drafts, loop, done))
        return done

    def _write_batches(self) -> None:
        """The writer thread: commit each batch handed over, report back to its loop."""
        while (handoff := self._batches.get()) is not None:
            try:
                outcome: Appended | BaseException = self._write_batch(handoff.drafts)
            except BaseException as exc:  # reported to the drain task, which decides
                outcome = exc
            # A closed loop raises RuntimeError: nobody is waiting for this batch any more.
            with contextlib.suppress(RuntimeError):
                handoff.loop.call_soon_threadsafe(_resolve, handoff.done, outcome)


class _Handoff:
    """A batch for the writer thread and where to report its outcome."""

    __slots__ = ("done", "drafts", "loop")

    def __init__(
        self, drafts: list[Draft], loop: asyncio.AbstractEventLoop, done: asyncio.Future[Appended]
    ) -> None:
        self.drafts = drafts
        self.loop = loop
        self.done = done


def _resolve(done: asyncio.Future[Appended], outcome: Appended | BaseException) -> None:
    if done.done():
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


def _settle(batch: list[tuple[Draft, asyncio.Future[int]]], error: LineageError) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)

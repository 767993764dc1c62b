"""Group commit: many concurrent deciders in one process share one transaction and one fsync.

Leader/follower, no background thread: a caller whose entry is pending and finds no write in
progress becomes the leader, takes up to :data:`MAX_BATCH_ENTRIES` pending entries, writes
them in one transaction and wakes the others. While it writes, new callers queue up, so the
next batch grows with the load. Each caller returns only after the batch holding its entry
committed (or failed: then every caller of that batch gets the error). Several processes
are serialised by SQLite's write lock, bounded by the store's busy timeout.

Coroutines use it through ``await asyncio.to_thread(writer.append, entry)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.errors import LineageError
from edge_agent.lineage.entries import Entry
from edge_agent.lineage.store import Appended

__all__ = ["MAX_BATCH_ENTRIES", "GroupCommitWriter"]

MAX_BATCH_ENTRIES = 1024
"""Most entries committed in one transaction: bounds a batch's memory and latency."""

BatchWrite = Callable[[list[Entry]], Appended]


@dataclass(slots=True)
class _Slot:
    draft: Entry
    seq: int | None = None
    error: LineageError | None = None
    done: bool = False


class GroupCommitWriter:
    """Appends entries through ``write_batch`` (one transaction per call), batching callers."""

    def __init__(self, write_batch: BatchWrite) -> None:
        self._write_batch = write_batch
        self._cond = threading.Condition()
        self._pending: list[_Slot] = []
        self._writing = False

    def append(self, draft: Entry) -> int:
        """Append one entry durably and return its seq.

        Raises:
            LineageError: the batch holding this entry could not be written.
        """
        slot = _Slot(draft)
        with self._cond:
            self._pending.append(slot)
            while not slot.done:
                if self._writing:
                    self._cond.wait()
                    continue
                self._writing = True
                batch = self._pending[:MAX_BATCH_ENTRIES]
                del self._pending[:MAX_BATCH_ENTRIES]
                self._cond.release()
                try:
                    self._commit(batch)
                finally:
                    self._cond.acquire()
                    for stranded in batch:
                        if not stranded.done:
                            stranded.error = LineageError("the lineage write was interrupted")
                            stranded.done = True
                    self._writing = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        assert slot.seq is not None
        return slot.seq

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
        for offset, slot in enumerate(batch):
            slot.seq, slot.done = appended.first_seq + offset, True

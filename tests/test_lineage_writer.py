"""Group commit: every caller gets its own seq or its batch's error, and nobody is left waiting."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from edge_agent.errors import LineageError
from edge_agent.lineage.store import Appended
from edge_agent.lineage.writer import (
    MAX_BATCH_ENTRIES,
    AsyncGroupCommitWriter,
    GroupCommitWriter,
)
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Draft, Entry, Kind, draft_of

DRAFT = draft_of(Entry(0, 1, GENESIS_PREV, Kind.ROOT_ROTATED, True, "root_rotated"))


class FakeLog:
    """A batch writer that fails every ``fail_every``-th batch and records batch sizes."""

    def __init__(self, fail_every: int = 0, pause_s: float = 0.0) -> None:
        self.size = 0
        self.batches: list[int] = []
        self.fail_every = fail_every
        self.pause_s = pause_s
        self._lock = threading.Lock()

    def write(self, drafts: list[Draft]) -> Appended:
        with self._lock:
            time.sleep(self.pause_s)
            self.batches.append(len(drafts))
            if self.fail_every and len(self.batches) % self.fail_every == 0:
                raise LineageError("disk full")
            first, self.size = self.size, self.size + len(drafts)
            return Appended(first, self.size)


def _hammer(writer: GroupCommitWriter, threads: int, each: int) -> tuple[list[int], int]:
    seqs: list[int] = []
    failures = [0]
    guard = threading.Lock()

    def run() -> None:
        for _ in range(each):
            try:
                seq = writer.append(DRAFT)
            except LineageError:
                with guard:
                    failures[0] += 1
            else:
                with guard:
                    seqs.append(seq)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert not worker.is_alive(), "a caller was left waiting"
    return seqs, failures[0]


def test_concurrent_callers_share_batches_and_each_gets_a_distinct_seq() -> None:
    log = FakeLog(pause_s=0.001)
    seqs, failures = _hammer(GroupCommitWriter(log.write), threads=32, each=40)
    assert failures == 0
    assert sorted(seqs) == list(range(32 * 40))
    assert max(log.batches) > 1 and max(log.batches) <= MAX_BATCH_ENTRIES


def test_a_failed_batch_fails_exactly_its_callers_and_the_next_batch_succeeds() -> None:
    log = FakeLog(fail_every=3, pause_s=0.0005)
    seqs, failures = _hammer(GroupCommitWriter(log.write), threads=16, each=50)
    assert failures + len(seqs) == 16 * 50
    assert failures == sum(size for i, size in enumerate(log.batches, 1) if i % 3 == 0)
    assert sorted(seqs) == list(range(log.size))


def test_an_unexpected_exception_becomes_a_lineage_error() -> None:
    def broken(drafts: list[Draft]) -> Appended:
        raise RuntimeError("bug")

    with pytest.raises(LineageError, match="unexpected failure"):
        GroupCommitWriter(broken).append(DRAFT)


def test_coroutines_share_batches_and_each_gets_a_distinct_seq() -> None:
    log = FakeLog(pause_s=0.001)
    writer = AsyncGroupCommitWriter(log.write)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(writer.append(DRAFT) for _ in range(500))))

    seqs = asyncio.run(main())
    assert sorted(seqs) == list(range(500))
    assert max(log.batches) > 1


def test_coroutines_of_a_failed_batch_get_its_error() -> None:
    log = FakeLog(fail_every=1)
    writer = AsyncGroupCommitWriter(log.write)

    async def main() -> list[int | BaseException]:
        return await asyncio.gather(
            *(writer.append(DRAFT) for _ in range(10)), return_exceptions=True
        )

    assert all(isinstance(result, LineageError) for result in asyncio.run(main()))


def test_a_waiter_that_stops_waiting_does_not_keep_the_others_from_their_seqs() -> None:
    release = threading.Event()
    log = FakeLog()

    def slow(drafts: list[Draft]) -> Appended:
        release.wait(5)
        return log.write(drafts)

    writer = AsyncGroupCommitWriter(slow)

    async def main() -> list[int | BaseException]:
        waiting = [asyncio.create_task(writer.append(DRAFT)) for _ in range(5)]
        await asyncio.sleep(0.05)
        waiting[2].cancel()
        release.set()
        return await asyncio.gather(*waiting, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        writer.close()
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 2] == [0, 1, 3, 4]
    assert log.size == 5  # the abandoned draft was written all the same

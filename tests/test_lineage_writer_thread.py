"""Where the coroutine group-commit writer commits: a small batch on the event loop when no
lock has to be waited for, anything else on one long-lived thread of its own, ended by close.

A lone decision through the socket waits on this choice, so the loop commits it itself; a
batch of concurrent ones, or one that would wait for a lock, goes to the thread, so the
loop never sleeps on a lock and keeps reading while a big batch commits. These tests pin
down both paths, that the thread stays one thread, keeps reporting errors, and ends cleanly.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from edge_agent.errors import LineageError
from edge_agent.lineage.store import Appended, WouldWait
from edge_agent.lineage.writer import MAX_ON_LOOP_ENTRIES, AsyncGroupCommitWriter
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Draft, Entry, Kind, draft_of

DRAFT = draft_of(Entry(0, 1, GENESIS_PREV, Kind.ROOT_ROTATED, True, "root_rotated"))


class _Recorder:
    """Appends in memory and notes the thread each batch was committed on."""

    def __init__(self) -> None:
        self.size = 0
        self.threads: list[threading.Thread] = []

    def write(self, drafts: list[Draft]) -> Appended:
        self.threads.append(threading.current_thread())
        first, self.size = self.size, self.size + len(drafts)
        return Appended(first, self.size)


class _Held(_Recorder):
    """A recorder whose no-wait write finds the lock held."""

    def write_now(self, drafts: list[Draft]) -> Appended:
        raise WouldWait


async def _append_one_at_a_time(writer: AsyncGroupCommitWriter, count: int) -> list[int]:
    return [await writer.append(DRAFT) for _ in range(count)]


def test_every_batch_is_committed_on_the_same_writer_thread_off_the_loop() -> None:
    recorder = _Recorder()
    writer = AsyncGroupCommitWriter(recorder.write)
    try:
        assert asyncio.run(_append_one_at_a_time(writer, 20)) == list(range(20))
    finally:
        writer.close()
    assert len(set(recorder.threads)) == 1
    assert recorder.threads[0] is not threading.main_thread()
    assert not recorder.threads[0].is_alive()


def test_an_append_after_close_starts_a_new_writer_thread() -> None:
    recorder = _Recorder()
    writer = AsyncGroupCommitWriter(recorder.write)
    asyncio.run(_append_one_at_a_time(writer, 2))
    writer.close()
    asyncio.run(_append_one_at_a_time(writer, 2))
    writer.close()
    first, second = recorder.threads[0], recorder.threads[-1]
    assert first is not second and not second.is_alive()
    assert recorder.size == 4


def test_a_failure_on_the_writer_thread_reaches_the_waiting_coroutine() -> None:
    def broken(drafts: list[Draft]) -> Appended:
        raise OSError("the disk went away")

    writer = AsyncGroupCommitWriter(broken)
    try:
        with pytest.raises(LineageError, match=r"unexpected failure.*disk went away"):
            asyncio.run(_append_one_at_a_time(writer, 1))
    finally:
        writer.close()


def test_a_batch_finishing_after_its_loop_closed_does_not_stop_the_writer() -> None:
    release = threading.Event()
    recorder = _Recorder()

    def held(drafts: list[Draft]) -> Appended:
        release.wait(5)
        return recorder.write(drafts)

    writer = AsyncGroupCommitWriter(held)

    async def abandon() -> None:
        pending = asyncio.ensure_future(writer.append(DRAFT))
        await asyncio.sleep(0.05)
        pending.cancel()

    asyncio.run(abandon())
    release.set()
    try:
        assert asyncio.run(_append_one_at_a_time(writer, 1)) == [1]
    finally:
        writer.close()


def test_a_lone_draft_is_committed_on_the_loop() -> None:
    recorder = _Recorder()
    writer = AsyncGroupCommitWriter(recorder.write, recorder.write)
    try:
        assert asyncio.run(_append_one_at_a_time(writer, 5)) == list(range(5))
    finally:
        writer.close()
    assert recorder.threads == [threading.main_thread()] * 5


def test_a_batch_that_would_wait_for_a_lock_goes_to_the_writer_thread() -> None:
    held = _Held()
    writer = AsyncGroupCommitWriter(held.write, held.write_now)
    try:
        assert asyncio.run(_append_one_at_a_time(writer, 3)) == [0, 1, 2]
    finally:
        writer.close()
    assert len(held.threads) == 3
    assert threading.main_thread() not in held.threads


def test_a_batch_of_many_concurrent_deciders_is_committed_off_the_loop() -> None:
    recorder = _Recorder()
    writer = AsyncGroupCommitWriter(recorder.write, recorder.write)
    many = 4 * MAX_ON_LOOP_ENTRIES

    async def together() -> list[int]:
        return list(await asyncio.gather(*(writer.append(DRAFT) for _ in range(many))))

    try:
        assert sorted(asyncio.run(together())) == list(range(many))
    finally:
        writer.close()
    assert recorder.threads and threading.main_thread() not in recorder.threads


def test_a_failure_committing_on_the_loop_reaches_the_waiting_coroutine() -> None:
    recorder = _Recorder()

    def full(drafts: list[Draft]) -> Appended:
        raise LineageError("database or disk is full")

    writer = AsyncGroupCommitWriter(recorder.write, full)
    try:
        with pytest.raises(LineageError, match="disk is full"):
            asyncio.run(_append_one_at_a_time(writer, 1))
    finally:
        writer.close()
    assert recorder.threads == []


def test_the_answers_of_a_threads_batch_come_before_the_next_commit_on_the_loop() -> None:
    events: list[str] = []
    release = threading.Event()
    recorder = _Recorder()

    def on_thread(drafts: list[Draft]) -> Appended:
        release.wait(5)
        events.append(f"thread commit of {len(drafts)}")
        return recorder.write(drafts)

    def on_loop(drafts: list[Draft]) -> Appended:
        events.append(f"loop commit of {len(drafts)}")
        return recorder.write(drafts)

    # The held thread commit is slow; the budget keeps the next lone draft on the loop.
    writer = AsyncGroupCommitWriter(on_thread, on_loop, on_loop_budget_s=60)

    async def answered(delay: float) -> None:
        await asyncio.sleep(delay)
        seq = await writer.append(DRAFT)
        events.append(f"answer {seq}")

    async def main() -> None:
        first = [asyncio.ensure_future(answered(0)) for _ in range(MAX_ON_LOOP_ENTRIES + 1)]
        await asyncio.sleep(0.05)  # the first batch is with the (held) writer thread
        late = asyncio.ensure_future(answered(0))
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*first, late)

    try:
        asyncio.run(main())
    finally:
        writer.close()
    first_batch = MAX_ON_LOOP_ENTRIES + 1
    assert events == [
        f"thread commit of {first_batch}",
        *(f"answer {seq}" for seq in range(first_batch)),
        "loop commit of 1",
        f"answer {first_batch}",
    ]


def test_a_report_that_fails_is_logged_and_the_others_still_get_theirs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = _Recorder()
    writer = AsyncGroupCommitWriter(recorder.write)
    got: list[int | LineageError] = []

    def broken(outcome: int | LineageError) -> None:
        raise RuntimeError("a careless callback")

    async def main() -> None:
        writer.submit(DRAFT, got.append)
        writer.submit(DRAFT, broken)
        writer.submit(DRAFT, got.append)
        await writer.append(DRAFT)

    try:
        asyncio.run(main())
    finally:
        writer.close()
    assert got == [0, 2]
    assert "a careless callback" in caplog.text


def test_after_a_slow_commit_lone_drafts_go_to_the_writer_thread_until_one_is_quick() -> None:
    recorder = _Recorder()

    def on_loop(drafts: list[Draft]) -> Appended:
        if not recorder.threads:  # a slow disk: the first commit holds the loop 50 ms
            time.sleep(0.05)
        return recorder.write(drafts)

    writer = AsyncGroupCommitWriter(recorder.write, on_loop, on_loop_budget_s=0.01)
    try:
        assert asyncio.run(_append_one_at_a_time(writer, 3)) == [0, 1, 2]
    finally:
        writer.close()
    main = threading.main_thread()
    # The slow one on the loop, the next on the thread (quick), then the loop again.
    assert [thread is main for thread in recorder.threads] == [True, False, True]

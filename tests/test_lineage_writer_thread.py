"""The coroutine group-commit writer commits on one long-lived thread of its own, ended by close.

The decision socket's round trip waits on this hand-off for every lone decision, so it is one
queue put and one ``call_soon_threadsafe``; these tests pin down that it stays one thread,
keeps reporting errors, and ends cleanly.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from edge_agent.errors import LineageError
from edge_agent.lineage.entries import GENESIS_PREV, Draft, Entry, Kind, draft_of
from edge_agent.lineage.store import Appended
from edge_agent.lineage.writer import AsyncGroupCommitWriter

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

"""The responder: one dedicated thread that reads permission events and answers each one.

Per event, in this order: decide (in memory, :mod:`edge_agent.fanotify.decider`), write the
answer to the group; once every event of a read is answered, close their files. Nothing
on this thread logs, looks up names, waits on a lock held across I/O or touches the disk
beyond hashing a file version it has not seen: the fapolicyd deadlocks came from exactly
that (a responder logging to a journal that needed an exec the responder had to answer).
An exception while deciding one event denies that event; an exception outside (an
unreadable event stream) ends the thread with :attr:`Responder.error` set and the events it
had read recorded in :attr:`Responder.unanswered`, for the enforcer to deny before
anything else.

The kernel gives a permission event no timeout: the exec waits until answered, its process
is SIGKILLed (the answer then finds nothing: ``ENOENT``, counted as withdrawn), or the last
descriptor of the group closes (which allows it). So the helpers below, which answer DENY to
what a previous responder left behind, are what stands between a crash and an allow:

- :func:`deny_unanswered`: events this process read and did not answer (a thread restart);
- :func:`sweep_deny`: events a dead process read and did not answer. Answers name events only
  by the descriptor number the reader was given, so every number below that process's
  descriptor limit is answered DENY (numbers with no event waiting are refused by the kernel
  with ``ENOENT`` and skipped);
- :func:`deny_orphans`: events this process read but whose descriptors it lost track of
  (a crash between ``read()`` and parsing): each open descriptor of this process on a
  marked filesystem is answered DENY by its number (the agent's own files are never there:
  the mounts check guarantees it);
- :func:`drain_deny`: events queued and not yet read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
from collections.abc import Callable, Iterable

from edge_agent.fanotify._abi import (
    EVENT_BUFFER_BYTES,
    FAN_ALLOW,
    FAN_DENY,
    FAN_OPEN_EXEC_PERM,
    RESPONSE,
    pack_response,
    parse_events,
)

__all__ = [
    "MAX_DRAIN_EVENTS",
    "Responder",
    "answer",
    "deny_orphans",
    "deny_unanswered",
    "drain_deny",
    "sweep_deny",
]

MAX_DRAIN_EVENTS = 1 << 20
"""Most queued events one drain answers (a storm that never pauses cannot hold it forever)."""

Decide = Callable[[int, int], bool]
"""(event file descriptor, pid) -> allow."""


def answer(group: int, fd: int, allow: bool) -> bool:
    """Answer the event whose file is ``fd``; ``False`` when no one waits for it any more
    (the waiter was killed, or another holder answered it).

    Raises:
        OSError: the group refused the answer for another reason.
    """
    try:
        os.write(group, pack_response(fd, allow))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


class Responder:
    """Reads ``group`` on its own thread and answers every event with ``decide``.

    ``after_batch`` is called once the events of one read are all answered (to wake the
    lineage writer off the answer path); ``on_exit`` when the thread ends (stopped or
    crashed). Both run on the responder thread.
    """

    def __init__(
        self,
        group: int,
        decide: Decide,
        after_batch: Callable[[], None],
        on_exit: Callable[[], None],
    ) -> None:
        self.group = group
        self.unanswered: set[int] = set()
        """Event descriptors read and not yet answered (denied by the enforcer on a crash)."""
        self.error: BaseException | None = None
        self.events = 0
        self.withdrawn = 0
        self.foreign = 0
        """Events other than exec permission requests (denied)."""
        self._decide = decide
        self._after_batch = after_batch
        self._on_exit = on_exit
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(
            target=self._run, name="edge-agent-exec-responder", daemon=True
        )

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Ask the thread to stop after the event it is answering; wait for it (again: no-op)."""
        if self._wake_w < 0:
            return
        self._stopping = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:
            self.error = exc
        finally:
            self._on_exit()

    def _serve(self) -> None:
        # epoll, not poll: the two descriptors are registered once, not at every wait.
        with select.epoll(2) as poller:
            poller.register(self.group, select.EPOLLIN)
            poller.register(self._wake_r, select.EPOLLIN)
            group, wake_r, read = self.group, self._wake_r, os.read
            while not self._stopping:
                ready = poller.poll()
                if self._stopping:
                    return
                for fd, _ in ready:
                    if fd == wake_r:
                        return
                try:
                    data = read(group, EVENT_BUFFER_BYTES)
                except BlockingIOError:
                    continue
                self._answer_all(data)

    def _answer_all(self, data: bytes) -> None:
        """Decide and answer each event of one read in turn, then close their files.

        Each answer is written as soon as its event is decided: the kernel takes one
        response per ``write(2)`` (``fanotify_write`` reads one ``struct
        fanotify_response`` and treats any further bytes as that response's info records),
        so deciding a whole read first would only keep its first exec waiting for the
        others' decisions. What runs once per read is everything else: the parse, the
        bookkeeping, the closing and the lineage writer's wake-up.
        """
        events = parse_events(data)
        fds = [fd for _, fd, _ in events if fd >= 0]
        unanswered = self.unanswered
        unanswered.update(fds)
        group, decide, pack, write = self.group, self._decide, RESPONSE.pack, os.write
        withdrawn = foreign = 0
        for mask, fd, pid in events:
            if fd < 0:
                continue
            allow = False
            if mask == FAN_OPEN_EXEC_PERM:
                try:
                    allow = decide(fd, pid)
                except Exception:
                    allow = False
            else:
                foreign += 1
            try:
                write(group, pack(fd, FAN_ALLOW if allow else FAN_DENY))
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                withdrawn += 1
        # Forget before closing: after a crash in between, a closed number could already
        # belong to another part of the agent, and must never be closed again.
        unanswered.difference_update(fds)
        for fd in fds:
            os.close(fd)
        self.events += len(fds)
        self.withdrawn += withdrawn
        self.foreign += foreign
        self._after_batch()


def deny_unanswered(group: int, fds: Iterable[int]) -> int:
    """Deny and close the event descriptors ``fds`` this process read; how many were still
    waited for."""
    delivered = 0
    for fd in sorted(fds):
        with contextlib.suppress(OSError):
            delivered += answer(group, fd, False)
        with contextlib.suppress(OSError):
            os.close(fd)
    return delivered


def deny_orphans(group: int, devices: frozenset[int]) -> int:
    """Deny every event whose descriptor this process holds open on a filesystem in
    ``devices`` (the marked ones) without knowing it; how many were still waited for.

    The descriptors are left open: another part of the agent (the socket identifying a
    caller whose program is on a marked mount) may hold one of them legitimately, and
    answering a number that names no event is refused harmlessly, but closing it would not
    be. A crash leaks at most one read's worth, and crashes are capped.
    """
    delivered = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):
            if fd != group and os.fstat(fd).st_dev in devices:
                delivered += answer(group, fd, False)
    return delivered


def sweep_deny(group: int, below: int) -> int:
    """Deny every event a dead reader left unanswered, by trying each descriptor number
    below ``below`` (that reader's descriptor limit); how many were waiting."""
    delivered = 0
    for fd in range(below):
        with contextlib.suppress(OSError):
            delivered += answer(group, fd, False)
    return delivered


def drain_deny(group: int, max_events: int = MAX_DRAIN_EVENTS) -> int:
    """Read every queued event and deny it; how many were answered.

    ``group`` must be non-blocking (the enforcer's groups are).
    """
    answered = 0
    while answered < max_events:
        try:
            data = os.read(group, EVENT_BUFFER_BYTES)
        except BlockingIOError:
            break
        for _, fd, _ in parse_events(data):
            if fd < 0:
                continue
            with contextlib.suppress(OSError):
                answer(group, fd, False)
            os.close(fd)
            answered += 1
    return answered

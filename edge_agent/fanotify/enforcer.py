"""``ExecEnforcer``: system-wide exec enforcement on the workload mounts, as an async resource.

Usage (inside the agent's event loop, with the agent's lineage open for the whole block)::

    async with ExecEnforcer(agent, Mode.ENFORCE, ["/opt/workloads"]) as enforcer:
        ...                              # enforcer.stats() for status
    # leaving the block: mounts noexec (enforce), waiting execs denied, lineage flushed

Start, in this order (any failure undoes what was done and raises):

1. check the mounts (:func:`~edge_agent.fanotify.mounts.check_workload_mounts`: never the
   root filesystem, never one holding the agent's files);
2. take the fanotify group: from a holder a dead agent left (adoption: everything it left
   waiting is denied first), else a new group (``FAN_CLASS_CONTENT``,
   ``FAN_UNLIMITED_QUEUE``, ``FAN_CLOEXEC``) and a new holder process
   (:mod:`~edge_agent.fanotify.holder`), so the group outlives a crash of this process;
3. mark each mount's filesystem for ``FAN_OPEN_EXEC_PERM``;
4. start the lineage writer, then the responder thread;
5. clear ``noexec`` on the mounts: they open for execution only now.

A kernel or sandbox without permission events refuses step 2 or 3 with
:class:`~edge_agent.fanotify.errors.EnforcementUnavailable`: never silently unenforced.

While running, a supervisor task restarts a responder thread that died, after denying what
it had read and what is queued; more than ``restart_limit`` deaths within
``restart_window_s`` and it gives up **closed**: ``noexec`` on the mounts (enforce), deny
what waits, release the group, health ``failed``; recovery is restarting the agent. A
ticker samples events/s, refreshes the uid -> user name table off the answer path, and picks
up break-glass tokens dropped in the state directory.

``off`` does nothing at all. ``audit`` marks, decides and logs the same way and allows
everything; at stop it leaves the mounts executable.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import pwd
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from edge_agent.agent import LocalAgent
from edge_agent.errors import ConfigError
from edge_agent.fanotify import _abi
from edge_agent.fanotify.decider import BreakGlassWindow, ExecDecider, SteadyClock
from edge_agent.fanotify.errors import EnforcementUnavailable, ExecEnforcementError
from edge_agent.fanotify.handoff import DEFAULT_CAPACITY, LineageHandoff
from edge_agent.fanotify.holder import (
    DEFAULT_HOLDER_SOCKET,
    DEFAULT_RECOVER_S,
    HolderInfo,
    HolderLink,
    descriptor_limit,
)
from edge_agent.fanotify.identity import DEFAULT_MAX_HASH_BYTES, ExecIdentifier
from edge_agent.fanotify.mounts import (
    WorkloadMount,
    agent_files,
    check_workload_mounts,
    set_noexec,
)
from edge_agent.fanotify.responder import (
    Responder,
    deny_orphans,
    deny_unanswered,
    drain_deny,
    sweep_deny,
)
from edge_agent.protocol.breakglass import MAX_BREAK_GLASS_BYTES, BreakGlassError
from edge_agent.trust.breakglass import verify_break_glass

__all__ = [
    "BREAK_GLASS_FILE",
    "EnforcerOptions",
    "EnforcerStats",
    "ExecEnforcer",
    "Mode",
]

logger = logging.getLogger(__name__)

BREAK_GLASS_FILE = "break-glass.cose"
"""Where ``edge-agent break-glass`` installs a token, in the state directory."""

_TICK_S = 1.0
_RATE_WINDOW_S = 10
_USERS_EVERY_S = 60.0
_MAX_USERS = 65536
_STOP_JOIN_S = 5.0


class Mode(StrEnum):
    OFF = "off"
    AUDIT = "audit"
    ENFORCE = "enforce"

    @classmethod
    def parse(cls, text: str) -> Mode:
        """Raises ``ConfigError`` for anything but off, audit or enforce."""
        try:
            return cls(text)
        except ValueError:
            raise ConfigError(
                f"exec enforcement mode must be off, audit or enforce, not {text!r}"
            ) from None


@dataclass(frozen=True, slots=True)
class EnforcerOptions:
    """Tuning and locations; the defaults suit a gateway."""

    holder_socket: Path = DEFAULT_HOLDER_SOCKET
    holder_recover_s: float = DEFAULT_RECOVER_S
    queue_entries: int = DEFAULT_CAPACITY
    max_hash_bytes: int = DEFAULT_MAX_HASH_BYTES
    restart_limit: int = 5
    restart_window_s: float = 60.0
    flush_timeout_s: float = 10.0
    break_glass_file: Path | None = None
    """Default: ``break-glass.cose`` in the agent's state directory."""


@dataclass(frozen=True, slots=True)
class EnforcerStats:
    """What ``status`` shows about exec enforcement."""

    mode: str
    effective_mode: str
    """``mode``, or ``audit`` while a break-glass window is open."""
    mounts: tuple[str, ...]
    responder: str
    """``off``, ``starting``, ``running``, ``restarting``, ``failed`` or ``stopped``."""
    restarts: int
    last_error: str | None
    events: int
    events_per_s: float
    allowed: int
    denied: int
    audit_would_deny: int
    queue_full: int
    unlogged: int
    unidentified: int
    withdrawn: int
    lineage_backlog: int
    lineage_written: int
    lineage_problem: str | None
    stale_denied: int
    break_glass_until: int | None
    break_glass_token: str | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class ExecEnforcer:
    """Decides every exec on ``mounts`` through ``agent`` while the ``async with`` runs."""

    def __init__(
        self,
        agent: LocalAgent,
        mode: Mode | str,
        mounts: Sequence[str | Path],
        options: EnforcerOptions | None = None,
    ) -> None:
        self.mode = mode if isinstance(mode, Mode) else Mode.parse(mode)
        self.options = options or EnforcerOptions()
        self._agent = agent
        self._given_mounts = tuple(str(m) for m in mounts)
        self._state_dir = agent.store.path.parent
        self._break_glass_file = self.options.break_glass_file or self._state_dir / BREAK_GLASS_FILE
        self._mounts: tuple[WorkloadMount, ...] = ()
        self._health = "off" if self.mode is Mode.OFF else "starting"
        self._last_error: str | None = None
        self._restarts: deque[float] = deque()
        self._restart_count = 0
        self._stale_denied = 0
        self._stopping = False
        self._group = -1
        self._link: HolderLink | None = None
        self._clock = SteadyClock()
        self._identifier = ExecIdentifier(self.options.max_hash_bytes)
        self._handoff = LineageHandoff(self.options.queue_entries)
        self._decider = ExecDecider(
            agent, self._identifier, self._handoff, audit=self.mode is Mode.AUDIT, clock=self._clock
        )
        self._responder: Responder | None = None
        self._exited: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._rate: deque[tuple[float, int]] = deque()
        self._break_glass_seen: tuple[int, int, int] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ExecEnforcer:
        """Start enforcing (nothing for ``off``).

        Raises:
            MountRefused: a mount may not be marked.
            EnforcementUnavailable: no fanotify permission events here.
            HolderError: the group holder cannot be started or another agent holds it.
        """
        if self.mode is Mode.OFF:
            return self
        self._loop = asyncio.get_running_loop()
        self._exited = asyncio.Event()
        own = agent_files([self._state_dir, self.options.holder_socket.parent])
        self._mounts = check_workload_mounts(self._given_mounts, own)
        self._identifier.users = await asyncio.to_thread(_user_table)
        try:
            self._take_group()
            self._mark()
            assert self._link is not None
            self._link.tell(self._holder_info())
            self._handoff.attach()
            self._tasks.append(
                self._loop.create_task(
                    self._handoff.run(lambda: self._agent.lineage, self._agent.shadow_entry),
                    name="exec-lineage-writer",
                )
            )
            self._start_responder()
            self._open_mounts()
        except BaseException:
            await self._abort()
            raise
        self._tasks.append(self._loop.create_task(self._supervise(), name="exec-supervisor"))
        self._tasks.append(self._loop.create_task(self._tick(), name="exec-ticker"))
        self._health = "running"
        logger.warning(
            "exec enforcement %s on %s (holder %s)",
            self.mode,
            ", ".join(m.path for m in self._mounts),
            self.options.holder_socket,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop: enforce -> mounts ``noexec`` first, then stop the responder, deny what
        waits, flush the lineage queue, release the holder. Audit -> stop and release (what
        waits is let through)."""
        if self.mode is Mode.OFF:
            return
        self._stopping = True
        await asyncio.shield(self._stop())

    async def _stop(self) -> None:
        enforce = self.mode is Mode.ENFORCE and self._health != "failed"
        if enforce:
            self._close_mounts()
        if self._responder is not None:
            await asyncio.to_thread(self._responder.stop, _STOP_JOIN_S)
        if enforce and self._group >= 0:
            self._deny_stale()
        left = await self._handoff.flush(self.options.flush_timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._release)
        lost = self._handoff.close()
        if left or lost:
            logger.error("exec enforcement stopped with %d decision(s) not logged", max(left, lost))
        if self._health != "failed":
            self._health = "stopped"
        logger.warning("exec enforcement stopped (%s)", self.mode)

    async def _abort(self) -> None:
        """Undo a failed start: no marks, no holder, nothing left blocking."""
        if self._responder is not None:
            await asyncio.to_thread(self._responder.stop, _STOP_JOIN_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._group >= 0 and self.mode is Mode.ENFORCE:
            self._close_mounts()
            self._deny_stale()
        await asyncio.to_thread(self._release)
        self._handoff.close()
        self._health = "failed"

    # --- the group -------------------------------------------------------------------------

    def _take_group(self) -> None:
        path = self.options.holder_socket
        link = HolderLink.attach(path)
        if link is not None:
            self._link, self._group = link, link.group
            swept = sweep_deny(link.group, link.info.sweep_fds)
            drained = drain_deny(link.group)
            self._stale_denied += swept + drained
            logger.warning(
                "exec enforcement adopted the group a previous agent left: %d waiting exec(s) "
                "denied (%d read by it, %d queued)",
                swept + drained,
                swept,
                drained,
            )
            return
        self._group = _new_group()
        self._link = HolderLink.spawn(self._group, path, self.options.holder_recover_s)

    def _mark(self) -> None:
        flags = _abi.FAN_MARK_ADD | _abi.FAN_MARK_FILESYSTEM
        for mount in self._mounts:
            try:
                _abi.fanotify_mark(self._group, flags, _abi.FAN_OPEN_EXEC_PERM, mount.path)
            except OSError as exc:
                if _abi.is_unsupported(exc):
                    raise EnforcementUnavailable(
                        "this kernel cannot deliver exec permission events (FAN_OPEN_EXEC_PERM "
                        "needs Linux 5.0+ built with CONFIG_FANOTIFY_ACCESS_PERMISSIONS); "
                        f"refusing to run exec enforcement unenforced ({exc.strerror})"
                    ) from exc
                raise EnforcementUnavailable(
                    f"cannot mark {mount.path} for exec enforcement: {exc.strerror}"
                ) from exc
        assert self._link is not None
        kept = {m.path for m in self._mounts}
        for old in self._link.info.mounts:
            if old not in kept:
                with contextlib.suppress(OSError):
                    _abi.fanotify_mark(
                        self._group,
                        _abi.FAN_MARK_REMOVE | _abi.FAN_MARK_FILESYSTEM,
                        _abi.FAN_OPEN_EXEC_PERM,
                        old,
                    )

    def _holder_info(self) -> HolderInfo:
        return HolderInfo(
            mounts=[m.path for m in self._mounts],
            enforce=self.mode is Mode.ENFORCE,
            sweep_fds=descriptor_limit(),
        )

    def _release(self) -> None:
        if self._link is not None:
            self._link.release()
            self._link = None
        if self._group >= 0:
            os.close(self._group)
            self._group = -1

    def _open_mounts(self) -> None:
        for mount in self._mounts:
            try:
                set_noexec(mount.path, False)
            except OSError as exc:
                raise ExecEnforcementError(
                    f"cannot open {mount.path} for execution under enforcement: {exc.strerror}"
                ) from exc

    def _close_mounts(self) -> None:
        for mount in self._mounts:
            try:
                set_noexec(mount.path, True)
            except OSError as exc:
                logger.critical(
                    "cannot make %s noexec: %s; remount it by hand "
                    "(mount -o remount,bind,noexec %s)",
                    mount.path,
                    exc,
                    mount.path,
                )

    def _deny_stale(self) -> None:
        """Deny what the responder read and did not answer (known descriptors, then any
        descriptor open on a marked filesystem), then what is queued."""
        if self._responder is not None:
            self._stale_denied += deny_unanswered(self._group, self._responder.unanswered)
            self._responder.unanswered.clear()
        self._stale_denied += deny_orphans(self._group, frozenset(m.dev for m in self._mounts))
        try:
            self._stale_denied += drain_deny(self._group)
        except Exception as exc:
            logger.critical("cannot read the queued exec events to deny them: %s", exc)

    # --- the responder and its supervisor --------------------------------------------------

    def _start_responder(self) -> None:
        loop, exited = self._loop, self._exited
        assert loop is not None and exited is not None

        def on_exit() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(exited.set)

        self._responder = Responder(self._group, self._decider, self._handoff.wake, on_exit)
        self._responder.start()

    async def _supervise(self) -> None:
        exited = self._exited
        assert exited is not None
        while True:
            await exited.wait()
            exited.clear()
            responder = self._responder
            if self._stopping or responder is None:
                continue
            await asyncio.to_thread(responder.stop, _STOP_JOIN_S)
            self._health = "restarting"
            self._last_error = repr(responder.error)
            logger.error("exec responder died: %s", self._last_error)
            self._deny_stale()
            now = time.monotonic()
            self._restarts.append(now)
            self._restart_count += 1
            while self._restarts and self._restarts[0] < now - self.options.restart_window_s:
                self._restarts.popleft()
            if len(self._restarts) > self.options.restart_limit:
                await self._give_up()
                return
            self._start_responder()
            self._health = "running"
            logger.warning("exec responder restarted (%d so far)", self._restart_count)

    async def _give_up(self) -> None:
        """Too many responder deaths: fail closed without hanging anyone."""
        enforce = self.mode is Mode.ENFORCE
        if enforce:
            self._close_mounts()
            self._deny_stale()
        await asyncio.to_thread(self._release)
        self._health = "failed"
        logger.critical(
            "exec responder died %d times within %g s: exec enforcement has given up%s; "
            "restart the agent to recover (docs/exec-enforcement.md section 6)",
            len(self._restarts),
            self.options.restart_window_s,
            " and the workload mounts are noexec" if enforce else "",
        )

    # --- once a second ---------------------------------------------------------------------

    async def _tick(self) -> None:
        users_at = time.monotonic()
        denied_logged = 0
        for ticks in itertools.count(1):
            await asyncio.sleep(_TICK_S)
            now = time.monotonic()
            self._rate.append((now, self._decider.counters.events))
            while len(self._rate) > _RATE_WINDOW_S + 1:
                self._rate.popleft()
            self._poll_break_glass()
            self._expire_break_glass()
            if now - users_at >= _USERS_EVERY_S:
                self._identifier.users = await asyncio.to_thread(_user_table)
                users_at = now
            denied = self._decider.counters.denied
            if denied != denied_logged and ticks % _RATE_WINDOW_S == 0:
                logger.info("exec enforcement: %d exec(s) denied so far", denied)
                denied_logged = denied

    def _poll_break_glass(self) -> None:
        path = self._break_glass_file
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.error("cannot read the break-glass token %s: %s", path, exc.strerror)
            return
        seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        if seen == self._break_glass_seen:
            return
        self._break_glass_seen = seen
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_BREAK_GLASS_BYTES + 1)
            now = self._clock.now()
            token = verify_break_glass(data, state=self._agent.state, now=now)
        except (OSError, BreakGlassError) as exc:
            logger.error("break-glass token %s refused: %s", path, exc)
            return
        self._decider.break_glass = BreakGlassWindow(
            token.name, time.monotonic() + token.expires_at - now, token.expires_at, token.reason
        )
        logger.warning(
            "BREAK-GLASS token %s applied: exec enforcement in audit for %d s (until %d): %s",
            token.name,
            token.expires_at - now,
            token.expires_at,
            token.reason,
        )

    def _expire_break_glass(self) -> None:
        window = self._decider.break_glass
        if window is None:
            return
        revoked = any(
            r.denies_device(self._agent.state.device) for r in self._agent.state.revocations
        )
        if revoked or time.monotonic() >= window.until_mono:
            self._decider.break_glass = None
            logger.warning(
                "break-glass token %s %s: exec enforcement back to %s",
                window.token_id,
                "overridden by a revocation" if revoked else "expired",
                self.mode,
            )

    # --- status ----------------------------------------------------------------------------

    def stats(self) -> EnforcerStats:
        counters = self._decider.counters
        window = self._decider.break_glass
        glass_open = window is not None and time.monotonic() < window.until_mono
        responder = self._responder
        return EnforcerStats(
            mode=str(self.mode),
            effective_mode=str(Mode.AUDIT if glass_open else self.mode),
            mounts=tuple(m.path for m in self._mounts),
            responder=self._health,
            restarts=self._restart_count,
            last_error=self._last_error,
            events=counters.events,
            events_per_s=self._events_per_s(),
            allowed=counters.allowed,
            denied=counters.denied,
            audit_would_deny=counters.audit_would_deny,
            queue_full=counters.queue_full,
            unlogged=counters.unlogged,
            unidentified=counters.unidentified,
            withdrawn=responder.withdrawn if responder is not None else 0,
            lineage_backlog=self._handoff.backlog,
            lineage_written=self._handoff.written,
            lineage_problem=self._handoff.problem,
            stale_denied=self._stale_denied,
            break_glass_until=window.until_wall if glass_open and window else None,
            break_glass_token=window.token_id if glass_open and window else None,
        )

    def _events_per_s(self) -> float:
        if len(self._rate) < 2:
            return 0.0
        (t0, e0), (t1, e1) = self._rate[0], self._rate[-1]
        return (e1 - e0) / (t1 - t0) if t1 > t0 else 0.0


def _new_group() -> int:
    """A new permission-class fanotify group.

    Raises:
        EnforcementUnavailable: the kernel or the sandbox does not allow one.
    """
    try:
        return _abi.fanotify_init()
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise EnforcementUnavailable(
                "exec enforcement needs CAP_SYS_ADMIN (run the agent as root) and a sandbox "
                "that allows fanotify_init (systemd SystemCallFilter, container seccomp); "
                "refusing to run exec enforcement unenforced"
            ) from exc
        if _abi.is_unsupported(exc):
            raise EnforcementUnavailable(
                "this kernel has no fanotify permission events (needs CONFIG_FANOTIFY and "
                "CONFIG_FANOTIFY_ACCESS_PERMISSIONS); refusing to run exec enforcement "
                f"unenforced ({exc.strerror})"
            ) from exc
        raise EnforcementUnavailable(f"cannot create a fanotify group: {exc.strerror}") from exc


def _user_table() -> dict[int, str]:
    """uid -> login name, read off the answer path (the name service may block)."""
    table: dict[int, str] = {}
    for entry in pwd.getpwall():
        if len(table) >= _MAX_USERS:
            break
        table.setdefault(entry.pw_uid, entry.pw_name)
    return table

"""The answer path without the kernel: identity from an open file and a live process, the
in-memory decision, the lineage queue, the clock, and which mounts may be marked.

A permission event is a file descriptor and a pid; here they are a file opened by the test
and the test's own pid, which is what the responder would be handed."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent
from edge_agent.errors import ConfigError
from edge_agent.fanotify import decider as decider_module
from edge_agent.fanotify import enforcer as enforcer_module
from edge_agent.fanotify import handoff as handoff_module
from edge_agent.fanotify.decider import BreakGlassWindow, ExecDecider, SteadyClock
from edge_agent.fanotify.enforcer import Mode
from edge_agent.fanotify.errors import EnforcementUnavailable, HolderError, MountRefused
from edge_agent.fanotify.handoff import LineageHandoff
from edge_agent.fanotify.holder import HolderInfo
from edge_agent.fanotify.identity import ExecIdentifier
from edge_agent.fanotify.mounts import check_workload_mounts, mount_points
from edge_agent.protocol.request import Request
from edge_agent.socket.errors import IdentityError
from edge_agent.socket.peer import FileKey, PeerIdentity
from edge_agent.trust.gate import Decision, Reason
from edge_agent.trust.state import TrustState
from tests.socket_helpers import enrolled_state

_PR_SET_DUMPABLE = 4

SCRIPT = b"#!/bin/sh\necho one\n"


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "tool"
    path.parent.mkdir()
    path.write_bytes(SCRIPT)
    path.chmod(0o755)
    return path


@pytest.fixture
def agent(tmp_path: Path, program: Path) -> Iterator[LocalAgent]:
    rules = [
        {
            "id": "tools",
            "effect": "allow",
            "subjects": [f"uid:{os.geteuid()}"],
            "actions": ["exec"],
            "resources": [f"{program.parent}/*"],
        }
    ]
    with LocalAgent.open(enrolled_state(tmp_path / "state", rules)) as opened:
        yield opened


def _fd(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


# --- identity ---------------------------------------------------------------------------


def test_the_request_names_the_file_its_digest_and_the_caller_as_the_socket_does(
    program: Path,
) -> None:
    identifier = ExecIdentifier()
    identifier.users = {os.geteuid(): "operator"}
    fd = _fd(program)
    try:
        request = identifier.request(fd, os.getpid())
    finally:
        os.close(fd)
    exe = os.path.realpath(sys.executable)
    exe_digest = hashlib.sha256(Path(exe).read_bytes()).hexdigest()
    peer = PeerIdentity(
        os.getpid(),
        os.geteuid(),
        os.getegid(),
        "operator",
        exe,
        exe_digest,
        0,
        FileKey.of(os.stat(exe)),
    )
    assert request.action == "exec"
    assert request.resource == str(program)
    assert request.context == (("sha256", hashlib.sha256(SCRIPT).hexdigest()),)
    assert (request.subject, request.selectors) == (peer.subject, peer.selectors)


def test_an_unchanged_file_is_hashed_once_and_a_rewritten_one_again(
    program: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identifier = ExecIdentifier()
    hashed: list[int] = []
    real = hashlib.sha256

    def counting(*args: bytes) -> object:
        hashed.append(1)
        return real(*args)

    monkeypatch.setattr(hashlib, "sha256", counting)
    digests = []
    for content in (SCRIPT, SCRIPT, b"#!/bin/sh\necho two\n"):
        if content != program.read_bytes():
            before = os.stat(program)
            program.write_bytes(content)
            os.utime(program, ns=(before.st_atime_ns, before.st_mtime_ns))
        fd = _fd(program)
        try:
            digests.append(identifier.file(fd)[1])
        finally:
            os.close(fd)
    assert digests[0] == digests[1] != digests[2]
    assert len(hashed) == 2


def _request(identifier: ExecIdentifier, program: Path, pid: int | None = None) -> Request:
    fd = _fd(program)
    try:
        return identifier.request(fd, os.getpid() if pid is None else pid)
    finally:
        os.close(fd)


def _rewrite_keeping_size_and_mtime(program: Path, content: bytes) -> None:
    before = os.stat(program)
    assert len(content) == before.st_size
    program.write_bytes(content)
    os.utime(program, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_remembered_request_is_always_the_one_a_fresh_identifier_builds(
    program: Path,
) -> None:
    warm = ExecIdentifier()
    steps: list[Callable[[], None]] = [
        lambda: None,
        lambda: _rewrite_keeping_size_and_mtime(program, SCRIPT.replace(b"one", b"two")),
        lambda: setattr(warm, "users", {os.geteuid(): "operator"}),
        lambda: _rewrite_keeping_size_and_mtime(program, SCRIPT),
        lambda: setattr(warm, "users", {}),
    ]
    seen = set()
    for step in steps:
        step()
        fresh = ExecIdentifier()
        fresh.users = warm.users
        request = _request(warm, program)
        assert request == _request(fresh, program)
        assert _request(warm, program) is request
        seen.add(request)
    assert len(seen) == 4


def test_a_binary_replaced_in_place_under_the_same_path_is_decided_again(
    tmp_path: Path, program: Path, loop: asyncio.AbstractEventLoop
) -> None:
    pinned = [
        {
            "id": "pinned",
            "effect": "allow",
            "subjects": ["*"],
            "actions": ["exec"],
            "resources": [str(program)],
            "when": {"context": {"sha256": [hashlib.sha256(SCRIPT).hexdigest()]}},
        }
    ]
    with LocalAgent.open(enrolled_state(tmp_path / "pinned", pinned)) as agent:
        decider = ExecDecider(agent, ExecIdentifier(), _attached(loop, capacity=8), audit=False)
        verdicts = [_decide(decider, program)]
        _rewrite_keeping_size_and_mtime(program, SCRIPT.replace(b"one", b"two"))
        verdicts.append(_decide(decider, program))
        _rewrite_keeping_size_and_mtime(program, SCRIPT)
        verdicts.append(_decide(decider, program))
    assert verdicts == [True, False, True]


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a process's ids needs root")
def test_the_same_file_asked_by_a_caller_with_other_ids_gets_its_own_request(
    program: Path,
) -> None:
    identifier = ExecIdentifier()
    own = _request(identifier, program)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        os.setresgid(2001, 2001, 2001)
        os.setresuid(1001, 1001, 1001)
        os.write(ready_w, b"!")
        time.sleep(30)
        os._exit(0)
    try:
        os.read(ready_r, 1)
        other = _request(identifier, program, pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)
    assert own.selectors[:2] == (f"uid:{os.geteuid()}", f"gid:{os.getegid()}")
    assert other.selectors[:2] == ("uid:1001", "gid:2001")


def test_a_file_over_the_hashing_budget_is_decided_without_a_digest(program: Path) -> None:
    identifier = ExecIdentifier(max_hash_bytes=len(SCRIPT) - 1)
    fd = _fd(program)
    try:
        request = identifier.request(fd, os.getpid())
    finally:
        os.close(fd)
    assert request.context == ()
    assert not any(s.startswith("exe-sha256:") for s in request.selectors)


def test_a_caller_that_has_gone_cannot_be_identified(program: Path) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(IdentityError, match="has gone"):
        ExecIdentifier().caller(pid)
    with pytest.raises(IdentityError, match="no process id"):
        ExecIdentifier().caller(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a process's ids needs root")
def test_the_caller_is_named_by_its_effective_ids_even_when_it_is_not_dumpable() -> None:
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        os.setgroups([])
        os.setresgid(2001, 2002, 2003)
        os.setresuid(1001, 1002, 1003)
        ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        os.write(ready_w, b"!")
        time.sleep(30)
        os._exit(0)
    try:
        os.read(ready_r, 1)
        caller = ExecIdentifier().caller(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)
    assert (caller.uid, caller.gid) == (1002, 2002)
    assert caller.selectors[:2] == ("uid:1002", "gid:2002")


# --- the decision -----------------------------------------------------------------------


def _decide(decider: ExecDecider, program: Path) -> bool:
    fd = _fd(program)
    try:
        return decider(fd, os.getpid())
    finally:
        os.close(fd)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop that stays open (the queue wakes its writer through it)."""
    running = asyncio.new_event_loop()
    yield running
    running.close()


def _attached(loop: asyncio.AbstractEventLoop, capacity: int = 8) -> LineageHandoff:
    handoff = LineageHandoff(capacity)

    async def attach() -> None:
        handoff.attach()

    loop.run_until_complete(attach())
    return handoff


def _queued(handoff: LineageHandoff) -> list[Decision]:
    return list(handoff._queue)


def test_an_allowed_exec_is_allowed_and_queued_for_the_lineage(
    agent: LocalAgent, program: Path, loop: asyncio.AbstractEventLoop
) -> None:
    handoff = _attached(loop)
    decider = ExecDecider(agent, ExecIdentifier(), handoff, audit=False)
    assert _decide(decider, program) is True
    [decision] = _queued(handoff)
    assert (decision.allowed, decision.rule_id, decision.request.resource) == (
        True,
        "tools",
        str(program),
    )
    assert (decider.counters.events, decider.counters.allowed, decider.counters.denied) == (1, 1, 0)


def test_a_full_lineage_queue_denies_the_exec(
    agent: LocalAgent, program: Path, loop: asyncio.AbstractEventLoop
) -> None:
    decider = ExecDecider(agent, ExecIdentifier(), _attached(loop, capacity=1), audit=False)
    assert [_decide(decider, program) for _ in range(3)] == [True, False, False]
    assert (decider.counters.queue_full, decider.counters.unlogged) == (2, 2)


def test_a_lineage_that_cannot_be_written_denies_the_exec(
    agent: LocalAgent, program: Path, loop: asyncio.AbstractEventLoop
) -> None:
    handoff = _attached(loop)
    decider = ExecDecider(agent, ExecIdentifier(), handoff, audit=False)
    lineage, agent.lineage = agent.lineage, None
    try:
        assert _decide(decider, program) is False
    finally:
        agent.lineage = lineage
    assert _queued(handoff) == []


def test_an_unidentifiable_exec_is_denied_and_logged_as_an_internal_error(
    agent: LocalAgent, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    handoff = _attached(loop)
    decider = ExecDecider(agent, ExecIdentifier(), handoff, audit=False)
    directory = os.open(tmp_path, os.O_RDONLY)
    try:
        assert decider(directory, os.getpid()) is False
    finally:
        os.close(directory)
    [decision] = _queued(handoff)
    assert decision.reason is Reason.INTERNAL_ERROR
    assert "could not be identified" in decision.message
    assert decider.counters.unidentified == 1


def test_audit_allows_a_denied_exec_and_logs_the_gates_own_verdict(
    agent: LocalAgent, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    other = tmp_path / "elsewhere"
    other.write_bytes(SCRIPT)
    handoff = _attached(loop)
    decider = ExecDecider(agent, ExecIdentifier(), handoff, audit=True)
    assert _decide(decider, other) is True
    [decision] = _queued(handoff)
    assert (decision.allowed, decision.reason) == (False, Reason.NO_MATCHING_RULE)
    assert decision.message.startswith("audit mode: exec allowed; enforce would have denied it")
    assert decider.counters.audit_would_deny == 1


def test_an_open_break_glass_window_allows_and_names_its_token(
    agent: LocalAgent, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    other = tmp_path / "elsewhere"
    other.write_bytes(SCRIPT)
    handoff = _attached(loop)
    decider = ExecDecider(agent, ExecIdentifier(), handoff, audit=False)
    assert _decide(decider, other) is False
    decider.break_glass = BreakGlassWindow("0123abcd", time.monotonic() + 60, 0, "test")
    assert _decide(decider, other) is True
    decider.break_glass = BreakGlassWindow("0123abcd", time.monotonic() - 1, 0, "test")
    assert _decide(decider, other) is False
    assert _queued(handoff)[1].message.startswith("break-glass 0123abcd: exec allowed")


class _StoppedClock(SteadyClock):
    """A clock that moves only when the test moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.at = int(time.time())

    def now(self) -> int:
        return self.at


class _AgentView:
    """The two attributes the decider reads, settable by the test."""

    def __init__(self, agent: LocalAgent) -> None:
        self.state = agent.state
        self.lineage = agent.lineage


def test_a_repeated_exec_asks_the_gate_once_per_second_and_state_and_is_logged_each_time(
    agent: LocalAgent,
    program: Path,
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[int] = []
    real_decide = decider_module.decide

    def counting(state: TrustState, request: Request, now: int) -> Decision:
        asked.append(now)
        return real_decide(state, request, now)

    monkeypatch.setattr(decider_module, "decide", counting)
    clock, view, handoff = _StoppedClock(), _AgentView(agent), _attached(loop, capacity=16)
    decider = ExecDecider(view, ExecIdentifier(), handoff, audit=False, clock=clock)
    assert [_decide(decider, program) for _ in range(3)] == [True, True, True]
    assert len(asked) == 1
    clock.at += 1
    assert _decide(decider, program) is True
    assert len(asked) == 2
    view.state = replace(agent.state, fault="the trust state could not be loaded")
    assert _decide(decider, program) is False
    assert len(asked) == 3
    assert [d.allowed for d in _queued(handoff)] == [True, True, True, True, False]


def test_the_clock_never_goes_back_when_the_wall_clock_is_set_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = SteadyClock()
    start = clock.now()
    monkeypatch.setattr(time, "time", lambda: 1_000_000.0)
    assert clock.now() >= start


# --- the lineage queue ------------------------------------------------------------------


class _FlakyLineage:
    """Fails the first ``failures`` writes, then logs everything (in order)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[str] = []
        self.fault = None

    def status(self) -> str:
        return "disk full"

    def record_decision_numbered_soon(
        self, decision: Decision, follow: object = None
    ) -> asyncio.Future[tuple[Decision, int | None]]:
        recorded: asyncio.Future[tuple[Decision, int | None]] = (
            asyncio.get_running_loop().create_future()
        )
        if self.failures:
            self.failures -= 1
            recorded.set_result((decision, None))
        else:
            self.written.append(decision.request.resource)
            recorded.set_result((decision, len(self.written)))
        return recorded


def _decision(resource: str) -> Decision:
    from edge_agent.protocol.request import Request

    return Decision(True, Reason.ALLOWED, "", "r", 1, bytes(32), Request("s", "exec", resource), 0)


def test_failed_lineage_writes_are_retried_in_order_and_nothing_is_lost() -> None:
    lineage = _FlakyLineage(failures=2)

    async def body() -> tuple[int, str | None]:
        handoff = LineageHandoff(16)
        handoff.attach()
        writer = asyncio.create_task(handoff.run(lambda: lineage, lambda d: None))  # type: ignore[arg-type,return-value]
        for name in "abcde":
            assert handoff.offer(_decision(name))
        left = await handoff.flush(10)
        writer.cancel()
        return left, handoff.problem

    assert asyncio.run(body()) == (0, None)
    assert sorted(lineage.written) == list("abcde")


class _TimedLineage:
    """Logs everything; each batch (the decisions handed over in one go) takes
    ``commit_s`` to become durable. Records the batches' sizes."""

    def __init__(self, commit_s: float) -> None:
        self.commit_s = commit_s
        self.batches: list[int] = []
        self.fault = None
        self._open = False

    def status(self) -> None:
        return None

    def record_decision_numbered_soon(
        self, decision: Decision, follow: object = None
    ) -> asyncio.Future[tuple[Decision, int | None]]:
        loop = asyncio.get_running_loop()
        if not self._open:
            self._open = True
            self.batches.append(0)
            loop.call_soon(setattr, self, "_open", False)
        self.batches[-1] += 1
        recorded: asyncio.Future[tuple[Decision, int | None]] = loop.create_future()
        loop.call_later(self.commit_s, recorded.set_result, (decision, sum(self.batches)))
        return recorded


def test_decisions_answered_during_a_commit_gather_for_the_next_commit() -> None:
    lineage = _TimedLineage(commit_s=0.005)

    async def body() -> list[int]:
        handoff = LineageHandoff(64)
        handoff.attach()
        loop = asyncio.get_running_loop()
        writer = asyncio.create_task(handoff.run(lambda: lineage, lambda d: None))  # type: ignore[arg-type,return-value]

        def answered(names: str) -> None:
            for name in names:
                assert handoff.offer(_decision(name))
            handoff.wake()

        answered("abc")
        await asyncio.sleep(handoff_module.LINGER_S + 0.002)  # the first commit is under way
        answered("def")  # during it
        loop.call_later(0.006, answered, "ghi")  # just after it
        while handoff.written < 9:
            await asyncio.sleep(0.005)
        writer.cancel()
        return lineage.batches

    assert asyncio.run(body()) == [3, 6]


def test_a_queue_not_attached_to_a_loop_accepts_nothing() -> None:
    assert LineageHandoff(4).offer(_decision("a")) is False


# --- mounts, modes, refusals ------------------------------------------------------------


def test_mountinfo_mount_points_are_unescaped() -> None:
    text = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "90 22 0:50 / /opt/work\\040loads rw,noexec - tmpfs tmpfs rw\n"
    )
    assert mount_points(text) == {"/", "/opt/work loads"}


@pytest.mark.parametrize(
    ("mounts", "fault"),
    [
        (["/"], "never marks the OS root"),
        (["relative/path"], "absolute path"),
        (["/no/such/mount/anywhere"], "No such file"),
        ([], "no workload mount"),
    ],
)
def test_mounts_that_must_not_be_marked_are_refused(mounts: list[str], fault: str) -> None:
    with pytest.raises(MountRefused, match=fault):
        check_workload_mounts(mounts, [])


def test_a_directory_on_the_root_filesystem_is_refused(tmp_path: Path) -> None:
    if os.stat(tmp_path).st_dev != os.stat("/").st_dev:
        pytest.skip("tmp_path is not on the root filesystem here")
    with pytest.raises(MountRefused, match="root filesystem"):
        check_workload_mounts([str(tmp_path)], [])


def test_mode_is_off_audit_or_enforce() -> None:
    assert Mode.parse("audit") is Mode.AUDIT
    with pytest.raises(ConfigError, match="off, audit or enforce"):
        Mode.parse("permissive")


@pytest.mark.parametrize(
    ("code", "fault"),
    [
        (errno.EPERM, "needs CAP_SYS_ADMIN"),
        (errno.EINVAL, "CONFIG_FANOTIFY_ACCESS_PERMISSIONS"),
        (errno.ENOSYS, "CONFIG_FANOTIFY_ACCESS_PERMISSIONS"),
    ],
)
def test_a_kernel_or_sandbox_without_fanotify_refuses_enforcement_clearly(
    monkeypatch: pytest.MonkeyPatch, code: int, fault: str
) -> None:
    def refuse(*_: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(enforcer_module._abi, "fanotify_init", refuse)
    with pytest.raises(EnforcementUnavailable, match=fault) as caught:
        enforcer_module._new_group()
    assert "refusing to run exec enforcement unenforced" in caught.value.message


def test_holder_info_round_trips_and_refuses_garbage() -> None:
    info = HolderInfo(["/opt/workloads"], True, 8192)
    assert HolderInfo.decode(info.encode()) == info
    for bad in (b"", b"[]", b'{"mounts": ["rel"], "enforce": true, "sweep_fds": 1}'):
        with pytest.raises(HolderError):
            HolderInfo.decode(bad)

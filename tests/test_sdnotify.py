"""sd_notify: what reaches a notification socket the test owns, and when."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.sdnotify import Notifier, watchdog_interval, watchdog_loop

INTERVAL_S = 0.05
QUIET_S = 10 * INTERVAL_S
RECEIVE_TIMEOUT_S = 10.0


class Manager:
    """The service manager's end: a datagram socket that collects what the agent sends."""

    def __init__(self, address: str | bytes, env_value: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.env = {"NOTIFY_SOCKET": env_value}

    def receive(self, timeout: float = RECEIVE_TIMEOUT_S) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def receive_all(self) -> list[str]:
        self.sock.setblocking(False)
        messages = []
        while True:
            try:
                messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return messages


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    path = str(tmp_path / "notify")
    owner = Manager(path, path)
    yield owner
    owner.sock.close()


@pytest.fixture
def abstract_manager() -> Iterator[Manager]:
    name = f"edgegov-test-{uuid.uuid4().hex}"
    owner = Manager(b"\0" + name.encode(), f"@{name}")
    yield owner
    owner.sock.close()


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    with Notifier.from_environment({}) as notifier:
        assert not notifier.enabled
        assert not notifier.ready("bundle v1")
        assert not notifier.watchdog()
        assert not notifier.stopping()


def test_empty_notify_socket_means_not_under_systemd() -> None:
    assert not Notifier.from_environment({"NOTIFY_SOCKET": ""}).enabled


def test_ready_status_watchdog_stopping_reach_a_path_socket(manager: Manager) -> None:
    with Notifier.from_environment(manager.env) as notifier:
        assert notifier.enabled
        assert notifier.ready("bundle v3, expires in 23h 59m, gate open")
        assert notifier.status("bundle v3, expires in 23h 58m, gate open")
        assert notifier.watchdog()
        assert notifier.extend_timeout(2.5)
        assert notifier.stopping("writing the shutdown checkpoint")
    assert [manager.receive() for _ in range(5)] == [
        "READY=1\nSTATUS=bundle v3, expires in 23h 59m, gate open",
        "STATUS=bundle v3, expires in 23h 58m, gate open",
        "WATCHDOG=1",
        "EXTEND_TIMEOUT_USEC=2500000",
        "STOPPING=1\nSTATUS=writing the shutdown checkpoint",
    ]


def test_abstract_namespace_socket_named_with_at_sign(abstract_manager: Manager) -> None:
    with Notifier.from_environment(abstract_manager.env) as notifier:
        assert notifier.ready()
    assert abstract_manager.receive() == "READY=1"


def test_status_is_one_line_and_bounded(manager: Manager) -> None:
    with Notifier.from_environment(manager.env) as notifier:
        notifier.status("gate closed:\nbundle_expired\n" + "x" * 2000)
    message = manager.receive()
    assert message.startswith("STATUS=gate closed: bundle_expired x")
    assert "\n" not in message
    assert len(message) == len("STATUS=") + 512


@pytest.mark.parametrize("value", ["relative/notify", "vsock:2:1234", "notify"])
def test_unusable_notify_socket_is_a_config_error_naming_it(value: str) -> None:
    with pytest.raises(ConfigError, match="NOTIFY_SOCKET"):
        Notifier.from_environment({"NOTIFY_SOCKET": value})


@pytest.mark.parametrize("assignment", ["READY", "=1", "STATUS=a\nREADY=1"])
def test_malformed_assignment_is_refused_before_sending(assignment: str) -> None:
    with Notifier(None) as notifier, pytest.raises(ValueError):
        notifier.notify(assignment)


def test_manager_that_stops_reading_never_blocks_the_sender(
    manager: Manager, caplog: pytest.LogCaptureFixture
) -> None:
    with Notifier.from_environment(manager.env) as notifier:
        sent = [notifier.watchdog() for _ in range(10_000)]
    assert sent[0] and not sent[-1]
    assert "its queue is full" in caplog.text


def test_lost_manager_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gone"
    with Notifier.from_environment({"NOTIFY_SOCKET": str(path)}) as notifier:
        assert not notifier.watchdog()
    assert "cannot notify the service manager" in caplog.text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "{pid}"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}, None),
    ],
)
def test_watchdog_interval_is_half_the_armed_timeout_for_this_process(
    env: dict[str, str], expected: float | None
) -> None:
    resolved = {k: v.format(pid=os.getpid()) for k, v in env.items()}
    assert watchdog_interval(resolved) == expected


class MiniDaemon:
    """The wiring the agent's daemon follows: load state, READY, decide, watchdog from the loop.

    Decisions and the watchdog's probe go through one queue served by one decision task, so a
    stuck decision path also stops the pings.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.state_loaded = asyncio.Event()
        self.stuck = asyncio.Event()
        self.unstick = asyncio.Event()
        self.queue: asyncio.Queue[tuple[str, asyncio.Future[bool]]] = asyncio.Queue()

    async def run(self) -> None:
        await self.state_loaded.wait()
        self.notifier.ready("bundle v1, gate open")
        async with asyncio.TaskGroup() as group:
            group.create_task(self._decision_loop())
            group.create_task(watchdog_loop(self.notifier, INTERVAL_S, self.probe))

    async def decide(self, resource: str) -> bool:
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self.queue.put((resource, answer))
        return await answer

    async def probe(self) -> None:
        await self.decide("")

    async def _decision_loop(self) -> None:
        while True:
            resource, answer = await self.queue.get()
            if resource == "/hang":
                self.stuck.set()
                await self.unstick.wait()
            if not answer.cancelled():
                answer.set_result(resource.startswith("/opt/"))


async def _until(condition: asyncio.Event) -> None:
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        await condition.wait()


def _watchdogs(messages: list[str]) -> int:
    return sum(m == "WATCHDOG=1" for m in messages)


@pytest.mark.asyncio
async def test_ready_only_after_state_load_then_watchdog_while_deciding_and_none_when_stuck(
    manager: Manager,
) -> None:
    with Notifier.from_environment(manager.env) as notifier:
        daemon = MiniDaemon(notifier)
        task = asyncio.create_task(daemon.run())
        await asyncio.sleep(QUIET_S)
        assert manager.receive_all() == []

        daemon.state_loaded.set()
        assert await asyncio.to_thread(manager.receive) == "READY=1\nSTATUS=bundle v1, gate open"

        pings = 0
        for n in range(200):
            assert await daemon.decide(f"/opt/app/{n}")
            await asyncio.sleep(QUIET_S / 200)
            pings += _watchdogs(manager.receive_all())
        assert pings >= 2

        hung = asyncio.create_task(daemon.decide("/hang"))
        await _until(daemon.stuck)
        await asyncio.sleep(2 * INTERVAL_S)
        manager.receive_all()
        await asyncio.sleep(QUIET_S)
        assert _watchdogs(manager.receive_all()) == 0

        daemon.unstick.set()
        assert not await hung
        assert await asyncio.to_thread(manager.receive) == "WATCHDOG=1"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
async def test_blocked_event_loop_sends_no_watchdog(manager: Manager) -> None:
    with Notifier.from_environment(manager.env) as notifier:
        pinger = asyncio.create_task(watchdog_loop(notifier, INTERVAL_S))
        assert await asyncio.to_thread(manager.receive) == "WATCHDOG=1"
        manager.receive_all()
        time.sleep(QUIET_S)
        assert manager.receive_all() == []
        pinger.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pinger


@pytest.mark.asyncio
async def test_watchdog_loop_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError):
        await watchdog_loop(Notifier(None), 0)

"""The client library: connection reuse, transparent reconnect, deadlines, typed results,
and the asyncio client pipelining many requests over one connection."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.client import (
    AgentUnavailableError,
    AsyncClient,
    Client,
    DecisionResult,
    IdentityResult,
    decide,
)
from edge_agent.socket.config import SocketConfig, SocketLimits
from tests.socket_helpers import Echo, embedded

WAIT_S = 30.0


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


@pytest.fixture
def silent(tmp_path: Path) -> Iterator[Path]:
    """A socket that accepts connections (in its backlog) and never answers."""
    path = tmp_path / "silent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    yield path
    listener.close()


def test_decide_returns_a_typed_result_and_reuses_one_connection(tmp_path: Path) -> None:
    config = SocketConfig(path=tmp_path / "a.sock")
    with embedded(Echo(), config) as server, Client(config.path) as client:
        results = [client.decide("read", f"/r/{i}", {"zone": "a"}) for i in range(10)]
        denied = client.decide("deny", "/x")
        me = client.identify()
        assert server.stats().accepted == 1
    assert all(isinstance(r, DecisionResult) and r.allowed for r in results)
    assert [r.message for r in results] == [f"/r/{i}" for i in range(10)]
    assert (denied.allowed, denied.reason, denied.rule) == (False, "policy_denied", "echo")
    assert isinstance(me, IdentityResult) and me.subject.startswith("exe:/")


def test_a_connection_the_agent_closed_while_idle_is_reopened_transparently(
    tmp_path: Path,
) -> None:
    config = SocketConfig(path=tmp_path / "a.sock", limits=SocketLimits(idle_timeout_s=0.1))
    with embedded(Echo(), config) as server, Client(config.path) as client:
        assert client.decide("read", "/first").allowed
        _wait_for(lambda: server.stats().open_connections == 0)
        assert client.decide("read", "/second").allowed
        assert server.stats().accepted == 2


def test_an_agent_that_does_not_answer_fails_the_call_within_its_timeout(silent: Path) -> None:
    with Client(silent, timeout=0.2) as client, pytest.raises(AgentUnavailableError) as failed:
        client.decide("read", "/x")
    assert "did not answer within 0.2 s" in str(failed.value)


def test_no_agent_is_an_unavailable_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(AgentUnavailableError, match=r"no agent socket at .*absent\.sock"):
        Client(tmp_path / "absent.sock").decide("read", "/x")


def test_the_module_decide_reads_the_socket_path_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SocketConfig(path=tmp_path / "env.sock")
    monkeypatch.setenv("EDGE_AGENT_SOCKET", str(config.path))
    with embedded(Echo(), config) as server:
        assert [decide(action="read", resource=f"/{i}").message for i in range(3)] == [
            "/0",
            "/1",
            "/2",
        ]
        assert server.stats().accepted == 1


def test_the_asyncio_client_pipelines_concurrent_calls_over_one_connection(
    tmp_path: Path,
) -> None:
    config = SocketConfig(path=tmp_path / "a.sock")

    async def ask_many() -> list[str]:
        async with AsyncClient(config.path) as client:
            results = await asyncio.gather(*(client.decide("read", f"/r/{i}") for i in range(200)))
            assert (await client.identify()).uid >= 0
        return [r.message for r in results]

    with embedded(Echo(), config) as server:
        assert asyncio.run(ask_many()) == [f"/r/{i}" for i in range(200)]
        assert server.stats().accepted == 1


def test_the_asyncio_client_reopens_a_connection_the_agent_closed(tmp_path: Path) -> None:
    config = SocketConfig(path=tmp_path / "a.sock", limits=SocketLimits(idle_timeout_s=0.1))

    async def twice(server_closed: Callable[[], bool]) -> tuple[bool, bool]:
        async with AsyncClient(config.path) as client:
            first = await client.decide("read", "/first")
            while not server_closed():
                await asyncio.sleep(0.01)
            second = await client.decide("read", "/second")
        return first.allowed, second.allowed

    with embedded(Echo(), config) as server:
        assert asyncio.run(twice(lambda: server.stats().open_connections == 0)) == (True, True)
        assert server.stats().accepted == 2


def test_the_asyncio_client_fails_closed_on_silence_and_absence(
    silent: Path, tmp_path: Path
) -> None:
    async def ask(path: Path) -> None:
        async with AsyncClient(path, timeout=0.2) as client:
            await client.decide("read", "/x")

    with pytest.raises(AgentUnavailableError, match="did not answer"):
        asyncio.run(ask(silent))
    with pytest.raises(AgentUnavailableError, match="no agent socket"):
        asyncio.run(ask(tmp_path / "absent.sock"))


def test_requests_the_agent_would_refuse_are_refused_before_sending(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="control characters"):
        Client(tmp_path / "unused.sock").decide("read", "/a\n")

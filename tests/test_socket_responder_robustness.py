"""The epoll responder survives its own failures: one request, one connection or one thread.

Found by the hostile tests of session 13 (a caller whose executable path is not UTF-8 made
the answer's encoding raise on the responder thread, which then died while ``serve`` kept a
socket answering nobody). Pinned here with the failure injected, whatever its cause:

- an answer that cannot be encoded answers ``internal_error`` (a deny) to that request
  alone; every other decision of the same commit is answered, and serving goes on;
- a failure handling one connection's request closes that connection alone (with
  ``internal_error``); the others are answered;
- a responder or committer thread that fails closes every connection and
  :meth:`DecisionServer.watch` raises, so the program exits non-zero to be restarted; the
  server then leaves its ``async with`` block without an error of its own (``stop`` does
  not write the closed wake-up descriptor), and ``edge-agent serve`` fails (non-zero exit)
  with its socket removed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent
from edge_agent.client import Client
from edge_agent.protocol.request import Request
from edge_agent.socket import responder
from edge_agent.socket.cli import _serve
from edge_agent.socket.config import SocketConfig
from edge_agent.socket.errors import SocketError
from edge_agent.socket.server import DecisionServer
from edge_agent.socket.wire import Op, WireRequest, encode_request
from edge_agent.trust.gate import Decision
from tests.socket_helpers import embedded, enrolled_state
from tests.test_socket_responder import WAIT_S, Ledger, _config, _decide, _raw, _read_frame


class PoisonLedger(Ledger):
    """A :class:`Ledger` whose decision on ``/poison`` cannot be encoded (a lone surrogate
    in its message: what a path that is not UTF-8 becomes)."""

    def judge(self, request: Request, wall: int) -> Decision:
        decision = super().judge(request, wall)
        if request.resource != "/poison":
            return decision
        return Decision(
            decision.allowed,
            decision.reason,
            "perl\udcff",
            decision.rule_id,
            decision.bundle_version,
            decision.bundle_digest,
            request,
            wall,
        )


def test_an_answer_that_cannot_be_encoded_denies_that_request_alone(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ledger = PoisonLedger()
    ledger.open.clear()
    with embedded(ledger, config):
        clients = [_raw(config.path) for _ in range(3)]
        clients[0].sendall(_decide(0, "/first"))
        while ledger.recording != 1:
            pass
        clients[1].sendall(_decide(1, "/poison"))
        clients[2].sendall(_decide(2, "/other"))
        while ledger.judged != 3:
            pass
        ledger.open.set()
        answers = [_read_frame(raw) for raw in clients]
        clients[1].sendall(_decide(3, "/again"))
        again = _read_frame(clients[1])
        for raw in clients:
            raw.close()
    assert ledger.batches[:2] == [1, 2]
    assert [a and (a["id"], a.get("allowed"), a.get("error")) for a in answers] == [
        (0, True, None),
        (1, None, "internal_error"),
        (2, True, None),
    ]
    assert again is not None and (again["id"], again["allowed"]) == (3, True)


def test_a_failure_handling_one_connection_closes_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> bytes:
        raise RuntimeError("encoder on fire")

    monkeypatch.setattr(responder, "encode_identity", broken)
    config = _config(tmp_path)
    with embedded(Ledger(), config):
        other = _raw(config.path)
        asking = _raw(config.path)
        asking.sendall(encode_request(WireRequest(5, Op.IDENTIFY)))
        refused = _read_frame(asking)
        assert refused is not None and (refused["ok"], refused["error"]) == (
            False,
            "internal_error",
        )
        assert _read_frame(asking) is None  # closed
        other.sendall(_decide(6, "/still"))
        answer = _read_frame(other)
        assert answer is not None and (answer["id"], answer["allowed"]) == (6, True)
        with Client(config.path, timeout=WAIT_S) as client:
            assert client.decide("read", "/new").allowed
        other.close()
        asking.close()


@pytest.mark.parametrize("thread", ["responder", "committer"])
def test_a_failed_server_thread_closes_the_socket_and_watch_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, thread: str
) -> None:
    def broken(self: responder.Responder, *_: object) -> bool:
        if thread == "committer":
            self._batches.get()  # fails with a decision in hand
        raise RuntimeError(f"{thread} on fire")

    target = "_admit" if thread == "responder" else "_commit_batches"
    monkeypatch.setattr(responder.Responder, target, broken)
    config = _config(tmp_path)

    async def serve() -> str:
        async with DecisionServer(Ledger(), config) as server:
            connected = await asyncio.to_thread(_raw, config.path)
            if thread == "committer":
                connected.sendall(_decide(1, "/never"))
            with pytest.raises(SocketError, match="stopped answering") as raised:
                await asyncio.wait_for(server.watch(), WAIT_S)
            closed = await asyncio.to_thread(connected.recv, 1 << 16)
            connected.close()
        assert closed == b""
        return str(raised.value)

    assert str(config.path) in asyncio.run(serve())


def test_serve_raises_once_its_responder_has_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> bool:
        raise RuntimeError("responder on fire")

    monkeypatch.setattr(responder.Responder, "_admit", broken)
    state = enrolled_state(tmp_path / "state", [])
    config = SocketConfig(path=tmp_path / "agent.sock")

    def connect_once_up() -> None:
        while not config.path.exists():
            time.sleep(0.01)
        _raw(config.path).close()

    connecting = threading.Thread(target=connect_once_up)
    connecting.start()
    with LocalAgent.open(state) as agent, pytest.raises(SocketError, match="stopped answering"):
        asyncio.run(asyncio.wait_for(_serve(agent, config), WAIT_S))
    connecting.join()
    assert not config.path.exists()

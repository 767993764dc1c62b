"""Decision slots are handed out fairly: a connection waiting for one is served in turn.

With more pipelining connections than ``max_inflight_total`` holds (200 connections keeping
8 ``want_receipt`` requests each in flight; 256 slots in all), a plain request on another
connection is answered within the bound it has on main's asyncio server under the same
load (there: 0.29 to 1.06 s). Each freed slot goes to the connection waiting longest, before
any request read later takes one; a waiting connection is still read (up to one frame), so
its request is there when its turn comes.

Found by the hostile tests of session 13: on the epoll responder, nine of ten such requests
were unanswered after 10 s. Cause (verified by tracing the victim's turns: about 2,300 in
5 s, each with its request unread and all 256 slots taken): a connection waiting for a
slot was not read, and the slot freed for it was retaken (by the connection that freed it,
queued first, or by one read in the same wake-up) before its turn, which found nothing to
take and sent it to the back of the queue.

The agent is a real ``edge-agent serve``; the hogs are threads of the test process, each
keeping 8 requests with ``want_receipt`` in flight on its own connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.client import AgentUnavailableError, Client
from edge_agent.socket.wire import Op, WireRequest, encode_request
from tests.socket_helpers import enrolled_state, public_dir, serving

HOGS = 200
"""Connections pipelining receipt requests (their slots, 8 each, far exceed the 256 total)."""
ASKS = 3
VICTIM_TIMEOUT_S = 5.0
RULES = [
    {
        "id": "root-reads",
        "effect": "allow",
        "subjects": ["uid:0"],
        "actions": ["read"],
        "resources": ["/etc/edge/**"],
    }
]


@pytest.fixture
def agent() -> Iterator[Path]:
    with public_dir() as directory:
        state = enrolled_state(directory / "state", RULES)
        sock = directory / "agent.sock"
        with serving(state, sock):
            yield sock


def _hog(sock: Path, number: int, stop: threading.Event) -> None:
    """Keep 8 receipt requests in flight until ``stop``."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(sock))
        raw.settimeout(30)
        sent, answered, buffer = 0, 0, b""
        while not stop.is_set():
            while sent - answered < 8:
                request = WireRequest(
                    sent, Op.DECIDE, "read", f"/etc/edge/{number}/{sent}", (), None, True
                )
                raw.sendall(encode_request(request))
                sent += 1
            chunk = raw.recv(1 << 20)
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= 4 and len(buffer) >= 4 + int.from_bytes(buffer[:4], "big"):
                buffer = buffer[4 + int.from_bytes(buffer[:4], "big") :]
                answered += 1


def test_a_client_is_answered_while_others_pipeline_receipt_requests_on_every_slot(
    agent: Path,
) -> None:
    stop = threading.Event()
    hogs = [threading.Thread(target=_hog, args=(agent, n, stop)) for n in range(HOGS)]
    for hog in hogs:
        hog.start()
    unanswered = 0
    try:
        time.sleep(1.0)  # every slot taken
        with Client(agent, timeout=VICTIM_TIMEOUT_S) as victim:
            for ask in range(ASKS):
                try:
                    victim.decide("read", f"/etc/edge/victim/{ask}")
                except AgentUnavailableError:
                    unanswered += 1
    finally:
        stop.set()
        for hog in hogs:
            hog.join()
    assert unanswered == 0

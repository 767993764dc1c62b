"""What the decision server asks: the three shapes of a decider.

- :class:`Decider`: ``decide(request, wall) -> Decision``, blocking until the decision is
  durable (:class:`edge_agent.agent.LocalAgent`). The server calls it from a bounded thread
  pool, so concurrent calls share one lineage commit (group commit across threads).
- :class:`AsyncDecider`: ``decide_soon(request, wall) -> asyncio.Future[Decision]``, called
  on the event loop, for a decider whose durable write completes on the loop (group commit
  with no thread switch, and no task, per decision). The server prefers it to a
  :class:`Decider`.
- :class:`BatchDecider`: ``judge(request, wall) -> Decision`` (in memory, not yet durable)
  and ``record(decisions) -> list[Decision]`` (blocking until all are durable), for a
  decider whose gate and lineage may be used from threads other than the event loop. The
  server prefers it to both: its own threads then serve the socket with no asyncio at
  all (:mod:`edge_agent.socket.responder`), judging on one and recording a whole
  wake-up's decisions with one call on another; it serves cited requests too.

Each must return (or resolve) only once the decision is durable, or to the deny that
replaces it (for a :class:`BatchDecider`, ``record`` does, and answers are built from what
it returns). Of the other two, a decider that is also a :class:`CitingDecider` serves the
requests that cite a parent receipt or ask for their own receipt (``parent``,
``want_receipt``); to any other, such requests are refused.
:class:`~edge_agent.agent.LocalAgent` is all four.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from edge_agent.protocol.request import Request
from edge_agent.trust.gate import Decision

__all__ = ["AsyncDecider", "BatchDecider", "CitingDecider", "Decider"]


class Decider(Protocol):
    """Decides one request, blocking; safe to call from several threads at once."""

    def decide(self, request: Request, wall: int) -> Decision: ...


@runtime_checkable
class AsyncDecider(Protocol):
    """Decides one request on the event loop the server runs on: called on the loop, the
    future resolves there."""

    def decide_soon(self, request: Request, wall: int) -> asyncio.Future[Decision]: ...


@runtime_checkable
class CitingDecider(Protocol):
    """Decides one request citing a ``parent`` receipt (verified by the decider), and with
    ``want_receipt`` resolves to the decision's own receipt too (``None`` when none could
    be made); called on the loop, the future resolves there."""

    def decide_cited_soon(
        self, request: Request, wall: int, parent: bytes | None, want_receipt: bool
    ) -> asyncio.Future[tuple[Decision, bytes | None]]: ...


@runtime_checkable
class BatchDecider(Protocol):
    """Decides in two steps, from the server's own threads (each method thread-safe).

    ``judge`` decides a request in memory (the gate: no I/O worth waiting for);
    ``record`` makes a batch of judged decisions durable, blocking, and returns, in the
    same order, each decision or the deny that replaces it (it fails only on a bug: the
    server then answers ``internal_error`` to the whole batch). ``decide_cited`` is the
    whole of a request citing a ``parent`` receipt or asking for its own (blocking: it
    verifies, records and may sign), returning the decision and the receipt (``None`` when
    none could be made).
    """

    def judge(self, request: Request, wall: int) -> Decision: ...

    def record(self, decisions: Sequence[Decision]) -> list[Decision]: ...

    def decide_cited(
        self, request: Request, wall: int, parent: bytes | None, want_receipt: bool
    ) -> tuple[Decision, bytes | None]: ...

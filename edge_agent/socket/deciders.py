"""What the decision server asks: the two shapes of a decider.

- :class:`Decider`: ``decide(request, wall) -> Decision``, blocking until the decision is
  durable (:class:`edge_agent.agent.LocalAgent`). The server calls it from a bounded thread
  pool, so concurrent calls share one lineage commit (group commit across threads).
- :class:`AsyncDecider`: ``decide_soon(request, wall) -> asyncio.Future[Decision]``, called
  on the event loop, for a decider whose durable write completes on the loop (group commit
  with no thread switch, and no task, per decision). The server prefers it when the
  decider has it.

Either must return (or resolve) only once the decision is durable, or to the deny that
replaces it. A decider that is also a :class:`CitingDecider` serves the requests that cite a
parent receipt or ask for their own receipt (``parent``, ``want_receipt``); to any other,
such requests are refused.
:class:`~edge_agent.agent.LocalAgent` is all three.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from edge_agent.protocol.request import Request
from edge_agent.trust.gate import Decision

__all__ = ["AsyncDecider", "CitingDecider", "Decider"]


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

"""What the decision server asks: the two shapes of a decider.

- :class:`Decider`: ``decide(request, wall) -> Decision``, blocking until the decision is
  durable (:class:`edge_agent.agent.LocalAgent`). The server calls it from a bounded thread
  pool, so concurrent calls share one lineage commit (group commit across threads).
- :class:`AsyncDecider`: ``async decide_async(request, wall) -> Decision``, for a decider
  whose durable write is awaited on the event loop (group commit across coroutines: no
  thread switch per decision). The server prefers it when the decider has it.

Either must return only once the decision is durable, or the deny that replaces it.
:class:`~edge_agent.agent.LocalAgent` has both.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edge_agent.policy.engine import Request
from edge_agent.trust.gate import Decision

__all__ = ["AsyncDecider", "Decider"]


class Decider(Protocol):
    """Decides one request, blocking; safe to call from several threads at once."""

    def decide(self, request: Request, wall: int) -> Decision: ...


@runtime_checkable
class AsyncDecider(Protocol):
    """Decides one request on the event loop the server runs on."""

    async def decide_async(self, request: Request, wall: int) -> Decision: ...

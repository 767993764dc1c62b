"""What the decision server asks: the two shapes of a decider.

- :class:`Decider`: ``decide(request, wall) -> Decision``, blocking until the decision is
  durable (:class:`edge_agent.agent.LocalAgent`). The server calls it from a bounded thread
  pool, so concurrent calls share one lineage commit (group commit across threads).
- :class:`AsyncDecider`: ``async decide_async(request, wall) -> Decision``, for a decider
  whose durable write is awaited on the event loop (group commit across coroutines: no
  thread switch per decision). The server prefers it when the decider has it.

Either must return only once the decision is durable, or the deny that replaces it.

:class:`AgentOnLoop` gives a :class:`~edge_agent.agent.LocalAgent` the async shape: the same
two steps as ``LocalAgent.decide`` (the gate, then the lineage), with the lineage write
awaited through the log's coroutine group commit. It belongs on ``LocalAgent`` itself (as
``decide_async``); until it is there, ``edge-agent serve`` wraps the agent in it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edge_agent.agent import LocalAgent
from edge_agent.policy.engine import Request
from edge_agent.trust.gate import Decision, decide, lineage_unavailable

__all__ = ["AgentOnLoop", "AsyncDecider", "Decider"]


class Decider(Protocol):
    """Decides one request, blocking; safe to call from several threads at once."""

    def decide(self, request: Request, wall: int) -> Decision: ...


@runtime_checkable
class AsyncDecider(Protocol):
    """Decides one request on the event loop the server runs on."""

    async def decide_async(self, request: Request, wall: int) -> Decision: ...


class AgentOnLoop:
    """A :class:`LocalAgent` deciding on the event loop: gate, then durable lineage entry."""

    def __init__(self, agent: LocalAgent) -> None:
        self.agent = agent

    async def decide_async(self, request: Request, wall: int) -> Decision:
        """As ``LocalAgent.decide``: durable before it returns, or a ``lineage_unavailable``
        deny."""
        decision = decide(self.agent.state, request, wall)
        lineage = self.agent.lineage
        if lineage is None:
            return lineage_unavailable(decision, "the lineage is not open")
        decision, _ = await lineage.record_decision_async(decision)
        return decision

"""What the decision server asks: the two shapes of a decider.

- :class:`BatchDecider`: ``judge(request, wall) -> Decision`` (in memory, not yet durable)
  and ``record(decisions) -> list[Decision]`` (blocking until all are durable), for a
  decider whose gate and lineage may be used from threads other than the event loop
  (:class:`edge_agent.agent.LocalAgent`). The server serves it with its own threads and
  no asyncio at all (:mod:`edge_agent.socket.responder`), judging on one and recording a
  whole wake-up's decisions with one call on another; ``decide_cited`` serves the requests
  that cite a parent receipt or ask for their own (``parent``, ``want_receipt``).
- :class:`Decider`: ``decide(request, wall) -> Decision``, blocking until the decision is
  durable, for an embedding program's own decider. The server calls it from a bounded
  thread pool; it cannot cite parents or make receipts, so such requests are refused.

Each returns only once the decision is durable, or the deny that replaces it (for a
:class:`BatchDecider`, ``record`` does, and answers are built from what it returns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from edge_agent.protocol.request import Request
from edge_agent.trust.gate import Decision

__all__ = ["BatchDecider", "Decider"]


class Decider(Protocol):
    """Decides one request, blocking; safe to call from several threads at once."""

    def decide(self, request: Request, wall: int) -> Decision: ...


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

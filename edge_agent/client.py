"""Ask the local agent before acting: the client library of the decision socket.

::

    from edge_agent.client import decide
    if decide(action="net.connect", resource="tcp://10.0.0.5:502").allowed:
        ...

The agent takes the caller's identity from the kernel (uid, gid, executable and its
digest), so a request says only *what* it asks: ``action``, ``resource`` and an optional
``context`` of text pairs the policy's ``when`` conditions can test.

- :func:`decide`: one call through a connection shared by the process.
- :class:`Client`: blocking, reusable, thread-safe; :class:`AsyncClient`: asyncio,
  pipelined over one connection. Both take ``path`` (default ``$EDGE_AGENT_SOCKET``, then
  ``/run/edge-agent/agent.sock``) and ``timeout`` (seconds per call, default 2).
- Results are :class:`DecisionResult` (``allowed``, ``reason``, ``message``, ``rule``,
  bundle version and digest, decision time, the subject and selectors the agent saw, and
  the decision's ``receipt`` when asked for with ``want_receipt=True``) and
  :class:`IdentityResult` (``identify()``).
- Ancestry: ``decide(..., parent=receipt)`` cites the receipt of the decision that caused
  this one, on this device or another; the agent verifies it offline and the policy may
  require it (docs/policy.md, "Parents")::

      parent = decide(action="model.invoke", resource="model://vision/v3", want_receipt=True)
      child = decide(action="plc.write", resource="plc://line-a/valve-7", parent=parent.receipt)

Fail closed: every failure raises a :class:`SocketError` (:class:`AgentUnavailableError`,
:class:`AgentRequestError`, :class:`ProtocolError`); treat any of them as a deny. The wire
protocol, for clients in other languages, is in docs/socket.md.
"""

from __future__ import annotations

from edge_agent.socket.aio import AsyncClient
from edge_agent.socket.blocking import DEFAULT_TIMEOUT_S, Client, decide, default_socket_path
from edge_agent.socket.errors import (
    AgentRequestError,
    AgentUnavailableError,
    ProtocolError,
    SocketError,
)
from edge_agent.socket.wire import DecisionResult, IdentityResult

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "AgentRequestError",
    "AgentUnavailableError",
    "AsyncClient",
    "Client",
    "DecisionResult",
    "IdentityResult",
    "ProtocolError",
    "SocketError",
    "decide",
    "default_socket_path",
]

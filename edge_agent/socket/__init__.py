"""The local decision socket: workloads on the device ask the agent before they act.

- :mod:`edge_agent.socket.wire`: the protocol (length-prefixed deterministic CBOR, version 1,
  error shapes); docs/socket.md is its long form.
- :mod:`edge_agent.socket.peer`: who is asking, from the kernel (``SO_PEERCRED``,
  ``SO_PEERPIDFD``, ``/proc``), never from the request.
- :mod:`edge_agent.socket.server`: :class:`~edge_agent.socket.server.DecisionServer`, the
  asyncio server with its limits, embeddable in the agent daemon's event loop.
- :mod:`edge_agent.socket.blocking` and :mod:`edge_agent.socket.aio`: the clients
  (:mod:`edge_agent.client` is the public face).
- :mod:`edge_agent.socket.exec_gate`: ``edge-agent exec``, which asks before it executes.

This package's ``__init__`` imports nothing on purpose: ``edge-agent exec`` runs before every
gated program, and importing the server (asyncio, the agent's state) would add tens of
milliseconds.
"""

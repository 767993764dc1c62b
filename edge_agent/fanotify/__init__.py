"""System-wide exec enforcement: every exec on the workload mounts decided by the agent.

The kernel asks (fanotify ``FAN_OPEN_EXEC_PERM`` permission events on the workload mounts'
filesystems), a dedicated responder thread answers from the agent's in-memory trust state,
and each decision then reaches the durable lineage through a bounded queue. Fail closed
throughout: a closed gate, a full queue, an unidentifiable caller, a responder crash (a
second process holds the group, so waiting execs stay blocked until a restarted agent denies
them) and a stopped agent (the mounts are ``noexec``) all end in "not executed".
docs/exec-enforcement.md is the operator's guide.

- :mod:`~edge_agent.fanotify._abi`: the kernel interface (ctypes, struct layouts);
- :mod:`~edge_agent.fanotify.mounts`: which mounts may be marked; ``noexec``;
- :mod:`~edge_agent.fanotify.identity`: the event's file and the calling process;
- :mod:`~edge_agent.fanotify.decider`: one event -> allow or deny, in memory;
- :mod:`~edge_agent.fanotify.responder`: the thread answering events; denying stale ones;
- :mod:`~edge_agent.fanotify.handoff`: the bounded queue to the lineage;
- :mod:`~edge_agent.fanotify.holder`: the second holder of the group;
- the hub-signed recovery token is :mod:`~edge_agent.protocol.breakglass` (format) and
  :mod:`~edge_agent.trust.breakglass` (judged against the trust state);
- :mod:`~edge_agent.fanotify.enforcer`: :class:`ExecEnforcer`, tying them together;
- :mod:`~edge_agent.fanotify.cli`: ``edge-agent enforce`` and ``edge-agent break-glass``.
"""

from edge_agent.fanotify.enforcer import EnforcerOptions, EnforcerStats, ExecEnforcer, Mode

__all__ = ["EnforcerOptions", "EnforcerStats", "ExecEnforcer", "Mode"]

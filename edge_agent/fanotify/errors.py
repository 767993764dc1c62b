"""Errors of system-wide exec enforcement, in the project's error tree (edge_agent.errors)."""

from __future__ import annotations

from edge_agent.errors import ConfigError, EdgeGovError

__all__ = [
    "AbiError",
    "EnforcementUnavailable",
    "ExecEnforcementError",
    "HolderError",
    "MountRefused",
]


class ExecEnforcementError(EdgeGovError):
    """Exec enforcement cannot run as configured."""

    code = "exec_enforcement_error"


class EnforcementUnavailable(ExecEnforcementError):
    """This kernel or sandbox cannot deliver fanotify permission events (no
    CONFIG_FANOTIFY_ACCESS_PERMISSIONS, no CAP_SYS_ADMIN, or a seccomp filter): the agent
    refuses to start enforcement rather than run unenforced."""

    code = "exec_enforcement_unavailable"


class AbiError(ExecEnforcementError):
    """The kernel's fanotify events are not in the layout this agent reads."""

    code = "fanotify_abi_mismatch"


class HolderError(ExecEnforcementError):
    """The process holding the fanotify group could not be started or reached."""

    code = "exec_holder_error"


class MountRefused(ConfigError):
    """A configured workload mount may not be marked (the root filesystem, not a mount point,
    or it holds the agent's own files)."""

    code = "exec_mount_refused"

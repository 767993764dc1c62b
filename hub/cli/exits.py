"""The exit codes of ``edge-hub`` commands, said once, and the ``--help`` epilog built from
them (:func:`edge_agent.support.cli.epilog`): every command lists the codes it can end with
and ends with an example.

Which error ends with which code (:func:`exit_code`): a missing hub directory, or one
holding no registry where a command reads one, an unreachable broker and an unusable
registry are *unavailable* (3); a bad argument or input file is a *usage* error (2); any
other refusal of ours (a signature, a rollback, a conflicting state) is *refused* (1).
"""

from __future__ import annotations

from edge_agent.errors import ConfigError, EdgeGovError, TransportError
from edge_agent.support.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    epilog,
)
from hub.hubdir.layout import HubDirError
from hub.registry import RegistryError

__all__ = [
    "BROKER",
    "DONE",
    "NO_HUB",
    "REFUSED",
    "USAGE",
    "exit_code",
    "help_epilog",
]

DONE = (EXIT_OK, "done")
USAGE = (EXIT_USAGE, "a usage or input error (bad argument, unreadable or invalid file)")
REFUSED = (EXIT_REFUSED, "refused (verification failed, or the hub's state forbids it)")
NO_HUB = (EXIT_UNAVAILABLE, "the hub directory is missing or holds no registry (hub.db)")
BROKER = (EXIT_UNAVAILABLE, "the broker could not be reached (what was recorded stays)")


def help_epilog(example: str, *codes: tuple[int, str], more: tuple[str, ...] = ()) -> str:
    """The epilog of a command that can end with ``codes`` (0 and 2 always), with
    ``example`` (an ``edge-hub`` command line) last."""
    listed = dict([DONE, USAGE])
    for code, meaning in codes:
        listed[code] = meaning
    return epilog(sorted(listed.items()), example, *more)


def exit_code(exc: EdgeGovError) -> int:
    """The exit code an ``edge-hub`` command ends with on ``exc``."""
    if isinstance(exc, HubDirError | TransportError | RegistryError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    return EXIT_REFUSED

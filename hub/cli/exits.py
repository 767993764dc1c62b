"""What every ``edge-hub`` command shares beyond :mod:`edge_agent.support.cli`: its exit
codes, said once, the ``--help`` epilog built from them (:func:`edge_agent.support.cli.epilog`:
every command lists the codes it can end with and ends with an example), and the file
argument type.

Which error ends with which code (:func:`exit_code`): a missing hub directory, or one
holding no registry where a command reads one, an unreachable broker and an unusable
registry are *unavailable* (3); a bad argument or input file is a *usage* error (2); any
other refusal of ours (a signature, a rollback, a conflicting state) is *refused* (1).

Building the parser imports this module for every command, so it imports neither the hub
directory's module nor the registry's (with MQTT and SQLite behind them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.errors import ConfigError, EdgeGovError, TransportError
from edge_agent.support.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    epilog,
)

__all__ = [
    "BROKER",
    "DONE",
    "NO_HUB",
    "REFUSED",
    "USAGE",
    "counted",
    "exit_code",
    "help_epilog",
    "name_arg",
    "path_arg",
]

MAX_NAME_CHARS = 256
"""Longest device id, group, region, rollout or token name an argument may give (names
that can be registered are far shorter: a topic level, a token name)."""

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


UNAVAILABLE_ERRORS = (
    ("hub.hubdir.layout", "HubDirError"),
    ("hub.registry.interface", "RegistryError"),
)
"""The errors of the hub directory and the registry, by module and class name."""


def exit_code(exc: EdgeGovError) -> int:
    """The exit code an ``edge-hub`` command ends with on ``exc``.

    The hub directory's and the registry's errors are looked up among the modules already
    imported: an error of a class whose module was never imported cannot have been raised.
    """
    if isinstance(exc, (TransportError, *_loaded(UNAVAILABLE_ERRORS))):
        return EXIT_UNAVAILABLE
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    return EXIT_REFUSED


def _loaded(classes: tuple[tuple[str, str], ...]) -> tuple[type[BaseException], ...]:
    """Those of ``classes`` (module, class name) whose module is imported."""
    found: list[type[BaseException]] = []
    for module, name in classes:
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)


def path_arg(text: str) -> Path:
    """An argparse ``type`` for a file or directory: an empty one is refused (``Path("")``
    is the current directory, never what an empty argument meant)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path: give a file or directory name")
    return Path(text)


def name_arg(text: str) -> str:
    """An argparse ``type`` for a name the registry is asked about (a device id, group,
    region, rollout or token name): one line of UTF-8 text, 1 to :data:`MAX_NAME_CHARS`
    characters. A name that cannot be one is refused before anything is looked up."""
    if not text:
        raise argparse.ArgumentTypeError("an empty name")
    if len(text) > MAX_NAME_CHARS:
        raise argparse.ArgumentTypeError(f"a name longer than {MAX_NAME_CHARS} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("a name that is not UTF-8 text") from None
    if not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text!r} holds control characters")
    return text


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 rule``, ``3 rules``: a count with its noun in the right number."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"

"""A command's handler named by its module and function, imported only when it runs.

``edge-hub`` builds its whole parser for every command (help, completion and man pages come
from it), but runs one handler: naming the handlers instead of importing them keeps the
modules of the commands that do not run (the service, the registry, MQTT, attestation) out
of every start (docs/performance-profile.md, "Phase 2 (continued)").
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Handler"]


@dataclass(frozen=True, slots=True)
class Handler:
    """The function ``function`` of the module ``module``, called with the parsed arguments.

    An import error of the module propagates from the call, as any error of the handler
    does: ``edge-hub`` reports it as its internal error, one line, exit 1."""

    module: str
    function: str

    def resolve(self) -> Callable[[argparse.Namespace], int]:
        """The handler itself (its module imported)."""
        run: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(self.module), self.function
        )
        return run

    def __call__(self, args: argparse.Namespace) -> int:
        return self.resolve()(args)

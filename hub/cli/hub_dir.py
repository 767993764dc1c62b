"""The hub directory a command works on, with its registry, from the parsed arguments:
``--hub-dir`` and ``--registry`` (each else its environment variable; see
:meth:`hub.hubdir.layout.HubDir.resolve`)."""

from __future__ import annotations

import argparse

from hub.hubdir.layout import HubDir

__all__ = ["hub_dir_of"]


def hub_dir_of(args: argparse.Namespace) -> HubDir:
    """The hub directory and registry ``args`` name (a command without either option: the
    defaults)."""
    return HubDir.resolve(getattr(args, "hub_dir", None), getattr(args, "registry", None))

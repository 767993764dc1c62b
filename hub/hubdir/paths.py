"""The names of a hub directory's files and where the directory is, apart from the code that
opens them (:mod:`hub.hubdir.layout`, with the registry and MQTT behind it): a command that
only writes a file (``edge-hub bundle build --out``) checks it is none of them without
importing those."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ENV_HUB_DIR",
    "ENV_REGISTRY",
    "KEYS_DIR",
    "REGISTRY_FILE",
    "SERVE_FILE",
    "SERVE_LOCK_FILE",
    "hub_dir_named",
    "hub_dir_path",
    "registry_location",
]

ENV_HUB_DIR = "EDGE_HUB_DIR"
ENV_REGISTRY = "EDGEGOV_REGISTRY"
"""Where the registry is when ``--registry`` is not given: a ``postgresql://`` URL or a
``hub.db`` path (unset: the hub directory's ``hub.db``)."""
KEYS_DIR = "keys"
REGISTRY_FILE = "hub.db"
SERVE_FILE = "serve.json"
SERVE_LOCK_FILE = "serve.lock"


def hub_dir_path(given: Path | None) -> Path:
    """The hub directory: ``given``, else ``$EDGE_HUB_DIR``, else the current directory."""
    if given is not None:
        return given
    return Path(os.environ.get(ENV_HUB_DIR) or ".")


def hub_dir_named(given: Path | None) -> bool:
    """Whether the hub directory was named (``given`` or ``$EDGE_HUB_DIR``), not the
    current directory taken by default."""
    return given is not None or bool(os.environ.get(ENV_HUB_DIR))


def registry_location(given: str | None) -> str | None:
    """Where the registry is: ``given`` (``--registry``), else ``$EDGEGOV_REGISTRY``, else
    ``None`` (the hub directory's ``hub.db``)."""
    return given or os.environ.get(ENV_REGISTRY) or None

"""Where an ``edge-hub`` command may write its ``--out`` file.

Every ``--out`` (and ``--export``) goes through :func:`write_hub_out`: it refuses to replace
an existing file without ``--force`` and never replaces what is not a regular file
(:func:`edge_agent.support.cli.write_out`), and it refuses, even with ``--force``, a path
that is the hub directory's own state (the registry and its WAL files, the key directory,
``serve.json`` and ``serve.lock``) or a key directory or trust root the command was given:
an output written over them would destroy the registry or the trust root it was made from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.support.cli import write_out
from hub.hubdir.paths import KEYS_DIR, REGISTRY_FILE, SERVE_FILE, SERVE_LOCK_FILE, hub_dir_path

__all__ = ["write_hub_out"]

_HUB_FILES = (
    REGISTRY_FILE,
    f"{REGISTRY_FILE}-wal",
    f"{REGISTRY_FILE}-shm",
    f"{REGISTRY_FILE}-journal",
    SERVE_FILE,
    SERVE_LOCK_FILE,
)
"""The hub directory's own files, by name, that no output may replace."""


def write_hub_out(
    path: Path,
    data: bytes,
    *,
    hub_dir: Path | None,
    force: bool,
    mode: int = 0o600,
    key_dirs: Sequence[Path | None] = (),
    inputs: Sequence[Path | None] = (),
) -> None:
    """Write ``data`` to the ``--out`` ``path`` unless it is the hub's own state.

    ``hub_dir`` is the command's ``--hub-dir`` (resolved as every command resolves it);
    ``key_dirs`` are key directories the command read (nothing inside them may be
    replaced) and ``inputs`` files it read (such as ``--root``).

    Raises:
        ConfigError: the path is refused or cannot be written.
    """
    target = _real(path)
    hub = _real(hub_dir_path(hub_dir))
    guarded_dirs = [hub / KEYS_DIR, *(_real(d) for d in key_dirs if d is not None)]
    guarded_files = {hub / name for name in _HUB_FILES}
    guarded_files.update(_real(f) for f in inputs if f is not None)
    if target in guarded_files or any(target.is_relative_to(d) for d in guarded_dirs):
        raise ConfigError(
            f"refusing to write {path}: it is the hub's own state or a key or trust root "
            "this command reads (--force does not replace it); choose another --out"
        )
    write_out(path, data, mode=mode, force=force)


def _real(path: Path) -> Path:
    """``path`` absolute, its directory's symlinks resolved (the last component is kept:
    :func:`write_out` refuses a symlink there, and a rename would replace the link)."""
    absolute = Path(os.path.abspath(path))
    return Path(os.path.realpath(absolute.parent)) / absolute.name

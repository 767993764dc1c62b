"""The device directory the agent holds: ``STATE_DIR/directory.cbor``, kept and reloaded.

The file holds the signed directory exactly as received from the hub's retained
``trust/directory`` topic (:mod:`edge_agent.protocol.directory`). It is written only after
verification and the update check (a lower version than the one held is a rollback, an equal
one changes nothing, an expired one is refused), atomically (temp file, fsync, rename), and
it is verified again, under the current trust root, whenever it is read: a file edited
behind the agent's back can only leave it without a directory, and then every parent is
refused (``parent_invalid``). Deciding never touches the network: parents are verified
against what this holds.

Several processes: the process that installs a directory swaps it in at once; any other
process reading the same state directory notices the file changed (its size, time and inode)
at most :data:`CHECK_INTERVAL_S` later, on a decision that cites a parent. Decisions without a
parent never look at the directory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.errors import ConfigError, EdgeGovError, StateError
from edge_agent.protocol.directory import (
    MAX_DIRECTORY_BYTES,
    Directory,
    check_directory_update,
    verify_directory,
)
from edge_agent.protocol.root import TrustRoot
from edge_agent.support.cli import write_atomic
from edge_agent.support.files import read_regular_file

__all__ = ["CHECK_INTERVAL_S", "DIRECTORY_FILE", "HeldDirectory"]

logger = logging.getLogger(__name__)

DIRECTORY_FILE = "directory.cbor"
CHECK_INTERVAL_S = 0.5
"""How often, at most, a process deciding with parents checks whether another process
installed a newer directory."""

_Stamp = tuple[int, int, int]


class HeldDirectory:
    """The verified directory of one state directory, for one region, under a root given
    by ``root`` (read on every load, so a rotated root re-verifies the file)."""

    def __init__(
        self,
        state_dir: Path,
        region: str,
        root: Callable[[], TrustRoot],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = state_dir / DIRECTORY_FILE
        self._region = region
        self._root = root
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._held: Directory | None = None
        self._verified_under: TrustRoot | None = None
        self._stamp: _Stamp | None = None
        self._next_check = 0.0

    def current(self) -> Directory | None:
        """The directory held now (``None``: none, or none that verifies); re-read first when
        the file or the trust root changed, at most every :data:`CHECK_INTERVAL_S`."""
        monotonic = self._monotonic()
        if monotonic >= self._next_check or self._verified_under is not self._root():
            with self._lock:
                self._next_check = monotonic + CHECK_INTERVAL_S
                self._reload_if_changed()
        return self._held

    def install(self, data: bytes, now: int) -> Directory:
        """Verify ``data``, keep it if it is newer than the directory held, persist it.

        Returns the directory held afterwards (the held one when ``data`` is the same
        version).

        Raises:
            DirectoryError: refused (bad signature or format, rollback, expired); nothing
                changes.
            StateError: it could not be written; nothing changes.
        """
        root = self._root()
        offered = verify_directory(data, root=root, region=self._region)
        with self._lock:
            self._reload_if_changed()
            kept = check_directory_update(self._held, offered, now)
            if kept is self._held:
                return kept
            try:
                write_atomic(self._path, data, mode=0o600)
            except ConfigError as exc:
                raise StateError(f"cannot record the device directory: {exc.message}") from exc
            self._held, self._verified_under, self._stamp = kept, root, self._read_stamp()
        logger.info(
            "device directory version %d installed: %d devices, expires at %d",
            kept.version,
            len(kept.devices),
            kept.expires_at,
        )
        return kept

    def _reload_if_changed(self) -> None:
        stamp = self._read_stamp()
        root = self._root()
        if stamp == self._stamp and root is self._verified_under:
            return
        self._stamp, self._verified_under = stamp, root
        self._held = None if stamp is None else self._load(root)

    def _read_stamp(self) -> _Stamp | None:
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.error("cannot read %s: %s", self._path, exc.strerror or exc)
            return None
        return (info.st_size, info.st_mtime_ns, info.st_ino)

    def _load(self, root: TrustRoot) -> Directory | None:
        try:
            data = read_regular_file(self._path, MAX_DIRECTORY_BYTES + 1)
            directory = verify_directory(data, root=root, region=self._region)
        except (OSError, EdgeGovError) as exc:
            logger.error(
                "the held device directory %s is unusable, parents are refused until the hub "
                "sends a valid one: %s",
                self._path,
                exc,
            )
            return None
        return directory

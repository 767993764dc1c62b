"""The device directory the agent holds: ``STATE_DIR/directory.cbor``, kept and reloaded.

The file holds the signed directory exactly as received from the hub's retained
``trust/directory`` topic (:mod:`edge_agent.protocol.directory`). It is written only after
verification and the update check (a lower version than the one held is a rollback, an equal
one changes nothing, an expired one is refused), atomically (temp file, fsync, rename), and
it is verified again, under the current trust root, whenever it is read: a file edited
behind the agent's back can only leave it without a directory, and then every parent is
refused (``parent_invalid``). Deciding never touches the network: parents are verified
against what this holds. The file is read non-blocking and only when it is a regular file
(:func:`edge_agent.support.files.read_regular_file`): a FIFO or device put there is refused
like a damaged file.

Rollback floor: the file can be deleted, damaged or replaced by an older signed directory,
so the highest version kept is also recorded in the agent's trust state (``state.db``,
``TrustState.directory_version``, with the other rollback floors and their generation
checks) before the file is written. Neither an offered directory nor the file is accepted
below that floor: losing or replacing the file never lowers it, and a file below it leaves
the agent without a directory (parents refused, decisions without a parent unaffected) until
the hub's retained directory, at or above the floor, arrives again. Rotating the verifier
role drops the floor (what its old key signed no longer counts).

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
    DirectoryError,
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
    by ``root`` and at or above the version floor given by ``floor`` (both read on every
    check, so a rotated root re-verifies the file and a raised floor re-judges it)."""

    def __init__(
        self,
        state_dir: Path,
        region: str,
        root: Callable[[], TrustRoot],
        floor: Callable[[], int],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = state_dir / DIRECTORY_FILE
        self._region = region
        self._root = root
        self._floor = floor
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._held: Directory | None = None
        self._verified_under: TrustRoot | None = None
        self._judged_floor = 0
        self._stamp: _Stamp | None = None
        self._next_check = 0.0

    def current(self) -> Directory | None:
        """The directory held now (``None``: none, or none that verifies at or above the
        floor); re-read first when the file, the trust root or the floor changed, at most
        every :data:`CHECK_INTERVAL_S` for the file."""
        monotonic = self._monotonic()
        if (
            monotonic >= self._next_check
            or self._verified_under is not self._root()
            or self._judged_floor != self._floor()
        ):
            with self._lock:
                self._next_check = monotonic + CHECK_INTERVAL_S
                self._reload_if_changed()
        return self._held

    def install(self, data: bytes, now: int, record: Callable[[int], None]) -> Directory:
        """Verify ``data``, keep it if it is newer than the directory held and not below the
        floor, raise the floor to its version (``record``, into the trust state) and then
        persist the file.

        Returns the directory held afterwards (the held one when ``data`` is the same
        version).

        Raises:
            DirectoryError: refused (bad signature or format, rollback below the held
                directory or the floor, expired); nothing changes.
            StateError: the floor or the file could not be written (``record``'s
                :class:`~edge_agent.store.StaleStateError` included, for the caller to retry);
                the file is unchanged.
        """
        root = self._root()
        offered = verify_directory(data, root=root, region=self._region)
        with self._lock:
            self._reload_if_changed()
            kept = check_directory_update(self._held, offered, now)
            if kept is self._held:
                return kept
            floor = self._floor()
            if kept.version < floor:
                raise DirectoryError(
                    f"device directory version {kept.version} is older than version {floor}, "
                    "the highest this device has kept: refused as a rollback",
                    code="directory_rollback",
                )
            record(kept.version)
            try:
                write_atomic(self._path, data, mode=0o600)
            except ConfigError as exc:
                raise StateError(f"cannot record the device directory: {exc.message}") from exc
            self._held, self._verified_under, self._stamp = kept, root, self._read_stamp()
            self._judged_floor = self._floor()
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
        floor = self._floor()
        if stamp == self._stamp and root is self._verified_under and floor == self._judged_floor:
            return
        self._stamp, self._verified_under, self._judged_floor = stamp, root, floor
        self._held = None if stamp is None else self._load(root, floor)

    def _read_stamp(self) -> _Stamp | None:
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.error("cannot read %s: %s", self._path, exc.strerror or exc)
            return None
        return (info.st_size, info.st_mtime_ns, info.st_ino)

    def _load(self, root: TrustRoot, floor: int) -> Directory | None:
        try:
            data = read_regular_file(self._path, MAX_DIRECTORY_BYTES + 1)
            directory = verify_directory(data, root=root, region=self._region)
            if directory.version < floor:
                raise DirectoryError(
                    f"it is version {directory.version}, older than version {floor}, the "
                    "highest this device has kept (a lost or replaced file)",
                    code="directory_rollback",
                )
        except (OSError, EdgeGovError) as exc:
            logger.error(
                "the held device directory %s is unusable, parents are refused until the hub "
                "sends a valid one: %s",
                self._path,
                exc,
            )
            return None
        return directory

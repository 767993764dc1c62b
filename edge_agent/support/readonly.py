"""Read-only inspection of a state directory: the forensic habit of mounting a gateway's card
read-only and reading its agent state and lineage from there.

A directory the process cannot write (a read-only mount, a copy owned by someone else), or
any directory while :func:`read_only_inspection` is in force (``edge-agent --read-only``), is
opened without writing a byte: SQLite databases with ``mode=ro&immutable=1``, so no ``-wal``
or ``-shm`` file is ever created beside them. An immutable open does not read a WAL, so a
database with a non-empty ``-wal`` beside it (an agent stopped without checkpointing: power
cut) is read from a private copy of both in a temporary directory instead, which SQLite may
recover there and which goes when the connection closes or the process exits (a command
stopped by SIGINT, SIGTERM or SIGHUP exits through its cleanup); the originals are never
opened for writing. The copy holds the whole decision log: its directory is the owner's
alone (0700, files 0600), named for the process, and a copy left by a process that could
not clean up (SIGKILL, a power cut) is removed by the next copy made by the same user.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
import re
import shutil
import sqlite3
import stat
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

__all__ = ["connect_read_only", "is_read_only", "read_only_inspection"]

_forced: contextvars.ContextVar[bool] = contextvars.ContextVar("edgegov_read_only", default=False)


@contextlib.contextmanager
def read_only_inspection() -> Iterator[None]:
    """Within the block, every state directory is opened read-only (:func:`is_read_only`),
    writable or not."""
    token = _forced.set(True)
    try:
        yield
    finally:
        _forced.reset(token)


def is_read_only(path: Path) -> bool:
    """Whether the database at ``path`` is to be opened read-only: inside
    :func:`read_only_inspection`, or when its directory or the file itself cannot be written
    by this process (``os.access`` knows a read-only mount, even for root)."""
    if _forced.get():
        return True
    directory = path.parent if str(path.parent) else Path(".")
    if not os.access(directory, os.W_OK):
        return True
    return path.exists() and not os.access(path, os.W_OK)


def connect_read_only(path: Path, timeout: float) -> sqlite3.Connection:
    """A connection that reads the database at ``path`` and can never write anything beside
    it (see the module docstring).

    Raises:
        sqlite3.Error: the database cannot be opened.
        OSError: a database with a WAL could not be copied.
    """
    wal = path.with_name(path.name + "-wal")
    if not (wal.exists() and wal.stat().st_size > 0):
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro&immutable=1"
        return sqlite3.connect(
            uri, uri=True, isolation_level=None, timeout=timeout, check_same_thread=False
        )
    _remove_stale_copies()
    directory = Path(tempfile.mkdtemp(prefix=f"{_COPY_PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, directory, True)
    try:
        copy = directory / path.name
        _copy_private(path, copy)
        _copy_private(wal, directory / wal.name)
        # The copy is this process's own: SQLite may write its WAL recovery there.
        db = sqlite3.connect(
            f"file:{urllib.parse.quote(str(copy))}?mode=rw",
            uri=True,
            isolation_level=None,
            timeout=timeout,
            check_same_thread=False,
            factory=_CopyConnection,
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    assert isinstance(db, _CopyConnection)
    db.copy_dir = directory
    return db


_COPY_PREFIX = "edgegov-ro-"
"""A private copy's directory is ``edgegov-ro-PID-RANDOM`` in the temporary directory."""
_COPY_NAME = re.compile(re.escape(_COPY_PREFIX) + r"([1-9][0-9]{0,9})-[^/]+")


def _copy_private(source: Path, target: Path) -> None:
    """Copy ``source`` to a new ``target`` readable by the owner only (0600 from its
    creation: the log names subjects and resources)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with open(source, "rb") as reader, os.fdopen(fd, "wb") as writer:
        shutil.copyfileobj(reader, writer)


def _remove_stale_copies() -> None:
    """Remove the private copies of this user's processes that are gone: a process killed
    by SIGKILL (or a power cut) could not remove its own. A directory of another user, of a
    live process, or not named as a copy is left alone."""
    root = Path(tempfile.gettempdir())
    try:
        names = [entry.name for entry in os.scandir(root) if entry.name.startswith(_COPY_PREFIX)]
    except OSError:
        return
    for name in names:
        match = _COPY_NAME.fullmatch(name)
        if match is None or _alive(int(match[1])):
            continue
        try:
            status = os.lstat(root / name)
        except OSError:
            continue
        if stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid():
            shutil.rmtree(root / name, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user's counts: it is not ours to
    judge)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


class _CopyConnection(sqlite3.Connection):
    """A connection to a private copy, which it removes when closed (else at exit)."""

    copy_dir: Path | None = None

    def close(self) -> None:
        super().close()
        if self.copy_dir is not None:
            shutil.rmtree(self.copy_dir, ignore_errors=True)
            self.copy_dir = None

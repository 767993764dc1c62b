"""Reading a file that must be a regular file, without ever blocking on one that is not.

A path someone else can replace (a state file in the state directory, a file named on a
command line) may hold a FIFO, whose blocking open waits for a writer for ever, a device
that never ends (/dev/zero), a socket or a directory. :func:`read_regular_file` opens the
path non-blocking and judges what it opened by ``fstat``: only a regular file is read, so
nothing can be swapped in between the check and the read, and the calling thread (the
agent's event loop, a decision) never waits on it. The CLIs' :func:`edge_agent.support.cli.
read_regular` and every state file the agent loads read through it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["NotRegularFileError", "file_kind", "read_regular_file"]

_CHUNK = 1 << 20


class NotRegularFileError(OSError):
    """The path names something other than a regular file: refused, nothing read."""


def read_regular_file(path: str | Path, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file ``path`` (a caller that refuses files
    over a cap passes the cap plus one, and refuses a read that long).

    Raises:
        FileNotFoundError: there is no such file.
        NotRegularFileError: ``path`` is a FIFO, device, socket or directory (a symlink is
            followed, and judged by what it names).
        OSError: it cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"{path} is {file_kind(mode)}, not a regular file")
        chunks: list[bytes] = []
        remaining = limit
        while remaining > 0:
            chunk = os.read(fd, min(remaining, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def file_kind(mode: int) -> str:
    """What ``mode`` (an ``st_mode``) names, as a sentence fragment ("a FIFO")."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")

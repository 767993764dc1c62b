"""Create the listening Unix socket: right mode and group from the first instant, no stale file.

The socket is bound under a temporary name in the target directory, given its mode and
group, and only then renamed over the final path, so no client ever sees it with the wrong
permissions (no process-wide umask change, which would race with other threads). A leftover
socket file of a dead agent is replaced; a live agent on the same path, or anything that is
not a socket, is an error. On close the path is removed only if it is still ours.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import socket
import stat
from pathlib import Path

from edge_agent.errors import ConfigError

__all__ = ["MAX_UNIX_PATH_BYTES", "ListeningSocket", "resolve_group"]

logger = logging.getLogger(__name__)

MAX_UNIX_PATH_BYTES = 107
"""Longest socket path Linux accepts (``sun_path`` is 108 bytes with its terminating NUL)."""


MAX_GID = 2**32 - 2
"""The largest group id (2^32-1 is the kernel's "no change")."""


def resolve_group(group: str | int | None) -> int:
    """The gid for ``group`` (a name or a number); ``-1`` (leave unchanged) for ``None``.

    Raises:
        ConfigError: no such group.
    """
    if group is None:
        return -1
    if isinstance(group, int) or (group.isascii() and group.isdigit()):
        if int(group) > MAX_GID:
            raise ConfigError(f"socket group {group} is not a group id (at most {MAX_GID})")
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"socket group {group!r} does not exist on this device") from None


class ListeningSocket:
    """A bound, listening Unix stream socket at ``path`` with ``mode`` and ``group``."""

    def __init__(self, path: Path, *, mode: int, group: str | int | None, backlog: int) -> None:
        """Bind and listen.

        Raises:
            ConfigError: the path is too long, taken by a live agent or by a non-socket, or
                the directory cannot be written.
        """
        self.path = path
        gid = resolve_group(group)
        temp = path.parent / f".{os.getpid()}.sock~"
        for candidate in (path, temp):
            if len(os.fsencode(candidate)) > MAX_UNIX_PATH_BYTES:
                raise ConfigError(
                    f"socket path {candidate} is longer than {MAX_UNIX_PATH_BYTES} bytes"
                )
        _prepare_directory(path)
        _remove_stale(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            temp.unlink(missing_ok=True)
            self.sock.bind(os.fsencode(temp))
            os.chmod(temp, mode)
            os.chown(temp, -1, gid)
            self.sock.listen(backlog)
            os.replace(temp, path)
            self._inode = os.stat(path).st_ino
        except OSError as exc:
            self.sock.close()
            temp.unlink(missing_ok=True)
            raise ConfigError(f"cannot create the socket {path}: {exc.strerror or exc}") from exc
        owner = "the agent's own group" if gid == -1 else f"gid {gid}"
        logger.info("listening on %s (mode %04o, group %s)", path, mode, owner)

    def close(self) -> None:
        """Close the socket and remove its path if no one has replaced it since."""
        self.sock.close()
        try:
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        except OSError:
            pass


def _prepare_directory(path: Path) -> None:
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the socket directory {path.parent}: {exc.strerror or exc}"
        ) from exc


def _remove_stale(path: Path) -> None:
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(existing.st_mode):
        raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(os.fsencode(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ConfigError(f"cannot check the existing socket {path}: {exc.strerror}") from exc
        logger.info("removing the stale socket %s", path)
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise ConfigError(f"another agent is already serving {path}")

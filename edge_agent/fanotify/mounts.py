"""Which mounts may be marked, and switching their ``noexec`` flag.

Marks are filesystem marks (``FAN_MARK_FILESYSTEM``): every exec of a file on that
filesystem is decided, through whichever mount or bind mount or mount namespace it is
reached, so a workload cannot dodge the mark through another mount of the same filesystem.
Hence the rules, each refused with :class:`~edge_agent.fanotify.errors.MountRefused`:

- a workload mount is a mount point (a line of ``/proc/self/mountinfo``), named by an
  absolute path;
- it is not on the root filesystem (the device of ``/``): marking that would put ssh, the
  console, systemd and the agent itself behind the agent;
- no file the agent itself needs (its interpreter, its code, its state directory, its
  holder socket) is on it: the agent must never wait on its own answer;
- each filesystem is listed once.

``noexec`` is what keeps a marked mount closed while no responder runs: set at stop (and by
``ExecStopPost``), cleared only once the marks and the responder are up. mount_setattr(2)
changes just that flag; kernels before 5.12 get a bind remount keeping the other flags.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import edge_agent
from edge_agent.fanotify import _abi
from edge_agent.fanotify.errors import MountRefused

__all__ = [
    "MAX_WORKLOAD_MOUNTS",
    "WorkloadMount",
    "agent_files",
    "check_workload_mounts",
    "is_noexec",
    "mount_points",
    "set_noexec",
]

logger = logging.getLogger(__name__)

MAX_WORKLOAD_MOUNTS = 32
"""Most workload mounts one agent marks."""

MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True, slots=True)
class WorkloadMount:
    """A checked workload mount: its canonical path and the filesystem's device number."""

    path: str
    dev: int


def mount_points(mountinfo: str) -> frozenset[str]:
    """The mount points listed in a ``/proc/PID/mountinfo`` text (octal escapes decoded)."""
    points = set()
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.add(_unescape(fields[4]))
    return frozenset(points)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo``."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        chunk = field[i + 1 : i + 4]
        if field[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def agent_files(extra: Iterable[str | Path] = ()) -> tuple[str, ...]:
    """Paths the agent process needs: its interpreter or frozen binary, the standard library,
    its own code, plus ``extra`` (the state directory, the holder socket's directory)."""
    paths = [
        sys.executable,
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.__file__),
        os.path.dirname(edge_agent.__file__),
        getattr(sys, "_MEIPASS", ""),
        *(str(p) for p in extra),
    ]
    return tuple(dict.fromkeys(os.path.realpath(p) for p in paths if p))


def check_workload_mounts(
    paths: Sequence[str | Path], own_files: Sequence[str], mountinfo: str | None = None
) -> tuple[WorkloadMount, ...]:
    """Check the configured workload mounts; return them canonical, in the given order.

    Raises:
        MountRefused: a path is relative, missing, not a mount point, on the root
            filesystem, holds one of ``own_files``, or repeats a filesystem.
    """
    if not paths:
        raise MountRefused("no workload mount given: name at least one (e.g. /opt/workloads)")
    if len(paths) > MAX_WORKLOAD_MOUNTS:
        raise MountRefused(f"at most {MAX_WORKLOAD_MOUNTS} workload mounts")
    points = mount_points(MOUNTINFO.read_text() if mountinfo is None else mountinfo)
    root_dev = os.stat("/").st_dev
    own = [(path, _dev(path)) for path in own_files]
    checked: list[WorkloadMount] = []
    for given in paths:
        mount = _check_one(str(given), points, root_dev)
        for path, dev in own:
            if dev == mount.dev:
                raise MountRefused(
                    f"{mount.path} is the filesystem that holds the agent's own files ({path}); "
                    "the agent must not sit on a marked mount: move the workloads to their own "
                    "filesystem"
                )
        for other in checked:
            if other.dev == mount.dev:
                raise MountRefused(
                    f"{other.path} and {mount.path} are the same filesystem: list it once"
                )
        checked.append(mount)
    return tuple(checked)


def _check_one(given: str, points: frozenset[str], root_dev: int) -> WorkloadMount:
    if not given.startswith("/"):
        raise MountRefused(f"workload mount {given!r} must be an absolute path")
    path = os.path.realpath(given)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise MountRefused(f"workload mount {given}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise MountRefused(f"workload mount {given} is not a directory")
    if path == "/" or info.st_dev == root_dev:
        raise MountRefused(
            f"{given} is on the root filesystem; exec enforcement never marks the OS root "
            "(ssh, the console, systemd and the agent must stay usable): give workloads their "
            "own filesystem (a partition, loop image or tmpfs) mounted there"
        )
    if path not in points:
        raise MountRefused(
            f"{given} is not a mount point; workloads need their own mount there "
            "(docs/exec-enforcement.md section 2)"
        )
    return WorkloadMount(path, info.st_dev)


def _dev(path: str) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def is_noexec(path: str) -> bool:
    """Whether the mount at ``path`` refuses execution."""
    return bool(os.statvfs(path).f_flag & os.ST_NOEXEC)


def set_noexec(path: str, noexec: bool) -> None:
    """Set or clear ``noexec`` on the mount at ``path`` (nothing else changes).

    Raises:
        OSError: the mount cannot be changed (no CAP_SYS_ADMIN, not a mount).
    """
    try:
        _abi.set_mount_attr(
            path,
            set_flags=_abi.MOUNT_ATTR_NOEXEC if noexec else 0,
            clear_flags=0 if noexec else _abi.MOUNT_ATTR_NOEXEC,
        )
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
        _abi.remount(path, noexec=noexec)
    logger.info("%s is now %s", path, "noexec" if noexec else "exec")

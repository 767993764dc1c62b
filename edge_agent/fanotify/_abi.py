"""The kernel interface, explicit: fanotify and mount attributes through ctypes against libc.

No maintained Python binding answers permission events (pyfanotify's response path is
unfinished), so the calls, constants and struct layouts are spelled out here from
``linux/fanotify.h`` and ``linux/mount.h`` and pinned by tests against the header.

Layouts (identical on every architecture: the 64-bit mask is ``__aligned_u64``)::

    struct fanotify_event_metadata {   /* FAN_EVENT_METADATA_LEN = 24 */
        __u32 event_len;               /*  0 */
        __u8  vers;                    /*  4: FANOTIFY_METADATA_VERSION = 3 */
        __u8  reserved;                /*  5 */
        __u16 metadata_len;            /*  6 */
        __aligned_u64 mask;            /*  8 */
        __s32 fd;                      /* 16: FAN_NOFD = -1 when there is none */
        __s32 pid;                     /* 20 */
    };
    struct fanotify_response { __s32 fd; __u32 response; };   /* 8 bytes */

:func:`parse_events` refuses anything it does not understand (another ``vers``, a length
that does not add up) with :class:`~edge_agent.fanotify.errors.AbiError`: a responder that
cannot read the kernel's events must stop, never guess.

This module does no logging and keeps no state besides the loaded libc.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import NamedTuple

from edge_agent.fanotify.errors import AbiError

__all__ = [
    "AT_FDCWD",
    "EVENT_BUFFER_BYTES",
    "EVENT_FILE_FLAGS",
    "FANOTIFY_METADATA_VERSION",
    "FAN_ALLOW",
    "FAN_CLASS_CONTENT",
    "FAN_CLOEXEC",
    "FAN_DENY",
    "FAN_EVENT_METADATA_LEN",
    "FAN_MARK_ADD",
    "FAN_MARK_FILESYSTEM",
    "FAN_MARK_REMOVE",
    "FAN_NOFD",
    "FAN_NONBLOCK",
    "FAN_OPEN_EXEC_PERM",
    "FAN_Q_OVERFLOW",
    "FAN_RESPONSE_LEN",
    "FAN_UNLIMITED_QUEUE",
    "GROUP_INIT_FLAGS",
    "METADATA",
    "MOUNT_ATTR_NOEXEC",
    "RESPONSE",
    "Event",
    "fanotify_init",
    "fanotify_mark",
    "is_unsupported",
    "pack_response",
    "parse_events",
    "remount",
    "set_mount_attr",
]

FAN_OPEN_EXEC_PERM = 0x0004_0000
"""A file is being opened for execution (execve, the ELF interpreter, uselib)."""
FAN_Q_OVERFLOW = 0x0000_4000

FAN_CLOEXEC = 0x01
FAN_NONBLOCK = 0x02
FAN_CLASS_CONTENT = 0x04
FAN_UNLIMITED_QUEUE = 0x10
"""Without it a full queue (16,384 events) drops events, and a dropped permission event is
an allowed one."""

FAN_MARK_ADD = 0x001
FAN_MARK_REMOVE = 0x002
FAN_MARK_FILESYSTEM = 0x100
"""Mark the whole filesystem (superblock): every mount of it, in every mount namespace."""

FAN_ALLOW = 0x01
FAN_DENY = 0x02
FAN_NOFD = -1

FANOTIFY_METADATA_VERSION = 3
AT_FDCWD = -100
MOUNT_ATTR_NOEXEC = 0x08

GROUP_INIT_FLAGS = FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE
"""Permission events, close-on-exec (a spawned program must never hold the group: a copy
blocked in its own exec would keep the group alive), non-blocking reads (the responder polls
and drains), and no queue limit."""

EVENT_FILE_FLAGS = os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC
"""How the kernel opens each event's file for us: read-only (hashing), close-on-exec."""

METADATA = struct.Struct("=IBBHQii")
"""``struct fanotify_event_metadata``, standard sizes, no padding (offsets 0, 4, 5, 6, 8,
16, 20)."""
FAN_EVENT_METADATA_LEN = METADATA.size
RESPONSE = struct.Struct("=iI")
"""``struct fanotify_response``."""
FAN_RESPONSE_LEN = RESPONSE.size

EVENT_BUFFER_BYTES = 64 * 1024
"""Bytes read per ``read()`` of the group: up to 2,730 events without info records."""

_SYS_MOUNT_SETATTR = 442
"""The same number on every architecture (syscalls from 424 on share one table)."""
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
_MS_REMOUNT, _MS_BIND = 0x20, 0x1000
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 0x400, 0x800, 0x20_0000
_KEPT_ON_REMOUNT = (
    (os.ST_RDONLY, _MS_RDONLY),
    (os.ST_NOSUID, _MS_NOSUID),
    (os.ST_NODEV, _MS_NODEV),
    (os.ST_NOATIME, _MS_NOATIME),
    (os.ST_NODIRATIME, _MS_NODIRATIME),
    (os.ST_RELATIME, _MS_RELATIME),
)


class Event(NamedTuple):
    """One event as the kernel reported it: what happened, the open file, who asked."""

    mask: int
    fd: int
    pid: int


class _MountAttr(ctypes.Structure):
    """``struct mount_attr`` (MOUNT_ATTR_SIZE_VER0 = 32)."""

    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = (ctypes.c_uint, ctypes.c_uint)
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = (
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.c_char_p,
)
_libc.fanotify_mark.restype = ctypes.c_int
_libc.mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
)
_libc.mount.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def fanotify_init(flags: int = GROUP_INIT_FLAGS, event_f_flags: int = EVENT_FILE_FLAGS) -> int:
    """A new fanotify group; its file descriptor.

    Raises:
        OSError: ``EPERM`` without CAP_SYS_ADMIN (or a seccomp filter forbids it),
            ``EINVAL``/``ENOSYS`` when the kernel lacks fanotify or permission events.
    """
    return _check(_libc.fanotify_init(flags, event_f_flags), "fanotify_init")


def fanotify_mark(group: int, flags: int, mask: int, path: str) -> None:
    """Add or remove ``mask`` on the object ``path`` names (``flags`` says which object).

    Raises:
        OSError: ``EINVAL`` when the kernel does not know the event (no
            CONFIG_FANOTIFY_ACCESS_PERMISSIONS), ``ENOENT``/``ENOTDIR`` for a bad path.
    """
    _check(_libc.fanotify_mark(group, flags, mask, AT_FDCWD, os.fsencode(path)), "fanotify_mark")


def parse_events(data: bytes) -> list[Event]:
    """The events in one ``read()`` of a group, in order.

    Raises:
        AbiError: an event of another metadata version, or lengths that do not add up.
    """
    events: list[Event] = []
    size = len(data)
    offset = 0
    while size - offset >= FAN_EVENT_METADATA_LEN:
        event_len, vers, _, metadata_len, mask, fd, pid = METADATA.unpack_from(data, offset)
        if vers != FANOTIFY_METADATA_VERSION:
            raise AbiError(
                f"the kernel reports fanotify metadata version {vers}; this agent reads only "
                f"version {FANOTIFY_METADATA_VERSION}"
            )
        if not FAN_EVENT_METADATA_LEN <= metadata_len <= event_len <= size - offset:
            raise AbiError(
                f"malformed fanotify event at byte {offset}: event_len {event_len}, "
                f"metadata_len {metadata_len}, {size - offset} bytes left"
            )
        events.append(Event(mask, fd, pid))
        offset += event_len
    if offset != size:
        raise AbiError(f"{size - offset} trailing bytes after the last fanotify event")
    return events


def pack_response(fd: int, allow: bool) -> bytes:
    """The ``struct fanotify_response`` answering the event whose file is ``fd``."""
    return RESPONSE.pack(fd, FAN_ALLOW if allow else FAN_DENY)


def set_mount_attr(path: str, *, set_flags: int, clear_flags: int) -> None:
    """Set and clear ``MOUNT_ATTR_*`` flags on the mount at ``path`` (mount_setattr(2),
    Linux 5.12+): only those flags change, atomically.

    Raises:
        OSError: ``ENOSYS`` on older kernels (use :func:`remount`), ``EPERM`` without
            CAP_SYS_ADMIN, ``EINVAL`` when ``path`` is not a mount.
    """
    attr = _MountAttr(set_flags, clear_flags, 0, 0)
    _check(
        _libc.syscall(
            ctypes.c_long(_SYS_MOUNT_SETATTR),
            ctypes.c_int(AT_FDCWD),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.c_uint(0),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        ),
        f"mount_setattr {path}",
    )


def remount(path: str, *, noexec: bool) -> None:
    """Bind-remount ``path`` with or without ``noexec``, keeping its other per-mount flags
    (for kernels without mount_setattr).

    Raises:
        OSError: as mount(2).
    """
    current = os.statvfs(path).f_flag
    flags = _MS_REMOUNT | _MS_BIND | (_MS_NOEXEC if noexec else 0)
    for statvfs_flag, mount_flag in _KEPT_ON_REMOUNT:
        if current & statvfs_flag:
            flags |= mount_flag
    _check(_libc.mount(None, os.fsencode(path), None, flags, None), f"remount {path}")


def is_unsupported(exc: OSError) -> bool:
    """Whether ``exc`` says the kernel lacks the call or the flag (not a permission error)."""
    return exc.errno in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)

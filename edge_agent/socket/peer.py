"""Who is asking: the caller's identity from the kernel, as SPIFFE/SPIRE's unix attestor does.

Nothing here trusts the request. For a connected Unix socket the kernel reports the peer's
pid, uid and gid at ``connect()`` time (``SO_PEERCRED``); the executable comes from
``/proc/PID/exe`` and is hashed (SHA-256) from the very file the process runs, cached by
(device, inode, size, mtime, ctime) so an unchanged binary is hashed once.

The race, and how it is closed: a pid is a name, not a handle. Between ``connect()`` and the
reads of ``/proc/PID`` the process can exit and its pid be reused, or it can ``execve``
another program. So attestation:

1. takes a pidfd for the peer (``SO_PEERPIDFD``, Linux >= 6.5), a handle to the exact
   process that connected, when the kernel has it;
2. reads ``/proc/PID/stat`` (start time) and ``/proc/PID/status`` (effective uid), and the
   uid must equal the one ``SO_PEERCRED`` reported;
3. opens ``/proc/PID/exe`` (the running file itself), reads its path, checks that path is
   text (UTF-8: the caller is named by it in policy, answers and the lineage) and that it
   is on disk that same file (not deleted, not replaced, same mount namespace), and hashes
   it;
4. re-reads the start time, uid and executable: any change denies; with a pidfd, a process
   that has exited by then denies too (alive after step 3 means the pid named it
   throughout). Without a pidfd the start time re-check is what detects a reused pid.

Every later request on the connection re-checks cheaply (:meth:`PeerProcess.check`): the
process is still alive (pidfd, or same start time) and still runs the same file. A caller
that ``execve``s another program keeps its socket but loses its identity.

What this does not close (docs/socket.md section 3): a process that connects and then
execs another program *before* the agent accepts the connection is attributed the later
program, as in SPIRE; policies for privileged workloads should also name a dedicated uid.
The agent must be able to read other users' ``/proc/PID/exe`` (root or
``CAP_SYS_PTRACE``), share the workloads' PID and mount namespaces, and ``user:`` selectors
come from the passwd database at attestation time (a uid without an entry, or whose name
is not UTF-8, gets none).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import pwd
import select
import socket
import stat
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

from edge_agent.socket.errors import IdentityError
from edge_agent.socket.wire import IdentityResult

__all__ = [
    "EXE_CACHE_ENTRIES",
    "MAX_EXE_BYTES",
    "ExeHashCache",
    "FileKey",
    "PeerIdentity",
    "PeerProcess",
    "attest",
]

logger = logging.getLogger(__name__)

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
"""Linux's option number (asm-generic/socket.h); Python 3.11 does not define the constant."""

MAX_EXE_BYTES = 512 * 1024 * 1024
"""Largest executable the agent hashes, in bytes: bounds the time one attestation takes."""

EXE_CACHE_ENTRIES = 512
"""Executables whose digest is remembered (least recently used dropped first)."""

_HASH_CHUNK_BYTES = 1024 * 1024
_USER_CACHE_ENTRIES = 1024
_CRED = struct.Struct("3i")
_pidfd_supported = True
_user_names: dict[int, str | None] = {}


@dataclass(frozen=True, slots=True)
class FileKey:
    """What identifies one version of a file: a changed binary changes at least one field
    (ctime is set by the kernel on every write and cannot be set back by the owner)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileKey:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The caller, as the kernel reports it."""

    pid: int
    uid: int
    gid: int
    user: str | None
    exe: str
    exe_sha256: str
    start_time: int
    exe_key: FileKey

    @property
    def subject(self) -> str:
        """The most specific name the policy sees: the executable's path."""
        return f"exe:{self.exe}"

    @property
    def selectors(self) -> tuple[str, ...]:
        """Every other identity the caller holds, in a fixed order."""
        user = (f"user:{self.user}",) if self.user is not None else ()
        return (f"uid:{self.uid}", f"gid:{self.gid}", *user, f"exe-sha256:{self.exe_sha256}")

    def as_result(self) -> IdentityResult:
        return IdentityResult(self.pid, self.uid, self.gid, self.subject, self.selectors)


class ExeHashCache:
    """SHA-256 of executables by :class:`FileKey`, bounded, safe to share between threads."""

    def __init__(self, entries: int = EXE_CACHE_ENTRIES) -> None:
        self._entries = entries
        self._digests: OrderedDict[FileKey, str] = OrderedDict()
        self._lock = threading.Lock()

    def digest(self, fd: int, key: FileKey) -> str:
        """The hex digest of the open file ``fd`` whose stat gave ``key``.

        Raises:
            IdentityError: the file is too large, unreadable, or changed while hashed.
        """
        with self._lock:
            cached = self._digests.get(key)
            if cached is not None:
                self._digests.move_to_end(key)
                return cached
        digest = _hash_fd(fd, key)
        with self._lock:
            self._digests[key] = digest
            while len(self._digests) > self._entries:
                self._digests.popitem(last=False)
        return digest


def _hash_fd(fd: int, key: FileKey) -> str:
    if key.size > MAX_EXE_BYTES:
        raise IdentityError(
            f"the caller's executable is {key.size} bytes, over the {MAX_EXE_BYTES}-byte "
            "hashing limit"
        )
    sha = hashlib.sha256()
    offset = 0
    try:
        while chunk := os.pread(fd, _HASH_CHUNK_BYTES, offset):
            sha.update(chunk)
            offset += len(chunk)
            if offset > MAX_EXE_BYTES:
                raise IdentityError("the caller's executable grew while it was hashed")
        after = FileKey.of(os.fstat(fd))
    except OSError as exc:
        raise IdentityError(f"cannot read the caller's executable: {exc.strerror}") from exc
    if after != key or offset != key.size:
        raise IdentityError("the caller's executable changed on disk while it was hashed")
    return sha.hexdigest()


class PeerProcess:
    """An attested peer: its identity and, where the kernel has it, a pidfd that pins it.

    Owns the pidfd: call :meth:`close` when the connection ends.
    """

    def __init__(self, identity: PeerIdentity, pidfd: int | None) -> None:
        self.identity = identity
        self._pidfd = pidfd
        self._exe_link = f"/proc/{identity.pid}/exe"
        key = identity.exe_key
        self._exe_stamp = (key.dev, key.ino, key.size, key.mtime_ns, key.ctime_ns)
        """:attr:`identity`'s executable as the fields :meth:`check` compares, taken once:
        the check runs before every request."""
        self._poll: select.poll | None = None
        if pidfd is not None:
            self._poll = select.poll()
            self._poll.register(pidfd, select.POLLIN)

    @property
    def pinned(self) -> bool:
        """Whether a pidfd pins the process (otherwise the start time does)."""
        return self._pidfd is not None

    def check(self) -> None:
        """Re-check, cheaply, that the peer is the process that was attested, still running
        the same executable.

        Raises:
            IdentityError: it exited, its pid names another process, or it exec'd.
        """
        identity = self.identity
        if self._poll is not None:
            if self._poll.poll(0):
                raise IdentityError("the calling process has exited")
        elif _start_time_and_euid(identity.pid)[0] != identity.start_time:
            raise IdentityError("the calling process has exited (its pid names another process)")
        try:
            st = os.stat(self._exe_link)
        except OSError as exc:
            raise IdentityError("the calling process has exited") from exc
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != self._exe_stamp:
            raise IdentityError(
                "the calling process has executed another program since it connected; connect again"
            )

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
            self._poll = None


def attest(sock: socket.socket, cache: ExeHashCache) -> PeerProcess:
    """Identify the process at the other end of the connected Unix socket ``sock``.

    Blocking (reads ``/proc``, may hash a binary): run it off the event loop.

    Raises:
        IdentityError: any step fails or any re-check differs (the caller is then refused).
    """
    pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    if pid <= 0:
        raise IdentityError(
            "the kernel reports no process id for the caller (is it in another PID namespace?)"
        )
    pidfd = _peer_pidfd(sock)
    try:
        identity = _read_identity(pid, uid, gid, cache)
        if pidfd is not None and _exited(pidfd):
            raise IdentityError("the calling process exited while it was identified")
    except BaseException:
        if pidfd is not None:
            os.close(pidfd)
        raise
    return PeerProcess(identity, pidfd)


def _read_identity(pid: int, uid: int, gid: int, cache: ExeHashCache) -> PeerIdentity:
    start_time, euid = _start_time_and_euid(pid)
    if euid != uid:
        raise IdentityError(
            f"process {pid} runs as uid {euid}, not the uid {uid} it connected with "
            "(its pid was reused, or it changed uid)"
        )
    try:
        exe_fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise IdentityError(_proc_failure(pid, "executable", exc)) from exc
    try:
        key = FileKey.of(os.fstat(exe_fd))
        path = _exe_path(pid, key)
        digest = cache.digest(exe_fd, key)
    finally:
        os.close(exe_fd)
    if _start_time_and_euid(pid) != (start_time, euid) or _exe_key(pid) != key:
        raise IdentityError(f"process {pid} changed while it was identified")
    return PeerIdentity(pid, uid, gid, _user_name(uid), path, digest, start_time, key)


def _exe_path(pid: int, key: FileKey) -> str:
    try:
        path = os.readlink(f"/proc/{pid}/exe")
    except OSError as exc:
        raise IdentityError(_proc_failure(pid, "executable", exc)) from exc
    if not _is_text(path):
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise IdentityError(
            f"the caller's executable path {shown} is not valid UTF-8, and the agent names "
            "callers by that path (policy, answers, lineage); rename the program"
        )
    if path.endswith(" (deleted)"):
        raise IdentityError(
            f"the caller's executable {path[: -len(' (deleted)')]} was deleted or replaced "
            "since it started; restart the program"
        )
    try:
        on_disk = os.stat(path)
    except OSError as exc:
        raise IdentityError(
            f"the caller's executable {path} is not visible to the agent ({exc.strerror}); "
            "the agent and its workloads must share a mount namespace"
        ) from exc
    if not stat.S_ISREG(on_disk.st_mode) or (on_disk.st_dev, on_disk.st_ino) != (key.dev, key.ino):
        raise IdentityError(
            f"{path} on disk is not the file the caller runs (replaced since it started, or "
            "another mount namespace)"
        )
    return path


def _exe_key(pid: int) -> FileKey:
    try:
        return FileKey.of(os.stat(f"/proc/{pid}/exe"))
    except OSError as exc:
        raise IdentityError(_proc_failure(pid, "executable", exc)) from exc


def _start_time_and_euid(pid: int) -> tuple[int, int]:
    """Start time (clock ticks after boot, field 22 of /proc/PID/stat) and effective uid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat_line = handle.read()
        with open(f"/proc/{pid}/status", "rb") as handle:
            status = handle.read()
    except OSError as exc:
        raise IdentityError(_proc_failure(pid, "status", exc)) from exc
    try:
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        start_time = int(stat_line[stat_line.rindex(b")") + 2 :].split()[19])
        uid_line = next(line for line in status.splitlines() if line.startswith(b"Uid:"))
        euid = int(uid_line.split()[2])
    except (ValueError, IndexError, StopIteration) as exc:
        raise IdentityError(f"cannot parse /proc/{pid}/stat or status") from exc
    return start_time, euid


def _proc_failure(pid: int, what: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError | ProcessLookupError):
        return f"the calling process {pid} exited before it could be identified"
    if isinstance(exc, PermissionError):
        return (
            f"the agent may not read the {what} of process {pid}: it needs to run as root "
            "or with CAP_SYS_PTRACE"
        )
    return f"cannot read the {what} of process {pid}: {exc.strerror}"


def _peer_pidfd(sock: socket.socket) -> int | None:
    global _pidfd_supported
    if not _pidfd_supported:
        return None
    try:
        return int(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD))
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise IdentityError("the calling process exited before it could be identified") from exc
        if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL, errno.EOPNOTSUPP):
            raise IdentityError(f"cannot pin the calling process: {exc.strerror}") from exc
        logger.info("SO_PEERPIDFD unavailable (%s); identifying callers by start time", exc)
        _pidfd_supported = False
        return None


def _exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _user_name(uid: int) -> str | None:
    if uid in _user_names:
        return _user_names[uid]
    try:
        name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    if name is not None and not _is_text(name):
        name = None
    if len(_user_names) >= _USER_CACHE_ENTRIES:
        _user_names.clear()
    _user_names[uid] = name
    return name


def _is_text(name: str) -> bool:
    """Whether ``name`` (from the kernel or passwd: bytes decoded with surrogateescape)
    was valid UTF-8, so that it can be encoded wherever an identity goes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

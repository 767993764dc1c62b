"""Who execs what: the file of a permission event and the process asking, from the kernel.

The request a permission event becomes is the one ``edge-agent exec`` sends through the
socket, so the same rules govern both:

- **subject** ``exe:/PATH``: the program of the process calling ``execve`` (during the
  permission wait the kernel has not replaced it yet), with the **selectors** the socket
  gives its callers (:class:`edge_agent.socket.peer.PeerIdentity`): ``uid:``, ``gid:``
  (effective ids: the owner of ``/proc/PID``), ``user:`` and ``exe-sha256:``;
- **action** ``exec``; **resource** the path of the file being executed, read from the
  event's own descriptor (``/proc/self/fd/N``: symlinks already resolved by the kernel);
- **context** ``sha256``: the file's digest, as ``edge-agent exec`` sends it.

Everything here runs on the responder thread, between an event and its answer, so it does no
logging, no name service lookup (``user:`` names come from a table the enforcer refreshes off
this path) and no path walk on the hot path. It reads ``/proc`` and ``fstat``; it reads file
contents only to hash a file version it has not seen, which is cached by
:class:`~edge_agent.socket.peer.FileKey` (device, inode, size, mtime, ctime) so an unchanged
binary is hashed once and a binary rewritten in place is hashed and decided again. The
**hashing budget**: a file larger than ``max_hash_bytes`` is not hashed on the answer path;
its request carries no ``sha256`` (and its caller no ``exe-sha256:``), so a rule that pins
content never matches it and path rules decide alone.

Failures raise :class:`~edge_agent.socket.errors.IdentityError`; the caller denies.
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from edge_agent.protocol.request import Request
from edge_agent.socket.errors import IdentityError
from edge_agent.socket.exec_gate import DIGEST_CONTEXT_KEY
from edge_agent.socket.peer import ExeHashCache, FileKey

__all__ = [
    "DEFAULT_MAX_HASH_BYTES",
    "EXEC_ACTION",
    "Caller",
    "ExecIdentifier",
]

EXEC_ACTION = "exec"

DEFAULT_MAX_HASH_BYTES = 64 * 1024 * 1024
"""Largest file hashed while an exec waits, in bytes (about 0.2 s of SHA-256 on a small
ARM core); larger files are decided by path alone."""

HASH_CACHE_ENTRIES = 4096
"""File versions whose digest is remembered (events' files and callers' programs)."""

REQUEST_CACHE_ENTRIES = 1024
"""Requests remembered by the facts they were built from (all forgotten when full)."""

CALLER_CACHE_ENTRIES = 1024
"""Caller programs (path and file version) checked against the file on disk, with their
digest."""


_ProgramVersion = tuple[str, int, int, int, int, int]
"""A caller's program: its path and file version (device, inode, size, mtime, ctime)."""

_Facts = tuple[str, int, int, int, int, int, int, int, str, int, int, int, int, int]
"""What the kernel says about one exec: the file's path and version, the caller's effective
uid and gid, its program's path and version."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The process calling ``execve``, as the kernel reports it."""

    pid: int
    uid: int
    gid: int
    user: str | None
    exe: str
    exe_sha256: str | None

    @property
    def subject(self) -> str:
        return f"exe:{self.exe}"

    @property
    def selectors(self) -> tuple[str, ...]:
        """The socket's selectors, in its order (``exe-sha256:`` only when hashed)."""
        user = (f"user:{self.user}",) if self.user is not None else ()
        digest = (f"exe-sha256:{self.exe_sha256}",) if self.exe_sha256 is not None else ()
        return (f"uid:{self.uid}", f"gid:{self.gid}", *user, *digest)


class ExecIdentifier:
    """Turns (event file descriptor, pid) into a :class:`Request`; one per responder.

    ``users`` maps uids to login names; the enforcer replaces it whole, off the answer path
    (a new table forgets every request built under the old one).
    """

    def __init__(self, max_hash_bytes: int = DEFAULT_MAX_HASH_BYTES) -> None:
        if max_hash_bytes < 0:
            raise ValueError("max_hash_bytes is not negative")
        self.max_hash_bytes = max_hash_bytes
        self.users: Mapping[int, str] = {}
        self._digests = ExeHashCache(HASH_CACHE_ENTRIES)
        self._callers: OrderedDict[_ProgramVersion, str | None] = OrderedDict()
        self._subjects: dict[tuple[str, str | None], tuple[str, tuple[str, ...]]] = {}
        self._ids: dict[tuple[int, int, str | None], tuple[str, ...]] = {}
        self._requests: dict[_Facts, Request] = {}
        self._requests_users: Mapping[int, str] = self.users

    def request(self, fd: int, pid: int) -> Request:
        """The exec request of the event whose file is ``fd``, asked by process ``pid``.

        Every exec reads its facts from the kernel afresh: the file's path and version
        (device, inode, size, mtime, ctime), the caller's effective ids, its program's path
        and version. A request already built from exactly these facts under the same user
        table is given again (bounded): it holds nothing those facts do not determine, so
        only a file or program version not seen is hashed and checked, and only new facts
        build a new request.

        Raises:
            IdentityError: the file or the process cannot be identified.
        """
        info, path = _regular_file(fd)
        uid, gid, link, exe, program = self._process(pid)
        facts = (
            path,
            info.st_dev,
            info.st_ino,
            info.st_size,
            info.st_mtime_ns,
            info.st_ctime_ns,
            uid,
            gid,
            exe,
            program.st_dev,
            program.st_ino,
            program.st_size,
            program.st_mtime_ns,
            program.st_ctime_ns,
        )
        users = self.users
        if users is not self._requests_users:
            self._requests.clear()
            self._requests_users = users
        known = self._requests.get(facts)
        if known is not None:
            return known
        made = self._build(fd, info, path, uid, gid, link, exe, program, users)
        if len(self._requests) >= REQUEST_CACHE_ENTRIES:
            self._requests.clear()
        self._requests[facts] = made
        return made

    def _build(
        self,
        fd: int,
        info: os.stat_result,
        path: str,
        uid: int,
        gid: int,
        link: str,
        exe: str,
        program: os.stat_result,
        users: Mapping[int, str],
    ) -> Request:
        """The request of facts not seen: the file hashed (within the budget), the program
        checked against the file on disk and hashed, as :meth:`file` and :meth:`caller`."""
        key = FileKey.of(info)
        digest = None if key.size > self.max_hash_bytes else self._digests.digest(fd, key)
        exe_digest = self._program_digest_of(link, exe, program)
        subject, selector = self._subjects.get((exe, exe_digest)) or self._subject(exe, exe_digest)
        user = users.get(uid)
        ids = self._ids.get((uid, gid, user)) or self._id_selectors(uid, gid, user)
        context = ((DIGEST_CONTEXT_KEY, digest),) if digest is not None else ()
        return Request(subject, EXEC_ACTION, path, context, ids + selector)

    def file(self, fd: int) -> tuple[str, str | None]:
        """The path and SHA-256 (``None``: over the hashing budget) of the open file ``fd``.

        Raises:
            IdentityError: not a regular file, or unreadable.
        """
        info, path = _regular_file(fd)
        key = FileKey.of(info)
        if key.size > self.max_hash_bytes:
            return path, None
        return path, self._digests.digest(fd, key)

    def caller(self, pid: int) -> Caller:
        """The process ``pid`` (blocked in ``execve``, so it cannot exit unnoticed: a killed
        waiter's event is withdrawn and its answer goes nowhere).

        Raises:
            IdentityError: it has gone, or its program cannot be read or was replaced.
        """
        uid, gid, link, exe, program = self._process(pid)
        digest = self._program_digest_of(link, exe, program)
        return Caller(pid, uid, gid, self.users.get(uid), exe, digest)

    def _process(self, pid: int) -> tuple[int, int, str, str, os.stat_result]:
        """The effective uid and gid of process ``pid``, the ``/proc`` link to its program,
        the program's path and its ``stat``.

        Raises:
            IdentityError: as :meth:`caller`.
        """
        if pid <= 0:
            raise IdentityError(
                "the kernel reports no process id for the exec (another PID namespace?)"
            )
        uid, gid = _effective_ids(pid)
        link = f"/proc/{pid}/exe"
        try:
            exe = os.readlink(link)
            info = os.stat(link)
        except OSError as exc:
            raise IdentityError(f"the process {pid} asking to exec has gone") from exc
        return uid, gid, link, exe, info

    def _program_digest_of(self, link: str, exe: str, info: os.stat_result) -> str | None:
        """The digest of the program ``exe`` (``None``: over the hashing budget), checked
        and hashed once per program version."""
        # The file version as a plain tuple: a FileKey is made only for a program not seen.
        known = (exe, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        callers = self._callers
        if known in callers:
            callers.move_to_end(known)
            return callers[known]
        return self._identify_program(link, FileKey.of(info), known)

    def _subject(self, exe: str, digest: str | None) -> tuple[str, tuple[str, ...]]:
        """The subject and ``exe-sha256:`` selector of a program, remembered (bounded)."""
        made = (f"exe:{exe}", (f"exe-sha256:{digest}",) if digest is not None else ())
        if len(self._subjects) >= CALLER_CACHE_ENTRIES:
            self._subjects.clear()
        self._subjects[(exe, digest)] = made
        return made

    def _id_selectors(self, uid: int, gid: int, user: str | None) -> tuple[str, ...]:
        """The ``uid:``, ``gid:`` and ``user:`` selectors, remembered (bounded)."""
        made = (f"uid:{uid}", f"gid:{gid}", *((f"user:{user}",) if user is not None else ()))
        if len(self._ids) >= CALLER_CACHE_ENTRIES:
            self._ids.clear()
        self._ids[(uid, gid, user)] = made
        return made

    def _identify_program(self, link: str, key: FileKey, known: _ProgramVersion) -> str | None:
        """Check that the path ``/proc/PID/exe`` names is that very file on disk (not
        deleted or replaced, same mount namespace), as the socket checks its callers, and
        hash it (within the budget); remember both."""
        exe = known[0]
        if exe.endswith(" (deleted)"):
            raise IdentityError(
                f"the program {exe[: -len(' (deleted)')]} asking to exec was deleted or replaced "
                "since it started; restart it"
            )
        try:
            on_disk = os.stat(exe)
        except OSError as exc:
            raise IdentityError(
                f"the program {exe} asking to exec is not visible to the agent "
                f"({exc.strerror}); the agent must share the workloads' mount namespace"
            ) from exc
        if (on_disk.st_dev, on_disk.st_ino) != (key.dev, key.ino):
            raise IdentityError(f"{exe} on disk is not the program asking to exec")
        digest = self._program_digest(link, key) if key.size <= self.max_hash_bytes else None
        self._callers[known] = digest
        while len(self._callers) > CALLER_CACHE_ENTRIES:
            self._callers.popitem(last=False)
        return digest

    def _program_digest(self, link: str, key: FileKey) -> str:
        try:
            fd = os.open(link, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise IdentityError(f"cannot read the program asking to exec: {exc.strerror}") from exc
        try:
            return self._digests.digest(fd, key)
        finally:
            os.close(fd)


def _effective_ids(pid: int) -> tuple[int, int]:
    """The effective uid and gid of process ``pid``: the owner of its ``/proc/PID``
    directory, which the kernel reports from the process's credentials at each ``stat``
    (``task_dump_owner``: for this directory alone, even for a process that is not
    dumpable). One ``stat`` instead of having ``/proc/PID/status`` formatted and parsed."""
    try:
        info = os.stat(f"/proc/{pid}")
    except OSError as exc:
        raise IdentityError(f"the process {pid} asking to exec has gone") from exc
    return info.st_uid, info.st_gid


def _regular_file(fd: int) -> tuple[os.stat_result, str]:
    """The status and path of the open file ``fd``, which must be a regular file.

    Raises:
        IdentityError: not a regular file, or unreadable.
    """
    try:
        info = os.fstat(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as exc:
        raise IdentityError(f"cannot read the file being executed: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise IdentityError(f"{path} is not a regular file")
    return info, path

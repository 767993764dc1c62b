"""The second holder of the fanotify group: a responder crash blocks execs, never allows them.

The kernel allows every waiting exec once the last descriptor of a group closes, and a
process that dies closes its descriptors. So the agent never holds the group alone: at
start it spawns this small process (``edge-agent enforce-holder``), which keeps a copy of
the group and does nothing else. Then:

- **the agent runs**: the holder waits. The agent is connected to it (a Unix
  ``SOCK_SEQPACKET`` socket, root only), and tells it which mounts are marked, whether they
  are enforced and how many descriptors the agent may hold (:class:`HolderInfo`).
- **the agent dies** (crash, SIGKILL, OOM): the connection drops, the group stays alive
  through the holder, and every exec on the marked mounts waits: blocked, not allowed. A
  restarted agent connects (:meth:`HolderLink.attach`), receives the same group
  (``SCM_RIGHTS``), answers DENY to everything the dead agent had read and not answered
  (:func:`~edge_agent.fanotify.responder.sweep_deny`) and to everything queued
  (:func:`~edge_agent.fanotify.responder.drain_deny`), then serves new events.
- **no agent comes back** within ``recover_s`` (the restart cap), or the holder is told to
  stop (SIGTERM, SIGINT, SIGHUP: systemd stopping the unit): it fails closed without
  hanging anyone: ``noexec`` on every enforced mount (new execs fail at once with
  ``EACCES``; a waiting exec re-checks ``noexec`` after its answer and fails too), DENY to
  what waits, then it closes the group and exits.
- **the agent stops cleanly**: it sends ``release`` after doing the same itself; the holder
  closes its copy and exits.

A second agent connecting while one is attached is refused (the connection is closed with
no answer).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge_agent.fanotify.errors import HolderError
from edge_agent.fanotify.mounts import set_noexec
from edge_agent.fanotify.responder import drain_deny, sweep_deny

__all__ = [
    "ATTACH_TIMEOUT_S",
    "DEFAULT_HOLDER_SOCKET",
    "DEFAULT_RECOVER_S",
    "HolderInfo",
    "HolderLink",
    "descriptor_limit",
    "serve",
]

logger = logging.getLogger(__name__)

DEFAULT_HOLDER_SOCKET = Path("/run/edge-agent/exec-holder.sock")
DEFAULT_RECOVER_S = 60.0
"""How long the holder keeps workload execs waiting for a restarted agent before it fails
closed with ``noexec``."""
ATTACH_TIMEOUT_S = 10.0
MAX_SWEEP_FDS = 1 << 20
_MESSAGE_BYTES = 65536


@dataclass(frozen=True, slots=True)
class HolderInfo:
    """What the holder must know to fail closed in the agent's place."""

    mounts: list[str] = field(default_factory=list)
    enforce: bool = True
    sweep_fds: int = 1024
    """Descriptor numbers the agent may use: events it read carry numbers below this."""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> HolderInfo:
        """Raises ``HolderError`` for anything but a well-formed info object."""
        try:
            value = json.loads(data)
            mounts, enforce, sweep = value["mounts"], value["enforce"], value["sweep_fds"]
        except (ValueError, KeyError, TypeError) as exc:
            raise HolderError(f"malformed message from the exec holder: {exc}") from exc
        if (
            not isinstance(mounts, list)
            or not all(isinstance(m, str) and m.startswith("/") for m in mounts)
            or not isinstance(enforce, bool)
            or not isinstance(sweep, int)
            or not 0 <= sweep <= MAX_SWEEP_FDS
        ):
            raise HolderError("malformed holder info")
        return cls(mounts, enforce, sweep)


def descriptor_limit() -> int:
    """This process's descriptor limit (soft), capped for sweeping."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_SWEEP_FDS if soft == resource.RLIM_INFINITY else min(soft, MAX_SWEEP_FDS)


def holder_command() -> list[str]:
    """How to start ``edge-agent enforce-holder`` from this process (frozen or not)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "enforce-holder"]
    return [sys.executable, "-m", "edge_agent.cli", "enforce-holder"]


class HolderLink:
    """The agent's connection to its holder, and the group received through it."""

    def __init__(
        self,
        sock: socket.socket,
        group: int,
        info: HolderInfo,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.group = group
        self.info = info
        """What the holder knew when we attached (a previous agent's mounts, on adoption)."""
        self.process = process
        """The holder, when this process started it (``None``: adopted from a dead agent)."""
        self._sock = sock

    @classmethod
    def attach(cls, path: Path, timeout_s: float = ATTACH_TIMEOUT_S) -> HolderLink | None:
        """Connect to a holder listening at ``path`` and receive its group; ``None`` when no
        holder listens there (a stale socket file is removed).

        Raises:
            HolderError: a holder is there but refused us (another agent is attached) or
                did not answer in time.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            _remove_stale(path)
            return None
        except OSError as exc:
            sock.close()
            raise HolderError(f"cannot reach the exec holder at {path}: {exc.strerror}") from exc
        sock.settimeout(timeout_s)
        try:
            message, fds, _, _ = socket.recv_fds(sock, _MESSAGE_BYTES, 1)
        except OSError as exc:
            sock.close()
            raise HolderError(f"the exec holder at {path} did not answer: {exc}") from exc
        if not message or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            sock.close()
            raise HolderError(
                f"the exec holder at {path} refused this agent: another agent holds exec "
                "enforcement (stop it first)"
            )
        try:
            info = HolderInfo.decode(message)
        except HolderError:
            os.close(fds[0])
            sock.close()
            raise
        sock.settimeout(None)
        return cls(sock, fds[0], info)

    @classmethod
    def spawn(cls, group: int, path: Path, recover_s: float) -> HolderLink:
        """Start a holder for ``group``, listening at ``path``; attached to it.

        The returned link's :attr:`group` is the caller's ``group`` (the copy the holder
        sent back is closed).

        Raises:
            HolderError: the holder could not be started.
        """
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o077)
        try:
            listener.bind(str(path))
            listener.listen(4)
        except OSError as exc:
            listener.close()
            raise HolderError(f"cannot listen on {path}: {exc.strerror}") from exc
        finally:
            os.umask(old_umask)
        try:
            process = subprocess.Popen(
                [
                    *holder_command(),
                    "--group-fd",
                    str(group),
                    "--listen-fd",
                    str(listener.fileno()),
                    "--recover-s",
                    str(recover_s),
                ],
                pass_fds=(group, listener.fileno()),
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise HolderError(f"cannot start the exec holder: {exc.strerror}") from exc
        finally:
            listener.close()
        try:
            link = cls.attach(path)
        except HolderError:
            status = process.poll()
            if status is None:
                process.kill()
                raise
            raise HolderError(f"the exec holder exited at start (status {status})") from None
        if link is None:
            process.kill()
            raise HolderError(f"the exec holder did not listen on {path}")
        os.close(link.group)
        return cls(link._sock, group, link.info, process)

    def tell(self, info: HolderInfo) -> None:
        """Tell the holder what to fail closed on if this agent dies.

        Raises:
            HolderError: the holder has gone.
        """
        try:
            self._sock.send(b"H" + info.encode())
        except OSError as exc:
            raise HolderError(f"the exec holder has gone: {exc}") from exc
        self.info = info

    def release(self, timeout_s: float = ATTACH_TIMEOUT_S) -> None:
        """Clean stop: the holder closes its copy of the group and exits."""
        try:
            self._sock.send(b"R")
        except OSError as exc:
            logger.warning("exec holder not told to release (already gone?): %s", exc)
        self._sock.close()
        if self.process is not None:
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.error("exec holder %d did not exit; killing it", self.process.pid)
                self.process.kill()
                self.process.wait()

    def close(self) -> None:
        """Drop the connection without releasing (the holder keeps the group, as on a crash)."""
        self._sock.close()


def _remove_stale(path: Path) -> None:
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass


def serve(group: int, listener: socket.socket, recover_s: float) -> int:
    """The holder process: hold ``group`` until released, or fail closed (exit status).
    Its socket file is removed when it exits."""
    path = listener.getsockname()
    try:
        return _hold(group, listener, recover_s)
    finally:
        if isinstance(path, str) and path:
            Path(path).unlink(missing_ok=True)


def _hold(group: int, listener: socket.socket, recover_s: float) -> int:
    info = HolderInfo(sweep_fds=descriptor_limit())
    signal_r, signal_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(signal_w)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: None)
    agent: socket.socket | None = None
    deadline: float | None = None
    logger.info("exec holder %d holding the fanotify group", os.getpid())
    while True:
        poller = select.poll()
        for fd in (listener.fileno(), signal_r, *([agent.fileno()] if agent else [])):
            poller.register(fd, select.POLLIN)
        wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        ready = {fd for fd, _ in poller.poll(wait_ms)}
        if signal_r in ready:
            _fail_closed(group, info, "the holder was told to stop")
            return 0
        if deadline is not None and not ready and time.monotonic() >= deadline:
            _fail_closed(group, info, f"no agent took the group back within {recover_s:g} s")
            return 1
        if listener.fileno() in ready:
            agent, taken = _accept(listener, agent, group, info)
            if taken:
                deadline = None
        if agent is not None and agent.fileno() in ready:
            message = _receive(agent)
            if message == b"R":
                logger.info("exec holder released by the agent")
                os.close(group)
                return 0
            if message.startswith(b"H"):
                info = _update(info, message[1:])
            elif not message:
                agent.close()
                agent = None
                deadline = time.monotonic() + recover_s
                logger.error(
                    "the agent left without releasing exec enforcement: holding workload execs "
                    "for up to %g s for it to come back",
                    recover_s,
                )


def _accept(
    listener: socket.socket, agent: socket.socket | None, group: int, info: HolderInfo
) -> tuple[socket.socket | None, bool]:
    try:
        conn, _ = listener.accept()
    except OSError:
        return agent, False
    uid = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    peer_uid = int.from_bytes(uid[4:8], sys.byteorder)
    if agent is not None or peer_uid != os.geteuid():
        conn.close()
        return agent, False
    try:
        socket.send_fds(conn, [info.encode()], [group])
    except OSError:
        conn.close()
        return agent, False
    logger.info("exec holder: an agent attached")
    return conn, True


def _receive(agent: socket.socket) -> bytes:
    try:
        return agent.recv(_MESSAGE_BYTES)
    except OSError:
        return b""


def _update(info: HolderInfo, data: bytes) -> HolderInfo:
    try:
        return HolderInfo.decode(data)
    except HolderError as exc:
        logger.error("exec holder: ignoring a bad update: %s", exc)
        return info


def _fail_closed(group: int, info: HolderInfo, why: str) -> None:
    """``noexec``, then DENY to every waiting exec, then close (audit: just close, which
    lets waiting execs through, as audit would have)."""
    if not info.enforce:
        logger.warning("exec holder releasing an audit-mode group: %s", why)
        os.close(group)
        return
    logger.error("exec holder failing closed: %s", why)
    for mount in info.mounts:
        try:
            set_noexec(mount, True)
        except OSError as exc:
            logger.critical("cannot make %s noexec: %s", mount, exc)
    denied = sweep_deny(group, info.sweep_fds)
    try:
        denied += drain_deny(group)
    except Exception as exc:
        logger.critical("exec holder could not read the queued events: %s", exc)
    os.close(group)
    logger.error("exec holder: %d waiting exec(s) denied; group released", denied)

"""Tell systemd how the agent is doing: readiness, status lines and liveness (sd_notify).

The service manager's notification protocol (sd_notify(3)) without libsystemd: newline-separated
``KEY=VALUE`` assignments in one datagram to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``,
a filesystem path or, with a leading ``@``, a name in the abstract namespace. Outside systemd
(no ``$NOTIFY_SOCKET``) every call is a no-op, so the daemon calls it unconditionally.

What the agent sends, and when (the unit is ``Type=notify`` with ``WatchdogSec=``):

- ``READY=1`` once it can decide (state loaded, lineage verified), never earlier: systemd
  starts units ordered after the agent only then;
- ``STATUS=...`` lines a technician reads in ``systemctl status`` (bundle, expiry, gate);
- ``WATCHDOG=1`` from the decision loop (:func:`watchdog_loop`), so a hung loop stops the pings
  and systemd restarts the agent;
- ``STOPPING=1`` when shutdown begins; ``EXTEND_TIMEOUT_USEC=`` while a long start-up check runs.

Each message goes to the socket's address afresh (``sendto``), as libsystemd does, so a
``systemctl daemon-reexec`` that recreates the socket does not cut the agent off. Sends never
block (the socket is non-blocking: a manager that stops reading fills its queue, and a blocking
send would then hang the decision loop that sends the watchdog pings). A failed send is logged
and reported, never raised: a lost status line must not stop the decision loop.
This module does not decide what the status says; the daemon does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

from edge_agent.errors import ConfigError

__all__ = ["Notifier", "watchdog_interval", "watchdog_loop"]

logger = logging.getLogger(__name__)

MAX_STATUS_CHARS = 512
"""A status line longer than this is cut: ``systemctl status`` shows one line."""


class Notifier:
    """A sender of sd_notify messages to one socket, or a no-op when there is none.

    Build it with :meth:`from_environment`; use it as a context manager or call :meth:`close`.
    """

    def __init__(self, address: str | bytes | None) -> None:
        """``address``: a socket path, an abstract name (bytes starting with NUL), or None."""
        self._address = address
        self._socket: socket.socket | None = None
        if address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier ``$NOTIFY_SOCKET`` asks for: a no-op when it is unset or empty.

        Raises:
            ConfigError: ``$NOTIFY_SOCKET`` is set but is neither an absolute path nor an
                abstract name (``@...``), so systemd would never hear READY and would kill the
                agent at its start timeout; better to say why now.
        """
        env = os.environ if environ is None else environ
        return cls(_parse_address(env.get("NOTIFY_SOCKET", "")))

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere (the agent runs under a service manager)."""
        return self._socket is not None

    def ready(self, status: str | None = None) -> bool:
        """Send ``READY=1`` (and a first status line): the agent can decide from now on."""
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """Send one ``STATUS=`` line for ``systemctl status``."""
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        """Send ``WATCHDOG=1``: the decision loop is alive."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Send ``STOPPING=1``: shutdown has begun (final checkpoint, closing the lineage)."""
        return self.notify("STOPPING=1", *_status(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before systemd gives up on start-up or shutdown."""
        if seconds <= 0:
            raise ValueError("the timeout extension must be positive")
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; True when it was sent.

        A no-op returning False outside systemd. A send that fails (the manager is gone,
        restarting, or not reading its queue) is logged and returns False.
        """
        for assignment in assignments:
            key, sep, _ = assignment.partition("=")
            if not sep or not key or "\n" in assignment:
                raise ValueError(f"not a single-line KEY=VALUE assignment: {assignment!r}")
        if self._socket is None or self._address is None or not assignments:
            return False
        try:
            self._socket.sendto("\n".join(assignments).encode("utf-8"), self._address)
        except BlockingIOError:
            logger.warning("cannot notify the service manager: its queue is full")
            return False
        except OSError as exc:
            logger.warning("cannot notify the service manager: %s", exc.strerror or exc)
            return False
        return True

    def close(self) -> None:
        """Close the socket; later calls are no-ops."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """How often to send ``WATCHDOG=1``, in seconds, or None when no watchdog is armed.

    Half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises, so one late ping does not
    kill the agent. None when the variable is unset, malformed or zero, or when
    ``$WATCHDOG_PID`` names another process (it was meant for a parent, not for us).
    """
    env = os.environ if environ is None else environ
    usec_text = env.get("WATCHDOG_USEC", "")
    if not usec_text.isdigit() or int(usec_text) == 0:
        return None
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text and (not pid_text.isdigit() or int(pid_text) != (pid or os.getpid())):
        return None
    return int(usec_text) / 2_000_000


async def watchdog_loop(
    notifier: Notifier,
    interval: float,
    probe: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Send ``WATCHDOG=1`` every ``interval`` seconds while the decision loop answers.

    Run it as a task on the event loop that decides. Each round first awaits ``probe`` (for
    instance a no-op request through the decision queue): the ping goes out only when the probe
    completes within ``interval``. A blocked event loop sends nothing at all, a stuck decision
    path fails its probe, and either way systemd's watchdog restarts the agent. Runs until
    cancelled.
    """
    if interval <= 0:
        raise ValueError("the watchdog interval must be positive")
    while True:
        if probe is not None:
            try:
                async with asyncio.timeout(interval):
                    await probe()
            except TimeoutError:
                logger.warning("decision loop missed its watchdog probe (%.1f s)", interval)
                continue
        notifier.watchdog()
        await asyncio.sleep(interval)


def _parse_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode("utf-8")
    if value.startswith("/"):
        return value
    raise ConfigError(
        f"NOTIFY_SOCKET={value!r} is neither an absolute socket path nor an abstract name "
        "(@name); the agent cannot tell systemd it is ready"
    )


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    line = " ".join(text.split())[:MAX_STATUS_CHARS]
    return (f"STATUS={line}",)

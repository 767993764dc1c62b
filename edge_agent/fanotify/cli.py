"""``edge-agent enforce``, ``edge-agent break-glass`` and the internal ``enforce-holder``.

``enforce`` runs exec enforcement alone against a state directory until SIGTERM or SIGINT
(for tests and for operators; ``edge-agent run --exec-enforcement`` runs the same enforcer
beside the sync and the socket). It decides with the trust state it loaded at start. It
prints one line once enforcement is up, and the final counters (``--json``: as one JSON
object) when it stops. Exit codes: 0 after a clean stop; 1 enforcement unavailable here
(no fanotify permission events, not root, a sandbox forbids it) or the state does not
verify; 2 a bad argument or a mount that may not be marked; 3 no agent state.

``break-glass FILE`` verifies a hub-signed recovery token for this device and installs it in
the state directory, where the running enforcer picks it up within a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import time
from pathlib import Path

from edge_agent.agent import LocalAgent
from edge_agent.fanotify import holder
from edge_agent.fanotify.enforcer import (
    BREAK_GLASS_FILE,
    EnforcerOptions,
    EnforcerStats,
    ExecEnforcer,
    Mode,
)
from edge_agent.fanotify.handoff import DEFAULT_CAPACITY
from edge_agent.protocol.breakglass import MAX_BREAK_GLASS_BYTES
from edge_agent.store import agent_lock
from edge_agent.support.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    epilog,
    format_duration,
    read_bounded,
    wall_clock,
    write_atomic,
)
from edge_agent.trust.breakglass import verify_break_glass

__all__ = ["parse_mounts", "register"]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``enforce``, ``break-glass`` and ``enforce-holder`` to the ``edge-agent`` parser."""
    enforce = commands.add_parser(
        "enforce",
        parents=[common],
        help="decide every exec on the workload mounts (fanotify) until stopped",
        epilog=epilog(
            [
                (EXIT_OK, "a clean stop (SIGTERM, SIGINT)"),
                (EXIT_REFUSED, "enforcement is unavailable here, or the state does not verify"),
                (EXIT_USAGE, "a bad argument or a mount that may not be marked"),
                (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
            ],
            "edge-agent enforce --mounts /opt/workloads --mode audit",
        ),
    )
    enforce.add_argument(
        "--mode",
        choices=("audit", "enforce"),
        default="enforce",
        help="audit allows and logs every exec; enforce denies what the policy denies "
        "(default: %(default)s)",
    )
    enforce.add_argument(
        "--mounts",
        required=True,
        type=parse_mounts,
        metavar="PATH[,PATH...]",
        help="the workload mounts to govern (each its own filesystem, never /)",
    )
    enforce.add_argument(
        "--holder-socket",
        type=Path,
        default=holder.DEFAULT_HOLDER_SOCKET,
        help="where the group holder listens (default: %(default)s)",
    )
    enforce.add_argument(
        "--recover-s",
        type=_positive,
        default=holder.DEFAULT_RECOVER_S,
        help="seconds the holder keeps execs waiting for a crashed agent before it makes the "
        "mounts noexec (default: %(default)s)",
    )
    enforce.add_argument(
        "--queue",
        type=_queue,
        default=DEFAULT_CAPACITY,
        help="decisions waiting for the lineage before execs are denied (default: %(default)s)",
    )
    enforce.set_defaults(handler=_cmd_enforce)

    glass = commands.add_parser(
        "break-glass",
        parents=[common],
        help="install a hub-signed recovery token: exec enforcement in audit for its window",
        epilog=epilog(
            [
                (EXIT_OK, "installed"),
                (EXIT_REFUSED, "the token does not verify for this device, or has expired"),
                (EXIT_USAGE, "the token file cannot be read"),
                (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
            ],
            "edge-agent break-glass gw-001.breakglass",
        ),
    )
    glass.add_argument("file", help="the token file (- for stdin)")
    glass.set_defaults(handler=_cmd_break_glass)

    internal = commands.add_parser(
        "enforce-holder",
        parents=[common],
        help="(internal) hold the exec-enforcement group; started by the agent",
        epilog=epilog(
            [(EXIT_OK, "the agent let go of the group"), (EXIT_USAGE, "a bad argument")],
            "edge-agent enforce-holder --group-fd 3 --listen-fd 4 --recover-s 30 "
            "(started by the agent, never by hand)",
        ),
    )
    internal.add_argument(
        "--group-fd", type=_fd, required=True, help="the fanotify group's file descriptor"
    )
    internal.add_argument(
        "--listen-fd", type=_fd, required=True, help="the holder socket's file descriptor"
    )
    internal.add_argument(
        "--recover-s",
        type=_positive,
        required=True,
        help="seconds execs wait for a crashed agent before the mounts are made noexec",
    )
    # state_free: the holder keeps descriptors and never opens the state directory.
    internal.set_defaults(handler=_cmd_holder, state_free=True)


def parse_mounts(text: str) -> tuple[str, ...]:
    """``/a,/b`` -> the paths (``argparse`` type; also for ``--exec-mounts``)."""
    mounts = tuple(part.strip() for part in text.split(",") if part.strip())
    if not mounts:
        raise argparse.ArgumentTypeError("name at least one mount")
    return mounts


def _fd(text: str) -> int:
    """A file descriptor number handed down by the agent."""
    if not (text.isascii() and text.isdigit()) or int(text) > 1 << 20:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file descriptor number")
    return int(text)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not positive")
    return value


def _queue(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= _MAX_QUEUE:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {_MAX_QUEUE}")
    return int(text)


_MAX_QUEUE = 1 << 20
"""The most decisions ``--queue`` lets wait for the lineage (each holds a request)."""


def _cmd_enforce(args: argparse.Namespace) -> int:
    options = EnforcerOptions(
        holder_socket=args.holder_socket,
        holder_recover_s=args.recover_s,
        queue_entries=args.queue,
    )
    with agent_lock(args.state_dir), LocalAgent.open(args.state_dir) as agent:
        stats = asyncio.run(_enforce(agent, Mode.parse(args.mode), args.mounts, options))
    if args.json:
        print(json.dumps(stats.as_dict(), sort_keys=True), flush=True)
    else:
        print(
            f"edge-agent: exec enforcement stopped: {stats.events} exec(s), {stats.allowed} "
            f"allowed, {stats.denied} denied, {stats.unlogged} unlogged",
            flush=True,
        )
    return 0


async def _enforce(
    agent: LocalAgent, mode: Mode, mounts: tuple[str, ...], options: EnforcerOptions
) -> EnforcerStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    enforcer = ExecEnforcer(agent, mode, mounts, options)
    async with enforcer:
        print(
            f"edge-agent: exec enforcement ({mode}) on {', '.join(enforcer.stats().mounts)}",
            flush=True,
        )
        await stop.wait()
    return enforcer.stats()


def _cmd_break_glass(args: argparse.Namespace) -> int:
    data = read_bounded(args.file, MAX_BREAK_GLASS_BYTES, "break-glass token")
    with LocalAgent.open(args.state_dir) as agent:
        now = agent.earliest_now(wall_clock())
        token = verify_break_glass(data, state=agent.state, now=now)
    write_atomic(args.state_dir / BREAK_GLASS_FILE, data, mode=0o600)
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(token.expires_at))
    if args.json:
        document = {"name": token.name, "expires_at": token.expires_at, "reason": token.reason}
        print(json.dumps(document, sort_keys=True))
        return EXIT_OK
    print(
        f"break-glass token {token.name} installed: exec enforcement runs in audit (everything "
        f"allowed and logged) until {until}, {format_duration(token.expires_at - now)} from now"
    )
    print(f"  reason: {token.reason}")
    return EXIT_OK


def _cmd_holder(args: argparse.Namespace) -> int:
    listener = socket.socket(fileno=args.listen_fd)
    return holder.serve(args.group_fd, listener, args.recover_s)

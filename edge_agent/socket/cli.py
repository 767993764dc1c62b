"""``edge-agent serve`` and ``edge-agent exec``: the decision socket from the command line.

``serve`` opens the state directory and answers decisions on the socket until SIGTERM or
SIGINT, then stops accepting, lets answers in flight finish, and closes the lineage (which
signs a checkpoint). Exit codes: 0 after a clean stop; 1 the state does not verify; 2 a bad
argument or a socket that cannot be created (path taken, bad group); 3 no agent state.

``exec``: see :mod:`edge_agent.socket.exec_gate` (exit 126 when not run, 127 not found).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from edge_agent.agent import LocalAgent
from edge_agent.socket import exec_gate
from edge_agent.socket.config import SocketConfig
from edge_agent.socket.server import DecisionServer, ensure_fd_headroom
from edge_agent.socket.wire import DEFAULT_SOCKET_PATH, SOCKET_PATH_ENV
from edge_agent.store import agent_lock
from edge_agent.support.cli import EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE, epilog

__all__ = ["register"]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``serve`` and ``exec`` to the ``edge-agent`` parser."""
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="answer decisions on the local socket",
        epilog=epilog(
            [
                (EXIT_OK, "a clean stop (SIGTERM, SIGINT)"),
                (EXIT_REFUSED, "the state does not verify"),
                (EXIT_USAGE, "a bad argument, or the socket cannot be created"),
                (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
            ],
            "edge-agent serve --socket /run/edge-agent/decide.sock --group workloads",
        ),
    )
    serve.add_argument(
        "--socket",
        type=Path,
        default=Path(os.environ.get(SOCKET_PATH_ENV) or DEFAULT_SOCKET_PATH),
        help=f"socket path (default: ${SOCKET_PATH_ENV} or %(default)s)",
    )
    serve.add_argument("--group", help="group owning the socket (name or gid)")
    serve.add_argument(
        "--mode", type=_mode, default=0o660, help="socket file mode, octal (default: 0660)"
    )
    serve.set_defaults(handler=_cmd_serve)

    gate = commands.add_parser(
        "exec",
        parents=[common],
        help="ask the agent, then run a program (exit 126 when refused)",
        epilog=exec_gate.EPILOG,
        description="Ask the agent whether this binary may run; execute exactly that file on "
        "allow. Exit codes: the program's own; 126 not run (denied, agent unreachable, binary "
        "changed); 127 not found.",
    )
    exec_gate.add_arguments(gate)
    # state_free: exec asks the agent's socket and never opens the state directory.
    gate.set_defaults(handler=_cmd_exec, state_free=True)


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal file mode") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file mode between 0 and 0777")
    return mode


def _cmd_serve(args: argparse.Namespace) -> int:
    config = SocketConfig(path=args.socket, mode=args.mode, group=args.group)
    with agent_lock(args.state_dir), LocalAgent.open(args.state_dir) as agent:
        asyncio.run(_serve(agent, config))
    return 0


async def _serve(agent: LocalAgent, config: SocketConfig) -> None:
    """Serve decisions until SIGTERM or SIGINT.

    Raises:
        SocketError: the server stopped answering on its own (logged): exit non-zero, so
            that the service manager restarts the agent.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ensure_fd_headroom(config.limits)
    async with DecisionServer(agent, config) as server:
        print(f"edge-agent: serving decisions on {config.path}", flush=True)
        watching = asyncio.create_task(server.watch(), name="decision-socket")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        await asyncio.wait((watching, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not watching.done():
            watching.cancel()
            return
        watching.result()  # raises: the server stopped answering on its own


def _cmd_exec(args: argparse.Namespace) -> int:
    return exec_gate.run(
        args.command,
        action=args.action,
        context=args.context,
        socket_path=args.socket,
        timeout=args.timeout,
    )

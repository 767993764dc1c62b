"""``edge-agent run``: the long-running agent until SIGTERM: MQTT sync with the hub and the
local decision socket, on one event loop, both deciding through the same opened state."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_agent.agent import LocalAgent
from edge_agent.attest.config import Attestor, open_attestor
from edge_agent.errors import ConfigError
from edge_agent.fanotify.cli import parse_mounts
from edge_agent.fanotify.enforcer import EnforcerOptions, ExecEnforcer, Mode
from edge_agent.sdnotify import Notifier, watchdog_interval, watchdog_loop
from edge_agent.socket.server import DecisionServer, ensure_fd_headroom
from edge_agent.store import StateStore, agent_lock
from edge_agent.support.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    configure_logging,
    epilog,
    expiry_text,
)
from edge_agent.support.mqtt import check_tls
from edge_agent.sync.config import AgentConfig, load_config
from edge_agent.sync.daemon import AgentDaemon
from edge_agent.trust.gate import GATE_OPEN

__all__ = ["BROKER_SETTINGS", "Stop", "register", "status_line"]

STOP_RETRY_S = 0.5
STOP_GRACE_S = 5.0
"""After this long stopping, every task still running is cancelled (see :class:`Stop`)."""
STATUS_EVERY_S = 5.0
"""How often the systemd status line is refreshed (the expiry counts down)."""

logger = logging.getLogger(__name__)

BROKER_SETTINGS = ("url", "username", "password_file", "ca_file", "cert_file", "key_file")
"""Broker settings ``edge-agent init`` records in the state directory."""


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``run`` to the ``edge-agent`` parser."""
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run the agent: sync with the hub over MQTT until stopped",
        epilog=epilog(
            [
                (EXIT_OK, "a clean stop (SIGTERM, SIGINT)"),
                (EXIT_REFUSED, "the state does not verify"),
                (EXIT_USAGE, "a bad argument or configuration"),
                (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
            ],
            "edge-agent run --config /etc/edge-agent/agent.toml",
        ),
    )
    run.add_argument("--config", type=Path, help="agent.toml (overrides the init settings)")
    run.add_argument("--socket", type=Path, help="decision socket path (overrides the config)")
    run.add_argument(
        "--exec-enforcement",
        choices=("off", "audit", "enforce"),
        default="off",
        help="decide every exec on --exec-mounts through fanotify (docs/exec-enforcement.md)",
    )
    run.add_argument(
        "--exec-mounts",
        type=parse_mounts,
        default=(),
        metavar="PATH[,PATH...]",
        help="the workload mounts exec enforcement governs (each its own filesystem, never /)",
    )
    run.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    store = StateStore.open(args.state_dir)
    try:
        defaults = {
            key: value
            for key in BROKER_SETTINGS
            if (value := store.get_setting(f"broker.{key}")) is not None
        }
    finally:
        store.close()
    config = load_config(args.config, defaults)
    log_format = args.log_format if args.log_format != "text" else config.log.format
    configure_logging(args.verbose, log_format, config.log.level, quiet=args.quiet)
    if args.socket is not None:
        config = replace(config, socket=replace(config.socket, path=args.socket))
    if args.exec_enforcement != "off" and not args.exec_mounts:
        raise ConfigError("--exec-enforcement needs --exec-mounts PATH[,PATH...]")
    enforcement = (Mode.parse(args.exec_enforcement), args.exec_mounts)
    with (
        agent_lock(args.state_dir),
        LocalAgent.open(args.state_dir, lineage=config.lineage.to_config()) as agent,
    ):
        attestor = open_attestor(config.attestation, agent.state.device)
        asyncio.run(_run(agent, config, enforcement, attestor))
    return 0


async def _run(
    agent: LocalAgent,
    config: AgentConfig,
    enforcement: tuple[Mode, tuple[str, ...]],
    attestor: Attestor | None,
) -> None:
    """Serve decisions and sync until SIGTERM; tell systemd when ready, how it is doing, and
    that the decision loop is alive (all no-ops outside systemd)."""
    settings = config.broker_settings(agent.state.device.device_id)
    check_tls(settings)
    daemon = AgentDaemon(agent, settings, config.sync, attestor=attestor)
    task = asyncio.current_task()
    assert task is not None
    stop = Stop(task)
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop)
    ensure_fd_headroom(config.socket.limits)
    with Notifier.from_environment() as notifier:
        try:
            mode, mounts = enforcement
            async with (
                ExecEnforcer(agent, mode, mounts, EnforcerOptions()) as enforcer,
                DecisionServer(agent, config.socket) as server,
                asyncio.TaskGroup() as tasks,
            ):
                logger.info(
                    "agent %s running: broker %s, decisions on %s, bundle %s",
                    agent.state.device.device_id,
                    settings.url,
                    config.socket.path,
                    agent.state.bundle.version if agent.state.bundle else "none",
                )
                notifier.ready(status_line(agent, int(time.time()), enforcer))
                tasks.create_task(daemon.run(), name="sync")
                tasks.create_task(server.watch(), name="decision-socket")
                tasks.create_task(_report_status(agent, notifier, enforcer), name="sd-status")
                interval = watchdog_interval()
                if interval is not None:
                    tasks.create_task(
                        watchdog_loop(notifier, interval, lambda: _probe(agent)), name="watchdog"
                    )
        except asyncio.CancelledError:
            notifier.stopping("stopping: signing a final checkpoint")
            logger.info("stopping: signing a final checkpoint and closing the lineage")


class Stop:
    """What SIGTERM and SIGINT do to the running agent's main task.

    The first signal cancels it, and again every :data:`STOP_RETRY_S` until it is done:
    Python 3.11's ``wait_for`` can swallow a cancellation racing a result (CPython
    gh-86296, reachable inside aiomqtt's publish), and a task group whose child fails as it
    is cancelled reports the failure in place of the cancellation (SIGTERM as the broker goes
    away: the connection loop then reconnects). Those repeats reach the main task only: a
    task group whose parent is already being cancelled forwards nothing more to its
    children, so a child that lost its one cancellation would keep the agent up however
    often the main task is cancelled. So once :data:`STOP_GRACE_S` has passed, or at a
    second signal, every task still running is cancelled.
    """

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.signalled = False
        self._since = 0.0

    def __call__(self) -> None:
        if self.signalled:
            self._cancel_all()
            return
        self.signalled = True
        self._since = self.task.get_loop().time()
        self._cancel()

    def _cancel(self) -> None:
        if self.task.done():
            return
        if self.task.get_loop().time() - self._since >= STOP_GRACE_S:
            self._cancel_all()
        else:
            self.task.cancel()
        self.task.get_loop().call_later(STOP_RETRY_S, self._cancel)

    def _cancel_all(self) -> None:
        for running in asyncio.all_tasks(self.task.get_loop()):
            running.cancel()


def status_line(agent: LocalAgent, now: int, enforcer: ExecEnforcer | None = None) -> str:
    """One line for ``systemctl status``: bundle, time left, gate state, exec enforcement."""
    bundle = agent.state.bundle
    state = agent.gate_state(now)
    gate = "gate open" if state == GATE_OPEN else f"gate CLOSED: {state}"
    if bundle is None:
        return f"no bundle; {gate}"
    return f"bundle v{bundle.version}, {expiry_text(bundle.expires_at - now)}; {gate}"


async def _report_status(agent: LocalAgent, notifier: Notifier, enforcer: ExecEnforcer) -> None:
    while True:
        await asyncio.sleep(STATUS_EVERY_S)
        notifier.status(status_line(agent, int(time.time()), enforcer))


async def _probe(agent: LocalAgent) -> None:
    """The watchdog's liveness probe: the gate answers and the lineage database is readable
    from the decision threads (a hung disk or lock fails it)."""
    agent.checks(int(time.time()))
    if agent.lineage is not None:
        await asyncio.to_thread(agent.lineage.summary)

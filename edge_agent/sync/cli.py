"""``edge-agent run``: the long-running agent until SIGTERM: MQTT sync with the hub and the
local decision socket, on one event loop, both deciding through the same opened state."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from edge_agent.agent import LocalAgent
from edge_agent.socket.server import DecisionServer, ensure_fd_headroom
from edge_agent.store import StateStore
from edge_agent.sync.config import AgentConfig, load_config
from edge_agent.sync.daemon import AgentDaemon

__all__ = ["BROKER_SETTINGS", "register"]

logger = logging.getLogger(__name__)

BROKER_SETTINGS = ("url", "username", "password_file", "ca_file", "cert_file", "key_file")
"""Broker settings ``edge-agent init`` records in the state directory."""


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``run`` to the ``edge-agent`` parser."""
    run = commands.add_parser(
        "run", parents=[common], help="run the agent: sync with the hub over MQTT until stopped"
    )
    run.add_argument("--config", type=Path, help="agent.toml (overrides the init settings)")
    run.add_argument("--socket", type=Path, help="decision socket path (overrides the config)")
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
    if args.socket is not None:
        config = config.model_copy(
            update={"socket": config.socket.model_copy(update={"path": args.socket})}
        )
    with LocalAgent.open(args.state_dir, lineage=config.lineage.to_config()) as agent:
        asyncio.run(_run(agent, config))
    return 0


async def _run(agent: LocalAgent, config: AgentConfig) -> None:
    settings = config.broker_settings(agent.state.device.device_id)
    daemon = AgentDaemon(agent, settings, config.sync)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    logger.info(
        "agent %s running: broker %s, bundle %s",
        agent.state.device.device_id,
        settings.url,
        agent.state.bundle.version if agent.state.bundle else "none",
    )
    ensure_fd_headroom(config.socket.limits)
    try:
        async with DecisionServer(agent, config.socket):
            logger.info("serving decisions on %s", config.socket.path)
            await daemon.run()
    except asyncio.CancelledError:
        logger.info("stopping: signing a final checkpoint and closing the lineage")

"""Real agent daemons for integration tests: each with its own state dir and daemon task.

Every agent is enrolled with ``edge_agent.agent.init_state_dir`` (and, given a hub
registry, registered there as ``edge-hub device add`` would) and runs ``AgentDaemon`` over a
``LocalAgent`` in the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.sync.config import SyncConfig
from edge_agent.sync.daemon import AgentDaemon
from hub.registry import DeviceRecord
from hub.registry.backends import open_registry

__all__ = ["FAST_SYNC", "AgentFleet", "agent_fleet", "stop_daemon"]

FAST_SYNC = SyncConfig(
    status_interval_s=2,
    ship_interval_s=0.1,
    ack_timeout_s=1,
    reconnect_initial_s=0.1,
    reconnect_max_s=0.5,
)
"""Sync timing for tests: quick shipping, resends and reconnects."""
STOP_BOUND_S = 15.0
"""A daemon still running this long after its cancellation fails the test instead of hanging it."""


class AgentFleet:
    """Agents of region eu-1 trusting ``root``, talking to ``broker``."""

    def __init__(
        self, tmp_path: Path, root: bytes, broker: BrokerSettings, registry: Path | str | None
    ) -> None:
        self.tmp_path = tmp_path
        self.root = root
        self.broker = broker
        self.registry = registry
        self.daemons: dict[str, AgentDaemon] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def enrol(self, device_id: str, group: str = "line-a") -> None:
        identity = DeviceIdentity(device_id, "eu-1", (group,), "generic-x86_64")
        public = init_state_dir(self.tmp_path / device_id, identity, self.root, int(time.time()))
        if self.registry is not None:
            with open_registry(self.registry) as registry:
                registry.add_device(
                    DeviceRecord(device_id, "eu-1", (group,), "generic-x86_64", public)
                )

    def start(self, device_id: str, sync: SyncConfig = FAST_SYNC) -> AgentDaemon:
        daemon = AgentDaemon(LocalAgent.open(self.tmp_path / device_id), self.broker, sync)
        self.daemons[device_id] = daemon
        self.tasks[device_id] = asyncio.create_task(daemon.run(), name=device_id)
        return daemon

    def add(self, device_id: str, sync: SyncConfig = FAST_SYNC) -> AgentDaemon:
        """Enrol and start ``device_id``."""
        self.enrol(device_id)
        return self.start(device_id, sync)

    async def kill(self, device_id: str) -> None:
        """Stop a daemon abruptly: its task cancelled, its state closed."""
        await stop_daemon(self.daemons.pop(device_id), self.tasks.pop(device_id))

    async def close(self) -> None:
        for device_id in list(self.tasks):
            await self.kill(device_id)


async def stop_daemon(daemon: AgentDaemon, task: asyncio.Task[None]) -> None:
    """Cancel ``task`` (running ``daemon``) and close the daemon's state.

    Raises:
        AssertionError: the daemon ignored its cancellation (with the stacks of the tasks
            still running, to show where).
    """
    task.cancel()
    await asyncio.wait({task}, timeout=STOP_BOUND_S)
    if not task.done():
        raise AssertionError(
            f"{daemon.device.device_id} still runs {STOP_BOUND_S:.0f} s after its "
            "cancellation:\n" + _running_stacks()
        )
    daemon.agent.close()
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error


def _running_stacks() -> str:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.print_stack(limit=8, file=out)
    return out.getvalue()


@contextlib.asynccontextmanager
async def agent_fleet(
    tmp_path: Path, root: bytes, broker: BrokerSettings, registry: Path | str | None = None
) -> AsyncIterator[AgentFleet]:
    fleet = AgentFleet(tmp_path, root, broker, registry)
    try:
        yield fleet
    finally:
        await fleet.close()

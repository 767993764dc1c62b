"""A hub service started on a hub directory and fed lineage batches in-process (no broker),
for the witness and hub-receipt tests: what it acknowledges, stores and cosigns.

:func:`started_hub` wires the real service parts (:meth:`HubService._start`) to the hub
directory's registry and keys; :meth:`LineageHub.ship` hands batches to its intake as one
queued burst and returns the verified acks it published for ``gw-001``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from edge_agent.protocol import topics
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.roles import Role
from edge_agent.protocol.shipping import Ack, verify_ack
from edge_agent.protocol.topics import DeviceLeaf
from edge_agent.support.mqtt import Incoming
from hub.hubdir.keys import load_role_keys
from hub.registry.backends import open_registry
from hub.service.config import HubConfig
from hub.service.server import HubService
from tests.hub_support import HubSetup
from tests.lineage_sim import DeviceLogSim

LINEAGE = topics.device_topic("eu-1", "gw-001", DeviceLeaf.LINEAGE)
ACK = topics.device_topic("eu-1", "gw-001", DeviceLeaf.ACK)


@dataclass
class RecordingConnection:
    """Incoming messages already queued; records every (topic, payload) published."""

    queued: list[Incoming]
    published: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def backlog(self) -> int:
        return len(self.queued)

    async def messages(self) -> AsyncIterator[Incoming]:
        while self.queued:
            await asyncio.sleep(0)
            yield self.queued.pop(0)

    async def publish(self, topic: str, payload: bytes, **options: object) -> None:
        self.published.append((topic, payload))

    @property
    def published_topics(self) -> list[str]:
        return [topic for topic, _ in self.published]


@dataclass
class LineageHub:
    """A started hub service and the hub directory it runs on (device ``gw-001``)."""

    setup: HubSetup
    service: HubService

    @property
    def sim(self) -> DeviceLogSim:
        return self.setup.devices["gw-001"]

    @property
    def witness(self) -> PublicKey:
        return load_role_keys(self.setup.keys, Role.VERIFIER, self.setup.root)[0].public

    def ship(self, *batches: bytes) -> list[Ack]:
        """Feed ``batches`` on gw-001's lineage topic; return the acks published."""
        connection = RecordingConnection([Incoming(LINEAGE, b, False) for b in batches])
        asyncio.run(self.service._started.intake.consume(connection))  # type: ignore[arg-type]
        return [
            verify_ack(payload, root=self.setup.root, device="gw-001")
            for topic, payload in connection.published
            if topic == ACK
        ]

    def stored_notes(self) -> dict[int, str]:
        registry = self.service.registry
        return {c.size: c.note for c in registry.iter_checkpoints("gw-001")}


@contextmanager
def started_hub(setup: HubSetup) -> Iterator[LineageHub]:
    """The hub service of ``setup``'s directory, started without broker or tasks."""
    service = HubService(HubConfig(hub_dir=setup.path, registry=setup.url, write_serve_file=False))
    registry = open_registry(setup.registry)
    service._start(registry, service.hub_dir.load_keys())
    try:
        yield LineageHub(setup, service)
    finally:
        service._started.context.db.close()
        registry.close()

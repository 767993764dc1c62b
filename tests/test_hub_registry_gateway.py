"""The hub's event loop never waits on its registry, and a registry outage loses nothing.

Every registry operation of the running hub goes through its registry gateway
(:mod:`hub.registry.gateway`): a store that blocks leaves the loop (and the broker on it)
answering, and its ack goes out once the store returns. A store that fails (the registry
away, a PostgreSQL server restarting) leaves the batch unacknowledged; the device's resend
afterwards is stored once and acknowledged.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.protocol import topics
from edge_agent.protocol.shipping import verify_ack
from edge_agent.protocol.topics import DeviceLeaf
from hub.hubdir.layout import HubDir
from hub.registry import Registry, RegistryError
from hub.registry.backends import open_registry
from hub.registry.gateway import RegistryGateway
from hub.registry.interface import Registry as RegistryProtocol
from hub.registry.records import Accepted
from hub.service.server import HubService
from tests.brokers import amqtt_broker
from tests.console_support import make_console
from tests.hub_support import WAIT_S, HubSetup, hub_config, make_hub_dir, wait_for, watching
from tests.postgres_support import PostgresServer

LINEAGE_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.LINEAGE)
ACK_1 = topics.device_topic("eu-1", "gw-001", DeviceLeaf.ACK)
ECHO = "test/echo"
RESEND_S = 1.0
"""How long the test's device waits for an ack before it sends the batch again."""


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    return make_hub_dir(tmp_path / "hub")


class StoreGate:
    """Wraps the registry class's ``store_batch``: each call waits for :attr:`open` (or
    raises :class:`RegistryError` while :attr:`down`), counting the calls."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.down = False
        self.entered = threading.Event()
        self.calls = 0

    def install(self, monkeypatch: pytest.MonkeyPatch, registry: Registry) -> None:
        original = type(registry).store_batch
        gate = self

        def store_batch(
            self: Registry, accepted: Accepted, *, expected_size: int, received_at: int
        ) -> bool:
            gate.calls += 1
            gate.entered.set()
            if gate.down:
                raise RegistryError("cannot write the hub registry: the server is away (test)")
            gate.open.wait(WAIT_S)
            return original(self, accepted, expected_size=expected_size, received_at=received_at)

        monkeypatch.setattr(type(registry), "store_batch", store_batch)


@pytest.mark.asyncio
async def test_a_store_that_blocks_leaves_the_event_loop_answering_and_acks_once_stored(
    setup: HubSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = setup.devices["gw-001"]
    device.add(5)
    gate = StoreGate()
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    # amqtt runs on this event loop: a message routed through it while the store blocks
    # shows the loop was free.
    async with amqtt_broker() as broker, HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        gate.install(monkeypatch, hub.registry)
        gate.open.clear()
        async with watching(broker.settings, [ACK_1, ECHO], "gw-001") as watcher:
            await watcher.connection.publish(LINEAGE_1, device.batch(0, 5))
            await wait_for(gate.entered.is_set)
            ticker = asyncio.create_task(ticking())
            await watcher.connection.publish(ECHO, b"ping")
            assert (await watcher.next(ECHO)).payload == b"ping"
            await wait_for(lambda: ticks >= 5)
            ticker.cancel()
            assert hub.stats.acks_published == 0, "no ack before the batch is stored"
            gate.open.set()
            ack = verify_ack((await watcher.next(ACK_1)).payload, root=setup.root, device="gw-001")
        assert (ack.acked, ack.root) == (5, device.root(5))
        assert [e.seq for e in hub.registry.iter_entries("gw-001")] == list(range(5))


@pytest.mark.asyncio
async def test_a_batch_whose_store_failed_is_unacknowledged_and_its_resend_stored_once(
    setup: HubSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = setup.devices["gw-001"]
    device.add(5)
    gate = StoreGate()
    async with amqtt_broker() as broker, HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        gate.install(monkeypatch, hub.registry)
        gate.down = True
        async with watching(broker.settings, [ACK_1], "gw-001") as watcher:
            await watcher.connection.publish(LINEAGE_1, device.batch(0, 5))
            await wait_for(lambda: gate.calls == 1)
            with pytest.raises(TimeoutError):
                await watcher.next(ACK_1, timeout=RESEND_S)
            assert hub.registry.lineage_state("gw-001").size == 0
            gate.down = False
            await watcher.connection.publish(LINEAGE_1, device.batch(0, 5))
            ack = verify_ack((await watcher.next(ACK_1)).payload, root=setup.root, device="gw-001")
        assert ack.acked == 5 and gate.calls == 2
        assert [e.seq for e in hub.registry.iter_entries("gw-001")] == list(range(5))
        assert hub.stats.batches_accepted == 1


@pytest.fixture
def postgres_hub(
    setup: HubSetup, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The hub of ``setup`` on a PostgreSQL registry holding its devices."""
    with open_registry(setup.registry) as held, open_registry(postgres_url) as registry:
        for record in held.devices():
            registry.add_device(record)
    monkeypatch.setattr(
        HubDir, "open_registry", lambda self, create=True: open_registry(postgres_url)
    )
    yield postgres_url


@pytest.mark.asyncio
@pytest.mark.sqlite_only(
    "pairs a hub.db hub with a PostgreSQL one of its own; runs on PostgreSQL in make test"
)
async def test_a_postgres_restart_during_ingest_loses_no_batch_and_acks_each_once_stored(
    setup: HubSetup, postgres_hub: str, postgres_server: PostgresServer
) -> None:
    device = setup.devices["gw-001"]
    device.add(20)
    async with amqtt_broker() as broker, HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        async with watching(broker.settings, [ACK_1], "gw-001") as watcher:
            await watcher.connection.publish(LINEAGE_1, device.batch(0, 10))
            ack = verify_ack((await watcher.next(ACK_1)).payload, root=setup.root, device="gw-001")
            assert ack.acked == 10
            await asyncio.to_thread(postgres_server.restart)
            acked = await _shipped_until_acked(watcher, device.batch(10, 20), setup)
        assert acked == 20
        with open_registry(postgres_hub) as registry:
            assert [e.seq for e in registry.iter_entries("gw-001")] == list(range(20))


async def _shipped_until_acked(watcher: object, batch: bytes, setup: HubSetup) -> int:
    """Send ``batch`` as an agent does, again every :data:`RESEND_S` until it is acked (a
    deadline guard bounds it); what the ack covers."""
    async with asyncio.timeout(WAIT_S):
        while True:
            await watcher.connection.publish(LINEAGE_1, batch)  # type: ignore[attr-defined]
            try:
                message = await watcher.next(ACK_1, timeout=RESEND_S)  # type: ignore[attr-defined]
            except TimeoutError:
                continue
            acked = verify_ack(message.payload, root=setup.root, device="gw-001").acked
            if acked == 20:
                return acked


def test_the_gateway_runs_operations_in_order_on_one_worker_thread() -> None:
    gateway = RegistryGateway("test")
    seen: list[tuple[int, str]] = []

    def operation(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * 2

    async def run() -> list[int]:
        return list(await asyncio.gather(*(gateway(operation, n) for n in range(20))))

    try:
        assert asyncio.run(run()) == [n * 2 for n in range(20)]
    finally:
        gateway.close()
    assert [n for n, _ in seen] == list(range(20))
    assert len({name for _, name in seen}) == 1
    assert seen[0][1] != threading.current_thread().name


def test_an_operation_that_raises_raises_to_its_caller() -> None:
    gateway = RegistryGateway("test")

    def failing() -> None:
        raise RegistryError("the registry is away")

    try:
        with pytest.raises(RegistryError, match="away"):
            asyncio.run(gateway(failing))
    finally:
        gateway.close()


CONSOLE_PAGES = (
    "/",
    "/fragments/health",
    "/devices",
    "/devices/gw-001",
    "/lineage?device=gw-001",
    "/lineage/export.jsonl?device=gw-001",
    "/audit",
    "/proof",
)


def test_every_console_page_reads_the_registry_on_the_console_gateway_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_console(tmp_path) as console:
        client = console.client("viewer")
        threads: set[str] = set()
        backend = type(console.registry)
        _record_threads(monkeypatch, backend, threads)
        for page in CONSOLE_PAGES:
            assert client.get(page).status_code == 200, page
        console.context.db.close()
    assert threads and all(t.startswith("console-registry") for t in threads), threads


@pytest.mark.asyncio
async def test_the_running_hub_calls_its_registry_only_on_the_gateway_thread(
    setup: HubSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = setup.devices["gw-001"]
    device.add(5)
    threads: set[str] = set()
    async with amqtt_broker() as broker, HubService(hub_config(setup, broker)) as hub:
        await hub.wait_ready()
        _record_threads(monkeypatch, type(hub.registry), threads)
        async with watching(broker.settings, [ACK_1], "gw-001") as watcher:
            await watcher.connection.publish(LINEAGE_1, device.batch(0, 5))
            await watcher.next(ACK_1)
            await hub.tick()
            await hub.tick_rollouts()
            await hub.governance.challenge("gw-001")
        monkeypatch.undo()
    assert threads and all(t.startswith("registry") for t in threads), threads


def _record_threads(monkeypatch: pytest.MonkeyPatch, backend: type, threads: set[str]) -> None:
    """Add to ``threads`` the name of the thread of every registry operation ``backend``
    runs from now on."""
    for name in _operations():
        original = getattr(backend, name)

        def recorded(*args: object, _original: object = original, **kwargs: object) -> object:
            threads.add(threading.current_thread().name)
            return _original(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(backend, name, recorded)


def _operations() -> list[str]:
    """The registry operations of the :class:`Registry` protocol (not its lifecycle)."""
    lifecycle = {"close", "write_group"}
    return [
        name
        for name in vars(RegistryProtocol)
        if not name.startswith("_")
        and callable(getattr(RegistryProtocol, name))
        and name not in lifecycle
    ]

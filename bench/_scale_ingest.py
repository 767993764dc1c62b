"""Hub ingest with several hub processes on one registry (SQLite file or PostgreSQL database).

Each hub process runs the hub's own intake (``Intake.consume`` of a started ``HubService``,
as bench/status_intake.py does: fair bursts, routing, the envelope signature against the
registered key, the checks against the stored log, the witness cosignature, ``store_batch``
in the burst's transaction on the registry worker, the signed acks after the commit) on the
lineage of devices of its own (real signed batches, as bench/hub_ingest.py makes them), the
way hubs behind a shared subscription split a region's devices. Every batch is queued at
once, as a backlog the connection holds, one device's batches after another's in turn. The
processes build their batches and register their devices first (outside the clock), then
start together on a barrier; the rate is every process's entries over the time from the
first start to the last finish. The MQTT receive and the broker's PUBACK are not included.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path

from bench.hub_ingest import _batches, _log
from edge_agent.protocol.checkpoint import origin_for
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.topics import DeviceLeaf, device_topic
from edge_agent.support.mqtt import Incoming
from hub.core.ingest import ingest_batch
from hub.registry import DeviceRecord
from hub.registry.backends import open_registry
from hub.registry.interface import Registry
from hub.registry.records import Accepted, DeviceLog
from hub.service.config import HubConfig
from hub.service.server import HubService
from tests.hub_support import make_hub_dir
from tests.witness_support import RecordingConnection

__all__ = [
    "IngestLoad",
    "IngestRun",
    "accept",
    "ingest_run",
    "lineage_table_sizes",
    "sqlite_location",
]

LINEAGE_TABLES = (
    "lineage_entries",
    "lineage_search",
    "lineage_nodes",
    "lineage_checkpoints",
    "lineage_state",
)
"""What a shipped batch writes (the registry's store_batch)."""
REGION = "eu-1"


@dataclass(frozen=True)
class IngestLoad:
    """What each hub process ingests: ``devices`` logs of ``entries`` in ``batch``-entry
    batches (512: the agent's shipping unit)."""

    devices: int
    entries: int
    batch: int = 512


def _hub_main(
    location: str,
    hub_dir: Path,
    hub: int,
    load: IngestLoad,
    barrier: Barrier,
    results: multiprocessing.Queue,
) -> None:
    entries = _log(load.entries)
    devices = []
    for index in range(load.devices):
        device, key = f"gw-h{hub}-{index:03d}", PrivateKey.generate()
        devices.append((device, key, _batches(entries, load.batch, key, device)))
    registry = open_registry(location)
    with registry.write_group():
        for device, key, _ in devices:
            registry.add_device(
                DeviceRecord(device, REGION, ("line-a",), "generic-x86_64", key.public)
            )
    connection = RecordingConnection(
        [
            Incoming(device_topic(REGION, device, DeviceLeaf.LINEAGE), batches[round_], False)
            for round_ in range(len(devices[0][2]))
            for device, _, batches in devices
        ]
    )
    service = HubService(
        HubConfig(
            hub_dir=hub_dir,
            registry=location if location.startswith("postgresql:") else None,
            write_serve_file=False,
            device_rate=1e6,
            device_burst=10**6,
        )
    )
    parts = service._start(registry, service.hub_dir.load_keys())
    barrier.wait()
    started, cpu = time.monotonic(), time.process_time()
    asyncio.run(parts.intake.consume(connection))  # type: ignore[arg-type]
    finished, cpu = time.monotonic(), time.process_time() - cpu
    parts.context.db.close()
    stored = service.stats.entries_stored
    if stored != load.devices * load.entries or not connection.published:
        raise RuntimeError(f"stored {stored} entries, published {len(connection.published)}")
    registry.close()
    results.put((started, finished, stored, cpu))


def accept(
    registry: Registry, device: str, key: PrivateKey, batch: bytes, log: DeviceLog
) -> Accepted:
    """``batch`` verified as the hub verifies it, against ``device``'s ``log`` and its
    stored rows in ``registry``."""
    result = ingest_batch(
        batch,
        device=device,
        key=key.public,
        origin=origin_for(device, 1),
        log=log,
        stored=registry.stored_log(device),
    )
    assert isinstance(result, Accepted)
    return result


@dataclass(frozen=True)
class IngestRun:
    entries: int
    seconds: float
    """From the first hub process's start to the last one's finish."""
    hub_cpu_s: float
    """CPU time of the hub processes (verification, and SQLite's work in-process)."""

    @property
    def rate(self) -> float:
        return self.entries / self.seconds


def ingest_run(location: str, hubs: int, load: IngestLoad) -> IngestRun:
    """``hubs`` processes verify and store ``load`` each on the registry at ``location``
    (created already)."""
    with tempfile.TemporaryDirectory(prefix="edgegov-ingest-hub-") as tmp:
        hub_dir = make_hub_dir(Path(tmp) / "hub", devices=()).path
        return _ingest_run(location, hub_dir, hubs, load)


def _ingest_run(location: str, hub_dir: Path, hubs: int, load: IngestLoad) -> IngestRun:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(hubs, timeout=300)
    results: multiprocessing.Queue = context.Queue()
    processes = [
        context.Process(target=_hub_main, args=(location, hub_dir, hub, load, barrier, results))
        for hub in range(hubs)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        if process.exitcode != 0:
            raise RuntimeError(f"hub process exited with {process.exitcode}")
    start = min(o[0] for o in outcomes)
    end = max(o[1] for o in outcomes)
    return IngestRun(sum(o[2] for o in outcomes), end - start, sum(o[3] for o in outcomes))


def lineage_table_sizes(url: str) -> dict[str, tuple[int, int]]:
    """Rows and bytes (``pg_total_relation_size``: table, indexes, TOAST) of each lineage
    table in the PostgreSQL database at ``url``; a partitioned table's bytes are its
    partitions' (the parent itself holds none)."""
    import psycopg

    sizes = {}
    with psycopg.connect(url) as db:
        for table in LINEAGE_TABLES:
            tree = f"pg_partition_tree('{table}')"
            row = db.execute(
                f"SELECT (SELECT count(*) FROM {table}), (SELECT coalesce("
                f"sum(pg_total_relation_size(relid)), pg_total_relation_size('{table}')) "
                f"FROM {tree})"
            ).fetchone()
            assert row is not None
            sizes[table] = (int(row[0]), int(row[1]))
    return sizes


def sqlite_location(folder: Path) -> str:
    path = folder / "hub.db"
    open_registry(path).close()
    return str(path)

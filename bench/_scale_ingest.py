"""Hub ingest with several hub processes on one registry (SQLite file or PostgreSQL database).

Each hub process verifies and stores the lineage of devices of its own (real signed batches,
as bench/hub_ingest.py makes them: device signature, checkpoint note, strict decode and
chain of every entry, tree recomputed, then ``store_batch`` in the registry), the way hubs
behind a shared subscription split a region's devices. The processes build their batches
first (device-side work, outside the clock), then start together on a barrier; the rate is
every process's entries over the time from the first start to the last finish.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path

from bench.hub_ingest import _batches, _log
from edge_agent.protocol.checkpoint import origin_for
from edge_agent.protocol.keys import PrivateKey
from hub.core.ingest import ingest_batch
from hub.registry.backends import open_registry
from hub.registry.interface import Registry
from hub.registry.records import Accepted, DeviceLog

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


@dataclass(frozen=True)
class IngestLoad:
    """What each hub process ingests: ``devices`` logs of ``entries`` in ``batch``-entry
    batches (512: the agent's shipping unit)."""

    devices: int
    entries: int
    batch: int = 512


def _hub_main(
    location: str, hub: int, load: IngestLoad, barrier: Barrier, results: multiprocessing.Queue
) -> None:
    entries = _log(load.entries)
    devices = []
    for index in range(load.devices):
        device, key = f"gw-h{hub}-{index:03d}", PrivateKey.generate()
        devices.append((device, key, _batches(entries, load.batch, key, device)))
    registry = open_registry(location)
    barrier.wait()
    started, cpu, stored = time.monotonic(), time.process_time(), 0
    logs = {device: DeviceLog() for device, _, _ in devices}
    for round_ in range(len(devices[0][2])):
        for device, key, batches in devices:
            result = accept(registry, device, key, batches[round_], logs[device])
            assert registry.store_batch(result, expected_size=logs[device].size, received_at=0)
            logs[device], stored = result.log, stored + len(result.entries)
    finished, cpu = time.monotonic(), time.process_time() - cpu
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
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(hubs, timeout=300)
    results: multiprocessing.Queue = context.Queue()
    processes = [
        context.Process(target=_hub_main, args=(location, hub, load, barrier, results))
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
    table in the PostgreSQL database at ``url``."""
    import psycopg

    sizes = {}
    with psycopg.connect(url) as db:
        for table in LINEAGE_TABLES:
            row = db.execute(
                f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}"
            ).fetchone()
            assert row is not None
            sizes[table] = (int(row[0]), int(row[1]))
    return sizes


def sqlite_location(folder: Path) -> str:
    path = folder / "hub.db"
    open_registry(path).close()
    return str(path)

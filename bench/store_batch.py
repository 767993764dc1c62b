"""store_batch alone: the registry's cost of storing verified lineage batches, per backend.

Each run verifies ``--devices`` logs of ``--entries`` entries in 512-entry batches first
(outside the clock, into a scratch SQLite registry), then stores the accepted batches in
order into a fresh registry and reports entries/s (wall) and this process's CPU per entry
(SQLite's whole work is in-process; on PostgreSQL it is the hub's side only: the server's
is counted when its backends are reaped, after the registry closes, which bench/scale.py
waits for and this bench does not). Each invocation reads the checkout it lies in, so an
A/B copies this file into the other checkout and alternates
``python bench/store_batch.py --runs 1`` between the two.

Usage: python bench/store_batch.py [--devices 4] [--entries 16384] [--runs 3]
       [--backend sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from bench._postgres import postgres_server  # noqa: E402
from bench._scale_ingest import accept  # noqa: E402
from bench.hub_ingest import _batches, _log  # noqa: E402
from edge_agent.protocol.keys import PrivateKey  # noqa: E402
from hub.registry.backends import open_registry  # noqa: E402
from hub.registry.records import Accepted, DeviceLog  # noqa: E402

BATCH = 512
"""Entries per batch: the agent's shipping unit."""


def _accepted(devices: int, entries: int) -> list[tuple[Accepted, int]]:
    """Every device's batches verified in shipping order, each with the size it extends."""
    work = []
    log = _log(entries)
    with tempfile.TemporaryDirectory(prefix="edgegov-store-") as tmp:
        scratch = open_registry(Path(tmp) / "hub.db")
        shipped = []
        for index in range(devices):
            device, key = f"gw-{index:03d}", PrivateKey.generate()
            shipped.append((device, key, _batches(log, BATCH, key, device)))
        logs = {device: DeviceLog() for device, _, _ in shipped}
        for round_ in range(len(shipped[0][2])):
            for device, key, batches in shipped:
                result = accept(scratch, device, key, batches[round_], logs[device])
                work.append((result, logs[device].size))
                assert scratch.store_batch(result, expected_size=logs[device].size, received_at=0)
                logs[device] = result.log
        scratch.close()
    return work


def _store(location: str | Path, work: list[tuple[Accepted, int]]) -> tuple[float, float]:
    """Entries/s and CPU µs per entry of storing ``work`` into the registry at ``location``."""
    registry = open_registry(location)
    wall, cpu = time.perf_counter(), time.process_time()
    for accepted, size in work:
        assert registry.store_batch(accepted, expected_size=size, received_at=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    registry.close()
    entries = sum(len(accepted.entries) for accepted, _ in work)
    return entries / wall, cpu * 1e6 / entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--entries", type=int, default=16_384, help="entries per device")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", default="sqlite,postgresql")
    args = parser.parse_args()
    backends = args.backend.split(",")
    results: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
    with postgres_server() as server:
        for run in range(args.runs):
            work = _accepted(args.devices, args.entries)
            for backend in backends:
                with tempfile.TemporaryDirectory(prefix="edgegov-store-") as tmp:
                    location = (
                        Path(tmp) / "hub.db"
                        if backend == "sqlite"
                        else server.create_database(f"store_batch_{run}")
                    )
                    results[backend].append(_store(location, work))
    print(f"store_batch: {args.devices} devices x {args.entries:,} entries, {args.runs} runs")
    print("| registry | entries/s median [min-max] | hub CPU µs/entry |")
    print("|---|---|---|")
    for backend, runs in results.items():
        rates, hubs = (sorted(column) for column in zip(*runs, strict=True))
        print(
            f"| {backend} | {statistics.median(rates):,.0f} [{rates[0]:,.0f}-{rates[-1]:,.0f}] "
            f"| {statistics.median(hubs):.1f} [{hubs[0]:.1f}-{hubs[-1]:.1f}] |"
        )
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Statuses a second with one and with two hub processes on one Mosquitto (``--shared on``).

``--statuses`` registered thin devices (bench/_scale_thin.py's keys) each publish a signed
status (QoS 1, retained, as an agent does) and ``edge-hub serve --shared on`` processes
(``--hubs``, each its own process: they verify in parallel) verify and record them through
the shared status subscription into one registry. A first round is not timed: it records
every device's first status, and the hubs' direct reads of what is retained end a quiet
``RETAINED_QUIET_S`` after it. Each of ``--runs`` rounds then publishes a newer status of
every device and is timed from the first publish until the registry holds every one of
them. Reported per configuration: statuses a second and the hub processes' CPU per status
(all hubs together), median [min-max] over the rounds; the configurations alternate
(1, 2, 1, 2, ...) ``--alternations`` times in one window.

Usage: python bench/shared_status.py [--statuses 3000] [--runs 3] [--alternations 3]
       [--hubs 1,2] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # the repo, not bench/

import psycopg  # noqa: E402

from bench._postgres import postgres_server  # noqa: E402
from bench._proc import process_cpu_s  # noqa: E402
from bench._scale_thin import GROUPS, PROFILE, REGION, device_id, device_key  # noqa: E402
from edge_agent.protocol import topics  # noqa: E402
from edge_agent.protocol.shipping import DeviceStatus, sign_status  # noqa: E402
from edge_agent.protocol.topics import DeviceLeaf  # noqa: E402
from edge_agent.support.mqtt import BrokerSettings, connect  # noqa: E402
from hub.registry import DeviceRecord  # noqa: E402
from hub.registry.backends import open_registry  # noqa: E402
from hub.service.connection import RETAINED_QUIET_S  # noqa: E402
from tests.brokers import MosquittoBroker  # noqa: E402
from tests.hub_support import make_hub_dir  # noqa: E402

PUBLISH_CONCURRENCY = 200
"""QoS 1 publishes in flight at once from the bench's one publishing client."""
POLL_S = 0.02
ROUND_TIMEOUT_S = 300.0


SHIPPED_QUEUE_BOUNDS = "max_inflight_messages 20\nmax_queued_messages 10000\n"
"""The shipped config's per-client queue (packaging/mosquitto/mosquitto.conf): Mosquitto's
default of 1,000 drops what a hub has not taken yet once a round runs ahead of it."""


class _Broker(MosquittoBroker):
    """The tests' Mosquitto (127.0.0.1, a free port) with the shipped queue bounds."""

    def _config(self, port: int) -> str:
        return super()._config(port) + SHIPPED_QUEUE_BOUNDS


@contextlib.asynccontextmanager
async def _mosquitto() -> AsyncIterator[_Broker]:
    with tempfile.TemporaryDirectory(prefix="edgegov-bench-mosquitto-") as workdir:
        broker = _Broker(Path(workdir))
        await broker.start()
        try:
            yield broker
        finally:
            await broker.stop()


class _Recorded:
    """Counts the statuses the registry holds signed at a given time (read-only)."""

    def __init__(self, hub_dir: Path, url: str | None) -> None:
        self._url = url
        self._path = hub_dir / "hub.db"

    def count(self, at: int) -> int:
        query = "SELECT count(*) FROM status WHERE time = "
        if self._url is not None:
            with psycopg.connect(self._url, autocommit=True) as db:
                row = db.execute(query + "%s", (at,)).fetchone()
        else:
            with contextlib.closing(sqlite3.connect(f"file:{self._path}?mode=ro", uri=True)) as db:
                row = db.execute(query + "?", (at,)).fetchone()
        return 0 if row is None else int(row[0])


@contextlib.contextmanager
def _hubs(
    hub_dir: Path, url: str | None, broker: BrokerSettings, count: int
) -> Iterator[list[int]]:
    """``count`` ``edge-hub serve --shared on`` processes; their pids."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [
        sys.executable,
        *("-m", "hub.cli.main", "serve", "--hub-dir", str(hub_dir)),
        *("--broker", f"mqtt://{broker.host}:{broker.port}", "--shared", "on"),
        *("--device-rate", "1000", "-q"),
        *([] if url is None else ["--registry", url]),
    ]
    processes = [subprocess.Popen(argv, env=env, cwd=REPO) for _ in range(count)]
    try:
        yield [p.pid for p in processes]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


async def _publish_round(broker: BrokerSettings, count: int, at: int) -> None:
    async with connect(broker, client_id="bench-fleet") as fleet:
        gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)

        async def one(index: int) -> None:
            status = DeviceStatus(device_id(index), at, True, 1, None, "open", 0, 0)
            topic = topics.device_topic(REGION, device_id(index), DeviceLeaf.STATUS)
            async with gate:
                await fleet.publish(topic, sign_status(status, device_key(index)), retain=True)

        await asyncio.gather(*(one(i) for i in range(count)))


async def _until_recorded(recorded: _Recorded, count: int, at: int) -> None:
    async with asyncio.timeout(ROUND_TIMEOUT_S):
        while recorded.count(at) < count:
            await asyncio.sleep(POLL_S)


async def _configuration(
    hubs: int, count: int, runs: int, url: str | None, tmp: Path
) -> list[tuple[float, float, float]]:
    """(statuses a second, hub CPU ms per status, statuses published a second) of each
    timed round."""
    setup = make_hub_dir(tmp / f"hub-{hubs}-{time.monotonic_ns()}", devices=(), url=url)
    with open_registry(setup.registry) as registry, registry.write_group():
        for i in range(count):
            registry.add_device(
                DeviceRecord(device_id(i), REGION, GROUPS, PROFILE, device_key(i).public)
            )
    recorded = _Recorded(setup.path, url)
    figures = []
    async with _mosquitto() as broker:
        with _hubs(setup.path, url, broker.settings, hubs) as pids:
            for run in range(runs + 1):
                at = int(time.time()) + 1
                await asyncio.sleep(at - time.time())  # each round signed after the last
                cpu, wall = sum(process_cpu_s(p) for p in pids), time.perf_counter()
                await _publish_round(broker.settings, count, at)
                publish = time.perf_counter() - wall
                await _until_recorded(recorded, count, at)
                cpu, wall = sum(process_cpu_s(p) for p in pids) - cpu, time.perf_counter() - wall
                if run:
                    figures.append((count / wall, cpu * 1000 / count, count / publish))
                else:
                    await asyncio.sleep(RETAINED_QUIET_S + 1.0)  # the direct reads end
    return figures


def _cell(values: list[float], digits: int) -> str:
    median, low, high = statistics.median(values), min(values), max(values)
    return f"{median:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def _bench(args: argparse.Namespace) -> None:
    configurations = [int(h) for h in args.hubs.split(",")]
    medians: dict[int, list[tuple[float, float]]] = {h: [] for h in configurations}
    with (
        tempfile.TemporaryDirectory(prefix="edgegov-shared-status-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        server = stack.enter_context(postgres_server()) if args.backend == "postgresql" else None
        for alternation in range(args.alternations):
            for hubs in configurations:
                url = None
                if server is not None:
                    url = server.create_database(f"shared_status_{alternation}_{hubs}")
                figures = await _configuration(hubs, args.statuses, args.runs, url, Path(tmp))
                rates = [r for r, _, _ in figures]
                cpus = [c for _, c, _ in figures]
                published = [p for _, _, p in figures]
                medians[hubs].append((statistics.median(rates), statistics.median(cpus)))
                print(
                    f"alternation {alternation + 1}, {hubs} hub(s): {_cell(rates, 0)} "
                    f"statuses/s, {_cell(cpus, 3)} hub CPU ms per status, published at "
                    f"{_cell(published, 0)}/s (load {_load()})",
                    flush=True,
                )
    print(f"\n{args.statuses} statuses a round, {args.backend}; each cell the median [min-max]")
    print("of the alternations' medians (each over its timed rounds)")
    print("| hub processes | statuses/s | hub CPU ms per status (all hubs) |")
    print("|---|---|---|")
    for hubs in configurations:
        rates = [r for r, _ in medians[hubs]]
        cpus = [c for _, c in medians[hubs]]
        print(f"| {hubs} | {_cell(rates, 0)} | {_cell(cpus, 3)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statuses", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--alternations", type=int, default=3)
    parser.add_argument("--hubs", default="1,2")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    # aiomqtt warns past 10 publishes awaiting their PUBACK; the bench keeps 200 in flight.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    print(f"load average: {_load()}")
    asyncio.run(_bench(args))
    print(f"load average: {_load()}")


if __name__ == "__main__":
    main()

"""The hub's cost per device status: verify and record, in one hub process, no broker.

``--statuses`` registered thin devices (bench/_scale_thin.py's keys) each send a signed
status naming a new bundle version, queued at once as a push's installs arrive, and the
hub's intake takes them (``Intake.consume``: fair queue, routing, signature check against
the registered key, ``record_status`` in the burst's transaction on the registry worker,
the commit). A first round records every device's first status and is not timed; each of
``--runs`` rounds then records a newer status of every device. Reported per status: the
hub process's CPU and the wall time, median [min-max] over the rounds, on SQLite (a
``hub.db``, WAL, ``synchronous=FULL``) and on PostgreSQL (a server this bench starts). The
MQTT receive and its PUBACK, which the hub's loop also pays per status, are not included.

Usage: python bench/status_intake.py [--statuses 3000] [--runs 5] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from bench._postgres import postgres_server  # noqa: E402
from bench._scale_thin import GROUPS, PROFILE, REGION, device_id, device_key  # noqa: E402
from edge_agent.protocol import topics  # noqa: E402
from edge_agent.protocol.shipping import DeviceStatus, sign_status  # noqa: E402
from edge_agent.protocol.topics import DeviceLeaf  # noqa: E402
from edge_agent.support.mqtt import Incoming  # noqa: E402
from hub.registry import DeviceRecord  # noqa: E402
from hub.registry.backends import open_registry  # noqa: E402
from hub.service.config import HubConfig  # noqa: E402
from hub.service.server import HubService  # noqa: E402
from tests.hub_support import make_hub_dir  # noqa: E402
from tests.witness_support import RecordingConnection  # noqa: E402


def _statuses(count: int, version: int) -> list[Incoming]:
    now = int(time.time())
    return [
        Incoming(
            topics.device_topic(REGION, device_id(i), DeviceLeaf.STATUS),
            sign_status(
                DeviceStatus(device_id(i), now, True, version, None, "open", 0, 0), device_key(i)
            ),
            True,
        )
        for i in range(count)
    ]


async def _rounds(
    hub_dir: Path, url: str | None, count: int, runs: int
) -> list[tuple[float, float]]:
    """(CPU ms, wall ms) per status of each timed round."""
    with open_registry(url or hub_dir / "hub.db") as registry, registry.write_group():
        for i in range(count):
            registry.add_device(
                DeviceRecord(device_id(i), REGION, GROUPS, PROFILE, device_key(i).public)
            )
    hub = HubService(
        HubConfig(hub_dir=hub_dir, write_serve_file=False, device_rate=1000, registry=url)
    )
    registry = open_registry(url or hub_dir / "hub.db")
    hub._start(registry, hub.hub_dir.load_keys())
    intake = hub._started.intake
    figures = []
    try:
        for version in range(runs + 1):
            messages = _statuses(count, version)
            await asyncio.sleep(1.1)  # each round's statuses signed a second after the last
            cpu, wall = time.process_time(), time.perf_counter()
            await intake.consume(RecordingConnection(messages))  # type: ignore[arg-type]
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if version:
                figures.append((cpu * 1000 / count, wall * 1000 / count))
        if hub.stats.statuses != count * (runs + 1):
            raise RuntimeError(f"recorded {hub.stats.statuses} of {count * (runs + 1)} statuses")
    finally:
        hub._started.context.db.close()
        registry.close()
    return figures


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


async def _backend(backend: str, count: int, runs: int) -> list[tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="edgegov-status-intake-") as tmp:
        if backend == "sqlite":
            setup = make_hub_dir(Path(tmp) / "hub", devices=())
            return await _rounds(setup.path, None, count, runs)
        with postgres_server() as server:
            url = server.create_database("status_intake")
            setup = make_hub_dir(Path(tmp) / "hub", devices=(), url=url)
            return await _rounds(setup.path, url, count, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statuses", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"load average: {Path('/proc/loadavg').read_text().split(' ', 3)[:3]}")
    print("| registry | hub CPU ms per status | wall ms per status |")
    print("|---|---|---|")
    for backend in args.backends.split(","):
        figures = asyncio.run(_backend(backend, args.statuses, args.runs))
        cpu, wall = [c for c, _ in figures], [w for _, w in figures]
        print(f"| {backend} | {_cell(cpu)} | {_cell(wall)} |")
    print(f"load average: {Path('/proc/loadavg').read_text().split(' ', 3)[:3]}")


if __name__ == "__main__":
    main()

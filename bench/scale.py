"""Scale: hub ingest with 1/2/4 hub processes on SQLite and PostgreSQL; a fleet over two
bridged site brokers (push and revocation times); the figures docs/scale.md extrapolates from.

1. ingest: ``--hubs`` (1,2,4) hub processes on one registry, SQLite (a ``hub.db``, WAL,
   ``synchronous=FULL``) and PostgreSQL (a server this bench starts, ``fsync`` on) in the
   same run, each process verifying and storing distinct devices' real signed batches
   (bench/_scale_ingest.py); verified entries/s, median [min-max] over ``--runs`` fresh
   registries; the ratios against the targets (PostgreSQL with 2 hubs >= 1.6x one hub; one
   hub on PostgreSQL >= 70% of one on SQLite); then the lineage tables' rows and bytes per
   entry (``pg_total_relation_size``) after a PostgreSQL run.
2. fleet: ``--agents`` simulated agents (bench/fleet.py's: real ``AgentDaemon`` over
   ``LocalAgent``, in one worker process per site) on two site brokers bridged to a central
   Mosquitto (the bridge topics of packaging/mosquitto/site.conf), ``edge-hub serve`` on the
   central one: push-to-installed p50/p99/max (target max <= 10 s) and revocation p99 (target
   <= 2 s); with the per-agent cost of enrolment and connection, to extrapolate
   (bench/_scale_fleet.py).

Exit 1 when a target is missed (as bench/lineage.py does). The machine's load average is
printed before and after: on a shared machine the figures are indicative.

Usage: python bench/scale.py [--hubs 1,2,4] [--runs 3] [--agents 2000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from bench._postgres import BenchPostgres, postgres_server  # noqa: E402
from bench._scale_fleet import bridged_fleet  # noqa: E402
from bench._scale_ingest import (  # noqa: E402
    IngestLoad,
    ingest_rate,
    lineage_table_sizes,
    sqlite_location,
)
from bench.fleet import _pct  # noqa: E402
from hub.registry.backends import open_registry  # noqa: E402

TWO_HUBS_TARGET = 1.6
PG_VS_SQLITE_TARGET = 0.7
PUSH_MAX_TARGET_S = 10.0
REVOKE_P99_TARGET_S = 2.0


def _load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def _ingest(
    server: BenchPostgres, hubs: list[int], runs: int, load: IngestLoad
) -> tuple[dict[tuple[str, int], list[float]], dict[str, tuple[int, int]]]:
    rates: dict[tuple[str, int], list[float]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for run in range(runs):
        for count in hubs:
            with tempfile.TemporaryDirectory(prefix="edgegov-scale-") as tmp:
                location = sqlite_location(Path(tmp))
                rates.setdefault(("sqlite", count), []).append(ingest_rate(location, count, load))
            url = server.create_database(f"scale_{run}_{count}")
            open_registry(url).close()
            rates.setdefault(("postgresql", count), []).append(ingest_rate(url, count, load))
            if count == hubs[0]:
                sizes = lineage_table_sizes(url)
    return rates, sizes


def _ingest_report(
    rates: dict[tuple[str, int], list[float]], sizes: dict[str, tuple[int, int]], entries: int
) -> bool:
    print("| registry | hub processes | entries/s median | [min-max] | vs one hub |")
    print("|---|---|---|---|---|")
    medians = {key: statistics.median(values) for key, values in rates.items()}
    for (backend, count), values in rates.items():
        ratio = medians[(backend, count)] / medians[(backend, 1)] if (backend, 1) in rates else 0
        print(
            f"| {backend} | {count} | {medians[(backend, count)]:,.0f} | "
            f"[{min(values):,.0f}-{max(values):,.0f}] | {ratio:.2f}x |"
        )
    met = True
    if ("postgresql", 2) in medians and ("postgresql", 1) in medians:
        two = medians[("postgresql", 2)] / medians[("postgresql", 1)]
        ok = two >= TWO_HUBS_TARGET
        met &= ok
        print(
            f"PostgreSQL 2 hubs / 1 hub: {two:.2f}x (target >= {TWO_HUBS_TARGET}x: "
            f"{'met' if ok else 'missed'})"
        )
    if ("postgresql", 1) in medians and ("sqlite", 1) in medians:
        share = medians[("postgresql", 1)] / medians[("sqlite", 1)]
        ok = share >= PG_VS_SQLITE_TARGET
        met &= ok
        print(
            f"PostgreSQL 1 hub / SQLite 1 hub: {share:.0%} (target >= "
            f"{PG_VS_SQLITE_TARGET:.0%}: {'met' if ok else 'missed'})"
        )
    total = sum(size for _, size in sizes.values())
    print(f"\nPostgreSQL lineage tables after {entries:,} entries (one run):")
    print("| table | rows | bytes | bytes/entry |")
    print("|---|---|---|---|")
    for table, (rows, size) in sizes.items():
        print(f"| {table} | {rows:,} | {size:,} | {size / entries:.0f} |")
    print(f"| all | | {total:,} | {total / entries:.0f} |")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", default="1,2,4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=4, help="devices per hub process")
    parser.add_argument("--entries", type=int, default=4096, help="entries per device")
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--revocations", type=int, default=20)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: ingest,fleet")
    parser.add_argument("--quick", action="store_true", help="smaller loads, 3 runs, 300 agents")
    args = parser.parse_args()
    # A SIGTERM unwinds like Ctrl-C: the PostgreSQL server and the brokers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.devices, args.entries, args.agents, args.revocations = 2, 2048, 300, 5
    hubs = [int(n) for n in args.hubs.split(",")]
    skip = set(args.skip.split(","))
    print(f"load average at start: {_load()}")
    met = True
    if "ingest" not in skip:
        load = IngestLoad(args.devices, args.entries)
        print(
            f"\n## ingest: {args.devices} devices x {args.entries:,} entries per hub process, "
            f"batches of {load.batch}, {args.runs} runs"
        )
        with postgres_server() as server:
            rates, sizes = _ingest(server, hubs, args.runs, load)
        met &= _ingest_report(rates, sizes, hubs[0] * args.devices * args.entries)
        print(f"load average: {_load()}")
    if "fleet" not in skip:
        logging.basicConfig(level=logging.ERROR)
        logging.getLogger("mqtt").setLevel(logging.ERROR)
        print(f"\n## fleet: {args.agents:,} agents over two bridged site brokers")
        figures = asyncio.run(bridged_fleet(args.agents, min(args.revocations, args.agents)))
        print(figures.report())
        push_ok = max(figures.push) <= PUSH_MAX_TARGET_S
        revoke_ok = _pct(figures.revoke, 0.99) <= REVOKE_P99_TARGET_S
        print(
            f"push max <= {PUSH_MAX_TARGET_S:.0f} s: {'met' if push_ok else 'missed'}; "
            f"revocation p99 <= {REVOKE_P99_TARGET_S:.0f} s: "
            f"{'met' if revoke_ok else 'missed'}"
        )
        met &= push_ok and revoke_ok
        print(f"load average: {_load()}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

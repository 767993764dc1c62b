"""Scale: hub ingest with 1/2/4 hub processes on SQLite and PostgreSQL; a fleet over two
bridged site brokers; broker fan-out to 10,000; schedule takeover: docs/scale.md's figures.

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
3. thin: ``--thin-agents`` (10,000) thin simulated agents over the same bridged sites, each
   its own MQTT session, registered device key and verification of every bundle, token and
   revocation it receives (bench/_scale_thin.py): push-to-installed p50/p99/max at the hub's
   registry and at the agents, revocation p50/p99 to the revoked agent and to the last
   agent, with what a real device's install adds (timed on real ``LocalAgent``s) beside
   them; the targets are judged on measured + that addition.
4. fan-out: one message (a revocation's size, a bundle's) published centrally to
   ``--subscribers`` plain MQTT subscribers over the same bridged sites: every arrival's
   delay, the part of a push or revocation a real fleet does not spread over its devices
   (bench/_scale_fanout.py).
5. takeover: two ``edge-hub serve`` on one registry (hub.db, then PostgreSQL) and Mosquitto;
   seconds from SIGKILL of the schedule lease's holder to the next freshness token, against
   one ``--interval`` (bench/_scale_takeover.py).

Exit 1 when a target is missed (as bench/lineage.py does). The machine's load average is
printed before and after: on a shared machine the figures are indicative.

Usage: python bench/scale.py [--hubs 1,2,4] [--runs 3] [--agents 1000] [--thin-agents 10000]
       [--thin-workers 2] [--subscribers 10000] [--takeovers 3] [--interval 10]
       [--skip ingest,fleet,thin,fanout,takeover] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from bench._postgres import BenchPostgres, postgres_server  # noqa: E402
from bench._scale_fanout import fanout  # noqa: E402
from bench._scale_fleet import bridged_fleet  # noqa: E402
from bench._scale_ingest import (  # noqa: E402
    IngestLoad,
    IngestRun,
    ingest_run,
    lineage_table_sizes,
    sqlite_location,
)
from bench._scale_takeover import takeover_times  # noqa: E402
from bench._scale_thin import thin_fleet  # noqa: E402
from bench.fleet import _pct  # noqa: E402
from hub.registry.backends import open_registry  # noqa: E402

TWO_HUBS_TARGET = 1.6
PG_VS_SQLITE_TARGET = 0.7
PUSH_MAX_TARGET_S = 10.0
REVOKE_P99_TARGET_S = 2.0
FANOUT_SIZES = [300, 65_536]
"""A revocation's size, and a bundle's of a few hundred rules."""


def _load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


Rates = dict[tuple[str, int], list[float]]
CpuCost = dict[tuple[str, int], list[tuple[float, float]]]
"""Per configuration and run: hub processes' and PostgreSQL server's CPU µs per entry."""


def _ingest(
    server: BenchPostgres, hubs: list[int], runs: int, load: IngestLoad
) -> tuple[Rates, CpuCost, dict[str, tuple[int, int]]]:
    rates: Rates = {}
    cpu: CpuCost = {}
    sizes: dict[str, tuple[int, int]] = {}
    for run in range(runs):
        for count in hubs:
            with tempfile.TemporaryDirectory(prefix="edgegov-scale-") as tmp:
                result = ingest_run(sqlite_location(Path(tmp)), count, load)
            rates.setdefault(("sqlite", count), []).append(result.rate)
            cpu.setdefault(("sqlite", count), []).append((_us(result.hub_cpu_s, result), 0.0))
            url = server.create_database(f"scale_{run}_{count}")
            open_registry(url).close()
            before = server.cpu_seconds()
            result = ingest_run(url, count, load)
            server_us = _us(server.cpu_seconds() - before, result)
            rates.setdefault(("postgresql", count), []).append(result.rate)
            cpu.setdefault(("postgresql", count), []).append(
                (_us(result.hub_cpu_s, result), server_us)
            )
            if count == hubs[0]:
                sizes = lineage_table_sizes(url)
    return rates, cpu, sizes


def _us(seconds: float, run: IngestRun) -> float:
    return seconds * 1e6 / run.entries


def _ingest_report(
    rates: Rates, cpu: CpuCost, sizes: dict[str, tuple[int, int]], entries: int
) -> bool:
    print(
        "| registry | hub processes | entries/s median | [min-max] | vs one hub | "
        "hub CPU µs/entry | PostgreSQL CPU µs/entry |"
    )
    print("|---|---|---|---|---|---|---|")
    medians = {key: statistics.median(values) for key, values in rates.items()}
    for (backend, count), values in rates.items():
        ratio = medians[(backend, count)] / medians[(backend, 1)] if (backend, 1) in rates else 0
        hub_us = statistics.median(c[0] for c in cpu[(backend, count)])
        server_us = statistics.median(c[1] for c in cpu[(backend, count)])
        print(
            f"| {backend} | {count} | {medians[(backend, count)]:,.0f} | "
            f"[{min(values):,.0f}-{max(values):,.0f}] | {ratio:.2f}x | {hub_us:.0f} | "
            f"{server_us:.0f} |"
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


def _ingest_part(server: BenchPostgres, hubs: list[int], runs: int, load: IngestLoad) -> bool:
    print(
        f"\n## ingest: {load.devices} devices x {load.entries:,} entries per hub process, "
        f"batches of {load.batch}, {runs} runs"
    )
    rates, cpu, sizes = _ingest(server, hubs, runs, load)
    met = _ingest_report(rates, cpu, sizes, hubs[0] * load.devices * load.entries)
    print(f"load average: {_load()}")
    return met


def _fleet_part(agents: int, revocations: int) -> bool:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    print(f"\n## fleet: {agents:,} agents over two bridged site brokers")
    figures = asyncio.run(bridged_fleet(agents, revocations))
    print(figures.report())
    push_ok = max(figures.push) <= PUSH_MAX_TARGET_S
    revoke_ok = _pct(figures.revoke, 0.99) <= REVOKE_P99_TARGET_S
    print(
        f"push max <= {PUSH_MAX_TARGET_S:.0f} s: {'met' if push_ok else 'missed'}; "
        f"revocation p99 <= {REVOKE_P99_TARGET_S:.0f} s: {'met' if revoke_ok else 'missed'}"
    )
    print(f"load average: {_load()}")
    return push_ok and revoke_ok


def _thin_part(agents: int, revocations: int, per_site: int) -> bool:
    print(
        f"\n## thin: {agents:,} thin agents over two bridged site brokers, "
        f"{revocations} revocations"
    )
    figures = asyncio.run(thin_fleet(agents, revocations, per_site))
    print(figures.report())
    push, revoke = figures.push_max_real_s(), figures.revoke_p99_real_s()
    push_ok = push <= PUSH_MAX_TARGET_S and figures.refused == 0
    revoke_ok = revoke <= REVOKE_P99_TARGET_S
    print(
        f"push max at the hub + a real install <= {PUSH_MAX_TARGET_S:.0f} s: {push:.2f} s, "
        f"{'met' if push_ok else 'missed'}; revocation p99 + a real install <= "
        f"{REVOKE_P99_TARGET_S:.0f} s: {revoke * 1000:.0f} ms, "
        f"{'met' if revoke_ok else 'missed'}"
    )
    print(f"load average: {_load()}")
    return push_ok and revoke_ok


def _fanout_part(subscribers: int) -> bool:
    print(
        f"\n## fan-out: one message published centrally to {subscribers:,} MQTT subscribers "
        "over two bridged site brokers, 5 messages per size"
    )
    print("| subscribers | bytes | arrival p50 ms | p99 ms | last arrival ms median [min-max] |")
    print("|---|---|---|---|---|")
    figures, memory = asyncio.run(fanout(subscribers, FANOUT_SIZES, 5))
    for figure in figures:
        print(figure.row())
    print(
        "broker resident memory, every subscriber connected: "
        + ", ".join(f"{name} {mib:.1f} MiB" for name, mib in memory.items())
    )
    print(f"load average: {_load()}")
    return max(max(m) for m in figures[0].latencies) <= REVOKE_P99_TARGET_S


def _takeover_part(server: BenchPostgres, takeovers: int, interval_s: float) -> bool:
    print(
        f"\n## takeover: SIGKILL of the leading edge-hub serve of two, {takeovers} times, "
        f"freshness interval {interval_s:g} s"
    )
    print("| registry | median s | [min-max] | within one interval |")
    print("|---|---|---|---|")
    met = True
    for backend in ("sqlite", "postgresql"):
        with tempfile.TemporaryDirectory(prefix="edgegov-scale-takeover-") as tmp:
            work = Path(tmp)
            registry = (
                str(work / "hub" / "hub.db")
                if backend == "sqlite"
                else server.create_database("takeover")
            )
            times = asyncio.run(takeover_times(registry, work, takeovers, interval_s))
        ok = max(times) <= interval_s
        met &= ok
        print(
            f"| {backend} | {statistics.median(times):.2f} | [{min(times):.2f}-{max(times):.2f}] "
            f"| {'met' if ok else 'missed'} |"
        )
    print(f"load average: {_load()}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", default="1,2,4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=4, help="devices per hub process")
    parser.add_argument("--entries", type=int, default=4096, help="entries per device")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--revocations", type=int, default=20)
    parser.add_argument("--thin-agents", type=int, default=10_000)
    parser.add_argument("--thin-workers", type=int, default=2, help="thin agent processes per site")
    parser.add_argument("--subscribers", type=int, default=10_000, help="fan-out subscribers")
    parser.add_argument("--takeovers", type=int, default=3)
    parser.add_argument(
        "--interval", type=float, default=10.0, help="freshness interval, s (takeover)"
    )
    parser.add_argument(
        "--skip", default="", help="comma list of parts to skip: ingest,fleet,thin,fanout,takeover"
    )
    parser.add_argument("--quick", action="store_true", help="smaller loads, 3 runs, 300 agents")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # A SIGTERM unwinds like Ctrl-C: the PostgreSQL server and the brokers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.devices, args.entries, args.agents, args.revocations = 2, 2048, 300, 5
        args.takeovers, args.interval, args.subscribers = 2, 4.0, 500
        args.thin_agents = 500
    hubs = [int(n) for n in args.hubs.split(",")]
    skip = set(args.skip.split(","))
    print(f"load average at start: {_load()}")
    met = True
    with contextlib.ExitStack() as stack:
        server = None
        if {"ingest", "takeover"} - skip:
            server = stack.enter_context(postgres_server())
        if "ingest" not in skip:
            assert server is not None
            met &= _ingest_part(server, hubs, args.runs, IngestLoad(args.devices, args.entries))
        if "fleet" not in skip:
            met &= _fleet_part(args.agents, min(args.revocations, args.agents))
        if "thin" not in skip:
            met &= _thin_part(
                args.thin_agents, min(args.revocations, args.thin_agents), args.thin_workers
            )
        if "fanout" not in skip:
            met &= _fanout_part(args.subscribers)
        if "takeover" not in skip:
            assert server is not None
            met &= _takeover_part(server, args.takeovers, args.interval)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

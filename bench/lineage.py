"""Lineage benchmark: durable decisions per second under group commit, and a million-entry log.

1. **Durable decisions.** For ``synchronous=FULL`` and ``NORMAL``: the bare cost of one SQLite
   commit per row (a two-column WAL table, one thread, ``BEGIN IMMEDIATE``/``INSERT``/``COMMIT``
   per row of the size of a real entry), then 1, 8 and 64 concurrent deciders recording
   decisions through the real path on a fresh log each run: threads calling
   ``LineageLog.record_decision`` (leader/follower group commit) and coroutines on one event
   loop awaiting ``LineageLog.record_decision_async`` (futures; a batch of one or two
   committed on the loop, bigger ones by the log's writer thread).
   Every decision is durable (committed) before its call returns. Reported: decisions per
   second, median and spread over the runs; p50/p99 latency of one call, median over the
   runs; and the throughput over the bare commits per second.
2. **Verify.** A log of ``--entries`` entries (1,000,000 by default) is built with the store's
   batch append (1024 entries per transaction, a signed checkpoint every 1,000 entries, entry
   times going up as on a device) and ``LineageLog.verify()``, what ``edge-agent log verify``
   runs, is timed: every checkpoint signature, every entry's encoding, chain link, columns and
   stored tree nodes, and the root at every checkpoint.
3. **Inclusion proofs** for random entries of that log: ``LineageLog.prove`` (read the entry,
   the audit path from stored nodes, the latest signed checkpoint), then
   ``verify_inclusion_proof`` (the checkpoint's Ed25519 signature and the path), and the path
   alone (``verify_inclusion``); wall time and the thread's CPU time.

Decisions vary (64 request shapes) so no layer can serve them from a cache. Numbers depend on
the disk's fsync latency (that is what the bare-commit rows measure) and on the other load on
the machine: run with nothing else busy, and compare ratios, not absolutes.

Usage: python bench/lineage.py [--quick] [--dir DIR] [--entries N] [--repeat R] [--seconds S]
                               [--skip-throughput]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.device_key import load_or_create_device_key
from edge_agent.lineage.decisions import decision_entry
from edge_agent.lineage.log import LineageConfig, LineageLog
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Draft, draft_of, place_draft
from edge_agent.protocol.lineage_export import InclusionProof, verify_inclusion_proof
from edge_agent.protocol.merkle import leaf_hash, verify_inclusion
from edge_agent.protocol.request import Request
from edge_agent.trust.gate import Decision, Reason

DEVICE = "gw-bench"
NOW = 1_800_000_000
DECIDERS = (1, 8, 64)
SYNC_MODES = ("FULL", "NORMAL")
TARGET_RATIO = 20.0
TARGET_VERIFY_S = 30.0
TARGET_PROVE_MS = 10.0
TARGET_CHECK_MS = 1.0


@dataclass(frozen=True, slots=True)
class Run:
    """One timed run: decisions per second, per-call latencies in seconds, and the process
    CPU time per decision in seconds (all threads: deciders, writer, SQLite)."""

    rate: float
    latencies: list[float]
    cpu: float


def decisions(count: int) -> list[Decision]:
    """``count`` varied decisions (allows and denies over 64 request shapes)."""
    rng = random.Random(7)
    result = []
    for k in range(count):
        allowed = rng.random() < 0.8
        request = Request(
            f"svc:w{k % 16}",
            ("exec", "read", "write", "publish")[k % 4],
            f"/opt/w{k % 16}/bin/run-{k % 64}",
            (("zone", f"plant-{k % 3}"),),
            (f"uid:{1000 + k % 16}",),
        )
        result.append(
            Decision(
                allowed,
                Reason.ALLOWED if allowed else Reason.POLICY_DENIED,
                "allowed by rule w-exec" if allowed else "denied by rule no-write",
                "w-exec" if allowed else "no-write",
                3,
                bytes(range(32)),
                request,
                NOW + k,
            )
        )
    return result


def fresh_log(root: Path, synchronous: str) -> LineageLog:
    state = Path(tempfile.mkdtemp(dir=root))
    load_or_create_device_key(state)
    log = LineageLog.open(
        state, DEVICE, config=LineageConfig(synchronous=synchronous), recorded_head=False
    )
    if log.fault is not None:
        raise SystemExit(f"cannot open a lineage in {state}: {log.fault}")
    return log


def bare_commits(root: Path, synchronous: str, data: bytes, seconds: float) -> float:
    """Rows per second when every row is its own transaction (the cost group commit avoids)."""
    path = Path(tempfile.mkdtemp(dir=root)) / "bare.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(f"PRAGMA synchronous = {synchronous}")
    db.execute("CREATE TABLE rows (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO rows VALUES (?, ?)", (count, data))
        db.execute("COMMIT")
        count += 1
    rate = count / (time.perf_counter() - start)
    db.close()
    return rate


def thread_deciders(log: LineageLog, pool: Sequence[Decision], n: int, seconds: float) -> Run:
    """``n`` threads recording decisions until the deadline; every call must be durable."""
    latencies: list[list[float]] = [[] for _ in range(n)]
    failures: list[str] = []
    barrier = threading.Barrier(n + 1)
    deadline = [0.0]

    def decider(k: int) -> None:
        mine, clock, size = latencies[k], time.perf_counter, len(pool)
        barrier.wait()
        i = k
        while clock() < deadline[0]:
            started = clock()
            _, seq = log.record_decision(pool[i % size])
            mine.append(clock() - started)
            if seq is None:
                failures.append(log.status() or "not logged")
                return
            i += n

    threads = [threading.Thread(target=decider, args=(k,)) for k in range(n)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    start, cpu = time.perf_counter(), time.process_time()
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if failures:
        raise SystemExit(f"a decision was not logged: {failures[0]}")
    merged = [x for part in latencies for x in part]
    return Run(len(merged) / elapsed, merged, cpu / len(merged))


def coroutine_deciders(log: LineageLog, pool: Sequence[Decision], n: int, seconds: float) -> Run:
    """``n`` coroutines on one event loop recording decisions until the deadline."""

    async def main() -> Run:
        latencies: list[float] = []
        clock, size = time.perf_counter, len(pool)
        start, cpu = clock(), time.process_time()
        deadline = start + seconds

        async def decider(k: int) -> None:
            i = k
            while clock() < deadline:
                started = clock()
                _, seq = await log.record_decision_async(pool[i % size])
                latencies.append(clock() - started)
                if seq is None:
                    raise SystemExit(f"a decision was not logged: {log.status()}")
                i += n

        async with asyncio.TaskGroup() as group:
            for k in range(n):
                group.create_task(decider(k))
        used = (time.process_time() - cpu) / len(latencies)
        return Run(len(latencies) / (clock() - start), latencies, used)

    return asyncio.run(main())


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def spread(values: Sequence[float], digits: int = 0) -> str:
    """``median (min-max)`` of ``values``."""
    med, low, high = statistics.median(values), min(values), max(values)
    return f"{med:,.{digits}f} ({low:,.{digits}f}-{high:,.{digits}f})"


def throughput_section(root: Path, repeat: int, seconds: float) -> bool:
    """Print the durable-decisions table; return whether the ratio target held.

    The disk's fsync latency drifts with other load, so every run is paired with a bare
    measurement taken just before it, and the ratio is taken per pair.
    """
    pool = decisions(4096)
    sample = place_draft(draft_of(decision_entry(pool[0])), 123_456, GENESIS_PREV)
    bare_seconds = max(seconds / 3, 0.5)
    print("## Durable decisions per second (group commit vs one commit per row)\n")
    print(
        f"{repeat} runs of {seconds:g} s per row, a fresh log per run, each run right after "
        f"{bare_seconds:g} s of bare commits (one transaction per row) on the same disk; entry "
        f"size {len(sample)} bytes. decisions/s and x bare: median (min-max) over the runs "
        "(x bare per run: its rate over its own bare rate); p50/p99: median over the runs of "
        "each run's latency percentiles; CPU us: process CPU time per decision, all threads "
        "(median over the runs). Group commit takes the fsync out of each decision, so with "
        "enough deciders the ratio tends to (bare commit time) / (CPU per decision).\n"
    )
    print(
        "| sync | deciders | kind | decisions/s | bare commits/s | x bare | p50 ms | p99 ms "
        "| CPU us |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    met = False
    for synchronous in SYNC_MODES:
        for kind, runner in (("threads", thread_deciders), ("coroutines", coroutine_deciders)):
            for n in DECIDERS:
                runs, bares = [], []
                for _ in range(repeat):
                    bares.append(bare_commits(root, synchronous, sample, bare_seconds))
                    runs.append(runner(fresh_log(root, synchronous), pool, n, seconds))
                rates = [r.rate for r in runs]
                ratios = [rate / bare for rate, bare in zip(rates, bares, strict=True)]
                p50 = statistics.median(percentile(r.latencies, 0.50) for r in runs)
                p99 = statistics.median(percentile(r.latencies, 0.99) for r in runs)
                if synchronous == "FULL" and n == 64:
                    met = met or statistics.median(ratios) >= TARGET_RATIO
                print(
                    f"| {synchronous} | {n} | {kind} | {spread(rates)} | {spread(bares)} | "
                    f"{spread(ratios, 1)} | {p50 * 1000:.3f} | {p99 * 1000:.3f} | "
                    f"{statistics.median(r.cpu for r in runs) * 1e6:.0f} |"
                )
    print()
    return met


def build_log(root: Path, entries: int) -> tuple[LineageLog, float]:
    """A log of ``entries`` entries written with the store's batch append; its build time."""
    state = Path(tempfile.mkdtemp(dir=root))
    load_or_create_device_key(state)
    writer = LineageLog.open(
        state, DEVICE, config=LineageConfig(synchronous="NORMAL"), recorded_head=False
    )
    assert writer.store is not None
    shapes: list[Draft] = [draft_of(decision_entry(d)) for d in decisions(1024)]
    start = time.perf_counter()
    written = 0
    while written < entries:
        # Times go up, as they do on a device, so the time index grows at its end.
        batch = [
            replace(shapes[k % 1024], time=NOW + written + k)
            for k in range(min(1024, entries - written))
        ]
        writer.store.append_batch(batch, sign=writer.sign, checkpoint_every=1000, now=NOW + written)
        written += len(batch)
    writer.close(NOW + written)
    elapsed = time.perf_counter() - start
    return LineageLog.open(state, DEVICE, verify_at_open=False, recorded_head=False), elapsed


def verify_section(log: LineageLog, entries: int, built_s: float, repeat: int) -> bool:
    """Print the verify timing; return whether the target held."""
    times, cpu = [], []
    for _ in range(repeat):
        wall, used = time.perf_counter(), time.process_time()
        report = log.verify()
        cpu.append(time.process_time() - used)
        times.append(time.perf_counter() - wall)
    print(f"## `log verify` of {entries:,} entries\n")
    print(
        f"Built in {built_s:.1f} s with the batch append; {report.checkpoints} signed "
        f"checkpoints. {repeat} runs of `LineageLog.verify()`; wall and process CPU time.\n"
    )
    print("| entries | wall s, median (min-max) | CPU s, median (min-max) | us/entry | target |")
    print("|---:|---:|---:|---:|---:|")
    median = statistics.median(times)
    print(
        f"| {entries:,} | {spread(times, 2)} | {spread(cpu, 2)} | "
        f"{median / entries * 1e6:.1f} | < {TARGET_VERIFY_S:g} s for 1,000,000 |"
    )
    print()
    return median * 1_000_000 / entries < TARGET_VERIFY_S


def proof_section(log: LineageLog, entries: int, count: int, repeat: int) -> bool:
    """Print inclusion proof timings; return whether both targets held (p99 of wall time)."""
    key = log.key
    assert key is not None
    rng = random.Random(11)
    wall: dict[str, list[float]] = {"prove": [], "check": [], "path": []}
    cpu: dict[str, list[float]] = {"prove": [], "check": [], "path": []}
    clock, used = time.perf_counter, time.thread_time
    proof: InclusionProof = log.prove(0, NOW)
    for _ in range(repeat):
        for seq in [rng.randrange(entries) for _ in range(count)]:
            marks = [(clock(), used())]
            proof = log.prove(seq, NOW)
            marks.append((clock(), used()))
            checkpoint = verify_inclusion_proof(proof, key.public, log.origin)
            marks.append((clock(), used()))
            verify_inclusion(
                leaf_hash(proof.entry), seq, proof.tree_size, proof.proof, checkpoint.root
            )
            marks.append((clock(), used()))
            for step, name in enumerate(("prove", "check", "path")):
                wall[name].append((marks[step + 1][0] - marks[step][0]) * 1000)
                cpu[name].append((marks[step + 1][1] - marks[step][1]) * 1000)
    print(f"## Inclusion proofs in a {entries:,}-entry log\n")
    print(
        f"{repeat} x {count} random entries; each proof has about {len(proof.proof)} hashes, "
        f"against the checkpoint at size {proof.tree_size:,}. Wall time, and the thread's CPU "
        "time (which leaves out time the thread was preempted by other load).\n"
    )
    print("| step | median ms | p99 ms | max ms | CPU median ms | CPU p99 ms | target |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = (
        ("produce (`LineageLog.prove`)", "prove", f"< {TARGET_PROVE_MS:g} ms"),
        ("verify: signature + path", "check", f"< {TARGET_CHECK_MS:g} ms"),
        ("verify: path only", "path", "-"),
    )
    for label, name, target in rows:
        print(
            f"| {label} | {statistics.median(wall[name]):.3f} | "
            f"{percentile(wall[name], 0.99):.3f} | {max(wall[name]):.3f} | "
            f"{statistics.median(cpu[name]):.3f} | {percentile(cpu[name], 0.99):.3f} | {target} |"
        )
    print()
    return (
        percentile(wall["prove"], 0.99) < TARGET_PROVE_MS
        and percentile(wall["check"], 0.99) < TARGET_CHECK_MS
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short runs, a 100,000-entry log")
    parser.add_argument("--dir", type=Path, help="where to put the logs (default: a temp dir)")
    parser.add_argument("--entries", type=int, help="entries in the verify/proof log")
    parser.add_argument("--repeat", type=int, help="runs per measurement")
    parser.add_argument("--seconds", type=float, help="length of one throughput run")
    parser.add_argument("--skip-throughput", action="store_true", help="only the big log")
    args = parser.parse_args(argv)
    entries = args.entries or (100_000 if args.quick else 1_000_000)
    repeat = args.repeat or (2 if args.quick else 3)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    results: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="lineage-bench-") as scratch:
        root = Path(scratch)
        print("# Lineage benchmark\n")
        print(
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, logs in {root}\n"
        )
        if not args.skip_throughput:
            results["64 deciders at FULL >= 20x bare"] = throughput_section(root, repeat, seconds)
        log, built = build_log(root, entries)
        results["verify of 1M < 30 s"] = verify_section(log, entries, built, repeat)
        results["proof < 10 ms and check < 1 ms at p99"] = proof_section(
            log, entries, 200 if args.quick else 1000, repeat
        )
        log.close(NOW)
    print("## Targets\n")
    for name, held in results.items():
        print(f"- {name}: {'met' if held else 'MISSED'}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

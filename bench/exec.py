"""Exec-enforcement benchmark: what deciding every exec on a marked mount costs.

Runs as root, in a private mount namespace it creates for itself (``unshare --mount
--propagation private``), with three fresh tmpfs mounts: ``marked`` (governed by a real
``edge-agent enforce`` process: signed bundle, durable lineage with ``synchronous=FULL`` on
the disk under /tmp), ``plain`` (not marked) and ``closed`` (``noexec``). The same binary (a
copy of /bin/true) sits on each. In one run, interleaved round by round so drift hits every
case alike:

- ``plain``: the binary on the unmarked mount (the baseline);
- ``allowed``: on the marked mount, allowed by a rule;
- ``denied``: on the marked mount, denied by a rule (``execve`` fails with EPERM);
- ``noexec``: on the ``noexec`` mount (``execve`` fails with EACCES, without any event):
  the baseline for a refused exec.

Each sample is one ``posix_spawn`` + ``waitpid`` from this process, timed with
``perf_counter_ns``. Added latency = the marked case minus its baseline, at the median and
at p99; then each case's distribution (p50, p90, p99, p99.9, max), since on a shared
machine a difference of two p99s says more about the scheduler than the enforcer. Then the
sustained rate: W worker processes each spawning the allowed binary in a
closed loop for S seconds (and the same on ``plain``), execs/s counted by the workers and
cross-checked against the enforcer's own event counter; the enforcer's final counters show
whether the lineage kept up (nothing unlogged, nothing denied for a full queue).

``--quick`` is the smoke-sized form (``make bench-quick``): 200 rounds, 1 s per rate row, one
worker count (1); explicit ``--runs``, ``--seconds`` or ``--workers`` still win.

Usage: python bench/exec.py [--quick] [--runs N] [--seconds S] [--workers W ...]
"""

# ruff: noqa: E402  (the path fix below must run before the project imports)
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence

from bench._proc import process_cpu_s
from edge_agent.fanotify.mounts import set_noexec
from tests.fanotify_helpers import REPO, Sandbox, allow_rule, deny_rule

_IN_NAMESPACE = "EDGEGOV_BENCH_EXEC_NS"
_WORKER = """
import os, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
argv, env = [path], {}
count, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    pid = os.posix_spawn(path, argv, env)
    os.waitpid(pid, 0)
    count += 1
print(count)
"""


def _spawn_ns(path: str) -> tuple[int, str]:
    """One exec: (nanoseconds, outcome)."""
    start = time.perf_counter_ns()
    try:
        pid = os.posix_spawn(path, [path], {})
    except OSError as exc:
        return time.perf_counter_ns() - start, os.strerror(exc.errno or 0)
    _, status = os.waitpid(pid, 0)
    return time.perf_counter_ns() - start, f"exit {os.waitstatus_to_exitcode(status)}"


_QUANTILES = ("p50", "p90", "p99", "p99.9", "p100")


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _latency(paths: dict[str, str], runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in paths}
    outcomes: dict[str, set[str]] = {name: set() for name in paths}
    for path in paths.values():
        for _ in range(50):
            _spawn_ns(path)
    for _ in range(runs):
        for name, path in paths.items():
            ns, outcome = _spawn_ns(path)
            samples[name].append(ns / 1000)
            outcomes[name].add(outcome)
    for name, seen in outcomes.items():
        print(f"  {name:8} outcome: {', '.join(sorted(seen))}")
    return samples


def _throughput(path: str, workers: int, seconds: float) -> float:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, path, str(seconds)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(workers)
    ]
    total = sum(int(p.communicate()[0]) for p in processes)
    return total / seconds


def _row(name: str, values: list[float], base: list[float] | None) -> str:
    median, p99 = statistics.median(values), _percentile(values, 0.99)
    added = ""
    if base is not None:
        added = f"{median - statistics.median(base):+9.1f} {p99 - _percentile(base, 0.99):+9.1f}"
    return f"  {name:8} {median:9.1f} {p99:9.1f} {min(values):9.1f} {max(values):9.1f}  {added}"


def _bench(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="edgegov-bench-exec-", dir="/tmp"))
    mounts = {name: base / name for name in ("marked", "plain", "closed")}
    try:
        for path in mounts.values():
            path.mkdir()
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], check=True
            )
        # The state directory and holder socket stay on the disk: the lineage's fsync is real.
        sandbox = Sandbox(work=mounts["marked"], var=base)
        marked = mounts["marked"]
        sandbox.enroll(
            [allow_rule("allowed", f"{marked}/ok/*"), deny_rule("denied", f"{marked}/no/*")]
        )
        paths = {
            "plain": str(mounts["plain"] / "true"),
            "allowed": str(sandbox.binary("ok/true")),
            "denied": str(sandbox.binary("no/true")),
            "noexec": str(mounts["closed"] / "true"),
        }
        for key in ("plain", "noexec"):
            shutil.copyfile("/bin/true", paths[key])
            os.chmod(paths[key], 0o755)
        set_noexec(str(mounts["closed"]), True)
        command = [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "enforce",
            "--state-dir",
            str(sandbox.state),
            "--mounts",
            str(marked),
            "--holder-socket",
            str(sandbox.holder_socket),
            "--json",
        ]
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        print(process.stdout.readline().strip())
        cpu_start = process_cpu_s(process.pid)
        try:
            print(f"\nlatency per exec, {args.runs} rounds, microseconds (posix_spawn + waitpid)")
            samples = _latency(paths, args.runs)
            header = ("case", "median", "p99", "min", "max", "added med", "added p99")
            print("  {:8} {:>9} {:>9} {:>9} {:>9}  {:>9} {:>9}".format(*header))
            print(_row("plain", samples["plain"], None))
            print(_row("allowed", samples["allowed"], samples["plain"]))
            print(_row("noexec", samples["noexec"], None))
            print(_row("denied", samples["denied"], samples["noexec"]))
            print("  (allowed: added vs plain; denied: added vs the noexec refusal)")
            print("\ndistribution, microseconds")
            print("  {:8} {:>9} {:>9} {:>9} {:>9} {:>9}".format("case", *_QUANTILES))
            for name, values in samples.items():
                cuts = (_percentile(values, float(q[1:]) / 100) for q in _QUANTILES)
                print(f"  {name:8} " + " ".join(f"{cut:9.1f}" for cut in cuts))
            print(f"\nsustained rate, {args.seconds:g} s per row, execs/s")
            for workers in args.workers:
                governed = _throughput(paths["allowed"], workers, args.seconds)
                plain = _throughput(paths["plain"], workers, args.seconds)
                print(
                    f"  {workers} worker(s): governed {governed:8.0f}   plain {plain:8.0f}"
                    f"   ({governed / plain:.0%} of plain)"
                )
            cpu_s = process_cpu_s(process.pid) - cpu_start
        finally:
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=60)
        stats = json.loads(out.strip().splitlines()[-1])
        keys = ("events", "allowed", "denied", "queue_full", "unlogged", "lineage_written")
        print("\nenforcer counters: " + ", ".join(f"{k} {stats[k]}" for k in keys))
        per_event_us = cpu_s / max(1, stats["events"]) * 1e6
        print(
            f"enforcer CPU after start-up (all threads, lineage included): {per_event_us:.0f} us "
            "per exec, "
            f"i.e. {1e6 / per_event_us:.0f} governed execs/s per core of its own"
        )
    finally:
        for path in mounts.values():
            subprocess.run(["umount", "-l", str(path)], check=False)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 rounds, 1 s, 1 worker")
    parser.add_argument("--runs", type=int, help="latency rounds (default 2000, quick 200)")
    parser.add_argument("--seconds", type=float, help="seconds per rate row (default 5, quick 1)")
    parser.add_argument(
        "--workers", type=int, nargs="+", help="worker counts (default 1 2 4, quick 1)"
    )
    args = parser.parse_args()
    args.runs = args.runs or (200 if args.quick else 2000)
    args.seconds = args.seconds or (1.0 if args.quick else 5.0)
    args.workers = args.workers or ([1] if args.quick else [1, 2, 4])
    if os.geteuid() != 0:
        sys.exit("bench/exec.py needs root (fanotify permission events, mounts)")
    if os.environ.get(_IN_NAMESPACE) != "1":
        env = dict(os.environ, **{_IN_NAMESPACE: "1"})
        command = ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv]
        sys.exit(subprocess.run(command, env=env).returncode)
    _bench(args)


if __name__ == "__main__":
    main()

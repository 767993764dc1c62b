"""The packaged agent of each architecture side by side: ARM emulated, amd64 native.

For every ``dist/edge-agent_<version>_<arch>.deb`` (``make package``, ``make package
ARCH=arm64``), unpacked as dpkg would: the .deb and installed sizes, then on a freshly
enrolled device with a real signed bundle and an unreachable broker (as ``bench/idle.py``):

- ``edge-agent decide`` as one process, start-up included (what a script calling the CLI
  pays), median [min-max] over ``--cli-runs``;
- ``edge-agent run``: exec to ``READY=1`` and ``VmRSS`` ``--settle`` seconds later;
- decide through that agent's socket (a full evaluation, lineage written): median and p99
  of ``--socket-calls`` round trips from this process, after a warm-up.

A foreign architecture runs under qemu-user through binfmt_misc with its build userland as
the library root (``QEMU_LD_PREFIX``). **Emulated figures are for scale only**: qemu
translates every ARM instruction on a shared x86 core, so they say nothing about a real ARM
board's speed; an emulated process's ``VmRSS`` is the emulator's, translated-code cache
included. Sizes are exact. Usage: python bench/arm_emulated.py [--quick]
"""

# ruff: noqa: E402  (the path fix below must run before the project imports)
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.idle import UNREACHABLE_BROKER, memory, spread, wait_ready
from edge_agent.client import Client
from tests.factory import DAY, HubSim

ROOT = Path(__file__).resolve().parents[1]
HOST_ARCH = subprocess.run(
    ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
).stdout.strip()
SOCKET_TIMEOUT_S = 30.0
WARM_UP_CALLS = 20


@dataclass(frozen=True, slots=True)
class Figures:
    arch: str
    emulated: bool
    deb_mib: float
    installed_mib: float
    cli_decide_s: list[float]
    ready_s: float
    rss_mib: float
    socket_ms: list[float]


def installed_mib(tree: Path) -> float:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) / 2**20


def run_agent(agent: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(agent), *args], capture_output=True, text=True, check=False)


def enrol(agent: Path, state: Path, temp: Path) -> None:
    """Enrolled with a real signed root and a bundle valid now; the broker is unreachable."""
    hub = HubSim()
    (temp / "root.cbor").write_bytes(hub.root_bytes())
    now = int(time.time())
    (temp / "bundle.cbor").write_bytes(hub.bundle(1, issued_at=now - 60, expires_at=now + DAY))
    init = ["init", "--state-dir", str(state), "--device-id", "gw-bench", "--root"]
    init += [str(temp / "root.cbor"), "--region", "eu-1", "--group", "line-a"]
    init += ["--profile", "generic-x86_64", "--broker", UNREACHABLE_BROKER]
    for args in (init, ["bundle", "install", str(temp / "bundle.cbor"), "--state-dir", str(state)]):
        result = run_agent(agent, *args)
        if result.returncode != 0:
            raise SystemExit(f"{agent} {args[0]} failed: {result.stderr}")


def cli_decides(agent: Path, state: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        result = run_agent(
            agent, "decide", "--state-dir", str(state), "--subject", "svc:camera",
            "--action", "exec", "--resource", "/opt/camera/bin/capture",
        )  # fmt: skip
        times.append(time.perf_counter() - began)
        if result.returncode not in (0, 1):
            raise SystemExit(f"{agent} decide failed: {result.stderr}")
    return times


def socket_decides(path: Path, calls: int) -> list[float]:
    with Client(path, timeout=SOCKET_TIMEOUT_S) as client:
        for _ in range(WARM_UP_CALLS):
            client.decide("exec", "/bin/sh")
        times = []
        for _ in range(calls):
            began = time.perf_counter()
            answer = client.decide("exec", "/bin/sh")
            times.append((time.perf_counter() - began) * 1e3)
    if answer.reason != "policy_denied":
        raise SystemExit(f"the agent answered {answer.reason}, not a policy decision")
    return times


def measure(deb: Path, args: argparse.Namespace) -> Figures:
    arch = deb.stem.rsplit("_", 1)[1]
    emulated = arch != HOST_ARCH
    with tempfile.TemporaryDirectory(prefix=f"edgegov-bench-{arch}-") as name:
        temp = Path(name)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(temp / "pkg")], check=True)
        agent = temp / "pkg" / "opt" / "edge-agent" / "edge-agent"
        state = temp / "state"
        enrol(agent, state, temp)
        cli = cli_decides(agent, state, args.cli_runs)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(temp / "notify"))
            env = dict(os.environ, NOTIFY_SOCKET=str(temp / "notify"))
            command = [str(agent), "run", "--state-dir", str(state), "--socket", "agent.sock"]
            began = time.perf_counter()
            process = subprocess.Popen(
                command, cwd=temp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                wait_ready(notify, process)
                ready = time.perf_counter() - began
                time.sleep(args.settle)
                rss = memory(process.pid)["VmRSS"] / 1024
                latencies = socket_decides(temp / "agent.sock", args.socket_calls)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
        return Figures(
            arch,
            emulated,
            deb.stat().st_size / 2**20,
            installed_mib(temp / "pkg" / "opt" / "edge-agent"),
            cli,
            ready,
            rss,
            latencies,
        )


def p99(values: Sequence[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and calls")
    parser.add_argument("--cli-runs", type=int, help="edge-agent decide processes (default 7)")
    parser.add_argument("--socket-calls", type=int, help="socket round trips (default 500)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle after READY=1")
    args = parser.parse_args(argv)
    args.cli_runs = args.cli_runs or (3 if args.quick else 7)
    args.socket_calls = args.socket_calls or (100 if args.quick else 500)
    debs = sorted((ROOT / "dist").glob("edge-agent_*_*.deb"))
    if not debs:
        raise SystemExit("no packages in dist/: run make package and make package ARCH=arm64")
    rows = []
    for deb in debs:
        arch = deb.stem.rsplit("_", 1)[1]
        if arch != HOST_ARCH:
            os.environ["QEMU_LD_PREFIX"] = str(ROOT / "build" / "foreign" / arch / "rootfs")
        rows.append(measure(deb, args))
        os.environ.pop("QEMU_LD_PREFIX", None)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print("\n### The packaged agent per architecture (emulated: qemu-user, for scale only)\n")
    print(f"median [min-max]; socket: median / p99 of {args.socket_calls} calls; load {load}\n")
    print("| arch | run as | .deb MiB | installed MiB | `decide` process, s | run to READY=1, s "
          "| idle VmRSS MiB | socket decide, ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        socket_ms = f"{statistics.median(r.socket_ms):.2f} / {p99(r.socket_ms):.2f}"
        print(
            f"| {r.arch} | {'emulated' if r.emulated else 'native'} | {r.deb_mib:.1f} "
            f"| {r.installed_mib:.1f} | {spread(r.cli_decide_s, '.2f')} | {r.ready_s:.1f} "
            f"| {r.rss_mib:.1f} | {socket_ms} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

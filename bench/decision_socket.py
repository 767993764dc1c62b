"""Decision-socket benchmark: durable decisions through the socket, next to in-process calls.

One enrolled state directory (real signed bundle, lineage with ``synchronous=FULL``), served
by a real ``edge-agent serve`` process. Rows, all in the same run:

- engine only: ``evaluate(policy, request, now)`` in this process (no gate, no lineage);
- in-process durable: ``LocalAgent.decide`` (gate + lineage fsync), 1 thread and 64 threads
  (group commit shares one fsync among concurrent deciders);
- socket durable: 1, 8 and 64 concurrent clients, each a closed loop (ask, wait, ask again)
  over its own connection. Clients are lean load generators (a thread per client, 16 per
  spawned process, the request encoded once) running on the same machine as the agent;
  each waits for its answer as ``edge_agent``'s client does (a socket timeout: poll, then
  read), which a timeout-less ``recv`` does not (until session 14 it did, and each request
  woke its client once for nothing: docs/performance-profile.md, Phase 4).

Besides rate and latency, each row reports the CPU time the deciding process spent per
decision (for the socket rows: the ``edge-agent serve`` process, all its threads, read from
/proc) and what that means per core (1 s / CPU per decision): on a machine where clients and
other work share the cores, that column is the agent's capacity on one core of its own. The
socket rows also give the clients' CPU per decision (their processes, all threads): what the
load generators take of the same cores.

The in-process rows ask the same request the socket clients ask, with the subject and
selectors the kernel gave the socket clients, so the engine does the same work.

Then ``edge-agent exec`` overhead: ``/bin/true`` run directly, through ``edge-agent exec``
(the full command line) and through the fast entry point ``python -m
edge_agent.socket.exec_gate``, next to the bare interpreter start-up (``python -c pass``)
for scale; median, min and max wall time over 50 runs each, the commands taking turns so
that a burst of load elsewhere hits them alike. The development venv runs the tree through
setuptools' editable-install finder (about 12 ms of every start-up) and, where
``PYTHONDONTWRITEBYTECODE`` is set, compiles the agent's modules on every start; with
``--installed`` the same rows are also measured through a scratch non-editable install of
the tree (a wheel built from a copy of it, installed with compiled modules, as a user gets
it), and through the PyInstaller build in ``dist/edge-agent/`` when one exists (``make
package``; it may be older than the tree).

Every socket and in-process row is repeated (``--repeat``, default 3) and reported as the
median with [min-max] over repeats: the machine may be shared. Latency is the round trip
as the client sees it (perf_counter around each call).

With ``--socket-only`` only the socket rows run (``--clients`` chooses which), which is what
an A/B of the agent's socket path against another tree needs: run this script from one tree
with ``--tree`` naming the other and the agent served is that tree's.

Usage: python bench/decision_socket.py [--quick] [--repeat N] [--seconds S] [--exec-runs N]
       [--installed] [--socket-only] [--clients N,N,...] [--tree DIR]
"""

# ruff: noqa: E402  (the path fix below must run before any import that pulls in socket)
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from bench._installed import installed_copy
from bench._proc import process_cpu_s
from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.client import Client
from edge_agent.policy.compiler import policy_payload
from edge_agent.policy.engine import evaluate
from edge_agent.protocol import dcbor
from edge_agent.protocol.request import Request
from edge_agent.socket.wire import Op, WireRequest, encode_request
from tests.factory import DAY, DEVICE, HubSim

ROOT = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-m", "edge_agent.cli", "serve"]
ACTION, RESOURCE, CONTEXT = "read", "/data/plant-a/line-3/sensor-17", {"zone": "plant-a"}
CLIENTS_PER_PROCESS = 16
CLIENT_WAIT_S = 30.0
"""How long a benchmark client waits for one answer (an agent that takes longer is broken)."""
RULES = [
    {
        "id": "maintenance-reads",
        "effect": "allow",
        "subjects": ["svc:maintenance"],
        "actions": ["read"],
        "resources": ["/data/**"],
        "when": {"context": {"zone": ["plant-a", "plant-b"]}},
    },
    {
        "id": "no-secrets",
        "effect": "deny",
        "subjects": ["*"],
        "actions": ["read"],
        "resources": ["/data/**/secret"],
    },
    {
        "id": "gate-true",
        "effect": "allow",
        "subjects": ["uid:0"],
        "actions": ["exec"],
        "resources": ["/usr/bin/true", "/bin/true"],
    },
]


@dataclass(frozen=True, slots=True)
class Run:
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    """CPU time (user + system) of the deciding process per decision, in microseconds."""
    client_cpu_us: float | None = None
    """CPU time of the socket clients' processes per decision, in microseconds: what the
    load generators take of the same cores (socket rows only)."""


@dataclass(frozen=True, slots=True)
class Row:
    path: str
    clients: str
    runs: list[Run]


def enrol(state: Path) -> None:
    sim = HubSim()
    wall = int(time.time())
    init_state_dir(state, DEVICE, sim.root_bytes(issued_at=wall - DAY), wall)
    policy = policy_payload(groups={}, workloads={"svc:maintenance": ["uid:0"]}, rules=RULES)
    with LocalAgent.open(state) as agent:
        agent.install_bundle(
            sim.bundle(1, policy=policy, issued_at=wall - 60, expires_at=wall + DAY), wall
        )


def start_agent(state: Path, sock: Path, tree: Path = ROOT) -> subprocess.Popen[bytes]:
    """``edge-agent serve`` of the sources in ``tree`` (this one unless an A/B names another)."""
    agent = subprocess.Popen(
        [*SERVE, "--state-dir", str(state), "--socket", str(sock)],
        cwd=tree,
        env=dict(os.environ, PYTHONPATH=str(tree)),
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(sock))
            return agent
        except OSError:
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("edge-agent serve did not start") from None
            time.sleep(0.05)
        finally:
            probe.close()


def summarise(latencies: list[float], count: int, elapsed: float, cpu_s: float) -> Run:
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Run(
        count / elapsed,
        statistics.median(latencies) * 1e3,
        p99 * 1e3,
        cpu_s / max(1, count) * 1e6,
    )


def own_cpu() -> float:
    return time.process_time()


def engine_only(request: Request, agent: LocalAgent, count: int) -> Run:
    bundle = agent.state.bundle
    assert bundle is not None
    now = int(time.time())
    latencies = []
    cpu, start = own_cpu(), time.perf_counter()
    for _ in range(count):
        began = time.perf_counter()
        evaluate(bundle.policy, request, now)
        latencies.append(time.perf_counter() - began)
    return summarise(latencies, count, time.perf_counter() - start, own_cpu() - cpu)


def in_process(request: Request, agent: LocalAgent, threads: int, seconds: float) -> Run:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    end = time.perf_counter() + seconds

    def loop(mine: list[float]) -> None:
        while (began := time.perf_counter()) < end:
            decision = agent.decide(request, int(time.time()))
            assert decision.allowed, decision.message
            mine.append(time.perf_counter() - began)

    cpu, start = own_cpu(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, latencies))
    flat = [x for part in latencies for x in part]
    return summarise(flat, len(flat), time.perf_counter() - start, own_cpu() - cpu)


def client_worker(
    sock: str, clients: int, start_at: float, end_at: float
) -> tuple[list[float], float]:
    """One process's share of the socket clients: a thread per client, each a closed loop
    (send, read the whole answer, check it allows, repeat) on its own connection until
    ``end_at``; the latencies, and the CPU seconds this process spent from ``start_at`` on.
    Lean on purpose (the request is encoded once; the answer is checked by its
    deterministic bytes): the clients share the machine with the agent being measured."""
    with ThreadPoolExecutor(clients) as pool:
        parts = pool.map(lambda _: _client_loop(sock, start_at, end_at), range(clients))
        time.sleep(max(0.0, start_at - time.time()))
        cpu = time.process_time()
        latencies = [x for part in parts for x in part]
        return latencies, time.process_time() - cpu


def _client_loop(sock: str, start_at: float, end_at: float) -> list[float]:
    request = encode_request(WireRequest(1, Op.DECIDE, ACTION, RESOURCE, tuple(CONTEXT.items())))
    allowed = dcbor.encode("allowed")[1:] + b"\xf5"
    mine = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(sock)
        # Wait as edge_agent's client does (a timeout: poll for the answer, then read it). A
        # recv with no timeout is also woken when the agent reads the request and frees the
        # socket's write space, a spurious wake-up per request no shipped client has.
        conn.settimeout(CLIENT_WAIT_S)
        conn.sendall(request)
        assert allowed in _read_frame(conn)
        time.sleep(max(0.0, start_at - time.time()))
        while time.time() < end_at:
            began = time.perf_counter()
            conn.sendall(request)
            answer = _read_frame(conn)
            mine.append(time.perf_counter() - began)
            assert allowed in answer, answer
    return mine


def _read_frame(conn: socket.socket) -> bytes:
    header = _read_exactly(conn, 4)
    return _read_exactly(conn, int.from_bytes(header, "big"))


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise SystemExit("the agent closed a benchmark connection")
        data += chunk
    return bytes(data)


def through_socket(sock: Path, agent_pid: int, clients: int, seconds: float) -> Run:
    processes = (clients + CLIENTS_PER_PROCESS - 1) // CLIENTS_PER_PROCESS
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    start_at = time.time() + 1.0 + 0.2 * processes
    end_at = start_at + seconds
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        pending = pool.starmap_async(
            client_worker, [(str(sock), share, start_at, end_at) for share in shares]
        )
        time.sleep(max(0.0, start_at - time.time()))
        cpu = process_cpu_s(agent_pid)
        parts = pending.get()
        cpu = process_cpu_s(agent_pid) - cpu
    flat = [x for part, _ in parts for x in part]
    run = summarise(flat, len(flat), seconds, cpu)
    client_cpu = sum(cpu for _, cpu in parts)
    return replace(run, client_cpu_us=client_cpu / max(1, len(flat)) * 1e6)


def exec_commands(python: Path, label: str) -> list[tuple[str, list[str]]]:
    """The gate's rows for the interpreter ``python`` (its venv's ``edge-agent`` script)."""
    cli = python.parent / "edge-agent"
    return [
        (f"python -c pass (interpreter start-up alone){label}", [str(python), "-c", "pass"]),
        (f"edge-agent exec -- /bin/true{label}", [str(cli), "exec", "--", "/bin/true"]),
        (
            f"python -m edge_agent.socket.exec_gate -- /bin/true{label}",
            [str(python), "-m", "edge_agent.socket.exec_gate", "--", "/bin/true"],
        ),
    ]


def exec_overhead(sock: Path, runs: int, installed: Path | None) -> list[tuple[str, list[float]]]:
    env = dict(os.environ, EDGE_AGENT_SOCKET=str(sock))
    commands = [
        ("/bin/true directly", ["/bin/true"]),
        *exec_commands(Path(sys.executable), " (development venv)"),
    ]
    if installed is not None:
        commands += exec_commands(installed, " (installed, non-editable)")
        bundled = ROOT / "dist" / "edge-agent" / "edge-agent"
        if bundled.exists():
            commands.append(
                (
                    "dist/edge-agent/edge-agent exec -- /bin/true (PyInstaller)",
                    [str(bundled), "exec", "--", "/bin/true"],
                )
            )
        gate = bundled.with_name("edge-agent-exec")
        if gate.exists():
            launcher = (ROOT / "packaging" / "deb" / "edge-agent").read_text()
            script = installed.parent / "edge-agent-deb-launcher"
            script.write_text(launcher.replace("/opt/edge-agent", str(bundled.parent)))
            script.chmod(0o755)
            commands.append(
                (
                    "edge-agent exec -- /bin/true (the .deb's launcher + PyInstaller gate)",
                    [str(script), "exec", "--", "/bin/true"],
                )
            )
    times: dict[str, list[float]] = {name: [] for name, _ in commands}
    for _ in range(runs):
        for name, command in commands:
            began = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True)
            times[name].append(time.perf_counter() - began)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed: {done.stderr.decode()}")
    return [(name, times[name]) for name, _ in commands]


def repeat(times: int, measure: Callable[[], Run]) -> list[Run]:
    return [measure() for _ in range(times)]


def spread(values: Sequence[float], fmt: str) -> str:
    return (
        f"{format(statistics.median(values), fmt)} "
        f"[{format(min(values), fmt)}-{format(max(values), fmt)}]"
    )


def print_tables(rows: list[Row], execs: list[tuple[str, list[float]]], repeats: int) -> None:
    print(f"\n### Decisions (median [min-max] over {repeats} runs)\n")
    print(
        "| path | clients | decisions/s | p50 ms | p99 ms | CPU us/decision | per core/s "
        "| clients' CPU us/decision |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        cpu = [r.cpu_us for r in row.runs]
        clients_cpu = [r.client_cpu_us for r in row.runs if r.client_cpu_us is not None]
        print(
            f"| {row.path} | {row.clients} | {spread([r.per_second for r in row.runs], ',.0f')} "
            f"| {spread([r.p50_ms for r in row.runs], '.3f')} "
            f"| {spread([r.p99_ms for r in row.runs], '.3f')} "
            f"| {spread(cpu, '.0f')} | {1e6 / statistics.median(cpu):,.0f} "
            f"| {spread(clients_cpu, '.0f') if clients_cpu else '-'} |"
        )
    if not execs:
        return
    direct = statistics.median(execs[0][1]) * 1e3
    print(f"\n### edge-agent exec overhead ({len(execs[0][1])} runs each)\n")
    print("| command | median ms | min ms | max ms | added vs direct (median) |")
    print("|---|---|---|---|---|")
    for name, times in execs:
        ms = [t * 1e3 for t in times]
        added = statistics.median(ms) - direct
        print(
            f"| `{name}` | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} "
            f"| {added:+.1f} ms |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 1 s per row, 20 execs")
    parser.add_argument("--repeat", type=int, help="runs per row (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="seconds per run (default 3, quick 1)")
    parser.add_argument("--exec-runs", type=int, help="runs per exec command (default 50)")
    parser.add_argument(
        "--installed",
        action="store_true",
        help="also measure exec through a scratch non-editable install (and dist/, if built)",
    )
    parser.add_argument(
        "--socket-only", action="store_true", help="only the socket rows (no in-process, exec)"
    )
    parser.add_argument(
        "--clients", default="1,8,64", help="socket client counts, comma separated (1,8,64)"
    )
    parser.add_argument(
        "--tree", type=Path, default=ROOT, help="serve the agent from this source tree (A/B)"
    )
    args = parser.parse_args(argv)
    client_counts = [int(n) for n in args.clients.split(",")]
    repeats = args.repeat or (1 if args.quick else 3)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    exec_runs = args.exec_runs or (20 if args.quick else 50)
    with tempfile.TemporaryDirectory(prefix="edgegov-bench-") as temp:
        state, sock = Path(temp) / "state", Path(temp) / "agent.sock"
        installed = installed_copy(Path(temp)) if args.installed else None
        enrol(state)
        # The set-up's writes (a whole venv with --installed) would otherwise be written back
        # while the socket rows run, and every measured fsync would wait behind them.
        os.sync()
        agent_process = start_agent(state, sock, args.tree.resolve())
        try:
            with Client(sock) as client:
                seen = client.identify()
            request = Request(
                seen.subject, ACTION, RESOURCE, tuple(sorted(CONTEXT.items())), seen.selectors
            )
            rows = [
                Row(
                    f"socket, durable lineage ({os.cpu_count()} cores shared with the clients)",
                    str(n),
                    repeat(
                        repeats,
                        lambda n=n: through_socket(sock, agent_process.pid, n, seconds),
                    ),
                )
                for n in client_counts
            ]
            execs = [] if args.socket_only else exec_overhead(sock, exec_runs, installed)
        finally:
            agent_process.send_signal(signal.SIGTERM)
            agent_process.wait()
        if args.socket_only:
            print_tables(rows, execs, repeats)
            return 0
        with LocalAgent.open(state) as agent:
            rows[:0] = [
                Row(
                    "engine only, in-process (no gate, no lineage)",
                    "1",
                    repeat(repeats, lambda: engine_only(request, agent, 20_000)),
                ),
                Row(
                    "LocalAgent.decide, in-process, durable lineage",
                    "1 thread",
                    repeat(repeats, lambda: in_process(request, agent, 1, seconds)),
                ),
                Row(
                    "LocalAgent.decide, in-process, durable lineage",
                    "64 threads",
                    repeat(repeats, lambda: in_process(request, agent, 64, seconds)),
                ),
            ]
    print_tables(rows, execs, repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

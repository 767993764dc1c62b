"""Ancestry benchmark: what citing a parent and asking for a receipt add to a decision.

One enrolled state directory (real signed bundle, durable lineage), a device directory of
1,000 devices signed by the hub's verifier key, and a camera gateway's real log of
``--log-size`` entries (1,000) whose receipt, made on the device, is the parent. In the same
run, each row timed per call (perf_counter) and reported as the median (min-max) over
``--repeat`` runs (3; the machine is shared):

- **gate, no parent**: ``decide(state, request, now)``, the pure gate and engine, for the
  request that needs no parent;
- **gate, with parent**: ``verify_parent`` (the receipt checked against the directory: entry,
  leaf hash, inclusion path, the device's checkpoint signature) then ``decide`` of the
  request citing it, the rule's parent condition included; **added** = the difference of
  the medians (target: at most 150 us); and the same parent cited again through the
  agent's ``VerifiedParents`` cache (one inference actuating several valves);
- **decision_socket's rows, same run**: its own ``engine_only`` and ``in_process`` (durable
  ``LocalAgent.decide``, one thread) for its own request and policy, run here against this
  tree, to compare with docs/performance-profile.md: a decision without a parent is
  unchanged in cost;
- **LocalAgent.decide, durable**, without and with the parent (end to end, lineage fsync);
- **want_receipt**: one at a time (``LocalAgent.receipt`` after each decision: every call
  signs a checkpoint) and 64 concurrent, each on a thread of a pool (``decide_cited``, as
  the socket's responder calls it), with the checkpoints used: one per batch, not per
  request.

Usage: python bench/ancestry.py [--quick] [--repeat N] [--count C] [--log-size N]
"""

# ruff: noqa: E402  (the path fix below must run before the project's imports)
from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from bench import decision_socket
from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.policy.compiler import policy_payload
from edge_agent.protocol.directory import DirectoryDevice
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.request import Request
from edge_agent.trust.gate import decide
from edge_agent.trust.parent import VerifiedParents, verify_parent
from tests.ancestry_support import CAMERA, CAMERA_KEY, DeviceLog, devices, directory_bytes
from tests.factory import DAY, DEVICE, HubSim

CHILD = Request("svc:plc-bridge", "plc.write", "plc://line-a/valve-7")
PLAIN = Request("svc:plc-bridge", "plc.read", "plc://line-a/valve-7")
MODEL = Request("svc:vision", "model.invoke", "model://vision/v3")
RULES = [
    {
        "id": "valve-only-from-vision",
        "effect": "allow",
        "subjects": ["svc:plc-bridge"],
        "actions": ["plc.write"],
        "resources": ["plc://line-a/*"],
        "when": {
            "parent": {
                "action": ["model.invoke"],
                "resource": ["model://vision/*"],
                "devices": ["group:cameras"],
                "max_age": 3600,
            }
        },
    },
    {
        "id": "reads",
        "effect": "allow",
        "subjects": ["svc:plc-bridge"],
        "actions": ["plc.read"],
        "resources": ["plc://line-a/*"],
    },
    {
        "id": "vision",
        "effect": "allow",
        "subjects": ["*"],
        "actions": ["model.invoke"],
        "resources": ["model://vision/*"],
    },
]


def enrol(state: Path, hub: HubSim, wall: int) -> None:
    init_state_dir(state, DEVICE, hub.root_bytes(issued_at=wall - DAY), wall)
    policy = policy_payload(groups={}, workloads={}, rules=RULES)
    bundle = hub.bundle(1, policy=policy, issued_at=wall - 60, expires_at=wall + DAY)
    with LocalAgent.open(state) as agent:
        agent.install_bundle(bundle, wall)
        fleet = devices() + [
            DirectoryDevice(f"gw-{n:05d}", PrivateKey(n.to_bytes(32, "big")).public, 1, ("x",))
            for n in range(1, 1000)
        ]
        agent.install_directory(
            directory_bytes(hub, listed=fleet, issued_at=wall - 60, expires_at=wall + DAY), wall
        )


def camera_receipt(size: int, wall: int) -> bytes:
    log = DeviceLog(CAMERA, CAMERA_KEY)
    for _ in range(size):
        log.append(time=wall - 30)
    return log.receipt(size // 2)


def timed(count: int, call: Callable[[], object]) -> float:
    """Median seconds of ``count`` calls."""
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"


def concurrent_receipts(agent: LocalAgent, clients: int) -> tuple[float, int]:
    """Seconds per receipt for ``clients`` want_receipt decisions at once, and how many
    checkpoints they used."""
    maker = agent._receipts
    assert maker is not None
    before = maker.checkpoints_used

    wall = int(time.time())
    with ThreadPoolExecutor(clients) as pool:
        began = time.perf_counter()
        answers = list(
            pool.map(lambda _: agent.decide_cited(MODEL, wall, None, True), range(clients))
        )
        spent = time.perf_counter() - began
    for decision, receipt in answers:
        assert decision.allowed and receipt is not None, decision.message
    return spent / clients, maker.checkpoints_used - before


def one_run(
    agent: LocalAgent,
    other: LocalAgent,
    receipt: bytes,
    socket_request: Request,
    count: int,
    durable: int,
    add: Callable[[str, float], None],
) -> int:
    """One run of every row; returns the checkpoints 64 concurrent receipts used."""
    directory = agent.directory.current()
    assert directory is not None
    now = int(time.time())
    add("gate, no parent", timed(count, lambda: decide(agent.state, PLAIN, now)))

    def with_parent() -> None:
        decide(agent.state, replace(CHILD, parent=verify_parent(receipt, directory, now)), now)

    add("gate, with parent (verify_parent + decide)", timed(count, with_parent))
    add("verify_parent alone", timed(count, lambda: verify_parent(receipt, directory, now)))
    cache = VerifiedParents()

    def cited_again() -> None:
        parent = verify_parent(receipt, directory, now, cache=cache)
        decide(agent.state, replace(CHILD, parent=parent), now)

    add("gate, the same parent cited again (VerifiedParents)", timed(count, cited_again))
    engine = decision_socket.engine_only(socket_request, other, count)
    add("decision_socket: engine only", engine.p50_ms / 1e3)
    local = decision_socket.in_process(socket_request, other, 1, 1.0)
    add("decision_socket: LocalAgent.decide, durable, 1 thread", local.p50_ms / 1e3)
    add(
        "LocalAgent.decide, durable, no parent",
        timed(durable, lambda: agent.decide(PLAIN, int(time.time()))),
    )
    add(
        "LocalAgent.decide, durable, with parent (cited again: cached)",
        timed(durable, lambda: agent.decide(CHILD, int(time.time()), parent=receipt)),
    )

    def one_receipt() -> None:
        agent.decide(PLAIN, int(time.time()))
        assert agent.last_seq is not None
        agent.receipt(agent.last_seq, int(time.time()))

    add("want_receipt, one at a time (decide + receipt)", timed(durable, one_receipt))
    per, used = concurrent_receipts(agent, 64)
    add("want_receipt, 64 at once (per decision, pool wall time)", per)
    return used


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, fewer calls")
    parser.add_argument("--repeat", type=int, help="runs per row (default 3, quick 1)")
    parser.add_argument("--count", type=int, help="calls per run (default 2000, quick 300)")
    parser.add_argument("--log-size", type=int, default=1000, help="the parent device's log")
    args = parser.parse_args(argv)
    repeats = args.repeat or (1 if args.quick else 3)
    count = args.count or (300 if args.quick else 2000)
    durable = max(50, count // 10)
    hub, wall = HubSim(), int(time.time())
    receipt = camera_receipt(args.log_size, wall)
    rows: dict[str, list[float]] = {}
    checkpoints: list[int] = []

    def add(name: str, seconds: float) -> None:
        rows.setdefault(name, []).append(seconds * 1e6)

    with tempfile.TemporaryDirectory(prefix="edgegov-bench-") as temp:
        state = Path(temp) / "state"
        enrol(state, hub, wall)
        socket_state = Path(temp) / "socket-state"
        decision_socket.enrol(socket_state)
        socket_request = Request(
            "uid:0",
            decision_socket.ACTION,
            decision_socket.RESOURCE,
            tuple(sorted(decision_socket.CONTEXT.items())),
            ("uid:0",),
        )
        with LocalAgent.open(state) as agent, LocalAgent.open(socket_state) as other:
            first = agent.decide(CHILD, int(time.time()), parent=receipt)
            assert first.allowed, first.message
            for _ in range(repeats):
                checkpoints.append(
                    one_run(agent, other, receipt, socket_request, count, durable, add)
                )
    print(f"\n### Ancestry (us, median (min-max) over {repeats} runs of {count} calls)\n")
    print("| row | us |")
    print("|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {spread(values)} |")
    with_parent = rows["gate, with parent (verify_parent + decide)"]
    added = [w - wo for w, wo in zip(with_parent, rows["gate, no parent"], strict=True)]
    print(f"\nadded by a parent (gate): {spread(added)} us (target <= 150 us)")
    print(f"checkpoints used by 64 concurrent want_receipt decisions: {checkpoints}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

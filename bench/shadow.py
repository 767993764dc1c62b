"""Shadow benchmark: what evaluating a shadow bundle beside the active one adds to a decision.

One enrolled state directory (real signed bundles, durable lineage), the fleet policy of
bench/decide.py at ``--rules`` rules (1,000) as the active bundle, and the candidate of
bench/rollout.py (every 50th rule's effect inverted, every 97th dropped) as the shadow, held
by the agent exactly as ``edge-agent run`` holds one from the shadow topic. The requests are
the scenario's own pool, in turn. Two agents enrolled alike, one holding the shadow and one
not, in the same run (alternating blocks, after a warm-up), each row timed per call
(perf_counter) and reported as the median (min-max) over ``--repeat`` runs (3; the machine
is shared) of each run's median:

- **gate**: ``decide(state, request, now)``, the pure gate and engine, then, with the
  shadow, the agent's comparison (``LocalAgent._shadow_entry``: the shadow's engine and, on
  a divergence, the entry to log);
- **LocalAgent.decide, durable**: end to end, the decision's entry (and the divergence's,
  in the same transaction) fsynced before it returns: the latency a caller sees. Target: at
  most +20 % with the shadow.

Usage: python bench/shadow.py [--quick] [--repeat N] [--count C] [--rules R]
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
from collections.abc import Callable, Iterator, Sequence
from itertools import cycle

import yaml

from bench.rollout import _sources
from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.lineage_entries import Kind
from edge_agent.protocol.request import Request
from edge_agent.trust.gate import decide
from tests.factory import DAY, DEVICE, HubSim

TOPIC = "edgegov/v1/eu-1/shadow/device/gw-001"
POOL = 2_000


def _payload(source: dict[str, object]) -> dict[str, object]:
    policy = load_policy_source(yaml.safe_dump(source)).policy
    assert isinstance(policy, dict)
    return policy


def enrol(
    state: Path, hub: HubSim, rules: int, seed: int, wall: int
) -> tuple[bytes, list[Request]]:
    """Enrol ``state`` with the baseline active; return the candidate's bytes and the pool."""
    baseline, candidate, pool = _sources(rules, seed, POOL)
    init_state_dir(state, DEVICE, hub.root_bytes(issued_at=wall - DAY), wall)
    active = hub.bundle(1, policy=_payload(baseline), issued_at=wall - 60, expires_at=wall + DAY)
    with LocalAgent.open(state) as agent:
        agent.install_bundle(active, wall)
    shadow = hub.bundle(2, policy=_payload(candidate), issued_at=wall - 60, expires_at=wall + DAY)
    return shadow, pool


BLOCKS = 10
"""Alternations of with and without the shadow within one run: both see the same drift
(the machine's load, the disk's fsync latency, the log's growth)."""


def samples(
    call: Callable[[Request], object], requests: Iterator[Request], count: int
) -> list[float]:
    """Seconds of each of ``count`` calls, the next request of the pool each."""
    taken = []
    for _ in range(count):
        request = next(requests)
        began = time.perf_counter()
        call(request)
        taken.append(time.perf_counter() - began)
    return taken


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"


def one_run(
    agents: dict[str, LocalAgent],
    pool: Sequence[Request],
    count: int,
    durable: int,
    add: Callable[[str, float], None],
) -> None:
    """One run: :data:`BLOCKS` alternations of a block on the agent holding the shadow and
    one on its twin holding none, for each row; adds each row's median per call."""
    now = int(time.time())
    taken: dict[str, list[float]] = {}
    requests = cycle(pool)
    for _ in range(BLOCKS):
        for label, agent in agents.items():

            def gate(request: Request, agent: LocalAgent = agent) -> None:
                agent._shadow_entry(decide(agent.state, request, now))

            def durably(request: Request, agent: LocalAgent = agent) -> None:
                agent.decide(request, int(time.time()))

            taken.setdefault(f"gate, {label}", []).extend(samples(gate, requests, count // BLOCKS))
            taken.setdefault(f"LocalAgent.decide, durable, {label}", []).extend(
                samples(durably, requests, durable // BLOCKS)
            )
    for name, values in taken.items():
        add(name, statistics.median(values))


def divergence_share(agent: LocalAgent, pool: Sequence[Request]) -> float:
    """The share of the pool's decisions the shadow decides otherwise."""
    now = int(time.time())
    diverging = sum(agent._shadow_entry(decide(agent.state, r, now)) is not None for r in pool)
    return diverging / len(pool)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, fewer calls")
    parser.add_argument("--repeat", type=int, help="runs per row (default 3, quick 1)")
    parser.add_argument("--count", type=int, help="gate calls per run (default 20000, quick 2000)")
    parser.add_argument("--rules", type=int, default=1000, help="rules in the fleet policy")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    repeats = args.repeat or (1 if args.quick else 3)
    count = args.count or (2000 if args.quick else 20_000)
    durable = max(200, count // 10)
    hub, wall = HubSim(), int(time.time())
    rows: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        rows.setdefault(name, []).append(seconds * 1e6)

    with tempfile.TemporaryDirectory(prefix="edgegov-bench-") as temp:
        shadow, pool = enrol(Path(temp) / "shadowed", hub, args.rules, args.seed, wall)
        enrol(Path(temp) / "plain", hub, args.rules, args.seed, wall)
        with (
            LocalAgent.open(Path(temp) / "shadowed") as shadowed,
            LocalAgent.open(Path(temp) / "plain") as plain,
        ):
            assert shadowed.install_shadow(TOPIC, shadow, int(time.time())) is not None
            share = divergence_share(shadowed, pool)
            agents = {"shadow": shadowed, "none": plain}
            for agent in agents.values():
                samples(lambda r, a=agent: a.decide(r, int(time.time())), cycle(pool), durable)
            for _ in range(repeats):
                one_run(agents, pool, count, durable, add)
            lineage = shadowed.lineage
            assert lineage is not None and lineage.store is not None
            logged = sum(
                1
                for _ in lineage.store.iter_rows(
                    where="kind = ?", params=(str(Kind.SHADOW_DIVERGENCE),)
                )
            )
    print(
        f"\n### Shadow evaluation ({args.rules} rules; us, median (min-max) over {repeats} "
        f"runs of {count} gate / {durable} durable calls)\n"
    )
    print("| row | no shadow | with a shadow | added |")
    print("|---|---|---|---|")
    for name in ("gate", "LocalAgent.decide, durable"):
        without, held = rows[f"{name}, none"], rows[f"{name}, shadow"]
        added = [100 * (w / wo - 1) for w, wo in zip(held, without, strict=True)]
        print(f"| {name} | {spread(without)} | {spread(held)} | {spread(added)} % |")
    print(
        f"\nthe shadow decides {share:.1%} of the pool's decisions otherwise; "
        f"{logged} shadow_divergence entries logged (target: durable added <= +20 %)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

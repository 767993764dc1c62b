"""Rollout benchmark, diff part (issue 19): ``edge-hub bundle diff`` over a shipped fleet log.

Setup (not timed): a hub directory with real keys; ``--devices`` registered devices, each
with ``--per-device`` shipped decisions stored in the registry (SQLite, as ingest stores
them). The policy is ``bench/decide.py``'s seeded fleet scenario at each rule count
(literal, glob and ``**`` resources, groups, deny rules, context and time-window
conditions); every recorded decision is what that policy decides at the decision's time
(the engine itself, so the log is one the fleet could have shipped). The candidate is the
same policy with every 50th rule's effect inverted and every 97th rule dropped, signed as
``edge-hub bundle build`` signs.

Traffic: each device draws its decisions from a working set of ``--working-set`` requests
of the scenario's request pool (a gateway runs a few dozen workloads doing the same things
over and over), at times spread over the last 7 days. The ``all distinct`` row instead
gives every decision a request of its own (a pool as large as the log, each request used
once: the worst case for the caches, every entry decoded and decided afresh), at a tenth of
the size.

Timed: the whole command, in-process, as an operator runs it (``bundle diff CANDIDATE
--json``, stdout discarded): verify and compile the candidate, read the registry, re-decide,
report. ``--runs`` runs per row; the table gives the median and (min-max) in seconds, and
the rate in decisions per second. Target (issue 19): 1,000,000 decisions at 1,000 and
10,000 rules in at most 10 s.

Usage: python bench/rollout.py [--quick] [--sizes 1000,10000] [--devices 1000]
       [--per-device 1000] [--working-set 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decide import build_scenario

from edge_agent.policy.compiler import compile_policy
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.checkpoint import Checkpoint, origin_for
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import (
    GENESIS_PREV,
    Draft,
    Entry,
    Kind,
    draft_of,
    entry_hash,
    place_draft,
)
from edge_agent.protocol.merkle import Frontier
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from hub.cli.main import main as hub_main
from hub.cli.operations import build_bundle, init_keys
from hub.core.diff import Shadow
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root
from hub.registry import DeviceRecord
from hub.registry.backends import open_registry
from hub.registry.records import Accepted, DeviceLog

POOL = 20_000
"""Distinct requests the scenario generator draws (the fleet's whole request pool)."""
WEEK = 7 * 86400


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    rules: int
    decisions: int
    distinct: int
    flips: int
    seconds: list[float]


def _sources(
    n_rules: int, seed: int, pool: int
) -> tuple[dict[str, object], dict[str, object], list[Request]]:
    """The baseline policy source, the candidate's, and a pool of ``pool`` requests."""
    scenario = build_scenario(n_rules, pool, seed)
    baseline = dict(scenario.source)
    baseline.pop("max_offline")
    rules = []
    for index, rule in enumerate(baseline["rules"]):  # type: ignore[arg-type]
        if index % 97 == 96:
            continue
        if index % 50 == 49:
            rule = {**rule, "effect": "allow" if rule["effect"] == "deny" else "deny"}
        rules.append(rule)
    candidate = {**baseline, "rules": rules}
    return baseline, candidate, [request for request, _ in scenario.requests]


def _bundle(keys: Path, source: dict[str, object], version: int) -> bytes:
    root = load_root(keys / ROOT_FILE)
    data, _ = build_bundle(
        load_policy_source(yaml.safe_dump(source)),
        root=root,
        signers=load_role_keys(keys, Role.POLICY, root),
        version=version,
        ttl=None,
        now=int(time.time()),
    )
    return data


def _setup(
    hub: Path,
    baseline: dict[str, object],
    pool: list[Request],
    *,
    devices: int,
    per_device: int,
    working_set: int,
    seed: int,
) -> int:
    """Store the fleet's shipped log; return the number of distinct requests in it.
    ``working_set`` 0: the pool's requests in turn, each once."""
    rng = random.Random(seed)
    policy = Shadow(compile_policy(load_policy_source(yaml.safe_dump(baseline)).policy))
    drafts: dict[tuple[Request, bool, str, str | None], Draft] = {}
    used: set[Request] = set()
    start = (int(time.time()) // 86400 - 7) * 86400  # midnight UTC: the same log every run
    with open_registry(hub / "hub.db") as registry:
        for n in range(devices):
            device_id = f"gw-{n:05d}"
            registry.add_device(
                DeviceRecord(
                    device_id, "eu-1", ("line-a",), "generic-x86_64", PrivateKey.generate().public
                )
            )
            chosen = rng.sample(pool, working_set) if working_set else None
            entries, prev = [], GENESIS_PREV
            for seq in range(per_device):
                request = rng.choice(chosen) if chosen else pool[n * per_device + seq]
                used.add(request)
                when = start + rng.randrange(WEEK - 3600)
                match = policy.decide(request, when)
                key = (request, match.allowed, match.reason, match.rule_id)
                draft = drafts.get(key)
                if draft is None:
                    draft = drafts[key] = draft_of(
                        Entry(0, 0, GENESIS_PREV, Kind.DECISION, match.allowed, match.reason,
                              match.rule_id, bytes(32), 1, request, "decided")
                    )  # fmt: skip
                data = place_draft(Draft(when, *_fields(draft)), seq, prev)
                entries.append(data)
                prev = entry_hash(data)
            frontier, _ = Frontier().extend(entry_hash(e) for e in entries)
            log = DeviceLog(len(entries), frontier, prev, "bench")
            checkpoint = Checkpoint(origin_for(device_id, 1), log.size, log.root)
            registry.store_batch(
                Accepted(device_id, 0, tuple(entries), log, checkpoint),
                expected_size=0,
                received_at=start,
            )
    return len(used)


def _fields(draft: Draft) -> tuple[Kind, bool, str, str | None, str | None, bytes]:
    return draft.kind, draft.allowed, draft.reason, draft.subject, draft.action, draft.body


def _diff(hub: Path, candidate: Path) -> tuple[float, int]:
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = hub_main(["bundle", "diff", str(candidate), "--json", "--hub-dir", str(hub)])
    elapsed = time.perf_counter() - started
    if code not in (0, 1):
        raise SystemExit(f"bundle diff failed with exit {code}")
    report = json.loads(out.getvalue())
    return elapsed, int(report["counts"]["flips"])


def _row(label: str, n_rules: int, args: argparse.Namespace, distinct: bool) -> Row:
    devices = max(1, args.devices // 10) if distinct else args.devices
    with tempfile.TemporaryDirectory() as tmp:
        hub = Path(tmp) / "hub"
        hub.mkdir()
        init_keys(hub / "keys", root_keys=1, root_threshold=1, now=int(time.time()), ttl=WEEK)
        pool_size = devices * args.per_device if distinct else POOL
        baseline, candidate, pool = _sources(n_rules, args.seed, pool_size)
        used = _setup(
            hub,
            baseline,
            pool,
            devices=devices,
            per_device=args.per_device,
            working_set=0 if distinct else args.working_set,
            seed=args.seed,
        )
        path = hub / "candidate.cbor"
        path.write_bytes(_bundle(hub / "keys", candidate, 2))
        seconds, flips = [], 0
        for _ in range(args.runs):
            elapsed, flips = _diff(hub, path)
            seconds.append(elapsed)
    return Row(label, n_rules, devices * args.per_device, used, flips, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="rule counts")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--per-device", type=int, default=1000)
    parser.add_argument("--working-set", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--quick", action="store_true", help="100 devices (100,000 decisions)")
    args = parser.parse_args()
    if args.quick:
        args.devices = 100
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [_row("working set", n, args, distinct=False) for n in sizes]
    rows.append(_row("all distinct", sizes[-1], args, distinct=True))
    print(
        f"bundle diff, whole command; {args.runs} runs per row; working set "
        f"{args.working_set} requests per device of a {POOL:,}-request pool"
    )
    print(
        f"{'traffic':<13} {'rules':>6} {'decisions':>10} {'distinct':>9} {'flips':>8} "
        f"{'median s':>9} {'(min-max)':>14} {'decisions/s':>12}"
    )
    for row in rows:
        median = statistics.median(row.seconds)
        spread = f"({min(row.seconds):.2f}-{max(row.seconds):.2f})"
        print(
            f"{row.label:<13} {row.rules:>6,} {row.decisions:>10,} {row.distinct:>9,} "
            f"{row.flips:>8,} {median:>9.2f} {spread:>14} {row.decisions / median:>12,.0f}"
        )


if __name__ == "__main__":
    main()

"""Rollout benchmark (issue 19): ``edge-hub bundle diff`` over a shipped fleet log, and
the time from a halt condition becoming true in shipped data to the rollback published.

Diff part.

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

Halt part (``--halt-agents``, default 1,000; 0 skips it). A real ``edge-hub serve`` (its
embedded broker, the default ``rollout_interval_s`` of 1 s) with that many simulated
agents: each registered, each with 5 shipped decisions allowed under bundle v1 (the
baseline), v1 current on their group. ``edge-hub rollout start`` (in process) rolls out v2
with stages 10%,100% and ``--halt-if deny_rate>+2%``; once the hub has entered stage 1, an
MQTT client subscribes to every device channel's bundle topic. Timed: from the commit of
one write group storing 5 denials under v2 for every stage-1 device (verified batches, as
the hub's ingest stores them: the moment the condition holds in shipped data) to the
rollback bundle received on the first and on the last of the stage's device channels.
The agents are simulated (their logs written to the registry, not shipped over MQTT): the
figure is the hub's reaction, not the devices' shipping delay. Target (issue 19): at most
5 s at 1,000 agents.

Usage: python bench/rollout.py [--quick] [--sizes 1000,10000] [--devices 1000]
       [--per-device 1000] [--working-set 50] [--runs 3] [--halt-agents 1000] [--halt-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
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
from edge_agent.support.mqtt import connect
from hub.cli.main import main as hub_main
from hub.cli.operations import build_bundle, init_keys
from hub.core.diff import Shadow
from hub.core.rollout import stage_members
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root
from hub.hubdir.layout import HubDir
from hub.registry import DeviceRecord
from hub.registry.backends import open_registry
from hub.registry.records import Accepted, DeviceLog
from hub.registry.rollout_records import RolloutRecord
from hub.service.config import HubConfig
from hub.service.governance import prepare_push
from hub.service.rollout import prepare_rollout
from hub.service.server import HubService

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


HALT_DECISIONS = 5
"""Decisions per simulated agent: allowed under v1 before, denied under v2 in stage 1."""
CAMERA = Request("svc:camera", "exec", "/opt/camera/bin/capture")
HALT_POLICY = """\
target: {{region: eu-1, groups: [line-a], profiles: [generic-x86_64]}}
ttl: 24h
rules:
  - id: camera-exec
    effect: allow
    subjects: [svc:camera]
    actions: [exec]
    resources: ["/opt/camera/bin/*"]
{extra}"""
FREEZE = """\
  - id: camera-freeze
    effect: deny
    subjects: [svc:camera]
    actions: [exec]
    resources: ["/opt/camera/bin/*"]
"""


class _Logs:
    """Simulated agents' logs, extended batch by batch and stored as ingest stores them."""

    def __init__(self) -> None:
        self.state: dict[str, tuple[int, Frontier, bytes]] = {}

    def batch(
        self, device_id: str, allowed: bool, version: int, digest: bytes, when: int
    ) -> Accepted:
        size, frontier, prev = self.state.get(device_id, (0, Frontier(), GENESIS_PREV))
        reason, rule = ("allowed", "camera-exec") if allowed else ("policy_denied", "camera-freeze")
        draft = draft_of(
            Entry(0, 0, GENESIS_PREV, Kind.DECISION, allowed, reason, rule, digest, version,
                  CAMERA, "decided")
        )  # fmt: skip
        entries = []
        for seq in range(size, size + HALT_DECISIONS):
            data = place_draft(Draft(when, *_fields(draft)), seq, prev)
            entries.append(data)
            prev = entry_hash(data)
        frontier, _ = frontier.extend(entry_hash(e) for e in entries)
        log = DeviceLog(size + len(entries), frontier, prev, "bench")
        self.state[device_id] = (log.size, frontier, prev)
        checkpoint = Checkpoint(origin_for(device_id, 1), log.size, log.root)
        return Accepted(device_id, size, tuple(entries), log, checkpoint)


def _halt_setup(hub: Path, agents: int) -> tuple[_Logs, Path]:
    """Keys, ``agents`` devices with their baseline decisions, v1 current; the candidate."""
    init_keys(hub / "keys", root_keys=1, root_threshold=1, now=int(time.time()), ttl=WEEK)
    root = load_root(hub / "keys" / ROOT_FILE)
    signers = load_role_keys(hub / "keys", Role.POLICY, root)
    built = [
        build_bundle(
            load_policy_source(HALT_POLICY.format(extra=extra)), root=root, signers=signers,
            version=version, ttl=None, now=int(time.time()),
        )
        for version, extra in ((1, ""), (2, FREEZE))
    ]  # fmt: skip
    logs, before = _Logs(), int(time.time()) - 3600
    keys = HubDir(hub).load_keys()
    with open_registry(hub / "hub.db") as registry:
        prepare_push(registry, keys, built[0][0], now=int(time.time()), token_ttl_s=60)
        with registry.write_group():
            for n in range(agents):
                device_id = f"gw-{n:05d}"
                registry.add_device(
                    DeviceRecord(
                        device_id, "eu-1", ("line-a",), "generic-x86_64",
                        PrivateKey.generate().public,
                    )
                )  # fmt: skip
                batch = logs.batch(device_id, True, 1, built[0][1].digest, before)
                registry.store_batch(batch, expected_size=0, received_at=before)
    candidate = hub / "v2.cbor"
    candidate.write_bytes(built[1][0])
    return logs, candidate


async def _halt_reaction(agents: int) -> tuple[int, float, float]:
    """One run: (stage devices, seconds to the first and to the last rollback received)."""
    with tempfile.TemporaryDirectory() as tmp:
        hub = Path(tmp) / "hub"
        hub.mkdir()
        logs, candidate = _halt_setup(hub, agents)
        async with HubService(HubConfig(hub, port=0, write_serve_file=False)) as service:
            await service.wait_ready()
            keys = HubDir(hub).load_keys()
            signers = load_role_keys(hub / "keys", Role.POLICY, keys.root)
            with open_registry(hub / "hub.db") as registry:
                record = prepare_rollout(
                    registry, keys, signers, candidate.read_bytes(), stages="10%,100%",
                    soak_s=3600, halts=["deny_rate>+2%"], groups=[], now=int(time.time()),
                )  # fmt: skip
                while (current := registry.rollout(record.rollout_id)) and current.entered < 0:
                    await asyncio.sleep(0.05)
            stage = stage_members(record, 0)
            async with connect(service.settings, client_id="bench-rollout-watch") as conn:
                await conn.subscribe(["edgegov/v1/eu-1/bundle/device/+"])
                return await _time_rollback(conn, hub, logs, record, stage)


async def _time_rollback(
    conn: object, hub: Path, logs: _Logs, record: RolloutRecord, stage: tuple[str, ...]
) -> tuple[int, float, float]:
    waiting = {f"edgegov/v1/eu-1/bundle/device/{d}" for d in stage}
    digest = record.candidate_digest

    def store() -> float:
        with open_registry(hub / "hub.db") as registry, registry.write_group():
            now = int(time.time())
            for device_id in stage:
                size = logs.state[device_id][0]
                batch = logs.batch(device_id, False, 2, digest, now)
                registry.store_batch(batch, expected_size=size, received_at=now)
        return time.perf_counter()

    stored = asyncio.create_task(asyncio.to_thread(store))
    first = None
    async for message in conn.messages():  # type: ignore[attr-defined]
        if message.topic in waiting and message.payload == record.rollback:
            waiting.discard(message.topic)
            first = first or time.perf_counter()
            if not waiting:
                break
    t0 = await stored
    return len(stage), first - t0, time.perf_counter() - t0


def _halt_table(agents: int, runs: int) -> None:
    logging.disable(logging.WARNING)  # the embedded broker's backlog notes, not results
    results = [asyncio.run(_halt_reaction(agents)) for _ in range(runs)]
    logging.disable(logging.NOTSET)
    firsts = [r[1] for r in results]
    lasts = [r[2] for r in results]
    print(
        f"halt -> rollback published, {agents:,} simulated agents, stage 1 of "
        f"{results[0][0]} devices, rollout_interval_s 1.0; {runs} runs"
    )
    print(f"{'first device channel':<24} {statistics.median(firsts):>6.2f} s "
          f"({min(firsts):.2f}-{max(firsts):.2f})")  # fmt: skip
    print(f"{'last device channel':<24} {statistics.median(lasts):>6.2f} s "
          f"({min(lasts):.2f}-{max(lasts):.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="rule counts")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--per-device", type=int, default=1000)
    parser.add_argument("--working-set", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument(
        "--quick", action="store_true", help="100 devices (100,000 decisions), 100 agents"
    )
    parser.add_argument("--halt-agents", type=int, default=1000, help="0: no halt part")
    parser.add_argument("--halt-only", action="store_true", help="only the halt part")
    args = parser.parse_args()
    if args.quick:
        args.devices = 100
        args.halt_agents = min(args.halt_agents, 100)
    if args.halt_agents:
        _halt_table(args.halt_agents, args.runs)
    if args.halt_only:
        return
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

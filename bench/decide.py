"""Decision benchmark: edgegov's engine against Casbin, Cedar and a bare dict lookup.

One seeded scenario (a fleet policy of many workloads, actions and path-shaped resources with
literals, globs, deny rules and conditions) is expressed three ways with the same semantics:

- edgegov: the YAML source shape -> load_policy_source -> CBOR -> compile_policy -> evaluate;
- Casbin (pycasbin): one ``p`` line per (subject, action, resource), ``g`` lines for groups,
  deny-override effect, and custom matcher functions for our glob grammar and conditions;
- Cedar (cedarpy): one ``permit``/``forbid`` per rule; the resource path and its segment count
  travel in the context, ``*``-globs become ``like`` plus a segment-count check (exact for the
  patterns the scenario uses: ``*`` inside segments and a trailing ``/**``).

Every side decides every request it runs; all answers must agree (the run fails otherwise).
edgegov is timed from the first decision after compiling, with no warm-up: its index is built
in full at compile time, so the first decisions cost what later ones do.
Casbin and Cedar scan all rules per request, so at larger sizes they run a fixed seeded subset
of the requests (printed). Per-decision times are wall-clock around each call (the timer's
own cost, ~0.1 us, is in every column, the dict baseline included).

Usage: python bench/decide.py [--quick] [--sizes 100,1000,10000] [--requests 10000]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.policy.bundle import compile_for_device
from edge_agent.policy.compiler import CompiledPolicy, compile_policy
from edge_agent.policy.engine import evaluate
from edge_agent.policy.source import PolicySource, load_policy_source
from edge_agent.protocol import dcbor
from edge_agent.protocol.bundle import (
    BundleTarget,
    DeviceIdentity,
    bundle_payload,
    sign_bundle,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import HUB_ROLES
from edge_agent.protocol.root import build_root_payload, sign_root, verify_trusted_root

ACTIONS = ("exec", "read", "write", "publish", "subscribe", "connect")
ZONES = ("plant-a", "plant-b", "plant-c")
DAY = 1_700_006_400
PEER_DECISION_BUDGET = 4_000_000
"""Peer requests x rules evaluated per size; bounds the Casbin/Cedar runs to minutes."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A policy in the YAML source shape (DESIGN.md section 8) and requests against it."""

    source: dict[str, object]
    requests: tuple[tuple[Request, int], ...]


def build_scenario(n_rules: int, n_requests: int, seed: int) -> Scenario:
    """Generate the fleet policy (``.source``, ready for ``yaml.dump`` and
    ``load_policy_source``) with ``n_rules`` rules, and ``n_requests`` (request, now) pairs."""
    rng = random.Random(seed)
    n_workloads = max(10, n_rules // 20)
    workloads = {
        f"svc:w{k}": [f"uid:{10_000 + k}", f"exe:/opt/w{k}/bin/run"] for k in range(n_workloads)
    }
    groups = {
        f"line{g}": [f"svc:w{k}" for k in range(g * 10, min(n_workloads, g * 10 + 10))]
        for g in range(n_workloads // 10)
    }
    rules: list[dict[str, object]] = [
        {
            "id": "no-shells",
            "effect": "deny",
            "subjects": ["*"],
            "actions": ["exec"],
            "resources": ["/bin/sh", "/usr/bin/*sh"],
        },
        {
            "id": "read-etc-common",
            "effect": "allow",
            "subjects": ["*"],
            "actions": ["read"],
            "resources": ["/etc/common/*", "/usr/share/**"],
        },
    ]
    while len(rules) < n_rules:
        rules.append(_workload_rule(rng, len(rules), n_workloads))
    source: dict[str, object] = {
        "target": {"region": "eu-1", "groups": ["line-a"]},
        "ttl": "24h",
        "max_offline": "1h",
        "groups": groups,
        "workloads": workloads,
        "rules": rules[:n_rules],
    }
    requests = tuple(_request(rng, n_workloads) for _ in range(n_requests))
    return Scenario(source, requests)


def _workload_rule(rng: random.Random, index: int, n_workloads: int) -> dict[str, object]:
    k = rng.randrange(n_workloads)
    subject = (
        f"group:line{k // 10}"
        if rng.random() < 0.15 and k // 10 < n_workloads // 10
        else f"svc:w{k}"
    )
    roll = rng.random()
    if roll < 0.06:
        rule: dict[str, object] = {
            "effect": "deny",
            "actions": ["*"],
            "resources": [f"/var/lib/w{k}/secrets/**"],
        }
    elif roll < 0.08:
        rule = {"effect": "deny", "actions": ["write"], "resources": [f"/opt/w{k}/bin/*"]}
    else:
        templates = (
            f"/opt/w{k}/bin/run",
            f"/opt/w{k}/bin/*",
            f"/var/lib/w{k}/**",
            f"/var/log/w{k}/*.log",
            f"/etc/w{k}/*/config.yaml",
            f"mqtt/{rng.choice(ZONES)}/w{k}/**",
            f"/dev/ttyUSB{k % 4}",
        )
        rule = {
            "effect": "allow",
            "actions": rng.sample(ACTIONS, rng.choice((1, 1, 2))),
            "resources": rng.sample(templates, rng.choice((1, 1, 2, 3))),
        }
    when: dict[str, object] = {}
    if rng.random() < 0.12:
        when["context"] = {"zone": rng.sample(ZONES, rng.choice((1, 2)))}
    if rng.random() < 0.06:
        when["time_utc"] = rng.choice(("06:00-22:00", "22:00-06:00", "08:30-17:30"))
    if when:
        rule["when"] = when
    return {"id": f"r{index}", "subjects": [subject], **rule}


def _request(rng: random.Random, n_workloads: int) -> tuple[Request, int]:
    k = rng.randrange(n_workloads)
    resource = rng.choice(
        (
            f"/opt/w{k}/bin/run",
            f"/opt/w{k}/bin/helper",
            f"/var/lib/w{k}/db/state.db",
            f"/var/lib/w{k}",
            f"/var/lib/w{k}/secrets/key.pem",
            f"/var/log/w{k}/app.log",
            f"/var/log/w{k}/old/app.log",
            f"/etc/w{k}/main/config.yaml",
            "/etc/common/hosts",
            f"mqtt/{rng.choice(ZONES)}/w{k}/telemetry",
            f"/dev/ttyUSB{rng.randrange(4)}",
            "/usr/bin/bash",
            "/bin/sh",
            "/usr/share/zoneinfo/UTC",
            f"/home/w{k}/.profile",
        )
    )
    context = () if rng.random() < 0.3 else (("zone", rng.choice(ZONES)),)
    now = DAY + rng.randrange(86_400)
    subject = f"svc:w{k}" if rng.random() < 0.95 else "svc:unknown"
    return Request(subject, rng.choice(ACTIONS), resource, context), now


# --- edgegov ---------------------------------------------------------------------------------


def build_edgegov(source: dict[str, object]) -> tuple[CompiledPolicy, dict[str, float]]:
    """Source dict -> YAML -> PolicySource -> CBOR -> CompiledPolicy, timing each step."""
    timings: dict[str, float] = {}
    text = yaml.dump(source, Dumper=yaml.CSafeDumper, sort_keys=False)
    start = time.perf_counter()
    loaded = load_policy_source(text, "bench.yaml")
    timings["load_source_s"] = time.perf_counter() - start
    start = time.perf_counter()
    encoded = dcbor.encode(loaded.policy)
    decoded = dcbor.decode(encoded, max_bytes=MAX_BUNDLE_BYTES, what="policy")
    timings["cbor_roundtrip_s"] = time.perf_counter() - start
    start = time.perf_counter()
    compiled = compile_policy(decoded)
    timings["compile_s"] = time.perf_counter() - start
    timings["payload_bytes"] = float(len(encoded))
    runs = verify_and_compile_runs(loaded)
    timings["verify_compile_median_s"] = statistics.median(runs)
    timings["verify_compile_min_s"] = min(runs)
    timings["verify_compile_max_s"] = max(runs)
    return compiled, timings


def verify_and_compile_runs(loaded: PolicySource, runs: int = 5) -> list[float]:
    """Sign ``loaded`` as a real bundle and time what a device does at install:
    size cap, signature, strict decode, schema, target, version, expiry, compile.

    The clock stops when the verified bundle is returned; releasing it afterwards (a device
    keeps it until the next install) is not part of the time."""
    key = PrivateKey.generate()
    roles = {role: ([key.public], 1) for role in HUB_ROLES}
    now = int(time.time())
    root = verify_trusted_root(
        sign_root(
            build_root_payload(version=1, issued_at=now, expires_at=now + 3600, roles=roles), [key]
        ),
        now=now,
    )
    groups = loaded.target.get("groups") or []
    assert isinstance(groups, list)
    target = BundleTarget(region=str(loaded.target["region"]), groups=tuple(str(g) for g in groups))
    payload = bundle_payload(
        version=1, issued_at=now, expires_at=now + 3600, target=target, policy=loaded.policy
    )
    data = sign_bundle(payload, region=target.region, signers=[key])
    device = DeviceIdentity("bench-device", target.region, target.groups[:1], "any")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        accepted = compile_for_device(data, root=root, device=device, installed=None, now=now)
        times.append(time.perf_counter() - start)
        del accepted
    return times


# --- Casbin ----------------------------------------------------------------------------------

CASBIN_MODEL = """
[request_definition]
r = sub, obj, act, ctx

[policy_definition]
p = sub, obj, act, eft, cond

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = MATCHER
""".replace(
    "MATCHER",
    '(p.sub == "*" || g(r.sub, p.sub)) && (p.act == "*" || r.act == p.act)'
    " && edgeGlob(r.obj, p.obj) && edgeCond(r.ctx, p.cond)",
)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Our resource grammar as a regex, written independently of the engine's matcher."""
    parts: list[str] = []
    for position, segment in enumerate(pattern.split("/")):
        if segment == "**":
            parts.append("(?:/[^/]*)*" if position else "(?:[^/]*)(?:/[^/]*)*")
            continue
        body = "".join(
            "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in segment
        )
        parts.append(body if position == 0 else "/" + body)
    return re.compile("".join(parts))


def build_casbin(source: dict[str, object]) -> Callable[[Request, int], bool]:
    import casbin
    from casbin.model import Model

    model = Model()
    model.load_model_from_text(CASBIN_MODEL)
    enforcer = casbin.Enforcer(model, enable_log=False)
    regexes: dict[str, re.Pattern[str]] = {}
    conditions: dict[str, dict[str, object]] = {"": {}}

    def edge_glob(resource: str, pattern: str) -> bool:
        regex = regexes.get(pattern)
        if regex is None:
            regex = regexes[pattern] = _glob_regex(pattern)
        return regex.fullmatch(resource) is not None

    def edge_cond(ctx: tuple[dict[str, str], int], cond_id: str) -> bool:
        return _condition_holds(conditions[cond_id], ctx[0], ctx[1])

    enforcer.add_function("edgeGlob", edge_glob)
    enforcer.add_function("edgeCond", edge_cond)
    groups = source["groups"]
    assert isinstance(groups, dict)
    enforcer.add_grouping_policies(
        [[member, f"group:{name}"] for name, members in groups.items() for member in members]
    )
    lines: list[list[str]] = []
    for rule in _rules(source):
        cond_id = ""
        if "when" in rule:
            cond_id = str(rule["id"])
            conditions[cond_id] = rule["when"]  # type: ignore[assignment]
        for subject in rule["subjects"]:  # type: ignore[attr-defined]
            for action in rule["actions"]:  # type: ignore[attr-defined]
                for resource in rule["resources"]:  # type: ignore[attr-defined]
                    lines.append([subject, resource, action, str(rule["effect"]), cond_id])
    enforcer.add_policies(lines)

    def decide(request: Request, now: int) -> bool:
        ctx = (dict(request.context), now)
        return bool(enforcer.enforce(request.subject, request.resource, request.action, ctx))

    return decide


def _condition_holds(when: dict[str, object], context: dict[str, str], now: int) -> bool:
    wanted = when.get("context", {})
    assert isinstance(wanted, dict)
    for key, allowed in wanted.items():
        if context.get(key) not in allowed:
            return False
    window = when.get("time_utc")
    if isinstance(window, str):
        start, end = (int(t[:2]) * 60 + int(t[3:]) for t in window.split("-"))
        minute = now % 86_400 // 60
        return start <= minute < end if start < end else minute >= start or minute < end
    return True


# --- Cedar -----------------------------------------------------------------------------------


def _cedar_resource_test(pattern: str) -> str:
    segments = pattern.split("/")
    if segments[-1] == "**" and "*" not in pattern[:-2] and "?" not in pattern:
        prefix = pattern[:-3]
        return f'(context.path == "{prefix}" || context.path like "{prefix}/*")'
    if "**" in segments or "?" in pattern:
        raise ValueError(f"the Cedar encoding does not cover {pattern!r}")
    if "*" not in pattern:
        return f'context.path == "{pattern}"'
    return f'(context.depth == {len(segments)} && context.path like "{pattern}")'


def _cedar_policy(rule: dict[str, object]) -> str:
    subjects = rule["subjects"]
    actions = rule["actions"]
    assert isinstance(subjects, list) and isinstance(actions, list)
    entities = [
        f'Group::"{s[6:]}"' if s.startswith("group:") else f'Workload::"{s}"' for s in subjects
    ]
    principal = "principal"
    tests: list[str] = []
    if "*" not in subjects and len(entities) == 1:
        principal = f"principal in {entities[0]}"
    elif "*" not in subjects:
        tests.append(f"principal in [{', '.join(entities)}]")
    action = (
        "action"
        if "*" in actions
        else f"action in [{', '.join(f'Action::{json_str(a)}' for a in actions)}]"
    )
    resources = rule["resources"]
    assert isinstance(resources, list)
    tests.append(" || ".join(_cedar_resource_test(str(p)) for p in resources))
    when = rule.get("when", {})
    assert isinstance(when, dict)
    for key, values in when.get("context", {}).items():
        allowed = ", ".join(json_str(v) for v in values)
        tests.append(f"(context has {key} && [{allowed}].contains(context.{key}))")
    if "time_utc" in when:
        start, end = (int(t[:2]) * 60 + int(t[3:]) for t in str(when["time_utc"]).split("-"))
        joiner = "&&" if start < end else "||"
        tests.append(f"(context.minute >= {start} {joiner} context.minute < {end})")
    effect = "permit" if rule["effect"] == "allow" else "forbid"
    body = " && ".join(f"({t})" for t in tests)
    return f'@id("{rule["id"]}")\n{effect}({principal}, {action}, resource) when {{ {body} }};'


def json_str(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_cedar(source: dict[str, object]) -> Callable[[Request, int], bool]:
    import json

    import cedarpy

    policies = cedarpy.PolicySet.from_str("\n".join(_cedar_policy(r) for r in _rules(source)))
    groups = source["groups"]
    assert isinstance(groups, dict)
    parents: dict[str, list[str]] = {}
    for name, members in groups.items():
        for member in members:
            parents.setdefault(member, []).append(name)
    workload_ids = {*parents, *source["workloads"]}  # type: ignore[misc]
    entity_list = [
        {
            "uid": {"type": "Workload", "id": w},
            "attrs": {},
            "parents": [{"type": "Group", "id": g} for g in parents.get(w, [])],
        }
        for w in sorted(workload_ids)
    ] + [{"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []} for g in sorted(groups)]
    entities = cedarpy.Entities.from_json_str(json.dumps(entity_list))

    def decide(request: Request, now: int) -> bool:
        context: dict[str, object] = dict(request.context)
        context["path"] = request.resource
        context["depth"] = request.resource.count("/") + 1
        context["minute"] = now % 86_400 // 60
        result = cedarpy.is_authorized(
            {
                "principal": {"type": "Workload", "id": request.subject},
                "action": {"type": "Action", "id": request.action},
                "resource": {"type": "Path", "id": "r"},
                "context": context,
            },
            policies,
            entities,
        )
        return bool(result.allowed)

    return decide


def _rules(source: dict[str, object]) -> list[dict[str, object]]:
    rules = source["rules"]
    assert isinstance(rules, list)
    return rules


# --- measurement -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    name: str
    count: int
    p50_us: float
    p99_us: float
    per_second: float


def measure(
    name: str, decide: Callable[[Request, int], object], cases: Sequence[tuple[Request, int]]
) -> tuple[Timing, list[object]]:
    clock = time.perf_counter_ns
    samples: list[int] = []
    answers: list[object] = []
    for request, now in cases:
        start = clock()
        answer = decide(request, now)
        samples.append(clock() - start)
        answers.append(answer)
    samples.sort()
    total = sum(samples)
    timing = Timing(
        name,
        len(samples),
        statistics.median(samples) / 1000,
        samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
        len(samples) / (total / 1e9) if total else float("inf"),
    )
    return timing, answers


def run_size(n_rules: int, n_requests: int, seed: int, peers: bool) -> list[Timing]:
    scenario = build_scenario(n_rules, n_requests, seed)
    compiled, build = build_edgegov(scenario.source)
    print(
        f"\n== {n_rules} rules, {n_requests} requests (seed {seed}) ==\n"
        f"edgegov build: load+check source {build['load_source_s']:.2f}s, CBOR round trip "
        f"{build['cbor_roundtrip_s']:.2f}s, compile {build['compile_s'] * 1000:.1f}ms, "
        f"payload {build['payload_bytes'] / 1024:.0f} KiB\n"
        f"signed bundle verify+compile (as a device installs it, 5 runs): median "
        f"{build['verify_compile_median_s'] * 1000:.0f}ms, min "
        f"{build['verify_compile_min_s'] * 1000:.0f}ms, max "
        f"{build['verify_compile_max_s'] * 1000:.0f}ms"
    )
    cases = scenario.requests
    ours, our_answers = measure("edgegov", lambda r, n: evaluate(compiled, r, n).allowed, cases)
    table = {
        (r.subject, r.action, r.resource, r.context, n): a
        for (r, n), a in zip(cases, our_answers, strict=True)
    }
    baseline, _ = measure(
        "dict lookup",
        lambda r, n: table.get((r.subject, r.action, r.resource, r.context, n)),
        cases,
    )
    timings = [ours, baseline]
    verdicts = sum(1 for a in our_answers if a)
    print(f"edgegov allowed {verdicts} of {len(cases)} requests")
    if not peers:
        return timings
    subset_size = min(len(cases), max(100, PEER_DECISION_BUDGET // max(1, n_rules)))
    subset_index = sorted(random.Random(seed + 1).sample(range(len(cases)), subset_size))
    subset = [cases[i] for i in subset_index]
    expected = [our_answers[i] for i in subset_index]
    if subset_size < len(cases):
        print(
            f"peers run a seeded subset: {subset_size} of {len(cases)} requests "
            f"(random.Random({seed + 1}).sample; first indexes {subset_index[:5]})"
        )
    for name, builder in (("casbin", build_casbin), ("cedar", build_cedar)):
        start = time.perf_counter()
        decide = builder(scenario.source)
        built = time.perf_counter() - start
        timing, answers = measure(name, decide, subset)
        mismatches = [
            i for i, (a, b) in enumerate(zip(answers, expected, strict=True)) if bool(a) != b
        ]
        print(f"{name}: built in {built:.2f}s, {len(mismatches)} disagreements with edgegov")
        if mismatches:
            request, now = subset[mismatches[0]]
            raise SystemExit(
                f"{name} disagrees on {request} at {now}: ours={expected[mismatches[0]]}"
            )
        timings.append(timing)
    return timings


def print_table(rows: list[tuple[int, list[Timing]]]) -> None:
    print(
        f"\n{'rules':>6} {'engine':<12} {'decisions':>9} {'p50 us':>9} {'p99 us':>9} "
        f"{'decisions/s':>12} {'p99 / ours':>10}"
    )
    for n_rules, timings in rows:
        ours = timings[0]
        for t in timings:
            ratio = t.p99_us / ours.p99_us if ours.p99_us else float("nan")
            print(
                f"{n_rules:>6} {t.name:<12} {t.count:>9} {t.p50_us:>9.2f} {t.p99_us:>9.2f} "
                f"{t.per_second:>12,.0f} {ratio:>10.2f}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 rules, 2,000 requests")
    parser.add_argument("--sizes", help="comma-separated rule counts (default 100,1000,10000)")
    parser.add_argument("--requests", type=int, help="requests per size (default 10,000)")
    parser.add_argument("--seed", type=int, default=20_240_601)
    parser.add_argument("--no-peers", action="store_true", help="skip Casbin and Cedar")
    args = parser.parse_args(argv)
    sizes = [100, 1_000] if args.quick else [100, 1_000, 10_000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    n_requests = args.requests or (2_000 if args.quick else 10_000)
    rows = [(n, run_size(n, n_requests, args.seed, not args.no_peers)) for n in sizes]
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

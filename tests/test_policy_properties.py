"""Properties of the policy engine.

1. The indexed engine agrees with a naive reference written plainly here: scan every rule,
   match resources with an independent recursive matcher. This is the oracle for the index.
2. ``compile_policy`` on any decoded value returns a policy or raises ``PolicyError``.
3. Decisions do not depend on the hash seed (three interpreters, three seeds).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge_agent.errors import PolicyError
from edge_agent.policy.compiler import CompiledPolicy, compile_policy, policy_payload
from edge_agent.policy.engine import Match, evaluate
from edge_agent.protocol.request import Request

GROUPS = {"g1": ["svc:a", "uid:2"], "g2": ["svc:b"]}
WORKLOADS = {"svc:a": ["uid:1"], "svc:c": ["uid:2", "exe:/bin/x"]}
DAY = 1_700_000_000 - 1_700_000_000 % 86_400

pattern_segments = st.sampled_from(["a", "b", "ab", "*", "?", "**", "a*", "*b", "?b", "a?*", ""])
resource_segments = st.sampled_from(["a", "b", "ab", "abb", "ba", "", "x"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    root = draw(st.sampled_from([[""], [""], []]))
    pattern = "/".join([*root, *draw(st.lists(pattern_segments, min_size=1, max_size=4))])
    assume(pattern)
    return pattern


@st.composite
def rules(draw: st.DrawFn, index: int) -> dict[str, object]:
    rule: dict[str, object] = {
        "id": f"r{index}",
        "effect": draw(st.sampled_from(["allow", "deny"])),
        "subjects": draw(
            st.lists(
                st.sampled_from(["svc:a", "svc:b", "uid:1", "*", "group:g1", "group:g2"]),
                min_size=1,
                max_size=2,
                unique=True,
            )
        ),
        "actions": draw(
            st.lists(st.sampled_from(["read", "write", "*"]), min_size=1, max_size=2, unique=True)
        ),
        "resources": draw(st.lists(patterns(), min_size=1, max_size=3, unique=True)),
    }
    when: dict[str, object] = {}
    if draw(st.booleans()):
        when["context"] = {
            "zone": draw(st.lists(st.sampled_from(["x", "y"]), min_size=1, unique=True))
        }
    if draw(st.booleans()):
        when["time_utc"] = draw(st.sampled_from(["06:00-22:00", "22:00-06:00", "12:00-12:01"]))
    if when:
        rule["when"] = when
    return rule


@st.composite
def policies(draw: st.DrawFn) -> list[dict[str, object]]:
    count = draw(st.integers(min_value=0, max_value=8))
    return [draw(rules(index)) for index in range(count)]


@st.composite
def requests(draw: st.DrawFn) -> tuple[Request, int]:
    root = draw(st.sampled_from([[""], [""], []]))
    resource = "/".join([*root, *draw(st.lists(resource_segments, min_size=0, max_size=5))])
    context = draw(st.sampled_from([(), (("zone", "x"),), (("zone", "y"),), (("zone", "z"),)]))
    request = Request(
        subject=draw(st.sampled_from(["svc:a", "svc:b", "svc:c", "other", "uid:1", "group:g1"])),
        action=draw(st.sampled_from(["read", "write", "exec", "*"])),
        resource=resource,
        context=context,
        selectors=tuple(
            draw(st.lists(st.sampled_from(["uid:1", "uid:2", "exe:/bin/x"]), unique=True))
        ),
    )
    now = DAY + draw(st.sampled_from([0, 6 * 3600, 12 * 3600, 12 * 3600 + 59, 23 * 3600]))
    return request, now


def _segment_matches(pattern: str, text: str) -> bool:
    if not pattern:
        return not text
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return any(_segment_matches(rest, text[cut:]) for cut in range(len(text) + 1))
    if not text:
        return False
    return (head == "?" or head == text[0]) and _segment_matches(rest, text[1:])


def _path_matches(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_path_matches(pattern[1:], path[cut:]) for cut in range(len(path) + 1))
    return (
        bool(path)
        and _segment_matches(pattern[0], path[0])
        and _path_matches(pattern[1:], path[1:])
    )


def _condition_holds(when: dict[str, Any], request: Request, now: int) -> bool:
    for key, allowed in when.get("context", {}).items():
        if not any(k == key and v in allowed for k, v in request.context):
            return False
    if "time_utc" in when:
        start, end = (int(part[:2]) * 60 + int(part[3:]) for part in when["time_utc"].split("-"))
        minute = now % 86_400 // 60
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if not inside:
            return False
    return True


def reference_decision(rule_list: list[dict[str, Any]], request: Request, now: int) -> Match:
    identities = {request.subject, *request.selectors}
    principals = set(identities)
    for workload, selectors in WORKLOADS.items():
        if identities & set(selectors):
            principals.add(workload)
    matching: list[tuple[int, dict[str, Any]]] = []
    for position, rule in enumerate(rule_list):
        expanded: set[str] = set()
        for subject in rule["subjects"]:
            expanded |= set(GROUPS[subject[6:]]) if subject.startswith("group:") else {subject}
        if "*" not in expanded and not principals & expanded:
            continue
        if "*" not in rule["actions"] and request.action not in rule["actions"]:
            continue
        path = request.resource.split("/")
        if not any(_path_matches(p.split("/"), path) for p in rule["resources"]):
            continue
        if not _condition_holds(rule.get("when", {}), request, now):
            continue
        matching.append((position, rule))
    for _, rule in matching:
        if rule["effect"] == "deny":
            return Match(False, "policy_denied", rule["id"])
    if matching:
        return Match(True, "allowed", matching[0][1]["id"])
    return Match(False, "no_matching_rule", None)


def _compile(rule_list: list[dict[str, object]]) -> CompiledPolicy:
    return compile_policy(policy_payload(GROUPS, WORKLOADS, rule_list))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.lists(requests(), min_size=1, max_size=10))
def test_indexed_engine_agrees_with_the_naive_reference(
    rule_list: list[dict[str, Any]], cases: list[tuple[Request, int]]
) -> None:
    compiled = _compile(rule_list)
    for request, now in cases:
        assert evaluate(compiled, request, now) == reference_decision(rule_list, request, now)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=12)
    | st.binary(max_size=4),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(cbor_values)
def test_compile_policy_on_arbitrary_values_raises_only_policy_error(value: object) -> None:
    with contextlib.suppress(PolicyError):
        compile_policy(value)


def _mutate(value: object, path: list[int], replacement: object) -> object:
    if not path or not isinstance(value, list | dict) or not value:
        return replacement
    keys = list(value) if isinstance(value, dict) else list(range(len(value)))
    key = keys[path[0] % len(keys)]
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[key] = _mutate(copy[key], path[1:], replacement)
    return copy


@settings(max_examples=300, deadline=None)
@given(policies(), st.lists(st.integers(0, 50), max_size=6), cbor_values)
def test_compile_policy_on_mutated_valid_payloads_raises_only_policy_error(
    rule_list: list[dict[str, object]], path: list[int], replacement: object
) -> None:
    payload = _mutate(policy_payload(GROUPS, WORKLOADS, rule_list), path, replacement)
    with contextlib.suppress(PolicyError):
        compile_policy(payload)


_SEED_SCRIPT = """
import json, sys
from edge_agent.policy.compiler import compile_policy, policy_payload
from edge_agent.policy.engine import evaluate
from edge_agent.protocol.request import Request
rules = [
    {"id": f"r{i}", "effect": "deny" if i % 7 == 3 else "allow",
     "subjects": [f"svc:w{i % 5}", "group:g"] if i % 3 else ["*"],
     "actions": ["read", "*"] if i % 4 == 0 else ["read"],
     "resources": [f"/d{i % 6}/**", f"/d{i % 4}/f{i % 9}*", "/x/?"]}
    for i in range(60)
]
policy = compile_policy(policy_payload({"g": ["svc:w1", "uid:7"]}, {"svc:w2": ["uid:9"]}, rules))
out = []
for i in range(400):
    resource = f"/d{i % 6}/f{i % 11}x" if i % 10 else "/nowhere"
    request = Request(f"svc:w{i % 7}", "read" if i % 2 else "write", resource,
                      selectors=("uid:7", "uid:9")[: i % 3])
    match = evaluate(policy, request, 1_700_000_000)
    out.append([match.allowed, match.reason, match.rule_id])
json.dump(out, sys.stdout)
"""


def test_decisions_are_identical_under_different_hash_seeds() -> None:
    root = Path(__file__).resolve().parents[1]
    outputs = []
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        done = subprocess.run(
            [sys.executable, "-c", _SEED_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1] == outputs[2]
    assert {tuple(row[:2]) for row in outputs[0]} >= {
        (True, "allowed"),
        (False, "policy_denied"),
        (False, "no_matching_rule"),
    }

"""The decision engine: glob semantics, precedence, conditions, identities."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_agent.errors import PolicyError
from edge_agent.policy import _checks as checks
from edge_agent.policy.compiler import CompiledPolicy, compile_policy, policy_payload
from edge_agent.policy.engine import Match, evaluate
from edge_agent.protocol.request import Request

NOON = 1_700_000_000 - 1_700_000_000 % 86_400 + 12 * 3600


def _rule(rule_id: str, effect: str = "allow", **fields: object) -> dict[str, object]:
    rule: dict[str, object] = {
        "id": rule_id,
        "effect": effect,
        "subjects": ["*"],
        "actions": ["read"],
        "resources": ["/x"],
    }
    rule.update(fields)
    return rule


def _policy(
    *rules: dict[str, object],
    groups: dict[str, list[str]] | None = None,
    workloads: dict[str, list[str]] | None = None,
) -> CompiledPolicy:
    return compile_policy(policy_payload(groups or {}, workloads or {}, list(rules)))


def _decide(policy: CompiledPolicy, **request: object) -> Match:
    fields: dict[str, object] = {"subject": "svc:a", "action": "read", "resource": "/x"}
    fields.update(request)
    return evaluate(policy, Request(**fields), NOON)  # type: ignore[arg-type]


GLOB_TABLE = [
    # pattern, resource, matches
    ("/a/b", "/a/b", True),
    ("/a/b", "/a/B", False),
    ("/a/b", "/a/b/", False),
    ("/a/*", "/a/b", True),
    ("/a/*", "/a/", True),
    ("/a/*", "/a", False),
    ("/a/*", "/a/b/c", False),
    ("/a/*.log", "/a/x.log", True),
    ("/a/*.log", "/a/.log", True),
    ("/a/*.log", "/a/d/x.log", False),
    ("/a/b*c", "/a/bc", True),
    ("/a/b*c", "/a/bxyc", True),
    ("/a/b*c", "/a/bxycd", False),
    ("/a/*b*c*", "/a/xxbyyczz", True),
    ("/a/*b*c*", "/a/xxcyybzz", False),
    ("/a/?", "/a/b", True),
    ("/a/?", "/a/", False),
    ("/a/?", "/a/bc", False),
    ("/a/?.sh", "/a/x.sh", True),
    ("/a/b?", "/a/b/", False),
    ("/a/**", "/a", True),
    ("/a/**", "/a/", True),
    ("/a/**", "/a/b", True),
    ("/a/**", "/a/b/c/d", True),
    ("/a/**", "/ab", False),
    ("/a/**", "/b/a", False),
    ("/a/**/z", "/a/z", True),
    ("/a/**/z", "/a/b/c/z", True),
    ("/a/**/z", "/a/b/c/zz", False),
    ("/a/**/*.log", "/a/x.log", True),
    ("/a/**/*.log", "/a/b/c/x.log", True),
    ("/**", "/", True),
    ("/**", "/anything/at/all", True),
    ("/**", "relative", False),
    ("**", "", True),
    ("**", "relative/path", True),
    ("/a/**/**/b", "/a/b", True),
    ("/**/x/**/x", "/x/x", True),
    ("/**/x/**/x", "/q/x/r/s/x", True),
    ("/**/x/**/x", "/q/x/r/s", False),
    ("/usr/bin/*sh", "/usr/bin/bash", True),
    ("/usr/bin/*sh", "/usr/bin/sh", True),
    ("/usr/bin/*sh", "/usr/bin/shell", False),
    ("[abc]", "[abc]", True),
    ("[abc]", "a", False),
    ("/a.b", "/aXb", False),
    ("mqtt/+/#", "mqtt/+/#", True),
]


@pytest.mark.parametrize(("pattern", "resource", "expected"), GLOB_TABLE)
def test_resource_pattern_semantics_follow_the_documented_table(
    pattern: str, resource: str, expected: bool
) -> None:
    policy = _policy(_rule("r", resources=[pattern]))
    assert _decide(policy, resource=resource).allowed is expected


def test_empty_rule_list_allows_nothing() -> None:
    policy = _policy()
    assert policy.rule_count == 0
    assert _decide(policy) == Match(False, "no_matching_rule", None)


def test_no_matching_rule_is_a_deny_without_a_rule_id() -> None:
    policy = _policy(_rule("r", resources=["/y"]))
    assert _decide(policy) == Match(False, "no_matching_rule", None)


def test_any_matching_deny_wins_over_an_earlier_allow() -> None:
    policy = _policy(_rule("allow-x"), _rule("deny-x", "deny", resources=["/*"]))
    assert _decide(policy) == Match(False, "policy_denied", "deny-x")


def test_lowest_index_deny_is_named() -> None:
    policy = _policy(
        _rule("allow-x"),
        _rule("deny-b", "deny", resources=["/**"]),
        _rule("deny-a", "deny", subjects=["svc:a"]),
    )
    assert _decide(policy).rule_id == "deny-b"


def test_lowest_index_allow_is_named() -> None:
    policy = _policy(_rule("second", resources=["/*"]), _rule("first"))
    assert _decide(policy) == Match(True, "allowed", "second")


def test_star_action_matches_any_action_and_exact_actions_do_not_glob() -> None:
    policy = _policy(_rule("any", actions=["*"]), _rule("exact", "deny", actions=["write"]))
    assert _decide(policy, action="exec") == Match(True, "allowed", "any")
    assert _decide(policy, action="write") == Match(False, "policy_denied", "exact")
    assert _decide(policy, action="Write").allowed is True


def test_subject_must_match_exactly_unless_star() -> None:
    policy = _policy(_rule("r", subjects=["svc:a"]))
    assert _decide(policy, subject="svc:a").allowed
    assert not _decide(policy, subject="svc:ab").allowed
    assert not _decide(policy, subject="SVC:A").allowed


def test_group_subjects_expand_to_their_members() -> None:
    policy = _policy(
        _rule("r", subjects=["group:sensors"]),
        groups={"sensors": ["svc:camera", "uid:1001"]},
    )
    assert _decide(policy, subject="svc:camera").allowed
    assert _decide(policy, subject="svc:other", selectors=("uid:1001",)).allowed
    assert not _decide(policy, subject="svc:other").allowed


def test_naming_a_group_as_the_identity_does_not_act_as_its_members() -> None:
    policy = _policy(
        _rule("r", subjects=["group:sensors"]),
        groups={"sensors": ["svc:camera"]},
    )
    assert _decide(policy, subject="group:sensors") == Match(False, "no_matching_rule", None)
    assert not _decide(policy, subject="svc:other", selectors=("group:sensors",)).allowed


def test_a_workload_reached_through_a_selector_brings_its_groups() -> None:
    policy = _policy(
        _rule("r", subjects=["group:cameras"]),
        groups={"cameras": ["svc:camera"]},
        workloads={"svc:camera": ["uid:1001"]},
    )
    assert _decide(policy, subject="unknown", selectors=("uid:1001",)).allowed
    assert _decide(policy, subject="uid:1001").allowed
    assert not _decide(policy, subject="unknown", selectors=("uid:1002",)).allowed


def test_index_bound_counts_every_member_of_a_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "MAX_INDEX_ENTRIES", 5)
    members = [f"svc:m{k}" for k in range(6)]
    _policy(_rule("small", subjects=members[:5]))
    with pytest.raises(PolicyError, match="more than 5") as caught:
        _policy(
            _rule("small", subjects=["svc:a"]),
            _rule("big", subjects=["group:g"]),
            groups={"g": members},
        )
    assert caught.value.rule == "big"


def test_selectors_mapped_in_workloads_act_as_that_workload() -> None:
    policy = _policy(
        _rule("camera", subjects=["svc:camera"]),
        workloads={"svc:camera": ["exe:/opt/camera/bin/capture", "uid:1001"]},
    )
    assert _decide(policy, subject="unknown", selectors=("uid:1001",)).allowed
    assert _decide(policy, subject="exe:/opt/camera/bin/capture").allowed
    assert not _decide(policy, subject="unknown", selectors=("uid:1002",)).allowed


def test_rules_may_name_raw_selectors() -> None:
    policy = _policy(_rule("by-uid", subjects=["uid:0"]))
    assert _decide(policy, subject="anything", selectors=("gid:0", "uid:0")).allowed
    assert not _decide(policy, subject="anything", selectors=("gid:0",)).allowed


def test_context_condition_needs_every_key_with_an_allowed_value() -> None:
    when = {"context": {"zone": ["plant-a", "plant-b"], "shift": ["day"]}}
    policy = _policy(_rule("r", when=when))
    assert _decide(policy, context=(("shift", "day"), ("zone", "plant-b"))).allowed
    assert not _decide(policy, context=(("shift", "night"), ("zone", "plant-b"))).allowed
    assert not _decide(policy, context=(("zone", "plant-a"),)).allowed
    assert not _decide(policy).allowed


def test_deny_whose_condition_fails_does_not_block_an_allow() -> None:
    policy = _policy(
        _rule("deny-in-a", "deny", when={"context": {"zone": ["a"]}}),
        _rule("allow"),
    )
    assert _decide(policy, context=(("zone", "b"),)) == Match(True, "allowed", "allow")
    assert _decide(policy, context=(("zone", "a"),)) == Match(False, "policy_denied", "deny-in-a")


def test_conditional_lower_index_allow_falls_through_to_the_next_allow() -> None:
    policy = _policy(_rule("cond", when={"context": {"k": ["v"]}}), _rule("plain"))
    assert _decide(policy).rule_id == "plain"
    assert _decide(policy, context=(("k", "v"),)).rule_id == "cond"


@pytest.mark.parametrize(
    ("window", "hhmm", "expected"),
    [
        ("06:00-22:00", "06:00", True),
        ("06:00-22:00", "05:59", False),
        ("06:00-22:00", "21:59", True),
        ("06:00-22:00", "22:00", False),
        ("22:00-06:00", "23:30", True),
        ("22:00-06:00", "00:00", True),
        ("22:00-06:00", "05:59", True),
        ("22:00-06:00", "06:00", False),
        ("22:00-06:00", "12:00", False),
        ("23:59-00:00", "23:59", True),
        ("23:59-00:00", "00:00", False),
    ],
)
def test_time_window_is_utc_start_inclusive_end_exclusive_and_wraps(
    window: str, hhmm: str, expected: bool
) -> None:
    policy = _policy(_rule("r", when={"time_utc": window}))
    hours, minutes = (int(part) for part in hhmm.split(":"))
    day = 1_700_000_000 - 1_700_000_000 % 86_400
    for seconds in (0, 59):
        now = day + hours * 3600 + minutes * 60 + seconds
        assert evaluate(policy, Request("svc:a", "read", "/x"), now).allowed is expected


def test_rule_summary_lists_ids_and_effects_in_order() -> None:
    policy = _policy(_rule("a"), _rule("b", "deny"))
    assert [(r.id, r.effect) for r in policy.rules] == [("a", "allow"), ("b", "deny")]
    assert policy.rule_count == 2


def test_same_rule_through_many_paths_is_named_once_with_lowest_index() -> None:
    policy = _policy(
        _rule("wide", subjects=["*", "svc:a"], actions=["*", "read"], resources=["/x", "/*"]),
        _rule("later", "deny", resources=["/y"]),
    )
    assert _decide(policy) == Match(True, "allowed", "wide")


def test_engine_and_compiler_do_not_import_yaml() -> None:
    code = (
        "import sys, edge_agent.policy, edge_agent.policy.engine, edge_agent.policy.compiler;"
        "sys.exit('yaml' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0

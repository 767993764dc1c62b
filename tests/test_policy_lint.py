"""``edge-hub policy lint``: each finding with its line, no shadowing claimed unless proven,
and a property: a rule lint calls shadowed (or a duplicate) never names a decision, and one
it calls unreachable never allows, whatever the request."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.errors import PolicyError
from edge_agent.policy.compiler import compile_policy
from edge_agent.policy.engine import evaluate
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.request import Request
from hub.cli.main import main
from hub.core.lint import Finding, lint_policy, read_vocabulary
from hub.core.pattern_cover import covers, overlap

HEAD = "target: {region: eu-1}\n"


def _rule(rule_id: str, effect: str, subjects: str, actions: str, resources: str) -> str:
    return (
        f"  - id: {rule_id}\n    effect: {effect}\n    subjects: {subjects}\n"
        f"    actions: {actions}\n    resources: {resources}\n"
    )


def _codes(findings: tuple[Finding, ...]) -> list[tuple[str, str, int, str | None]]:
    return [(f.code, f.severity, f.line, f.rule) for f in findings]


# Each row: a policy and exactly the findings it must give (code, severity, line, rule).
FINDING_ROWS = [
    pytest.param(
        HEAD
        + "actions: [exec, read]\nrules:\n"
        + _rule("a", "allow", '["*"]', "[exec,\n      exce]", '["/x"]'),
        [("unknown_action", "error", 8, "a")],
        id="unknown-action-in-declared-vocabulary",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("a", "allow", "[svc:a]", "[exec]", '["/x"]')
        + _rule("b", "allow", "[svc:b]", "[exec]", '["/y"]')
        + _rule("c", "allow", "[svc:c]", "[exce]", '["/z"]'),
        [("similar_action", "warning", 16, "c")],
        id="typo-of-another-action-without-vocabulary",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("a", "allow", "[svc:a]", "[get]", '["/x"]')
        + _rule("b", "allow", "[svc:a]", "[set]", '["/y"]'),
        [],
        id="short-actions-one-letter-apart-are-words-not-typos",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("deny-shells", "deny", '["*"]', "[exec]", '["/usr/bin/*sh"]')
        + _rule("bash", "allow", "[svc:a]", "[exec]", '["/usr/bin/bash"]'),
        [("unreachable_rule", "error", 8, "bash")],
        id="allow-under-an-earlier-unconditional-deny",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("bash", "allow", "[svc:a]", "[exec]", '["/usr/bin/bash"]')
        + _rule("deny-all", "deny", '["*"]', '["*"]', '["**"]'),
        [("unreachable_rule", "error", 3, "bash")],
        id="allow-under-a-later-deny-too",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("a", "allow", "[svc:a]", "[exec]", '["/x/*"]')
        + _rule("b", "allow", "[svc:a]", "[exec]", '["/x/*"]'),
        [("duplicate_rule", "warning", 8, "b")],
        id="identical-rule",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("wide", "allow", "[svc:a]", "[exec, read]", '["/opt/**"]')
        + _rule("narrow", "allow", "[svc:a]", "[exec]", '["/opt/app/bin/*"]'),
        [("shadowed_rule", "warning", 8, "narrow")],
        id="allow-shadowed-by-an-earlier-wider-allow",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("narrow", "allow", "[svc:a]", "[exec]", '["/opt/app/bin/*"]')
        + _rule("wide", "allow", "[svc:a]", "[exec, read]", '["/opt/**"]'),
        [],
        id="a-later-wider-allow-shadows-nothing",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("no-sh", "deny", '["*"]', "[exec]", '["/bin/sh"]')
        + _rule("admin", "allow", "[svc:admin]", "[exec]", '["/bin/*"]'),
        [("overlapping_rules", "warning", 8, "admin")],
        id="allow-a-deny-overrides-in-part",
    ),
    pytest.param(
        HEAD
        + "groups:\n  used: [svc:a]\n  idle: [svc:b]\n"
        + "workloads:\n  svc:a: ['uid:1']\n  svc:ghost: ['uid:2']\n"
        + "rules:\n"
        + _rule("a", "allow", "[group:used]", "[exec]", '["/x"]'),
        [("unused_group", "warning", 4, None), ("unused_workload", "warning", 7, None)],
        id="unused-group-and-workload",
    ),
    pytest.param(
        HEAD
        + "groups:\n  sensors: [svc:a, 'uid:7']\n"
        + "rules:\n"
        + _rule("grp", "allow", "[group:sensors]", "[exec]", '["/x"]')
        + _rule("each", "allow", "[svc:a, 'uid:7']", "[exec]", '["/x"]'),
        [("shadowed_rule", "warning", 10, "each")],
        id="members-of-a-group-are-covered-by-the-group",
    ),
    pytest.param(
        HEAD
        + "groups:\n  sensors: [svc:a, svc:b]\n"
        + "rules:\n"
        + _rule("one", "allow", "[svc:a]", "[exec]", '["/x"]')
        + _rule("grp", "allow", "[group:sensors]", "[exec]", '["/x"]'),
        [],
        id="a-group-is-not-covered-by-one-of-its-members",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("cond", "deny", '["*"]', "[exec]", '["/x"]')
        + "    when: {context: {zone: [a]}}\n"
        + _rule("b", "allow", "[svc:a]", "[exec]", '["/x"]'),
        [("overlapping_rules", "warning", 9, "b")],
        id="a-conditional-deny-does-not-make-an-allow-unreachable",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("day", "allow", "[svc:a]", "[exec]", '["/x"]')
        + "    when: {time_utc: '06:00-22:00'}\n"
        + _rule("noon", "allow", "[svc:a]", "[exec]", '["/x"]')
        + "    when: {time_utc: '11:00-13:00', context: {zone: [a]}}\n",
        [("shadowed_rule", "warning", 9, "noon")],
        id="a-narrower-condition-is-covered-by-a-wider-one",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("day", "deny", '["*"]', "[exec]", '["/x"]')
        + "    when: {time_utc: '06:00-12:00'}\n"
        + _rule("night", "allow", "[svc:a]", "[exec]", '["/x"]')
        + "    when: {time_utc: '22:00-06:00'}\n",
        [],
        id="conditions-that-never-hold-together-do-not-overlap",
    ),
]


@pytest.mark.parametrize(("source", "expected"), FINDING_ROWS)
def test_each_finding_names_its_line_rule_and_severity(
    source: str, expected: list[tuple[str, str, int, str | None]]
) -> None:
    report = lint_policy(source, "p.yaml")
    assert _codes(report.findings) == expected
    assert all(f.text().startswith(f"p.yaml:{f.line}: {f.severity}: ") for f in report.findings)


# Pairs of patterns where the first does not cover the second, though they overlap or look
# alike: lint must never call a rule with the second shadowed by one with the first.
PARTIAL_PATTERNS = [
    ("/a/*", "/a/**"),
    ("/a/**", "/a*/**"),
    ("/a/*.log", "/a/x*"),
    ("/a/*/**", "/a/**"),
    ("/a/?", "/a/*"),
    ("/a/**/z", "/a/**"),
    ("/usr/bin/*sh", "/usr/bin/*"),
    ("/a/b", "/a/b/"),
    ("/**", "**"),
    ("*", "*/*"),
]


@pytest.mark.parametrize(("outer", "inner"), PARTIAL_PATTERNS)
def test_patterns_that_only_partly_overlap_shadow_nothing(outer: str, inner: str) -> None:
    source = (
        HEAD
        + "rules:\n"
        + _rule("outer", "allow", "[svc:a]", "[exec]", f'["{outer}"]')
        + _rule("inner", "allow", "[svc:a]", "[exec]", f'["{inner}"]')
        + _rule("deny", "deny", "[svc:a]", "[read]", f'["{outer}"]')
    )
    assert not covers(outer, inner)
    codes = {f.code for f in lint_policy(source, "p.yaml").findings if f.rule == "inner"}
    assert not codes & {"shadowed_rule", "duplicate_rule", "unreachable_rule"}


@pytest.mark.parametrize(
    ("outer", "inner"),
    [
        ("/a/**", "/a/*"),
        ("/a/**", "/a"),
        ("/a/*", "/a/?"),
        ("**", "/x/**/y"),
        ("/a/**/*.log", "/a/b/*.log"),
        ("/a/*x", "/a/?x"),
    ],
)
def test_patterns_that_cover_are_proven_to(outer: str, inner: str) -> None:
    assert covers(outer, inner)


def test_an_overlap_example_is_matched_by_both_patterns() -> None:
    example = overlap("/usr/bin/*sh", "/usr/*/ba*")
    assert example is not None
    policy = compile_policy(
        {
            "format": 1,
            "groups": {},
            "workloads": {},
            "rules": [
                {"id": i, "effect": "allow", "subjects": ["*"], "actions": ["a"], "resources": [p]}
                for i, p in (("one", "/usr/bin/*sh"), ("two", "/usr/*/ba*"))
            ],
        }
    )
    assert evaluate(policy, Request("s", "a", example), 0).allowed


def test_an_invalid_policy_is_refused_with_its_line_not_linted() -> None:
    with pytest.raises(PolicyError) as caught:
        lint_policy(HEAD + "rulez: []\n", "p.yaml")
    assert caught.value.line == 2


def test_the_policy_may_declare_its_actions_which_stay_out_of_the_bundle() -> None:
    source = load_policy_source(HEAD + "actions: [exec, read]\n" + CLEAN[len(HEAD) :], "p.yaml")
    assert source.actions == ("exec", "read")
    assert "actions" not in source.policy
    assert source.policy == load_policy_source(CLEAN, "p.yaml").policy
    with pytest.raises(PolicyError) as caught:
        load_policy_source(HEAD + "actions: ['*']\n" + CLEAN[len(HEAD) :], "p.yaml")
    assert caught.value.line == 2


def test_the_vocabulary_file_is_one_action_a_line_with_comments() -> None:
    vocabulary = read_vocabulary("# ours\nexec\n\nread\n", "actions.txt")
    assert vocabulary.actions == {"exec", "read"}
    with pytest.raises(PolicyError) as caught:
        read_vocabulary("exec\nre ad\n", "actions.txt")
    assert caught.value.line == 2


# --- the command -------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


CLEAN = HEAD + "rules:\n" + _rule("a", "allow", "[svc:a]", "[exec]", '["/x"]')
WARNS = CLEAN + _rule("b", "allow", "[svc:a]", "[exec]", '["/x"]')
ERRS = HEAD + "rules:\n" + _rule("a", "allow", "[svc:a]", "[exce]", '["/x"]')


@pytest.mark.parametrize(
    ("source", "extra", "code"),
    [
        pytest.param(CLEAN, [], 0, id="clean"),
        pytest.param(WARNS, [], 0, id="warnings-pass"),
        pytest.param(WARNS, ["--strict"], 1, id="warnings-fail-when-strict"),
        pytest.param(ERRS, ["--actions", "VOCAB"], 1, id="unknown-action-fails"),
        pytest.param(HEAD + "rules: {}\n", [], 2, id="invalid-policy"),
    ],
)
def test_lint_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, extra: list[str], code: int
) -> None:
    vocab = _write(tmp_path, "actions.txt", "exec\nread\n")
    policy = _write(tmp_path, "p.yaml", source)
    args = ["policy", "lint", policy, *[vocab if a == "VOCAB" else a for a in extra]]
    assert main(args) == code
    assert main([*args, "--json"]) == code
    document = json.loads(capsys.readouterr().out.splitlines()[-1])
    if code == 2:
        assert document["error"] == "usage" and document["path"] == policy
    else:
        assert document["ok"] is (code == 0)


def test_lint_prints_one_line_a_finding_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = _write(tmp_path, "p.yaml", WARNS)
    main(["policy", "lint", policy])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{policy}:8: warning: rule 'b': is identical to rule 'a' (line 3); it never decides "
        "(duplicate_rule)",
        f"{policy}: 0 errors, 1 warning",
    ]


def test_a_missing_policy_file_is_a_usage_error_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert main(["policy", "lint", missing, "--json"]) == 2
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert (document["error"], document["exit"], document["path"]) == ("usage", 2, missing)
    assert captured.err == ""


def _pathological(rules: int) -> str:
    """Rules every pair of which is compared, with patterns whose comparisons each search
    up to their own cap (hostile8's lint_slow: 150 such rules linted for over 5 minutes)."""
    rng = random.Random(1)
    lines = [HEAD.rstrip("\n"), "rules:"]
    for index in range(rules):
        segments = ["*".join(rng.choice("ab") for _ in range(6)) + "*" for _ in range(6)]
        pattern = "/" + "/**/".join(segments)
        lines.append(
            f'  - {{id: r{index}, effect: allow, subjects: ["*"], actions: ["*"], '
            f'resources: ["{pattern}", "/**/{index}*a*b*a*b*"]}}'
        )
    return "\n".join(lines) + "\n"


def test_a_pathological_policy_stops_comparing_and_says_how_many_pairs_it_left() -> None:
    report = lint_policy(_pathological(40), "slow.yaml")
    [incomplete] = [f for f in report.findings if f.code == "analysis_incomplete"]
    assert incomplete.severity == "warning"
    assert incomplete.rule is not None
    first = int(incomplete.rule.removeprefix("r"))
    left = 39 * (40 - first)
    assert f"{left:,} rule pairs from this rule on were not compared" in incomplete.message
    assert [f.code for f in report.findings] == ["analysis_incomplete"]


@pytest.mark.parametrize(("extra", "code"), [([], 0), (["--strict"], 1)], ids=["plain", "strict"])
def test_an_incomplete_analysis_is_a_warning_that_fails_only_when_strict(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    code: int,
) -> None:
    monkeypatch.setattr("hub.core.lint.MAX_LINT_STEPS", 50_000)
    policy = _write(tmp_path, "slow.yaml", _pathological(8))
    assert main(["policy", "lint", policy, "--json", *extra]) == code
    document = json.loads(capsys.readouterr().out)
    assert [f["code"] for f in document["findings"]] == ["analysis_incomplete"]
    assert document["warnings"] == 1


# --- the property ------------------------------------------------------------------------

SUBJECTS = ["*", "svc:a", "svc:b", "uid:1", "group:g"]
ACTIONS = ["exec", "read", "*"]
SEGMENTS = ["a", "b", "ab", "*", "?", "a*", "*b", "**"]
WINDOWS = [None, "06:00-18:00", "08:00-12:00", "22:00-06:00"]
ZONES = [None, ["x"], ["x", "y"]]


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3))
    return "/" + "/".join(segments) if draw(st.booleans()) else "/".join(segments)


@st.composite
def _rules(draw: st.DrawFn) -> list[dict[str, object]]:
    rules = []
    for index in range(draw(st.integers(1, 6))):
        rule: dict[str, object] = {
            "id": f"r{index}",
            "effect": draw(st.sampled_from(["allow", "deny"])),
            "subjects": draw(
                st.lists(st.sampled_from(SUBJECTS), min_size=1, max_size=2, unique=True)
            ),
            "actions": draw(
                st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2, unique=True)
            ),
            "resources": draw(st.lists(_patterns(), min_size=1, max_size=2, unique=True)),
        }
        when: dict[str, object] = {}
        window, zones = draw(st.sampled_from(WINDOWS)), draw(st.sampled_from(ZONES))
        if window:
            when["time_utc"] = window
        if zones:
            when["context"] = {"zone": zones}
        if when:
            rule["when"] = when
        rules.append(rule)
        if draw(st.booleans()) and index:
            rules.append(dict(rules[draw(st.integers(0, len(rules) - 1))], id=f"r{index}d"))
    return rules


def _instances(pattern: str, rng: random.Random) -> list[str]:
    """Resources ``pattern`` matches, and near misses, to aim requests at its rule."""
    found = []
    for _ in range(6):
        parts = []
        for segment in pattern.split("/"):
            if segment == "**":
                parts.extend(rng.choice([[], ["a"], ["b", "ab"]]))
            else:
                parts.append(
                    "".join(
                        rng.choice(["", "a", "ba"])
                        if c == "*"
                        else rng.choice("ab")
                        if c == "?"
                        else c
                        for c in segment
                    )
                )
        found.append("/".join(parts))
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=_rules(), seed=st.integers(0, 2**32 - 1))
def test_a_rule_lint_calls_dead_never_decides(rules: list[dict[str, object]], seed: int) -> None:
    source = {
        "target": {"region": "eu-1"},
        "groups": {"g": ["svc:a", "uid:1"]},
        "workloads": {"svc:b": ["uid:1"]},
        "rules": rules,
    }
    text = json.dumps(source, indent=1)
    policy = compile_policy(load_policy_source(text, "p.yaml").policy)
    report = lint_policy(text, "p.yaml")
    never_named = {f.rule for f in report.findings if f.code in ("shadowed_rule", "duplicate_rule")}
    never_allows = {f.rule for f in report.findings if f.code == "unreachable_rule"}
    rng = random.Random(seed)
    resources = ["", "/", "/a", "/a/b", "/ab/b/a", "a", "a/b"]
    for rule in rules:
        for pattern in rule["resources"]:  # type: ignore[attr-defined]
            resources += _instances(pattern, rng)
    for resource in resources:
        for subject, selectors in (("svc:a", ()), ("svc:b", ()), ("other", ("uid:1",)), ("x", ())):
            for action in ("exec", "read", "write"):
                for context in ((), (("zone", "x"),), (("zone", "y"),)):
                    now = rng.choice([7, 10, 15, 23]) * 3600
                    got = evaluate(
                        policy, Request(subject, action, resource, context, selectors), now
                    )
                    assert got.rule_id not in never_named
                    assert not (got.allowed and got.rule_id in never_allows)

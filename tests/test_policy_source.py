"""The YAML policy source: the DESIGN.md section 8 shape, and errors that name path/line/rule."""

from __future__ import annotations

import textwrap

import pytest

from edge_agent.errors import PolicyError
from edge_agent.policy.compiler import compile_policy
from edge_agent.policy.source import (
    MAX_POLICY_SOURCE_BYTES,
    load_policy_source,
    parse_duration,
)
from edge_agent.protocol import dcbor

DESIGN_EXAMPLE = """\
target: {region: eu-1, groups: [line-a], profiles: [generic-x86_64]}
ttl: 24h
max_offline: 1h
groups:
  sensors: [svc:camera, svc:thermo]
workloads:
  svc:camera: ["exe:/opt/camera/bin/capture", "uid:1001"]
rules:
  - id: camera-exec
    effect: allow
    subjects: [svc:camera, group:sensors]
    actions: [exec]
    resources: ["/opt/camera/bin/*"]
    when:
      context: {zone: [plant-a, plant-b]}
      time_utc: "06:00-22:00"
  - id: no-shells
    effect: deny
    subjects: ["*"]
    actions: [exec]
    resources: ["/bin/sh", "/usr/bin/*sh"]
"""

MINIMAL_HEAD = "target: {region: eu-1}\nrules:\n"


def _error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        load_policy_source(textwrap.dedent(text), "fleet.yaml")
    return caught.value


def test_design_example_loads_into_target_ttl_and_payload() -> None:
    source = load_policy_source(DESIGN_EXAMPLE, "fleet.yaml")
    assert source.target == {
        "region": "eu-1",
        "groups": ["line-a"],
        "profiles": ["generic-x86_64"],
        "devices": [],
    }
    assert source.ttl_seconds == 86_400
    assert source.max_offline_seconds == 3_600
    assert source.policy["format"] == 1
    assert source.policy["groups"] == {"sensors": ["svc:camera", "svc:thermo"]}
    rules = source.policy["rules"]
    assert isinstance(rules, list)
    assert [rule["id"] for rule in rules] == ["camera-exec", "no-shells"]
    assert rules[0]["when"] == {
        "context": {"zone": ["plant-a", "plant-b"]},
        "time_utc": "06:00-22:00",
    }


def test_payload_round_trips_through_deterministic_cbor_and_compiles() -> None:
    source = load_policy_source(DESIGN_EXAMPLE)
    encoded = dcbor.encode(source.policy)
    decoded = dcbor.decode(encoded, max_bytes=len(encoded))
    assert decoded == source.policy
    assert compile_policy(decoded).rule_count == 2


def test_ttl_and_max_offline_are_optional() -> None:
    source = load_policy_source(MINIMAL_HEAD + "  []\n")
    assert (source.ttl_seconds, source.max_offline_seconds) == (None, None)
    assert source.policy["rules"] == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("24h", 86_400), ("7d", 604_800)]
)
def test_parse_duration_accepts_one_number_and_one_unit(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "10", "1.5h", "-1h", "1h30m", " 1h", "1w", "1H"])
def test_parse_duration_refuses_other_shapes(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text",
    ["3651d", "87601h", "1000000000d", "9" * 5000 + "s"],
    ids=["3651d", "87601h", "1000000000d", "5000 digits"],
)
def test_a_well_formed_duration_over_the_maximum_names_the_maximum(text: str) -> None:
    with pytest.raises(ValueError, match="longer than the maximum of 3650d"):
        parse_duration(text)


def test_leading_zeros_do_not_count_towards_the_maximum() -> None:
    assert parse_duration("0000000000007d") == 7 * 86_400


RULE_A = """\
  - id: a
    effect: allow
    subjects: ["*"]
    actions: [read]
    resources: [/x]
"""

# (name, source text, line, rule, fragment of the message)
SOURCE_ERRORS = [
    ("duplicate rule id", MINIMAL_HEAD + RULE_A + RULE_A, 8, "a", "duplicate rule id"),
    (
        "unknown top-level key",
        "target: {region: eu-1}\nrulez: []\nrules: []\n",
        2,
        None,
        "unknown key 'rulez'",
    ),
    ("unknown rule key", MINIMAL_HEAD + RULE_A + "    priority: high\n", 8, "a", "'priority'"),
    (
        "unknown when key",
        MINIMAL_HEAD + RULE_A + "    when: {weekday: [mon]}\n",
        8,
        "a",
        "unknown key 'weekday'",
    ),
    (
        "bad time window",
        MINIMAL_HEAD + RULE_A + '    when: {time_utc: "6-22"}\n',
        8,
        "a",
        "time window",
    ),
    (
        "empty time window",
        MINIMAL_HEAD + RULE_A + '    when: {time_utc: "06:00-06:00"}\n',
        8,
        "a",
        "same minute",
    ),
    (
        "hour 24",
        MINIMAL_HEAD + RULE_A + '    when: {time_utc: "22:00-24:00"}\n',
        8,
        "a",
        "time window",
    ),
    ("bad duration", "target: {region: eu-1}\nttl: 1 day\nrules: []\n", 2, None, "duration"),
    ("numeric duration", "target: {region: eu-1}\nttl: 30\nrules: []\n", 2, None, "number"),
    ("bad effect", MINIMAL_HEAD + RULE_A.replace("allow", "permit"), 4, "a", "effect 'permit'"),
    ("missing region", "target: {groups: [x]}\nrules: []\n", 1, None, "missing 'region'"),
    ("missing target", "rules: []\n", 1, None, "missing 'target'"),
    ("missing rules", "target: {region: eu-1}\n", 1, None, "missing 'rules'"),
    ("empty subjects", MINIMAL_HEAD + RULE_A.replace('["*"]', "[]"), 5, "a", "must not be empty"),
    ("missing effect", MINIMAL_HEAD + RULE_A.replace("    effect: allow\n", ""), 3, "a", "effect"),
    ("missing id", MINIMAL_HEAD + RULE_A.replace("  - id: a\n    e", "  - e"), 3, None, "'id'"),
    (
        "undefined group",
        MINIMAL_HEAD + RULE_A.replace('["*"]', "[group:nope]"),
        5,
        "a",
        "not defined",
    ),
    (
        "globstar inside a segment",
        MINIMAL_HEAD + RULE_A.replace("[/x]", '["/a/b**"]'),
        7,
        "a",
        "whole segment",
    ),
    ("glob in action", MINIMAL_HEAD + RULE_A.replace("[read]", '["re*"]'), 6, "a", "exact"),
    ("boolean action", MINIMAL_HEAD + RULE_A.replace("[read]", "[yes]"), 6, "a", "boolean"),
    (
        "duplicate key",
        "target: {region: eu-1}\ntarget: {region: eu-2}\nrules: []\n",
        2,
        None,
        "duplicate key 'target'",
    ),
    (
        "alias",
        "target: &t {region: eu-1}\nrules: []\n",
        1,
        None,
        "anchors",
    ),
    ("explicit tag", "target: {region: !!str eu-1}\nrules: []\n", 1, None, "tags"),
    ("bad region", "target: {region: eu/1}\nrules: []\n", 1, None, "region 'eu/1'"),
    (
        "bad selector",
        "target: {region: eu-1}\nworkloads:\n  svc:x: [uid:root]\nrules: []\n",
        3,
        None,
        "malformed uid",
    ),
    (
        "workload id that is a selector",
        "target: {region: eu-1}\nworkloads:\n  uid:1: [uid:2]\nrules: []\n",
        3,
        None,
        "selector",
    ),
    ("not yaml", "target: [unclosed\n", 2, None, "not valid YAML"),
    (
        "control character after non-ASCII text",
        "target: {region: eu-1}\n# r\u00e9gion\nrules: []\x07\n",
        3,
        None,
        "#x0007 is not allowed",
    ),
    (
        "lone surrogate",
        "target: {region: eu-1}\nrules: [\ud800]\n",
        2,
        None,
        "surrogate",
    ),
    (
        "error at the end of the text",
        "target: {region: eu-1}\nrules:\n- a\n- b: c\n  d",
        5,
        None,
        "':'",
    ),
    ("empty source", "", 1, None, "empty"),
    ("rules not a list", "target: {region: eu-1}\nrules: {}\n", 2, None, "must be a list"),
    (
        "empty when",
        MINIMAL_HEAD + RULE_A + "    when: {}\n",
        8,
        "a",
        "'when' is empty",
    ),
    (
        "missing context value list",
        MINIMAL_HEAD + RULE_A + "    when: {context: {zone: plant-a}}\n",
        8,
        "a",
        "must be a list",
    ),
    (
        "duplicate resource",
        MINIMAL_HEAD + RULE_A.replace("[/x]", "[/x, /x]"),
        7,
        "a",
        "twice",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "rule", "fragment"),
    [case[1:] for case in SOURCE_ERRORS],
    ids=[case[0] for case in SOURCE_ERRORS],
)
def test_source_errors_name_path_line_and_rule(
    text: str, line: int, rule: str | None, fragment: str
) -> None:
    error = _error(text)
    assert error.path == "fleet.yaml"
    assert error.line == line
    assert error.rule == rule
    assert fragment in str(error)
    assert str(error).startswith(f"fleet.yaml:{line}: ")


def test_alias_bomb_is_refused_before_expansion() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    error = _error(bomb)
    assert error.line == 1


def test_deep_nesting_is_refused() -> None:
    error = _error("target: " + "[" * 100 + "]" * 100 + "\nrules: []\n")
    assert "nests deeper" in str(error)


def test_oversize_source_is_refused_before_parsing() -> None:
    error = _error("#" * (MAX_POLICY_SOURCE_BYTES + 1))
    assert "byte limit" in str(error)
    assert error.line is None


def test_the_size_bound_counts_utf8_bytes_not_characters() -> None:
    characters = MAX_POLICY_SOURCE_BYTES // 2 + 1
    error = _error("#" + "é" * (characters - 1))
    assert f"is {2 * characters - 1} bytes, over the" in str(error)
    assert _error("#" * MAX_POLICY_SOURCE_BYTES).line == 1


def test_unquoted_sexagesimal_context_value_is_refused_not_read_as_a_number() -> None:
    error = _error(MINIMAL_HEAD + RULE_A + "    when: {context: {shift: [6:00]}}\n")
    assert "quote it" in str(error)


VOCABULARY_HEAD = "target: {region: eu-1}\nactions: [exec, read]\nrules:\n"


@pytest.mark.parametrize(
    ("rule", "line", "fragment"),
    [
        (RULE_A.replace("[read]", "[raed]"), 7, "did you mean 'read'"),
        (RULE_A + "    when: {parent: {action: [exce]}}\n", 9, "did you mean 'exec'"),
    ],
    ids=["a rule's action", "a parent condition's action"],
)
def test_a_declared_action_vocabulary_refuses_any_other_action_with_the_nearest_one(
    rule: str, line: int, fragment: str
) -> None:
    error = _error(VOCABULARY_HEAD + rule)
    assert error.line == line
    assert error.rule == "a"
    assert "not in the policy's 'actions' vocabulary" in str(error)
    assert fragment in str(error)


def test_a_declared_action_vocabulary_keeps_star_as_any_action_and_stays_out_of_the_bundle() -> (
    None
):
    source = load_policy_source(VOCABULARY_HEAD + RULE_A.replace("[read]", '["*"]'))
    assert source.actions == ("exec", "read")
    assert "actions" not in source.policy


def test_without_enforcement_a_vocabulary_is_left_to_the_lint() -> None:
    text = VOCABULARY_HEAD + RULE_A.replace("[read]", "[raed]")
    assert load_policy_source(text, enforce_vocabulary=False).actions == ("exec", "read")


def _with_max_depth(written: str) -> str:
    return (
        MINIMAL_HEAD + "  - {id: r, effect: allow, subjects: ['*'], actions: [read], "
        f"resources: [/a], when: {{parent: {{max_depth: {written}}}}}}}\n"
    )


@pytest.mark.parametrize("written", ["010", "007", "00"])
def test_a_max_depth_with_a_leading_zero_is_refused_as_yaml_tools_read_it_as_octal(
    written: str,
) -> None:
    """YAML 1.1 tools (PyYAML's safe_load among them) read ``010`` as 8: the policy signed
    must never mean another number than the operator's tools show."""
    error = str(_error(_with_max_depth(written)))
    assert error.startswith("fleet.yaml:3: rule 'r': when.parent.max_depth must be a whole")
    assert "without a leading zero" in error


def test_a_max_depth_written_without_a_leading_zero_is_read_as_written() -> None:
    source = load_policy_source(_with_max_depth("10"), "fleet.yaml")
    assert source.policy["rules"][0]["when"]["parent"]["max_depth"] == 10

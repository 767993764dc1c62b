"""``edge-hub policy test``: a YAML table of requests decided by the engine, one PASS/FAIL
line a case and an ``opa test``-style summary; exit 1 on a mismatch, 2 on a bad file with
its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.errors import PolicyError
from hub.cli.main import main
from hub.core.policy_tests import parse_utc_time, read_cases

POLICY = """\
target: {region: eu-1}
groups:
  sensors: [svc:camera, svc:thermo]
workloads:
  svc:camera: ["uid:1001"]
rules:
  - id: camera-exec
    effect: allow
    subjects: [group:sensors]
    actions: [exec]
    resources: ["/opt/camera/bin/*"]
  - id: day-read
    effect: allow
    subjects: ["*"]
    actions: [read]
    resources: ["/data/**"]
    when: {time_utc: "06:00-22:00", context: {zone: [a]}}
  - id: no-shells
    effect: deny
    subjects: ["*"]
    actions: [exec]
    resources: ["/bin/sh", "/usr/bin/*sh"]
"""

PASSING = """\
- name: the camera runs its capture binary
  request: {subject: svc:camera, action: exec, resource: /opt/camera/bin/capture}
  expect: allow
  rule: camera-exec
  reason: allowed
- name: uid 1001 acts as the camera
  request:
    subject: unknown
    action: exec
    resource: /opt/camera/bin/x
    selectors: ["uid:1001"]
  expect: allow
- name: reads by day in zone a
  request: {subject: x, action: read, resource: /data/a, context: {zone: a},
            time: "2026-01-07T12:00:00Z"}
  expect: allow
- name: no reads at night
  request: {subject: x, action: read, resource: /data/a, context: {zone: a}, time: 1767826800}
  expect: deny
  reason: no_matching_rule
- name: shells are denied
  request: {subject: svc:camera, action: exec, resource: /bin/sh}
  expect: deny
  rule: no-shells
"""

FAILING = """\
- name: shells are denied
  request: {subject: svc:camera, action: exec, resource: /bin/sh}
  expect: deny
- name: the thermometer may run bash
  request: {subject: svc:thermo, action: exec, resource: /usr/bin/bash}
  expect: allow
  rule: camera-exec
"""


def _files(tmp_path: Path, tests: str) -> tuple[str, str]:
    policy, table = tmp_path / "fleet.yaml", tmp_path / "fleet.tests.yaml"
    policy.write_text(POLICY)
    table.write_text(tests)
    return str(policy), str(table)


def test_every_case_passes_and_the_summary_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy, table = _files(tmp_path, PASSING)
    assert main(["policy", "test", policy, table]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [
        "PASS the camera runs its capture binary",
        "PASS uid 1001 acts as the camera",
        "PASS reads by day in zone a",
        "PASS no reads at night",
        "PASS shells are denied",
    ]
    assert lines[-1] == "PASS: 5/5"


def test_a_mismatch_says_what_it_got_and_expected_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy, table = _files(tmp_path, FAILING)
    assert main(["policy", "test", policy, table]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "PASS shells are denied"
    assert lines[1] == (
        f"FAIL the thermometer may run bash ({table}:4): got deny (policy_denied, rule "
        "no-shells); expected allow (rule camera-exec)"
    )
    assert lines[-2:] == ["PASS: 1/2", "FAIL: 1/2"]


def test_json_lists_each_case_with_expected_and_got(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy, table = _files(tmp_path, FAILING)
    assert main(["policy", "test", policy, table, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert (document["passed"], document["failed"]) == (1, 1)
    failed = document["cases"][1]
    assert failed["line"] == 4 and failed["passed"] is False
    assert failed["got"] == {"decision": "deny", "reason": "policy_denied", "rule": "no-shells"}
    assert failed["expected"] == {"decision": "allow", "reason": None, "rule": "camera-exec"}


def test_at_decides_cases_without_their_own_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = """\
- name: reads in zone a
  request: {subject: x, action: read, resource: /data/a, context: {zone: a}}
  expect: allow
"""
    policy, path = _files(tmp_path, table)
    assert main(["policy", "test", policy, path, "--at", "2026-01-07T12:00:00Z"]) == 0
    assert main(["policy", "test", policy, path, "--at", "2026-01-07T23:00:00Z"]) == 1


# Each row: a tests table and the line its error must name.
BAD_TABLES = [
    pytest.param("name: x\n", 1, "is a list of cases", id="not-a-list"),
    pytest.param(
        "- name: a\n  request: {subject: s, action: a}\n  expect: allow\n",
        2,
        "missing 'resource'",
        id="missing-field",
    ),
    pytest.param(
        "- name: a\n  request: {subject: s, action: a, resource: r}\n  expect: permit\n",
        3,
        "allow or deny",
        id="bad-expect",
    ),
    pytest.param(
        "- name: a\n  request: {subject: s, action: a, resource: r}\n  expect: allow\n"
        "  rule: nope\n",
        4,
        "no rule 'nope'",
        id="unknown-rule",
    ),
    pytest.param(
        "- name: a\n  request: {subject: s, action: a, resource: r}\n  expect: allow\n"
        "  reason: policy_denied\n",
        4,
        "contradicts",
        id="reason-contradicts-expect",
    ),
    pytest.param(
        "- name: a\n  request: {subject: s, action: a, resource: r}\n  expect: allow\n"
        "  priority: 1\n",
        4,
        "unknown key 'priority'",
        id="unknown-key",
    ),
    pytest.param(
        "- name: a\n  request: {subject: s, action: a, resource: r, time: yesterday}\n"
        "  expect: allow\n",
        2,
        "must be UTC",
        id="bad-time",
    ),
    pytest.param(
        "- name: a\n  request: {subject: s, action: a, resource: r}\n  expect: allow\n"
        "- name: a\n  request: {subject: s, action: a, resource: r}\n  expect: deny\n",
        4,
        "named twice",
        id="duplicate-name",
    ),
    pytest.param(
        "- name: a\n  request: {subject: yes, action: a, resource: r}\n  expect: allow\n",
        2,
        "must be text",
        id="yaml-boolean",
    ),
    pytest.param(
        "- name: a\n  request: &r {subject: s, action: a, resource: r}\n  expect: allow\n",
        2,
        "anchors",
        id="yaml-anchor",
    ),
]


@pytest.mark.parametrize(("table", "line", "words"), BAD_TABLES)
def test_a_bad_tests_file_names_its_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, line: int, words: str
) -> None:
    policy, path = _files(tmp_path, table)
    assert main(["policy", "test", policy, path, "--json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["code"] == "policy_tests_invalid"
    assert document["path"] == path
    assert document["message"].startswith(f"{path}:{line}: ")
    assert words in document["message"]
    with pytest.raises(PolicyError) as caught:
        read_cases(table, path, ["camera-exec", "day-read", "no-shells"])
    assert caught.value.line == line


def test_an_invalid_policy_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy, path = _files(tmp_path, PASSING)
    Path(policy).write_text("target: {region: eu-1}\nrules: [1]\n")
    assert main(["policy", "test", policy, path, "--json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert (document["code"], document["path"]) == ("policy_invalid", policy)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2026-01-07T12:00:00Z", 1_767_787_200),
        ("2026-01-07T12:00Z", 1_767_787_200),
        ("2026-01-07 12:00:00+00:00", 1_767_787_200),
        ("2024-02-29T00:00:00Z", 1_709_164_800),
        ("2000-03-01T00:00:00Z", 951_868_800),
        ("1767787200", 1_767_787_200),
    ],
)
def test_utc_times_parse_to_unix_seconds(text: str, seconds: int) -> None:
    assert parse_utc_time(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-01-07T24:00:00Z",
        "2026-01-07T12:00:00+01:00",
        "-5",
        "",
    ],
)
def test_impossible_or_zoned_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_utc_time(text)

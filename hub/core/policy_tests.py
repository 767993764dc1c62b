"""Policy unit tests: a YAML table of requests and the decision each must get.

The table (docs/policy-tools.md) is a list of cases::

    - name: the camera runs its capture binary
      request: {subject: svc:camera, action: exec, resource: /opt/camera/bin/capture,
                selectors: ["uid:1001"], context: {zone: plant-a},
                time: "2026-01-07T12:00:00Z"}
      expect: allow            # allow | deny
      rule: camera-exec        # optional: the rule the decision must name
      reason: allowed          # optional: the engine's reason code

:func:`read_cases` checks the table as strictly as the policy source is checked (the same
safe YAML reader, unknown keys refused, text where text is expected) and raises
:class:`~edge_agent.errors.PolicyError` with the file and line of the fault; a case naming
a rule the policy does not have is such a fault too. :func:`run_cases` decides every case with the
device's own engine (:func:`edge_agent.policy.engine.evaluate`) over the compiled policy.
The gate's other checks (bundle expiry, attestation, revocation) are not part of a policy
test: ``edge-hub bundle eval`` decides against a signed bundle with them.

Pure: no file, no clock (a case without ``time`` is decided at the ``now`` passed in).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from edge_agent.errors import PolicyError
from edge_agent.policy.compiler import CompiledPolicy
from edge_agent.policy.engine import Match, evaluate
from edge_agent.policy.source import compose_yaml
from edge_agent.protocol.request import Request

__all__ = [
    "MAX_CASES",
    "REASONS",
    "CaseResult",
    "PolicyCase",
    "parse_utc_time",
    "read_cases",
    "run_cases",
]

MAX_CASES = 10_000
"""Most cases one table may hold."""
REASONS = ("allowed", "policy_denied", "no_matching_rule", "parent_missing", "parent_invalid")
"""The reason codes the engine decides with (docs/policy.md section 6)."""

_CASE_KEYS = ("name", "request", "expect", "rule", "reason")
_REQUEST_KEYS = ("subject", "action", "resource", "selectors", "context", "time")
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_UTC = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?(?:Z|\+00:00)"
)
_MAX_UNIX = 253_402_300_799
"""9999-12-31T23:59:59Z: the last instant written as a four-digit year."""


@dataclass(frozen=True, slots=True)
class PolicyCase:
    """One row of the table: a request and what its decision must be. ``now`` is the
    case's own time (``None``: the run's)."""

    name: str
    line: int
    request: Request
    now: int | None
    expect_allow: bool
    rule: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class CaseResult:
    """A case decided: ``got`` is the engine's answer at ``now``."""

    case: PolicyCase
    got: Match
    now: int

    @property
    def passed(self) -> bool:
        case, got = self.case, self.got
        return (
            got.allowed == case.expect_allow
            and (case.rule is None or got.rule_id == case.rule)
            and (case.reason is None or got.reason == case.reason)
        )


def parse_utc_time(text: str) -> int:
    """``2026-01-07T12:00:00Z`` (seconds optional; ``+00:00`` for ``Z``; a space for ``T``)
    or a whole number of Unix seconds, as Unix seconds. UTC only: a decision's time of day
    is UTC (docs/policy.md section 5).

    Raises:
        ValueError: any other text, an impossible date, or a time past year 9999.
    """
    if text.isascii() and text.isdigit():
        seconds = int(text)
    else:
        match = _UTC.fullmatch(text)
        if match is None:
            raise ValueError(
                f"time {text!r} must be UTC like '2026-01-07T12:00:00Z' or Unix seconds"
            )
        year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
        second = int(match.group(6) or 0)
        if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
            raise ValueError(f"time {text!r} names no such date")
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"time {text!r} names no such time of day")
        seconds = _days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
    if not 0 <= seconds <= _MAX_UNIX:
        raise ValueError(f"time {text!r} is before 1970 or past year 9999")
    return seconds


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def read_cases(text: str, path: str, rule_ids: Sequence[str]) -> list[PolicyCase]:
    """Read and check a tests table; every ``rule`` must name one of ``rule_ids``.

    Raises:
        PolicyError: with ``path`` and the 1-based line of the fault.
    """
    root = compose_yaml(text, path, what="policy tests file")
    return _Reader(path, frozenset(rule_ids)).cases(root)


def run_cases(policy: CompiledPolicy, cases: Sequence[PolicyCase], now: int) -> list[CaseResult]:
    """Decide every case with the engine, at its own time or else ``now``."""
    results = []
    for case in cases:
        at = now if case.now is None else case.now
        results.append(CaseResult(case, evaluate(policy, case.request, at), at))
    return results


class _Reader:
    def __init__(self, path: str, rule_ids: frozenset[str]) -> None:
        self._path = path
        self._rule_ids = rule_ids

    def fail(self, node: yaml.Node, message: str) -> PolicyError:
        return PolicyError(message, path=self._path, line=int(node.start_mark.line) + 1)

    def cases(self, root: yaml.Node) -> list[PolicyCase]:
        if not isinstance(root, yaml.SequenceNode):
            raise self.fail(root, "a policy tests file is a list of cases (- name: ...)")
        if len(root.value) > MAX_CASES:
            raise self.fail(root, f"{len(root.value)} cases, over the limit of {MAX_CASES}")
        cases: list[PolicyCase] = []
        seen: dict[str, int] = {}
        for number, node in enumerate(root.value, start=1):
            case = self.case(node, number)
            if case.name in seen:
                raise self.fail(
                    node, f"case {case.name!r} is named twice (first on line {seen[case.name]})"
                )
            seen[case.name] = case.line
            cases.append(case)
        return cases

    def case(self, node: yaml.Node, number: int) -> PolicyCase:
        what = f"case #{number}"
        fields = self.mapping(node, what, _CASE_KEYS, ("name", "request", "expect"))
        name = self.text(fields["name"], f"{what} name")
        expect = self.text(fields["expect"], f"case {name!r} expect")
        if expect not in ("allow", "deny"):
            raise self.fail(fields["expect"], f"case {name!r}: expect must be allow or deny")
        rule = None
        if "rule" in fields:
            rule = self.text(fields["rule"], f"case {name!r} rule")
            if rule not in self._rule_ids:
                raise self.fail(fields["rule"], f"case {name!r}: the policy has no rule {rule!r}")
        reason = None
        if "reason" in fields:
            reason = self.text(fields["reason"], f"case {name!r} reason")
            if reason not in REASONS:
                raise self.fail(
                    fields["reason"],
                    f"case {name!r}: reason {reason!r} must be one of {', '.join(REASONS)}",
                )
            if (reason == "allowed") != (expect == "allow"):
                raise self.fail(
                    fields["reason"], f"case {name!r}: reason {reason!r} contradicts {expect}"
                )
        request, now = self.request(fields["request"], name)
        line = int(node.start_mark.line) + 1
        return PolicyCase(name, line, request, now, expect == "allow", rule, reason)

    def request(self, node: yaml.Node, name: str) -> tuple[Request, int | None]:
        what = f"case {name!r} request"
        fields = self.mapping(node, what, _REQUEST_KEYS, ("subject", "action", "resource"))
        selectors: tuple[str, ...] = ()
        if "selectors" in fields:
            items = fields["selectors"]
            if not isinstance(items, yaml.SequenceNode):
                raise self.fail(items, f"{what}: selectors must be a list")
            selectors = tuple(self.text(item, f"{what} selector") for item in items.value)
        context: list[tuple[str, str]] = []
        if "context" in fields:
            pairs = self.mapping(fields["context"], f"{what} context", None, ())
            context = [
                (key, self.text(value, f"{what} context.{key}")) for key, value in pairs.items()
            ]
        now = self.time(fields["time"], what) if "time" in fields else None
        request = Request(
            subject=self.text(fields["subject"], f"{what} subject"),
            action=self.text(fields["action"], f"{what} action"),
            resource=self.text(fields["resource"], f"{what} resource", empty=True),
            context=tuple(sorted(context)),
            selectors=selectors,
        )
        return request, now

    def time(self, node: yaml.Node, what: str) -> int:
        if isinstance(node, yaml.ScalarNode) and node.tag == _INT and node.value.isdigit():
            text = node.value
        else:
            text = self.text(node, f"{what} time")
        try:
            return parse_utc_time(text)
        except ValueError as exc:
            raise self.fail(node, f"{what}: {exc}") from exc

    def mapping(
        self,
        node: yaml.Node,
        what: str,
        allowed: tuple[str, ...] | None,
        required: tuple[str, ...],
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        fields: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.text(key_node, f"a key of {what}")
            if key in fields:
                raise self.fail(key_node, f"duplicate key {key!r} in {what}")
            if allowed is not None and key not in allowed:
                raise self.fail(
                    key_node,
                    f"unknown key {key!r} in {what} (expected one of {', '.join(allowed)})",
                )
            fields[key] = value_node
        for key in required:
            if key not in fields:
                raise self.fail(node, f"{what} is missing {key!r}")
        return fields

    def text(self, node: yaml.Node, what: str, *, empty: bool = False) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
            raise self.fail(node, f"{what} must be text (quote it)")
        value: str = node.value
        if not value and not empty:
            raise self.fail(node, f"{what} must not be empty")
        return value

"""The halt-condition language (:mod:`hub.core.halt`): what parses, what it means over a
stage's counters, and where the error points when it does not parse."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import pytest

from hub.core.halt import (
    HaltCondition,
    HaltSyntaxError,
    StageCounters,
    evaluate_halt,
    parse_halt,
)


@dataclass(frozen=True)
class Parsed:
    text: str
    metric: str
    name: str
    comparison: str
    value: Fraction
    relative: bool


PARSES = [
    Parsed("deny_rate>+2%", "deny_rate", "", ">", Fraction(2), True),
    Parsed("deny_rate>-0.5%", "deny_rate", "", ">", Fraction(-1, 2), True),
    Parsed("deny_rate >= 12.25%", "deny_rate", "", ">=", Fraction(49, 4), False),
    Parsed("reason:attestation_failed>0", "reason", "attestation_failed", ">", Fraction(0), False),
    Parsed("rule:no-shells>0", "rule", "no-shells", ">", Fraction(0), False),
    Parsed("rule:team.a:r_1<=3", "rule", "team.a:r_1", "<=", Fraction(3), False),
    Parsed("install_failures>10", "install_failures", "", ">", Fraction(10), False),
    Parsed("  install_failures == 0  ", "install_failures", "", "==", Fraction(0), False),
    Parsed("deny_rate<1%", "deny_rate", "", "<", Fraction(1), False),
]


@pytest.mark.parametrize("case", PARSES, ids=lambda c: c.text)
def test_a_condition_parses_to_its_parts(case: Parsed) -> None:
    assert parse_halt(case.text) == HaltCondition(
        case.text, case.metric, case.name, case.comparison, case.value, case.relative
    )


@dataclass(frozen=True)
class Bad:
    text: str
    column: int
    says: str


ERRORS = [
    Bad("", 1, "empty condition"),
    Bad("   ", 4, "empty condition"),
    Bad("deny_rat>2%", 1, "did you mean 'deny_rate'"),
    Bad("Deny_rate>2%", 1, "unknown metric 'Deny_rate'"),
    Bad("deny_rate>2", 12, "deny_rate is a percentage"),
    Bad("deny_rate>>2%", 11, "expected a number after '>'"),
    Bad("deny_rate=2%", 10, "'==' for equality"),
    Bad("deny_rate!=2%", 10, "'==' for equality"),
    Bad("deny_rate 2%", 11, "expected a comparison"),
    Bad("deny_rate>2.%", 12, "expected digits after '.'"),
    Bad("deny_rate>2% now", 14, "unexpected 'now'"),
    Bad("deny_rate>1e3%", 12, "deny_rate is a percentage"),
    Bad("install_failures>+1", 18, "applies only to deny_rate"),
    Bad("install_failures>1%", 19, "is a count"),
    Bad("install_failures>1.5", 18, "is a count"),
    Bad("reason:>0", 8, "expected a reason code"),
    Bad("reason:attestation_fail>0", 8, "did you mean 'attestation_failed'"),
    Bad("rule:>0", 6, "expected a rule id"),
    Bad("rule:-x>0", 6, "rule id '-x'"),
    Bad("rule:a b>0", 8, "expected a comparison"),
    Bad("reason>0", 1, "unknown metric 'reason'"),
    Bad("x" * 600, 1, "at most 512 characters"),
]


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: c.text[:30] or "empty")
def test_an_error_points_at_the_bad_token(case: Bad) -> None:
    with pytest.raises(HaltSyntaxError) as caught:
        parse_halt(case.text)
    error = caught.value
    assert (error.column, error.code) == (case.column, "halt_syntax")
    assert case.says in error.reason
    assert f"column {case.column}: " in str(error)


def test_the_pointer_puts_a_caret_under_the_bad_token() -> None:
    with pytest.raises(HaltSyntaxError) as caught:
        parse_halt("deny_rate>>2%")
    assert caught.value.pointer() == "deny_rate>>2%\n          ^ expected a number after '>'"


COUNTERS = StageCounters(
    decisions=200,
    denied=15,
    by_reason={"attestation_failed": 2, "policy_denied": 13},
    by_rule={"no-shells": 13},
    install_failures=1,
    baseline_decisions=1000,
    baseline_denied=50,
)
"""A stage denying 7.5 % of its decisions against 5 % before."""


@dataclass(frozen=True)
class Judged:
    text: str
    holds: bool
    observed: str


EVALUATIONS = [
    Judged("deny_rate>+2%", True, "deny_rate = 7.50%, baseline 5.00%: +2.50 points"),
    Judged("deny_rate>+2.5%", False, "deny_rate = 7.50%, baseline 5.00%: +2.50 points"),
    Judged("deny_rate>=+2.5%", True, "deny_rate = 7.50%, baseline 5.00%: +2.50 points"),
    Judged("deny_rate<-1%", False, "deny_rate = 7.50%, baseline 5.00%: +2.50 points"),
    Judged("deny_rate>7%", True, "deny_rate = 7.50%"),
    Judged("deny_rate>7.5%", False, "deny_rate = 7.50%"),
    Judged("reason:attestation_failed>0", True, "reason:attestation_failed = 2"),
    Judged("reason:revoked>0", False, "reason:revoked = 0"),
    Judged("rule:no-shells>12", True, "rule:no-shells = 13"),
    Judged("rule:camera-exec>0", False, "rule:camera-exec = 0"),
    Judged("install_failures>0", True, "install_failures = 1"),
    Judged("install_failures==0", False, "install_failures = 1"),
]


@pytest.mark.parametrize("case", EVALUATIONS, ids=lambda c: c.text)
def test_a_condition_is_judged_exactly_over_the_counters(case: Judged) -> None:
    judged = evaluate_halt(parse_halt(case.text), COUNTERS)
    assert (judged.holds, judged.observed) == (case.holds, case.observed)


def test_a_rate_over_no_decisions_does_not_hold() -> None:
    empty = evaluate_halt(parse_halt("deny_rate>=0%"), StageCounters())
    assert (empty.holds, empty.observed) == (False, "deny_rate: no decisions in the stage yet")
    no_baseline = evaluate_halt(parse_halt("deny_rate>+0%"), StageCounters(decisions=10, denied=10))
    assert not no_baseline.holds
    assert no_baseline.observed == "deny_rate = 100.00%; no baseline decisions"


def test_a_fall_in_the_deny_rate_shows_as_negative_points() -> None:
    fall = StageCounters(decisions=100, denied=1, baseline_decisions=100, baseline_denied=4)
    judged = evaluate_halt(parse_halt("deny_rate<-2%"), fall)
    assert (judged.holds, judged.observed) == (
        True,
        "deny_rate = 1.00%, baseline 4.00%: -3.00 points",
    )

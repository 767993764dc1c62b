"""Halt conditions: the small language a rollout stops itself with (docs/rollout.md).

A condition compares one metric of a rollout stage with a number::

    condition  = metric comparison value
    metric     = "deny_rate" | "install_failures" | "reason:" CODE | "rule:" RULE-ID
    comparison = ">" | ">=" | "<" | "<=" | "=="
    value      = [ "+" | "-" ] DIGITS [ "." DIGITS ] [ "%" ]

Spaces may separate the three parts. ``deny_rate`` is the share of the stage's decisions
that were denied, in per cent, so its value ends with ``%``; written with a sign it is the
change from the baseline's deny rate in percentage points (``deny_rate>+2%``: the stage
denies more than 2 points more often than before). The others are counts, whole numbers
without sign or ``%``: ``reason:CODE`` decisions denied (or allowed) with that gate reason,
``rule:ID`` decisions that rule decided, ``install_failures`` devices that refused or failed
to install the stage's bundle.

:func:`parse_halt` reads one condition, refusing anything else with a
:class:`HaltSyntaxError` that names the column of the bad token; :func:`evaluate_halt`
judges a parsed condition against the counters a caller gathered. Numbers are exact
fractions, never floats, so a judgement is the same on every machine. A rate over no
decisions (no data yet, or no baseline for a change) does not hold.

This module parses and evaluates only: it runs no rollout and reads nothing itself.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from edge_agent.errors import ConfigError
from edge_agent.policy import _checks as checks
from edge_agent.trust.gate import Reason

__all__ = [
    "COMPARISONS",
    "MAX_CONDITION_CHARS",
    "METRICS",
    "Evaluation",
    "HaltCondition",
    "HaltSyntaxError",
    "StageCounters",
    "evaluate_halt",
    "parse_halt",
]

MAX_CONDITION_CHARS = 512
DENY_RATE = "deny_rate"
INSTALL_FAILURES = "install_failures"
REASON = "reason"
RULE = "rule"
METRICS = (DENY_RATE, INSTALL_FAILURES, f"{REASON}:CODE", f"{RULE}:ID")
"""The metrics, as the grammar writes them."""

_COMPARE: dict[str, Callable[[Fraction, Fraction], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
}
COMPARISONS = tuple(_COMPARE)
"""The comparisons, two-character ones first (how they are read)."""
_REASONS = tuple(sorted(str(r) for r in Reason))
_WORD = re.compile(r"[a-z_]+")
_NAME_END = re.compile(r"[\s<>=!]")
_NUMBER = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


class HaltSyntaxError(ConfigError):
    """A halt condition that does not parse: ``column`` (1-based) points at the bad token."""

    code = "halt_syntax"

    def __init__(self, text: str, column: int, reason: str) -> None:
        self.text = text
        self.column = column
        self.reason = reason
        super().__init__(f"halt condition {text!r}, column {column}: {reason}")

    def pointer(self) -> str:
        """The condition with a caret under the bad token, for a terminal."""
        return f"{self.text}\n{' ' * (self.column - 1)}^ {self.reason}"


@dataclass(frozen=True, slots=True)
class HaltCondition:
    """One parsed condition: ``metric`` (``deny_rate``, ``install_failures``, ``reason``,
    ``rule``), the reason code or rule id it names (``""`` for the others), the comparison,
    the value and whether it is a change from the baseline (a signed ``deny_rate``)."""

    text: str
    metric: str
    name: str
    comparison: str
    value: Fraction
    relative: bool


@dataclass(frozen=True, slots=True)
class StageCounters:
    """What a stage's shipped data says, gathered by the caller: its decisions, how many
    were denied, counts by reason and by deciding rule, devices that failed to install,
    and the baseline's decisions and denials (for a change of ``deny_rate``)."""

    decisions: int = 0
    denied: int = 0
    by_reason: Mapping[str, int] = field(default_factory=dict)
    by_rule: Mapping[str, int] = field(default_factory=dict)
    install_failures: int = 0
    baseline_decisions: int = 0
    baseline_denied: int = 0


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Whether a condition holds, and what was observed, as a sentence for status."""

    holds: bool
    observed: str


def parse_halt(text: str) -> HaltCondition:
    """Parse one halt condition (module docstring for the grammar).

    Raises:
        HaltSyntaxError: the condition does not parse; its column points at the fault.
    """
    if len(text) > MAX_CONDITION_CHARS:
        raise HaltSyntaxError(
            text[:40] + "...", 1, f"a condition is at most {MAX_CONDITION_CHARS} characters"
        )
    scan = _Scanner(text)
    metric, name, metric_text = scan.metric()
    comparison = scan.comparison(metric_text)
    value, relative = scan.value(metric, comparison)
    scan.end()
    return HaltCondition(text, metric, name, comparison, value, relative)


class _Scanner:
    """Reads a condition left to right; every error names the column it stopped at."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def fail(self, position: int, reason: str) -> HaltSyntaxError:
        return HaltSyntaxError(self.text, position + 1, reason)

    def skip_spaces(self) -> None:
        while self.position < len(self.text) and self.text[self.position].isspace():
            self.position += 1

    def metric(self) -> tuple[str, str, str]:
        """``(metric, name, as written)``."""
        self.skip_spaces()
        start = self.position
        if start == len(self.text):
            raise self.fail(start, f"empty condition; expected a metric: {', '.join(METRICS)}")
        found = _WORD.match(self.text, start)
        word = found.group() if found else ""
        self.position = start + len(word)
        if word in (DENY_RATE, INSTALL_FAILURES):
            return word, "", word
        if word in (REASON, RULE) and self.text.startswith(":", self.position):
            self.position += 1
            return word, self._name(word), self.text[start : self.position]
        end = _NAME_END.search(self.text, start)
        shown = self.text[start : len(self.text) if end is None else end.start()][:40]
        raise self.fail(
            start,
            f"unknown metric {shown!r}{_suggest(word, (DENY_RATE, INSTALL_FAILURES))}; "
            f"expected {', '.join(METRICS)}",
        )

    def _name(self, metric: str) -> str:
        start = self.position
        end = _NAME_END.search(self.text, start)
        self.position = len(self.text) if end is None else end.start()
        name = self.text[start : self.position]
        if not name:
            what = "a reason code" if metric == REASON else "a rule id"
            raise self.fail(start, f"expected {what} after '{metric}:'")
        if metric == REASON and name not in _REASONS:
            raise self.fail(
                start,
                f"unknown reason {name!r}{_suggest(name, _REASONS)}; reasons are "
                f"{', '.join(_REASONS)}",
            )
        if metric == RULE:
            try:
                checks.check_rule_id(name)
            except ValueError as exc:
                raise self.fail(start, str(exc)) from exc
        return name

    def comparison(self, after: str) -> str:
        self.skip_spaces()
        start = self.position
        for comparison in COMPARISONS:
            if self.text.startswith(comparison, start):
                self.position = start + len(comparison)
                return comparison
        if self.text.startswith(("=", "!="), start):
            raise self.fail(start, f"use one of {' '.join(COMPARISONS)} ('==' for equality)")
        raise self.fail(start, f"expected a comparison ({' '.join(COMPARISONS)}) after {after!r}")

    def value(self, metric: str, comparison: str) -> tuple[Fraction, bool]:
        """The value and whether it is signed, checked against what ``metric`` takes."""
        self.skip_spaces()
        sign_at = self.position
        sign = self.text[sign_at : sign_at + 1]
        if sign in ("+", "-"):
            if metric != DENY_RATE:
                raise self.fail(
                    sign_at,
                    "a sign compares with the baseline and applies only to deny_rate "
                    f"(deny_rate>+2%); {metric} is a count",
                )
            self.position += 1
        number_at = self.position
        found = _NUMBER.match(self.text, number_at)
        if found is None:
            raise self.fail(number_at, f"expected a number after {comparison!r}")
        self.position = found.end()
        whole, fraction = found.group(1), found.group(2)
        if self.text.startswith(".", self.position):
            raise self.fail(self.position, "expected digits after '.'")
        value = Fraction(int(whole + (fraction or "")), 10 ** len(fraction or ""))
        percent = self.text.startswith("%", self.position)
        if metric == DENY_RATE:
            if not percent:
                raise self.fail(
                    self.position,
                    "deny_rate is a percentage: write it with '%' (2%, or +2% for a change "
                    "from the baseline)",
                )
            self.position += 1
        elif percent:
            raise self.fail(self.position, f"{metric} is a count: write a whole number, no '%'")
        elif fraction is not None:
            raise self.fail(number_at, f"{metric} is a count: write a whole number")
        return (-value if sign == "-" else value), sign in ("+", "-")

    def end(self) -> None:
        self.skip_spaces()
        if self.position < len(self.text):
            rest = self.text[self.position :][:20]
            raise self.fail(self.position, f"unexpected {rest!r} after the condition")


def _suggest(word: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def evaluate_halt(condition: HaltCondition, counters: StageCounters) -> Evaluation:
    """Whether ``condition`` holds over ``counters``, with what was observed."""
    compare = _COMPARE[condition.comparison]
    if condition.metric != DENY_RATE:
        count = _count(condition, counters)
        label = f"{condition.metric}:{condition.name}" if condition.name else condition.metric
        return Evaluation(compare(Fraction(count), condition.value), f"{label} = {count}")
    if counters.decisions == 0:
        return Evaluation(False, "deny_rate: no decisions in the stage yet")
    rate = Fraction(100 * counters.denied, counters.decisions)
    if not condition.relative:
        return Evaluation(compare(rate, condition.value), f"deny_rate = {_percent(rate)}")
    if counters.baseline_decisions == 0:
        return Evaluation(False, f"deny_rate = {_percent(rate)}; no baseline decisions")
    before = Fraction(100 * counters.baseline_denied, counters.baseline_decisions)
    change = rate - before
    sign = "+" if change >= 0 else "-"
    return Evaluation(
        compare(change, condition.value),
        f"deny_rate = {_percent(rate)}, baseline {_percent(before)}: "
        f"{sign}{_percent(abs(change))[:-1]} points",
    )


def _count(condition: HaltCondition, counters: StageCounters) -> int:
    if condition.metric == INSTALL_FAILURES:
        return counters.install_failures
    table = counters.by_reason if condition.metric == REASON else counters.by_rule
    return table.get(condition.name, 0)


def _percent(value: Fraction) -> str:
    """``value`` per cent to two decimals (rounded half to even), e.g. ``7.25%``."""
    hundredths = round(value * 100)
    return f"{hundredths // 100}.{hundredths % 100:02d}%"

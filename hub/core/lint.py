"""Policy lint: what in a valid policy source is probably a mistake, with file:line.

:func:`lint_policy` reads the source as ``edge-hub bundle build`` does
(:func:`~edge_agent.policy.source.load_policy_source`: an invalid source raises, it is never
linted) and reports :class:`Finding` values, each with a line, a severity and a check code:

- ``unknown_action`` (error): a rule's action is not in a declared action vocabulary;
- ``similar_action`` (warning): with no vocabulary, an action one typo from another used;
- ``unreachable_rule`` (error): an allow that can never allow, as a deny matches every
  request it matches (any matching deny wins);
- ``duplicate_rule`` (warning): a rule identical to an earlier one (it never decides);
- ``shadowed_rule`` (warning): an earlier rule of the same effect matches every request
  it matches (it never decides);
- ``overlapping_rules`` (warning): an allow and a deny match some requests in common (the
  deny wins there), with one such request as an example;
- ``unused_group`` / ``unused_workload`` (warning): named by no rule (a workload may be
  named through a group);
- ``analysis_incomplete`` (warning): the resource comparisons of the whole lint spent
  :data:`MAX_LINT_STEPS`; the rule pairs not compared are counted, none is claimed.

"Covers" is proven, never guessed, against the engine's semantics (docs/policy.md sections
4-6): subjects through groups and workloads, actions with ``*``, each resource pattern
inside one pattern of the other rule (:func:`hub.core.pattern_cover.covers`, exact on the
pattern grammar), and a ``when`` that implies the other's (context values a subset, time
window inside, parent condition equal). When coverage is not proven no shadowing is
claimed: a rule is reported only when removing it changes no decision.

Pure: values in, findings out; no file is read here (the CLI reads them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import yaml

from edge_agent.errors import PolicyError
from edge_agent.policy.source import compose_yaml, load_policy_source
from hub.core.pattern_cover import SearchBudget, covers, literal_prefix, overlap

__all__ = [
    "ERROR",
    "MAX_LINT_STEPS",
    "MAX_VOCABULARY_BYTES",
    "WARNING",
    "Finding",
    "LintReport",
    "Vocabulary",
    "lint_policy",
    "read_vocabulary",
]

ERROR = "error"
WARNING = "warning"
MAX_VOCABULARY_BYTES = 1024 * 1024
"""Largest action vocabulary file read (one action a line)."""
MAX_LINT_STEPS = 20_000_000
"""Most automaton steps the resource comparisons of one lint take in total
(:class:`hub.core.pattern_cover.SearchBudget`; each comparison also stops at
:data:`hub.core.pattern_cover.MAX_SEARCH_STATES` pairs): a policy of pathological patterns
is bounded to seconds, while a realistic policy of 10,000 rules needs about 8 million."""

_ANY = "*"
_GROUP = "group:"
_MINUTES_PER_DAY = 1440


@dataclass(frozen=True, slots=True)
class Finding:
    """One lint finding: ``path:line``, ``severity`` (``error`` or ``warning``), the check's
    ``code``, a sentence, the policy rule at fault (``rule``) and the other rule it is
    about (``related``), when there are."""

    path: str
    line: int
    severity: str
    code: str
    message: str
    rule: str | None = None
    related: str | None = None

    def text(self) -> str:
        """The finding as one line: ``path:line: severity: [rule 'id': ]message (code)``."""
        in_rule = f"rule {self.rule!r}: " if self.rule else ""
        return f"{self.path}:{self.line}: {self.severity}: {in_rule}{self.message} ({self.code})"

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "rule": self.rule,
            "related": self.related,
        }


@dataclass(frozen=True, slots=True)
class LintReport:
    """Every finding of one policy source, in line order."""

    path: str
    findings: tuple[Finding, ...]
    vocabularies: tuple[str, ...]
    """Where the action vocabularies checked came from (empty: none was declared)."""

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == WARNING)


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """A declared set of actions and where it was declared (for the findings' wording)."""

    actions: frozenset[str]
    origin: str


def read_vocabulary(text: str, path: str) -> Vocabulary:
    """Read an action vocabulary file: one action a line; blank lines and lines starting
    with ``#`` are skipped.

    Raises:
        PolicyError: a line that is not one printable token without ``*`` or ``?``, or a
            file with no action, with ``path`` and the line.
    """
    if len(text) > MAX_VOCABULARY_BYTES:
        raise PolicyError(
            f"action vocabulary is over the {MAX_VOCABULARY_BYTES}-byte limit", path=path
        )
    actions: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        printable = line.isascii() and line.isprintable() and " " not in line
        if not printable or "*" in line or "?" in line:
            raise PolicyError(
                f"{line!r} is not an action (one printable ASCII word, no spaces or wildcards)",
                path=path,
                line=number,
            )
        actions.add(line)
    if not actions:
        raise PolicyError("the action vocabulary lists no action", path=path, line=1)
    return Vocabulary(frozenset(actions), path)


@dataclass(frozen=True, slots=True)
class _Rule:
    """One rule as the lint compares it, with the lines it names."""

    index: int
    id: str
    deny: bool
    subjects: frozenset[str]
    actions: frozenset[str]
    resources: tuple[str, ...]
    when: Mapping[str, object] | None
    line: int
    action_lines: Mapping[str, int]

    @property
    def effect(self) -> str:
        return "deny" if self.deny else "allow"

    def same_as(self, other: _Rule) -> bool:
        return (
            self.deny == other.deny
            and self.subjects == other.subjects
            and self.actions == other.actions
            and set(self.resources) == set(other.resources)
            and self.when == other.when
        )


def lint_policy(text: str, path: str, vocabularies: Sequence[Vocabulary] = ()) -> LintReport:
    """Lint the policy source ``text`` (read from ``path``) against ``vocabularies`` (the
    ``--actions`` files) and the ``actions:`` list the source declares, if any.

    Steps: 1. load and check the source as ``bundle build`` does, its vocabulary aside
    (step 3 reports each action outside it); 2. read the lines of its
    rules, groups and workloads; 3. actions against the vocabularies (or, with none, against
    each other); 4. each rule against the others (duplicate, unreachable, shadowed,
    overlapping); 5. unused groups and workloads.

    Raises:
        PolicyError: the source is invalid (with path and line), as ``bundle build`` says.
    """
    source = load_policy_source(text, path, enforce_vocabulary=False)
    declared = list(vocabularies)
    if source.actions is not None:
        declared.append(Vocabulary(frozenset(source.actions), "the policy's 'actions' list"))
    top = _fields(compose_yaml(text, path, what="policy source"))
    policy = source.policy
    rules = _rules(policy, top)
    groups = cast(dict[str, list[str]], policy["groups"])
    workloads = cast(dict[str, list[str]], policy["workloads"])
    findings: list[Finding] = []
    if declared:
        findings += _unknown_actions(path, rules, declared)
    else:
        findings += _similar_actions(path, rules)
    findings += _Comparison(path, rules, groups, _acting(groups, workloads)).findings()
    findings += _unused(path, rules, groups, workloads, top)
    findings.sort(key=lambda f: (f.line, f.code, f.rule or "", f.message))
    return LintReport(path, tuple(findings), tuple(v.origin for v in declared))


def _fields(node: yaml.Node) -> dict[str, yaml.Node]:
    """A checked source's mapping node as key -> value node."""
    return {key.value: value for key, value in node.value}


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _rules(policy: Mapping[str, object], top: Mapping[str, yaml.Node]) -> list[_Rule]:
    raw_rules = cast(list[dict[str, object]], policy["rules"])
    nodes = top["rules"].value
    rules = []
    for index, (raw, node) in enumerate(zip(raw_rules, nodes, strict=True)):
        fields = _fields(node)
        action_lines = {item.value: _line(item) for item in fields["actions"].value}
        rules.append(
            _Rule(
                index=index,
                id=cast(str, raw["id"]),
                deny=raw["effect"] == "deny",
                subjects=frozenset(cast(list[str], raw["subjects"])),
                actions=frozenset(cast(list[str], raw["actions"])),
                resources=tuple(cast(list[str], raw["resources"])),
                when=cast("dict[str, object] | None", raw.get("when")),
                line=_line(node),
                action_lines=action_lines,
            )
        )
    return rules


def _unknown_actions(path: str, rules: list[_Rule], declared: list[Vocabulary]) -> list[Finding]:
    findings = []
    for rule in rules:
        for action in sorted(rule.actions - {_ANY}):
            for vocabulary in declared:
                if action in vocabulary.actions:
                    continue
                near = _nearest(action, vocabulary.actions)
                hint = f"; did you mean {near!r}?" if near else ""
                findings.append(
                    Finding(
                        path,
                        rule.action_lines[action],
                        ERROR,
                        "unknown_action",
                        f"action {action!r} is not in {vocabulary.origin}{hint}",
                        rule.id,
                    )
                )
    return findings


def _similar_actions(path: str, rules: list[_Rule]) -> list[Finding]:
    """With no vocabulary: an action one typo from another action used is probably that
    one misspelt. The rarer of the two (fewer rules; on a tie the later) is reported."""
    uses: dict[str, list[_Rule]] = {}
    for rule in rules:
        for action in rule.actions - {_ANY}:
            uses.setdefault(action, []).append(rule)
    findings = []
    for action, users in uses.items():
        rivals = [
            other
            for other in uses
            if other != action and _similar(action, other) and _rarer(action, other, uses)
        ]
        if not rivals:
            continue
        likely = min(rivals, key=lambda other: (-len(uses[other]), uses[other][0].index))
        count = len(uses[likely])
        for rule in users:
            findings.append(
                Finding(
                    path,
                    rule.action_lines[action],
                    WARNING,
                    "similar_action",
                    f"action {action!r} is one typo away from {likely!r} "
                    f"(used by {count} rule{'s' if count != 1 else ''}); "
                    "declare the actions (an 'actions:' list or --actions FILE) to check them",
                    rule.id,
                )
            )
    return findings


def _rarer(action: str, other: str, uses: Mapping[str, list[_Rule]]) -> bool:
    mine, theirs = uses[action], uses[other]
    if len(mine) != len(theirs):
        return len(mine) < len(theirs)
    return mine[0].index > theirs[0].index


def _similar(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ only in letter case, or by one edit (two for words of
    8 letters or more) where both are at least 4 long (``get``/``set`` are two words)."""
    if a.lower() == b.lower():
        return True
    shorter = min(len(a), len(b))
    if shorter < 4:
        return False
    limit = 2 if shorter >= 8 else 1
    return abs(len(a) - len(b)) <= limit and _distance(a, b) <= limit


def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of
    two neighbours (``exce`` -> ``exec`` is one)."""
    previous: list[int] = []
    row = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        before, previous, row = previous, row, [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], before[j - 2] + 1)
    return row[len(b)]


def _nearest(action: str, actions: Iterable[str]) -> str | None:
    near = [a for a in actions if _similar(action, a)]
    return min(near, key=lambda a: (_distance(action.lower(), a.lower()), a)) if near else None


def _acting(
    groups: Mapping[str, list[str]], workloads: Mapping[str, list[str]]
) -> dict[str, frozenset[str]]:
    """For each identity a group or workload names: the principals a request carrying it
    always acts as (itself, its workloads, their groups, ``*``), as the compiler builds
    them (``CompiledPolicy.acting``)."""
    workloads_of: dict[str, set[str]] = {}
    for workload, selectors in workloads.items():
        for selector in selectors:
            workloads_of.setdefault(selector, set()).add(workload)
    groups_of: dict[str, set[str]] = {}
    for name, members in groups.items():
        for member in members:
            groups_of.setdefault(member, set()).add(_GROUP + name)
    acting: dict[str, frozenset[str]] = {}
    for identity in {*workloads_of, *groups_of}:
        via = workloads_of.get(identity, set())
        principals = {identity, _ANY, *via}
        for member in (identity, *via):
            principals |= groups_of.get(member, set())
        acting[identity] = frozenset(principals)
    return acting


class _Comparison:
    """Each rule against the others: duplicate, unreachable, shadowed, overlapping."""

    def __init__(
        self,
        path: str,
        rules: list[_Rule],
        groups: Mapping[str, list[str]],
        acting: Mapping[str, frozenset[str]],
    ) -> None:
        self._path = path
        self._budget = SearchBudget(MAX_LINT_STEPS)
        self._rules = rules
        self._members = {_GROUP + name: frozenset(members) for name, members in groups.items()}
        self._acting = acting
        self._subjects_covered: dict[tuple[frozenset[str], frozenset[str]], bool] = {}
        self._subjects_common: dict[tuple[frozenset[str], frozenset[str]], str | None] = {}
        self._by_action: dict[str, set[int]] = {}
        self._exact: dict[tuple[str, ...], set[int]] = {}
        self._below: dict[tuple[str, ...], set[int]] = {}
        for rule in rules:
            for action in rule.actions:
                self._by_action.setdefault(action, set()).add(rule.index)
            for pattern in rule.resources:
                prefix = literal_prefix(pattern)
                self._exact.setdefault(prefix, set()).add(rule.index)
                for length in range(len(prefix) + 1):
                    self._below.setdefault(prefix[:length], set()).add(rule.index)

    def findings(self) -> list[Finding]:
        """Each rule's finding in turn, until the search budget is spent: then one
        ``analysis_incomplete`` counting the pairs of the rule it ran out on and of every
        later rule (their searches gave up or never ran: nothing is claimed of them)."""
        findings: list[Finding] = []
        for position, rule in enumerate(self._rules):
            sharing = self._sharing_an_action(rule)
            finding = self._dead(rule, self._ordered(sharing & self._may_cover(rule)))
            if finding is not None:
                findings.append(finding)
            elif not rule.deny:
                findings += self._overlaps(rule, self._ordered(sharing & self._may_meet(rule)))
            if self._budget.spent:
                findings.append(self._incomplete(self._rules[position:]))
                break
        return findings

    def _incomplete(self, rest: list[_Rule]) -> Finding:
        pairs = sum(
            len(self._sharing_an_action(r) & (self._may_cover(r) | self._may_meet(r))) for r in rest
        )
        return Finding(
            self._path,
            rest[0].line,
            WARNING,
            "analysis_incomplete",
            f"the rule comparisons stopped here, after {MAX_LINT_STEPS:,} pattern search "
            f"steps: {pairs:,} rule pair{'' if pairs == 1 else 's'} from this rule on "
            "were not compared, so shadowed, unreachable or overlapping rules among them "
            "are not reported",
            rest[0].id,
        )

    def _sharing_an_action(self, rule: _Rule) -> set[int]:
        """The other rules sharing an action with ``rule`` (``*`` shares every one)."""
        if _ANY in rule.actions:
            found = set(range(len(self._rules)))
        else:
            found = set(self._by_action.get(_ANY, ()))
            for action in rule.actions:
                found |= self._by_action.get(action, set())
        found.discard(rule.index)
        return found

    def _may_cover(self, rule: _Rule) -> set[int]:
        """The rules with a pattern whose literal prefix begins the literal prefix of
        ``rule``'s first pattern: no other pattern can cover it
        (:func:`hub.core.pattern_cover.covers` needs that)."""
        prefix = literal_prefix(rule.resources[0])
        found: set[int] = set()
        for length in range(len(prefix) + 1):
            found |= self._exact.get(prefix[:length], set())
        return found

    def _may_meet(self, rule: _Rule) -> set[int]:
        """The rules with a pattern whose literal prefix agrees with one of ``rule``'s
        (one begins the other): no other pattern matches a resource in common."""
        found: set[int] = set()
        for pattern in rule.resources:
            prefix = literal_prefix(pattern)
            for length in range(len(prefix) + 1):
                found |= self._exact.get(prefix[:length], set())
            found |= self._below.get(prefix, set())
        return found

    def _ordered(self, indexes: set[int]) -> list[_Rule]:
        return [self._rules[index] for index in sorted(indexes)]

    def _dead(self, rule: _Rule, candidates: list[_Rule]) -> Finding | None:
        """Why ``rule`` never decides, or None: a duplicate of an earlier rule, an allow a
        deny covers, or a rule an earlier one of its effect covers."""
        earlier = [other for other in candidates if other.index < rule.index]
        for other in earlier:
            if other.same_as(rule):
                return self._finding(
                    rule,
                    WARNING,
                    "duplicate_rule",
                    f"is identical to rule {other.id!r} (line {other.line}); it never decides",
                    other,
                )
        if not rule.deny:
            for other in candidates:
                if other.deny and self._covers(other, rule):
                    return self._finding(
                        rule,
                        ERROR,
                        "unreachable_rule",
                        f"can never allow: deny rule {other.id!r} (line {other.line}) matches "
                        "every request it matches, and any matching deny wins",
                        other,
                    )
        for other in earlier:
            if other.deny == rule.deny and self._covers(other, rule):
                return self._finding(
                    rule,
                    WARNING,
                    "shadowed_rule",
                    f"is shadowed by rule {other.id!r} (line {other.line}): that {other.effect} "
                    "comes first and matches every request this one matches, so this one "
                    "never decides",
                    other,
                )
        return None

    def _overlaps(self, allow: _Rule, candidates: list[_Rule]) -> list[Finding]:
        findings = []
        for deny in candidates:
            if not deny.deny or not _maybe_together(deny.when, allow.when):
                continue
            subject = self._common_subject(deny.subjects, allow.subjects)
            if subject is None:
                continue
            resource = _common_resource(deny.resources, allow.resources, self._budget)
            if resource is None:
                continue
            action = _common_action(deny.actions, allow.actions)
            findings.append(
                self._finding(
                    allow,
                    WARNING,
                    "overlapping_rules",
                    f"overlaps deny rule {deny.id!r} (line {deny.line}), which wins where both "
                    f"match, e.g. subject {subject} action {action} resource {resource!r}"
                    + ("" if deny.when is None and allow.when is None else " (when both hold)"),
                    deny,
                )
            )
        return findings

    def _finding(
        self, rule: _Rule, severity: str, code: str, message: str, other: _Rule
    ) -> Finding:
        return Finding(self._path, rule.line, severity, code, message, rule.id, other.id)

    def _covers(self, outer: _Rule, inner: _Rule) -> bool:
        """Whether ``outer`` provably matches every request ``inner`` matches."""
        return (
            _covers_actions(outer.actions, inner.actions)
            and _implies(inner.when, outer.when)
            and self._covers_subjects(outer.subjects, inner.subjects)
            and all(
                any(covers(o, i, self._budget) for o in outer.resources) for i in inner.resources
            )
        )

    def _principals(self, identity: str) -> frozenset[str]:
        return self._acting.get(identity, frozenset({identity, _ANY}))

    def _covers_subjects(self, outer: frozenset[str], inner: frozenset[str]) -> bool:
        """Every request one of ``inner`` matches acts as one of ``outer`` (remembered per
        pair of subject lists: real policies repeat them)."""
        known = self._subjects_covered.get((outer, inner))
        if known is None:
            known = self._subjects_covered[(outer, inner)] = self._subjects_cover(outer, inner)
        return known

    def _subjects_cover(self, outer: frozenset[str], inner: frozenset[str]) -> bool:
        """A group is in ``inner`` only through its members, so each member must be
        covered."""
        if _ANY in outer:
            return True
        for subject in inner:
            if subject in outer:
                continue
            if subject == _ANY:
                return False
            members = self._members.get(subject, frozenset({subject}))
            if any(self._principals(member).isdisjoint(outer) for member in members):
                return False
        return True

    def _common_subject(self, first: frozenset[str], second: frozenset[str]) -> str | None:
        """An identity whose requests act as one of ``first`` and one of ``second``, or
        None when no single identity named in them does (remembered per pair)."""
        if (first, second) not in self._subjects_common:
            self._subjects_common[(first, second)] = self._find_common(first, second)
        return self._subjects_common[(first, second)]

    def _find_common(self, first: frozenset[str], second: frozenset[str]) -> str | None:
        if _ANY in first and _ANY in second:
            return "(anyone)"
        named: set[str] = set()
        for subject in first | second:
            if subject == _ANY:
                continue
            named |= self._members.get(subject, frozenset({subject}))
        for identity in sorted(named):
            principals = self._principals(identity)
            if not principals.isdisjoint(first) and not principals.isdisjoint(second):
                return identity
        return None


def _covers_actions(outer: frozenset[str], inner: frozenset[str]) -> bool:
    return _ANY in outer or (_ANY not in inner and inner <= outer)


def _common_action(first: frozenset[str], second: frozenset[str]) -> str:
    """An action both lists match (callers know there is one: they share an action)."""
    common = sorted((first & second) - {_ANY})
    if common:
        return common[0]
    if _ANY in first:
        return min(second - {_ANY}, default=_ANY)
    return min(first - {_ANY}, default=_ANY)


def _common_resource(
    first: Sequence[str], second: Sequence[str], budget: SearchBudget
) -> str | None:
    for outer in first:
        for inner in second:
            found = overlap(outer, inner, budget)
            if found is not None:
                return found
    return None


def _window(when: Mapping[str, object]) -> frozenset[int] | None:
    text = when.get("time_utc")
    if not isinstance(text, str):
        return None
    start_text, _, end_text = text.partition("-")
    start = int(start_text[:2]) * 60 + int(start_text[3:])
    end = int(end_text[:2]) * 60 + int(end_text[3:])
    if start < end:
        return frozenset(range(start, end))
    return frozenset(range(start, _MINUTES_PER_DAY)) | frozenset(range(end))


def _context(when: Mapping[str, object]) -> Mapping[str, list[str]]:
    return cast(Mapping[str, list[str]], when.get("context") or {})


def _implies(inner: Mapping[str, object] | None, outer: Mapping[str, object] | None) -> bool:
    """Whether ``inner`` holding proves ``outer`` holds (None holds always): every context
    key ``outer`` tests is tested by ``inner`` with allowed values among ``outer``'s, the
    time window inside ``outer``'s, and the parent condition the same."""
    if outer is None:
        return True
    if inner is None:
        return False
    inner_context = _context(inner)
    for key, allowed in _context(outer).items():
        if key not in inner_context or not set(inner_context[key]) <= set(allowed):
            return False
    outer_window = _window(outer)
    if outer_window is not None:
        inner_window = _window(inner)
        if inner_window is None or not inner_window <= outer_window:
            return False
    return "parent" not in outer or outer.get("parent") == inner.get("parent")


def _maybe_together(
    first: Mapping[str, object] | None, second: Mapping[str, object] | None
) -> bool:
    """False when the two conditions cannot hold at once (time windows apart, or a context
    key with no value both allow); True otherwise."""
    if first is None or second is None:
        return True
    a, b = _window(first), _window(second)
    if a is not None and b is not None and a.isdisjoint(b):
        return False
    second_context = _context(second)
    for key, allowed in _context(first).items():
        if key in second_context and set(allowed).isdisjoint(second_context[key]):
            return False
    return True


def _unused(
    path: str,
    rules: list[_Rule],
    groups: Mapping[str, list[str]],
    workloads: Mapping[str, list[str]],
    top: Mapping[str, yaml.Node],
) -> list[Finding]:
    named = set().union(*(rule.subjects for rule in rules)) if rules else set()
    used_groups = {name for name in groups if _GROUP + name in named}
    reached = named | {m for name in used_groups for m in groups[name]}
    findings = []
    for key, unused, code, what in (
        ("groups", [g for g in groups if g not in used_groups], "unused_group", "group"),
        ("workloads", [w for w in workloads if w not in reached], "unused_workload", "workload"),
    ):
        if not unused:
            continue
        lines = {k.value: _line(k) for k, _ in top[key].value}
        for name in unused:
            how = "" if what == "group" else ", directly or through a group"
            findings.append(
                Finding(
                    path,
                    lines[name],
                    WARNING,
                    code,
                    f"{what} {name!r} is named by no rule{how}",
                )
            )
    return findings

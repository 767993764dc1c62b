"""Policy payload: build it from checked source values, and compile a decoded one for decisions.

The payload is the ``policy`` member of a signed bundle, deterministic-CBOR-encodable (maps
with text keys, lists, text, integers; no floats)::

    {"format": 1,
     "groups":    {NAME: [MEMBER, ...]},
     "workloads": {WORKLOAD_ID: [SELECTOR, ...]},
     "rules": [{"id": ID, "effect": "allow" | "deny",
                "subjects": [...], "actions": [...], "resources": [...],
                "when": {"context": {KEY: [VALUE, ...]}, "time_utc": "HH:MM-HH:MM"}}]}

``when`` and each of its two members are optional (``when`` is never empty). A rule's
position in ``rules`` is its precedence: the lowest-index matching deny decides, else the
lowest-index matching allow.

:func:`compile_policy` treats its input as hostile: it arrives decoded from a bundle, so every
type is checked, every size bounded, and anything wrong raises :class:`PolicyError` (never
another exception). It then builds the indexes :func:`edge_agent.policy.engine.evaluate`
uses: action -> principal -> :class:`ResourceIndex`, with ``group:`` subjects expanded.

This module does not read YAML (see ``source``) and does not decide (see ``engine``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from edge_agent.errors import PolicyError
from edge_agent.policy import _checks as checks
from edge_agent.policy._index import ResourceIndex, Suffix
from edge_agent.policy._match import Match

__all__ = [
    "CompiledPolicy",
    "Condition",
    "RuleSummary",
    "compile_policy",
    "policy_payload",
]

_PAYLOAD_KEYS = frozenset({"format", "groups", "workloads", "rules"})
_RULE_KEYS = frozenset({"id", "effect", "subjects", "actions", "resources", "when"})
_RULE_REQUIRED = _RULE_KEYS - {"when"}
_WHEN_KEYS = frozenset({"context", "time_utc"})

_T = TypeVar("_T")
_PendingRule = tuple[
    str, int, bool, tuple[str, ...], tuple[str, ...], list[tuple[tuple[str, ...], str]]
]


@dataclass(frozen=True, slots=True)
class RuleSummary:
    """One rule as ``bundle inspect`` shows it."""

    id: str
    effect: str


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule's ``when``: every listed context key present with an allowed value, and the
    minute of the UTC day inside ``[start, end)`` (wrapping past midnight when end < start)."""

    context: tuple[tuple[str, frozenset[str]], ...]
    window: tuple[int, int] | None

    def holds(self, context: tuple[tuple[str, str], ...], now: int) -> bool:
        """Whether the condition holds for a request's context pairs at unix time ``now``."""
        for key, allowed in self.context:
            for got_key, got_value in context:
                if got_key == key and got_value in allowed:
                    break
            else:
                return False
        if self.window is None:
            return True
        start, end = self.window
        minute = (now // 60) % 1440
        if start < end:
            return start <= minute < end
        return minute >= start or minute < end


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicy:
    """A validated policy with its lookup indexes; immutable and safe to share.

    ``rules`` lists every rule in precedence order. The other fields are the engine's
    indexes: ``index[action][principal]`` (``*`` keys for any action / anyone),
    ``workloads_of[selector]`` (the workload ids a selector acts as), and per-rule
    ``conditions`` and ``verdicts`` (the :class:`Match` a rule returns when it decides) by
    rule index.
    """

    rules: tuple[RuleSummary, ...]
    index: Mapping[str, Mapping[str, ResourceIndex]] = field(repr=False)
    workloads_of: Mapping[str, tuple[str, ...]] = field(repr=False)
    conditions: tuple[Condition | None, ...] = field(repr=False)
    verdicts: tuple[Match, ...] = field(repr=False)

    @property
    def rule_count(self) -> int:
        """Number of rules."""
        return len(self.rules)


def policy_payload(
    groups: Mapping[str, Sequence[str]],
    workloads: Mapping[str, Sequence[str]],
    rules: Sequence[Mapping[str, object]],
) -> dict[str, object]:
    """Assemble the bundle payload from source values the loader has already type-checked.

    Mapping order is irrelevant (deterministic CBOR sorts keys); rule order is kept because it
    is precedence. Run :func:`compile_policy` on the result to check it fully.
    """
    return {
        "format": checks.PAYLOAD_FORMAT,
        "groups": {name: list(members) for name, members in groups.items()},
        "workloads": {wid: list(selectors) for wid, selectors in workloads.items()},
        "rules": [dict(rule) for rule in rules],
    }


def compile_policy(payload: object) -> CompiledPolicy:
    """Validate a decoded policy payload and build its decision indexes.

    Steps: 1. check the top-level shape and format; 2. check groups and workloads; 3. check
    every rule (ids unique, known groups); 4. index every (principal, action, resource) triple,
    bounded by ``MAX_INDEX_ENTRIES``.

    Raises:
        PolicyError: anything about the payload is invalid; ``rule`` names the rule at fault.
    """
    top = _map(payload, "policy payload", _PAYLOAD_KEYS, _PAYLOAD_KEYS)
    version = top["format"]
    if type(version) is not int or version != checks.PAYLOAD_FORMAT:
        raise PolicyError(
            f"policy payload format {version!r} is not supported "
            f"(this agent reads format {checks.PAYLOAD_FORMAT})"
        )
    groups = _string_lists(
        top["groups"],
        "groups",
        checks.MAX_GROUPS,
        checks.MAX_GROUP_MEMBERS,
        checks.check_group_name,
        checks.check_group_member,
    )
    workloads = _string_lists(
        top["workloads"],
        "workloads",
        checks.MAX_WORKLOADS,
        checks.MAX_SELECTORS_PER_WORKLOAD,
        checks.check_workload_id,
        checks.check_selector,
    )
    rules = _list(top["rules"], "rules", checks.MAX_RULES)
    builder = _IndexBuilder(groups)
    summaries: list[RuleSummary] = []
    conditions: list[Condition | None] = []
    seen_ids: set[str] = set()
    for position, raw_rule in enumerate(rules):
        summary, condition = builder.add_rule(position, raw_rule, seen_ids)
        summaries.append(summary)
        conditions.append(condition)
    return CompiledPolicy(
        rules=tuple(summaries),
        index=builder.finish(),
        workloads_of=_invert_workloads(workloads),
        conditions=tuple(conditions),
        verdicts=tuple(_verdict(s) for s in summaries),
    )


class _IndexBuilder:
    """Accumulates rules into action -> principal -> ResourceIndex.

    A rule whose actions include ``*`` is filed under ``*`` and also under every action some
    rule names, so a decision looks up one action table, never two.
    """

    def __init__(self, groups: Mapping[str, tuple[str, ...]]) -> None:
        self._groups = groups
        self._pending: list[_PendingRule] = []

    def add_rule(
        self, position: int, raw: object, seen_ids: set[str]
    ) -> tuple[RuleSummary, Condition | None]:
        where = f"rules[{position}]"
        rule = _map(raw, where, _RULE_KEYS, _RULE_REQUIRED)
        rule_id = _text(rule["id"], f"{where}.id")
        _checked(checks.check_rule_id, rule_id, None)
        if rule_id in seen_ids:
            raise PolicyError(f"duplicate rule id {rule_id!r}", rule=rule_id)
        seen_ids.add(rule_id)
        effect = _text(rule["effect"], "effect", rule_id)
        if effect not in checks.EFFECTS:
            raise PolicyError(f"effect {effect!r} must be 'allow' or 'deny'", rule=rule_id)
        principals = self._principals(rule["subjects"], rule_id)
        actions = _texts(rule["actions"], "actions", checks.MAX_RULE_ITEMS, rule_id)
        resources = _texts(rule["resources"], "resources", checks.MAX_RULE_ITEMS, rule_id)
        for action in actions:
            _checked(checks.check_action, action, rule_id)
        patterns = [(_checked(checks.check_resource_pattern, r, rule_id), r) for r in resources]
        condition = _condition(rule["when"], rule_id) if "when" in rule else None
        self._pending.append((rule_id, position, effect == "deny", principals, actions, patterns))
        return RuleSummary(rule_id, effect), condition

    def _principals(self, raw: object, rule_id: str) -> tuple[str, ...]:
        principals: dict[str, None] = {}
        for subject in _texts(raw, "subjects", checks.MAX_RULE_ITEMS, rule_id):
            group = _checked(checks.check_subject, subject, rule_id)
            if group is None:
                principals[subject] = None
                continue
            members = self._groups.get(group)
            if members is None:
                raise PolicyError(f"subject {subject!r} names an undefined group", rule=rule_id)
            principals.update(dict.fromkeys(members))
        return tuple(principals)

    def finish(self) -> dict[str, dict[str, ResourceIndex]]:
        named = sorted({a for rule in self._pending for a in rule[4] if a != checks.ANY})
        index: dict[str, dict[str, ResourceIndex]] = {}
        shared: dict[tuple[str, ...], Suffix] = {}
        entries = 0
        for rule_id, position, deny, principals, actions, patterns in self._pending:
            targets = (*named, checks.ANY) if checks.ANY in actions else actions
            entries += len(principals) * len(targets) * len(patterns)
            if entries > checks.MAX_INDEX_ENTRIES:
                raise PolicyError(
                    f"policy expands to more than {checks.MAX_INDEX_ENTRIES} "
                    "(subject, action, resource) entries; split large groups or '*' actions",
                    rule=rule_id,
                )
            for action in targets:
                by_principal = index.setdefault(action, {})
                for principal in principals:
                    resource_index = by_principal.get(principal)
                    if resource_index is None:
                        resource_index = by_principal[principal] = ResourceIndex()
                    for segments, pattern in patterns:
                        resource_index.add(segments, pattern, position, deny, shared)
        for by_principal in index.values():
            for resource_index in by_principal.values():
                resource_index.freeze()
        return index


def _condition(raw: object, rule_id: str) -> Condition:
    when = _map(raw, "when", _WHEN_KEYS, frozenset(), rule_id)
    if not when:
        raise PolicyError("'when' is empty; omit it for an unconditional rule", rule=rule_id)
    context: list[tuple[str, frozenset[str]]] = []
    if "context" in when:
        raw_context = _map(when["context"], "when.context", None, frozenset(), rule_id)
        if not raw_context:
            raise PolicyError("'when.context' is empty", rule=rule_id)
        if len(raw_context) > checks.MAX_CONTEXT_KEYS:
            raise PolicyError(
                f"'when.context' tests more than {checks.MAX_CONTEXT_KEYS} keys", rule=rule_id
            )
        for key, raw_values in raw_context.items():
            _checked(checks.check_context_key, key, rule_id)
            values = _texts(raw_values, f"when.context.{key}", checks.MAX_CONTEXT_VALUES, rule_id)
            for value in values:
                _checked(checks.check_context_value, value, rule_id)
            context.append((key, frozenset(values)))
    window = None
    if "time_utc" in when:
        text = _text(when["time_utc"], "when.time_utc", rule_id)
        window = _checked(checks.parse_time_window, text, rule_id)
    return Condition(tuple(sorted(context, key=lambda item: item[0])), window)


def _verdict(rule: RuleSummary) -> Match:
    if rule.effect == "allow":
        return Match(True, "allowed", rule.id)
    return Match(False, "policy_denied", rule.id)


def _invert_workloads(workloads: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    acting: dict[str, set[str]] = {}
    for workload, selectors in workloads.items():
        for selector in selectors:
            acting.setdefault(selector, set()).add(workload)
    return {selector: tuple(sorted(ids)) for selector, ids in acting.items()}


def _checked(check: Callable[[str], _T], value: str, rule_id: str | None) -> _T:
    try:
        return check(value)
    except ValueError as exc:
        raise PolicyError(str(exc), rule=rule_id) from exc


def _map(
    raw: object,
    what: str,
    allowed: frozenset[str] | None,
    required: frozenset[str],
    rule_id: str | None = None,
) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise PolicyError(f"{what} must be a map", rule=rule_id)
    for key in raw:
        if not isinstance(key, str):
            raise PolicyError(f"{what} has a non-text key", rule=rule_id)
        if allowed is not None and key not in allowed:
            raise PolicyError(f"{what} has unknown key {key!r}", rule=rule_id)
    missing = sorted(required - raw.keys())
    if missing:
        raise PolicyError(f"{what} is missing {', '.join(map(repr, missing))}", rule=rule_id)
    return raw


def _list(raw: object, what: str, limit: int, rule_id: str | None = None) -> list[object]:
    if not isinstance(raw, list):
        raise PolicyError(f"{what} must be a list", rule=rule_id)
    if len(raw) > limit:
        raise PolicyError(f"{what} has {len(raw)} entries, over the limit of {limit}", rule=rule_id)
    return raw


def _text(raw: object, what: str, rule_id: str | None = None) -> str:
    if not isinstance(raw, str):
        raise PolicyError(f"{what} must be text", rule=rule_id)
    return raw


def _texts(raw: object, what: str, limit: int, rule_id: str | None = None) -> tuple[str, ...]:
    items = _list(raw, what, limit, rule_id)
    if not items:
        raise PolicyError(f"{what} must not be empty", rule=rule_id)
    texts = tuple(_text(item, f"{what} entry", rule_id) for item in items)
    if len(set(texts)) != len(texts):
        duplicate = sorted(t for t in set(texts) if texts.count(t) > 1)[0]
        raise PolicyError(f"{what} lists {duplicate!r} twice", rule=rule_id)
    return texts


def _string_lists(
    raw: object,
    what: str,
    max_keys: int,
    max_items: int,
    check_key: Callable[[str], None],
    check_item: Callable[[str], None],
) -> dict[str, tuple[str, ...]]:
    table = _map(raw, what, None, frozenset())
    if len(table) > max_keys:
        raise PolicyError(f"{what} has {len(table)} entries, over the limit of {max_keys}")
    result: dict[str, tuple[str, ...]] = {}
    for key, items in table.items():
        _checked(check_key, key, None)
        values = _texts(items, f"{what}.{key}", max_items)
        for value in values:
            _checked(check_item, value, None)
        result[key] = values
    return result

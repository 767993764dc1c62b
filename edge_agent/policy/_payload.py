"""Reading a decoded policy payload: every value type-checked, bounded and checked against
the grammar of ``_checks``, with a :class:`PolicyError` naming the rule at fault.

The payload arrives decoded from a bundle, so it is hostile: anything wrong raises
:class:`PolicyError` and nothing else. :class:`RuleReader` reads one rule at a time into a
plain tuple ready for indexing. Subject, action and resource lists repeat across the rules of
a real policy, and so do patterns and conditions, so each distinct one is checked (and
prepared) once: a list equal to one already checked holds the same text values, so it needs
no second check.

This module does not build indexes (see ``_index``) and does not decide (see ``engine``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

from edge_agent.errors import PolicyError
from edge_agent.policy import _checks as checks
from edge_agent.policy._index import FiledPattern, Tail, prepare_pattern

if TYPE_CHECKING:  # annotations only: the hub's compile of a payload needs no request type
    from edge_agent.protocol.request import Parent, Request

__all__ = [
    "CheckedRule",
    "Condition",
    "ParentCondition",
    "RuleReader",
    "read_list",
    "read_map",
    "read_string_lists",
]

_RULE_KEYS = frozenset({"id", "effect", "subjects", "actions", "resources", "when"})
_RULE_REQUIRED = _RULE_KEYS - {"when"}
_WHEN_KEYS = frozenset({"context", "time_utc", "parent"})
_PARENT_KEYS = frozenset({"action", "resource", "subject", "devices", "max_age", "max_depth"})

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ParentCondition:
    """A rule's ``when.parent``: the request cites a verified parent (its receipt held,
    :mod:`edge_agent.trust.parent`) whose decision was one of ``actions`` (any when
    ``None``), on a resource matching one of ``resources``, by one of ``subjects``, made on
    one of ``devices`` or on a device in one of ``device_groups`` (any device when both are
    ``None``), at most ``max_age`` seconds before ``now``, in a chain of at most
    ``max_depth`` links (any depth when ``None``)."""

    actions: frozenset[str] | None
    resources: tuple[FiledPattern, ...] | None
    subjects: frozenset[str] | None
    devices: frozenset[str] | None
    device_groups: frozenset[str] | None
    max_age: int
    max_depth: int | None

    def holds(self, parent: Parent | None, now: int) -> bool:
        """Whether ``parent`` (as judged when the request arrived) meets this condition."""
        facts = parent.facts if parent is not None else None
        if facts is None or now - facts.time > self.max_age:
            return False
        if self.max_depth is not None and facts.depth > self.max_depth:
            return False
        if self.actions is not None and facts.action not in self.actions:
            return False
        if self.subjects is not None and facts.subject not in self.subjects:
            return False
        if self.devices is not None or self.device_groups is not None:
            named = self.devices is not None and facts.device in self.devices
            grouped = self.device_groups is not None and not self.device_groups.isdisjoint(
                facts.groups
            )
            if not (named or grouped):
                return False
        if self.resources is None:
            return True
        segments = facts.resource.split("/")
        return any(
            "/".join(segments[:length]) == prefix and tail.matches(segments, length)
            for length, prefix, tail in self.resources
        )


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule's ``when``: every listed context key present with an allowed value, the
    minute of the UTC day inside ``[start, end)`` (wrapping past midnight when end < start),
    and the request's parent meeting ``parent``."""

    context: tuple[tuple[str, frozenset[str]], ...]
    window: tuple[int, int] | None
    parent: ParentCondition | None = None

    def holds(self, request: Request, now: int, *, blind: bool = False) -> bool:
        """Whether the condition holds for ``request`` at unix time ``now``; with ``blind``,
        whether it would hold but for its parent requirement."""
        context = request.context
        for key, allowed in self.context:
            for got_key, got_value in context:
                if got_key == key and got_value in allowed:
                    break
            else:
                return False
        if self.window is not None:
            start, end = self.window
            minute = (now // 60) % 1440
            if start < end:
                if not start <= minute < end:
                    return False
            elif not (minute >= start or minute < end):
                return False
        return self.parent is None or blind or self.parent.holds(request.parent, now)


CheckedRule = tuple[
    int,
    str,
    bool,
    tuple[str, ...],
    int,
    tuple[str, ...],
    tuple[FiledPattern, ...],
    "Condition | None",
]
"""One checked rule: (position, id, deny, subjects (each group one principal), how many
identities the subjects name with groups expanded, actions, patterns, condition)."""


class RuleReader:
    """Checks the rules of one payload, one by one, remembering what it has checked."""

    def __init__(self, groups: Mapping[str, tuple[str, ...]]) -> None:
        self._groups = groups
        self._ids: set[str] = set()
        self._subject_lists: dict[tuple[object, ...], tuple[tuple[str, ...], int]] = {}
        self._action_lists: dict[tuple[object, ...], tuple[str, ...]] = {}
        self._resource_lists: dict[tuple[object, ...], tuple[FiledPattern, ...]] = {}
        self._filed: dict[str, FiledPattern] = {}
        self._tails: dict[tuple[str, ...], Tail] = {}
        self._context_keys: set[str] = set()
        self._context_values: set[str] = set()
        self._windows: dict[str, tuple[int, int]] = {}
        self._conditions: dict[Condition, Condition] = {}
        self.named_actions: set[str] = set()
        """Every action some rule read so far names, ``*`` excluded."""

    def rule(self, position: int, raw: object) -> CheckedRule:
        """Check ``raw``, the rule at ``position``.

        Raises:
            PolicyError: the rule is malformed, repeats an id or names an undefined group.
        """
        if not isinstance(raw, dict) or (raw.keys() != _RULE_REQUIRED and raw.keys() != _RULE_KEYS):
            read_map(raw, f"rules[{position}]", _RULE_KEYS, _RULE_REQUIRED)
        rule = cast(dict[str, object], raw)
        rule_id = rule["id"]
        if not isinstance(rule_id, str):
            raise PolicyError(f"rules[{position}].id must be text")
        if rule_id in self._ids:
            raise PolicyError(f"duplicate rule id {rule_id!r}", rule=rule_id)
        _checked(checks.check_rule_id, rule_id, None)
        self._ids.add(rule_id)
        effect = rule["effect"]
        if effect != "allow" and effect != "deny":
            effect = _text(effect, "effect", rule_id)
            raise PolicyError(f"effect {effect!r} must be 'allow' or 'deny'", rule=rule_id)
        subjects, reach = _remembered(
            self._subject_lists, rule["subjects"], "subjects", rule_id, self._subjects
        )
        actions = _remembered(
            self._action_lists, rule["actions"], "actions", rule_id, self._actions
        )
        patterns = _remembered(
            self._resource_lists, rule["resources"], "resources", rule_id, self._patterns
        )
        condition = self._condition(rule["when"], rule_id) if "when" in rule else None
        return (position, rule_id, effect == "deny", subjects, reach, actions, patterns, condition)

    def _subjects(self, subjects: tuple[str, ...], rule_id: str) -> tuple[tuple[str, ...], int]:
        """The subjects (each checked, each group defined) and how many identities they name
        with groups expanded, as ``MAX_INDEX_ENTRIES`` counts them."""
        expanded: set[str] = set()
        for subject in subjects:
            group = _checked(checks.check_subject, subject, rule_id)
            if group is None:
                expanded.add(subject)
                continue
            members = self._groups.get(group)
            if members is None:
                raise PolicyError(f"subject {subject!r} names an undefined group", rule=rule_id)
            expanded.update(members)
        return subjects, len(expanded)

    def _actions(
        self, actions: tuple[str, ...], rule_id: str, *, named: bool = True
    ) -> tuple[str, ...]:
        """Check ``actions``; with ``named``, they are a rule's own (the index files them)."""
        for action in actions:
            if not named and ("*" in action or "?" in action):
                raise PolicyError(
                    f"when.parent.action {action!r}: it lists exact actions, with no wildcard "
                    "and not '*'; leave action out to accept a parent of any action",
                    rule=rule_id,
                )
            _checked(checks.check_action, action, rule_id)
            if action != checks.ANY and named:
                self.named_actions.add(action)
        return actions

    def _patterns(self, resources: tuple[str, ...], rule_id: str) -> tuple[FiledPattern, ...]:
        patterns: list[FiledPattern] = []
        for text in resources:
            filed = self._filed.get(text)
            if filed is None:
                segments = _checked(checks.check_resource_pattern, text, rule_id)
                filed = self._filed[text] = prepare_pattern(text, segments, self._tails)
            patterns.append(filed)
        return tuple(patterns)

    @property
    def prefix_lengths(self) -> tuple[int, ...]:
        """The literal prefix segment counts (one or more) of every wildcard pattern read so
        far, ascending."""
        wild = (filed for text, filed in self._filed.items() if "*" in text or "?" in text)
        return tuple(sorted({length for length, _, _ in wild if length}))

    def _condition(self, raw: object, rule_id: str) -> Condition:
        when = read_map(raw, "when", _WHEN_KEYS, frozenset(), rule_id)
        if not when:
            raise PolicyError("'when' is empty; omit it for an unconditional rule", rule=rule_id)
        context: list[tuple[str, frozenset[str]]] = []
        if "context" in when:
            raw_context = read_map(when["context"], "when.context", None, frozenset(), rule_id)
            if not raw_context:
                raise PolicyError("'when.context' is empty", rule=rule_id)
            if len(raw_context) > checks.MAX_CONTEXT_KEYS:
                raise PolicyError(
                    f"'when.context' tests more than {checks.MAX_CONTEXT_KEYS} keys", rule=rule_id
                )
            for key, raw_values in raw_context.items():
                if key not in self._context_keys:
                    _checked(checks.check_context_key, key, rule_id)
                    self._context_keys.add(key)
                values = _texts(
                    raw_values, f"when.context.{key}", checks.MAX_CONTEXT_VALUES, rule_id
                )
                for value in values:
                    if value not in self._context_values:
                        _checked(checks.check_context_value, value, rule_id)
                        self._context_values.add(value)
                context.append((key, frozenset(values)))
            context.sort(key=_first)
        window = None
        if "time_utc" in when:
            text = _text(when["time_utc"], "when.time_utc", rule_id)
            window = self._windows.get(text)
            if window is None:
                window = self._windows[text] = _checked(checks.parse_time_window, text, rule_id)
        parent = self._parent(when["parent"], rule_id) if "parent" in when else None
        condition = Condition(tuple(context), window, parent)
        return self._conditions.setdefault(condition, condition)

    def _parent(self, raw: object, rule_id: str) -> ParentCondition:
        """``when.parent``: each list optional and non-empty, ``max_age`` (seconds, default
        ``PARENT_MAX_AGE_DEFAULT_S``) and ``max_depth`` bounded."""
        fields = read_map(raw, "when.parent", _PARENT_KEYS, frozenset(), rule_id)
        actions = subjects = devices = groups = None
        resources = None
        if "action" in fields:
            listed = _texts(fields["action"], "when.parent.action", checks.MAX_RULE_ITEMS, rule_id)
            actions = frozenset(self._actions(listed, rule_id, named=False))
        if "subject" in fields:
            listed = _texts(
                fields["subject"], "when.parent.subject", checks.MAX_RULE_ITEMS, rule_id
            )
            for subject in listed:
                _checked(checks.check_group_member, subject, rule_id)
            subjects = frozenset(listed)
        if "resource" in fields:
            listed = _texts(
                fields["resource"], "when.parent.resource", checks.MAX_RULE_ITEMS, rule_id
            )
            resources = self._patterns(listed, rule_id)
        if "devices" in fields:
            listed = _texts(
                fields["devices"], "when.parent.devices", checks.MAX_RULE_ITEMS, rule_id
            )
            refs = [(_checked(checks.check_device_ref, ref, rule_id), ref) for ref in listed]
            ids = frozenset(ref for group, ref in refs if group is None)
            names = frozenset(group for group, _ in refs if group is not None)
            devices, groups = ids or None, names or None
        max_age = _bounded(
            fields.get("max_age", checks.PARENT_MAX_AGE_DEFAULT_S),
            "when.parent.max_age",
            1,
            checks.MAX_PARENT_AGE_S,
            rule_id,
        )
        max_depth = None
        if "max_depth" in fields:
            max_depth = _bounded(
                fields["max_depth"], "when.parent.max_depth", 1, checks.MAX_PARENT_DEPTH, rule_id
            )
        return ParentCondition(actions, resources, subjects, devices, groups, max_age, max_depth)


def _first(pair: tuple[str, frozenset[str]]) -> str:
    return pair[0]


def _remembered(
    cache: dict[tuple[object, ...], _T],
    raw: object,
    what: str,
    rule_id: str,
    make: Callable[[tuple[str, ...], str], _T],
) -> _T:
    """``make`` applied to the checked text list ``raw``, computed once per distinct list."""
    if type(raw) is list:
        try:
            known = cache.get(tuple(raw))
        except TypeError:
            known = None
        if known is not None:
            return known
    texts = _texts(raw, what, checks.MAX_RULE_ITEMS, rule_id)
    value = cache[texts] = make(texts, rule_id)
    return value


def _checked(check: Callable[[str], _T], value: str, rule_id: str | None) -> _T:
    try:
        return check(value)
    except ValueError as exc:
        raise PolicyError(str(exc), rule=rule_id) from exc


def read_map(
    raw: object,
    what: str,
    allowed: frozenset[str] | None,
    required: frozenset[str],
    rule_id: str | None = None,
) -> dict[str, object]:
    """``raw`` as a map with text keys, only ``allowed`` ones (any if ``None``), and every
    ``required`` one.

    Raises:
        PolicyError: not a map, a non-text or unknown key, or a required key missing.
    """
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


def read_list(raw: object, what: str, limit: int, rule_id: str | None = None) -> list[object]:
    """``raw`` as a list of at most ``limit`` entries.

    Raises:
        PolicyError: not a list, or too long.
    """
    if not isinstance(raw, list):
        raise PolicyError(f"{what} must be a list", rule=rule_id)
    if len(raw) > limit:
        raise PolicyError(f"{what} has {len(raw)} entries, over the limit of {limit}", rule=rule_id)
    return raw


def _bounded(raw: object, what: str, low: int, high: int, rule_id: str) -> int:
    if type(raw) is not int or not low <= raw <= high:
        raise PolicyError(f"{what} must be an integer from {low} to {high}", rule=rule_id)
    return raw


def _text(raw: object, what: str, rule_id: str | None = None) -> str:
    if not isinstance(raw, str):
        raise PolicyError(f"{what} must be text", rule=rule_id)
    return raw


def _texts(raw: object, what: str, limit: int, rule_id: str | None = None) -> tuple[str, ...]:
    items = read_list(raw, what, limit, rule_id)
    if not items:
        raise PolicyError(f"{what} must not be empty", rule=rule_id)
    for item in items:
        if not isinstance(item, str):
            raise PolicyError(f"{what} entry must be text", rule=rule_id)
    texts = cast("tuple[str, ...]", tuple(items))
    if len(texts) > 1 and len(set(texts)) != len(texts):
        duplicate = sorted(t for t in set(texts) if texts.count(t) > 1)[0]
        raise PolicyError(f"{what} lists {duplicate!r} twice", rule=rule_id)
    return texts


def read_string_lists(
    raw: object,
    what: str,
    max_keys: int,
    max_items: int,
    check_key: Callable[[str], None],
    check_item: Callable[[str], None],
) -> dict[str, tuple[str, ...]]:
    """``raw`` as a map of checked text keys to non-empty lists of checked, distinct texts.

    Raises:
        PolicyError: any of those fails, or a bound is exceeded.
    """
    table = read_map(raw, what, None, frozenset())
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

"""Policy source, quick path: libyaml's event stream read straight into the source's values.

:func:`read_source_events` is the reader :func:`edge_agent.policy.source.load_policy_source`
tries first. It takes libyaml's parse events one at a time and builds the plain values of a
policy source as they come, with every check the checked reader (``source._Reader``) makes,
but without the node tree that reader walks: a 10,000-rule source is ~160,000 nodes, each a
Python object with two marks, composed, kept and walked once.

It words no error and keeps no line. Whatever it does not take (a YAML error, an anchor, an
alias, a tag, a value of the wrong kind or grammar, a key out of place, a list over its limit)
makes it return ``None``, and the caller reads the text again with the checked reader, which
refuses it with its file, line and rule. So every error stays the checked reader's own, word
for word; what this reader returns is what the checked reader returns for the same text, and
what it does not return the checked reader decides (pinned by differential tests).

It runs no YAML constructor: events are read, never turned into objects by PyYAML, and the
checks that depend on the whole source (a subject's group defined under ``groups``, a rule's
action in the declared ``actions``) are made once the top-level mapping is read, so the order
of the top-level keys does not matter, as it does not to the checked reader. Nesting is never
followed past the format's own: the first collection where a value is expected ends the read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import yaml
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)

from edge_agent.policy import _checks as checks
from edge_agent.policy.compiler import PARENT_KEYS, RULE_KEYS, WHEN_KEYS
from edge_agent.policy.durations import parse_duration
from edge_agent.protocol import dcbor

__all__ = [
    "ANY_CHAR_RESOLVERS",
    "FIRST_CHAR_RESOLVERS",
    "SourceValues",
    "read_source_events",
]

ANY_CHAR_RESOLVERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    yaml.CSafeLoader.yaml_implicit_resolvers.get(None, [])
)
"""PyYAML's implicit resolvers tried on a plain scalar whatever its first character."""
FIRST_CHAR_RESOLVERS: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    first: (*resolvers, *ANY_CHAR_RESOLVERS)
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
    if first is not None
}
"""The implicit resolvers tried on a plain scalar, by its first character (``""`` for an
empty one), as ``BaseResolver.resolve`` tries them: the first that matches gives the tag."""

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_DEPTH = re.compile(r"0|[1-9][0-9]{0,5}")
_TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TARGET_LISTS = ("groups", "profiles", "devices")
_RULE_REQUIRED = frozenset({"effect", "subjects", "actions", "resources"})
_MAX_TARGET_NAMES = 10_000


class _Declined(Exception):
    """The text is not one this reader takes: the checked reader decides it."""


@dataclass(frozen=True, slots=True)
class SourceValues:
    """The values of a policy source, each checked as ``source._Reader`` checks it.

    ``groups``, ``workloads`` and ``rules`` are what ``policy_payload`` takes; ``actions`` is
    the declared action vocabulary, ``None`` when the source declares none.
    """

    target: dict[str, object]
    ttl_seconds: int | None
    max_offline_seconds: int | None
    groups: dict[str, list[str]]
    workloads: dict[str, list[str]]
    actions: tuple[str, ...] | None
    rules: list[dict[str, object]]


def read_source_events(text: str, *, enforce_vocabulary: bool) -> SourceValues | None:
    """The checked values of the policy source ``text``, or ``None`` when this reader does
    not take it (then the checked reader refuses it, or reads it itself).

    ``text`` is within the source's size bound and holds no lone surrogate (the caller
    checks both first, as :func:`~edge_agent.policy.source.compose_yaml` does).
    """
    loader = yaml.CSafeLoader(text)
    try:
        return _Stream(iter(loader.get_event, None), enforce_vocabulary).source()
    except (_Declined, yaml.YAMLError, ValueError, StopIteration):
        return None
    finally:
        loader.dispose()


def _is_start(event: Event, kind: type[Event]) -> bool:
    return type(event) is kind and event.anchor is None and event.tag is None  # type: ignore[attr-defined]


def _text(event: Event) -> str:
    """The value of a scalar event that composes to a YAML string, else :class:`_Declined`."""
    if type(event) is not ScalarEvent or event.anchor is not None or event.tag is not None:
        raise _Declined
    value: str = event.value
    # Most texts start with a letter no resolver starts with: no pattern to try.
    if (
        event.implicit[0]
        and (value[:1] in FIRST_CHAR_RESOLVERS or ANY_CHAR_RESOLVERS)
        and _plain_tag(value) != _STR
    ):
        raise _Declined
    return value


def _plain_tag(value: str) -> str:
    """The tag of a plain scalar without a tag, as ``BaseResolver.resolve`` gives it."""
    for tag, pattern in FIRST_CHAR_RESOLVERS.get(value[:1], ANY_CHAR_RESOLVERS):
        if pattern.match(value):
            return tag
    return _STR


class _Stream:
    """Reads one policy source from its events; every method raises :class:`_Declined` (or
    lets a check's ``ValueError`` or a YAML error through) on anything it does not take."""

    def __init__(self, events: Iterator[Event], enforce_vocabulary: bool) -> None:
        self._events = events
        self._next = events.__next__
        self._enforce_vocabulary = enforce_vocabulary
        self._rule_ids: set[str] = set()
        self._groups_named: set[str] = set()
        self._actions_named: set[str] = set()
        self._target: dict[str, object] = {}
        self._ttl: int | None = None
        self._max_offline: int | None = None
        self._groups: dict[str, list[str]] = {}
        self._workloads: dict[str, list[str]] = {}
        self._vocabulary: tuple[str, ...] | None = None
        self._rules: list[dict[str, object]] = []
        self._passed: dict[Callable[[str], object], set[str]] = {}

    def source(self) -> SourceValues:
        """Steps: 1. the stream holds one document, a mapping; 2. read its keys, each once,
        each value checked as it comes; 3. the checks that need the whole source."""
        if (
            type(self._next()) is not StreamStartEvent
            or type(self._next()) is not DocumentStartEvent
        ):
            raise _Declined
        keys = self.fields(_TOP_READERS).keys()
        if type(self._next()) is not DocumentEndEvent or type(self._next()) is not StreamEndEvent:
            raise _Declined
        if "target" not in keys or "rules" not in keys:
            raise _Declined
        if not self._groups_named <= self._groups.keys():
            raise _Declined
        vocabulary = self._vocabulary
        enforced = vocabulary if self._enforce_vocabulary else None
        if enforced is not None and not self._actions_named <= {*enforced, checks.ANY}:
            raise _Declined
        return SourceValues(
            self._target,
            self._ttl,
            self._max_offline,
            self._groups,
            self._workloads,
            vocabulary,
            self._rules,
        )

    def top_target(self) -> None:
        self._target = self.target()

    def top_ttl(self) -> None:
        self._ttl = self.duration()

    def top_max_offline(self) -> None:
        self._max_offline = self.duration()

    def top_groups(self) -> None:
        self._groups = self.string_lists(checks.check_group_name, checks.check_group_member)

    def top_workloads(self) -> None:
        self._workloads = self.string_lists(checks.check_workload_id, checks.check_selector)

    def top_actions(self) -> None:
        self._vocabulary = tuple(self.strings(_check_vocabulary_action))

    def top_rules(self) -> None:
        self._rules = self.rules()

    def fields(self, readers: dict[str, Callable[[_Stream], object]]) -> dict[str, object]:
        """A mapping whose keys are all in ``readers``, each read by its reader, each once."""
        if not _is_start(self._next(), MappingStartEvent):
            raise _Declined
        fields: dict[str, object] = {}
        for event in self._events:
            if type(event) is MappingEndEvent:
                return fields
            key = _text(event)
            reader = readers.get(key)
            if reader is None or key in fields:
                raise _Declined
            fields[key] = reader(self)
        raise _Declined

    def text(self) -> str:
        return _text(self._next())

    def duration(self) -> int:
        return parse_duration(self.text())

    def strings(
        self, check: Callable[[str], object], limit: int = checks.MAX_RULE_ITEMS
    ) -> list[str]:
        """A non-empty list of at most ``limit`` distinct texts, each passing ``check``.

        Each distinct text is checked once per check: every check here is a function of the
        text alone (its one side effect, noting a group or an action named, is the same each
        time), and the lists of a policy repeat their texts from rule to rule.
        """
        if not _is_start(self._next(), SequenceStartEvent):
            raise _Declined
        # Keyed by the function, never by a method bound to this reader: that would make a
        # cycle, and the source's values would wait for the collector instead of being freed.
        check_function = getattr(check, "__func__", check)
        passed = self._passed.get(check_function)
        if passed is None:
            passed = self._passed[check_function] = set()
        values: list[str] = []
        for event in self._events:
            if type(event) is SequenceEndEvent:
                break
            value = _text(event)
            if value not in passed:
                check(value)
                passed.add(value)
            values.append(value)
        else:
            raise _Declined
        count = len(values)
        if count == 1 or (1 < count <= limit and len(set(values)) == count):
            return values
        raise _Declined

    def string_lists(
        self, check_key: Callable[[str], object], check_item: Callable[[str], object]
    ) -> dict[str, list[str]]:
        """A mapping of distinct texts, each passing ``check_key``, to lists of texts."""
        if not _is_start(self._next(), MappingStartEvent):
            raise _Declined
        result: dict[str, list[str]] = {}
        for event in self._events:
            if type(event) is MappingEndEvent:
                return result
            key = _text(event)
            if key in result:
                raise _Declined
            check_key(key)
            result[key] = self.strings(check_item)
        raise _Declined

    def target(self) -> dict[str, object]:
        fields = self.fields(_TARGET_READERS)
        if "region" not in fields:
            raise _Declined
        target: dict[str, object] = {"region": fields["region"]}
        for key in _TARGET_LISTS:
            target[key] = fields.get(key, [])
        return target

    def target_name(self) -> str:
        name = self.text()
        if not _TARGET_NAME.fullmatch(name):
            raise _Declined
        return name

    def target_names(self) -> list[str]:
        """A list, maybe empty, of distinct target names."""
        if not _is_start(self._next(), SequenceStartEvent):
            raise _Declined
        names: list[str] = []
        for event in self._events:
            if type(event) is SequenceEndEvent:
                if len(names) > _MAX_TARGET_NAMES or len(set(names)) < len(names):
                    raise _Declined
                return names
            name = _text(event)
            if not _TARGET_NAME.fullmatch(name):
                raise _Declined
            names.append(name)
        raise _Declined

    def rules(self) -> list[dict[str, object]]:
        """The rules, maybe none, at most ``MAX_RULES``."""
        if not _is_start(self._next(), SequenceStartEvent):
            raise _Declined
        rules: list[dict[str, object]] = []
        for event in self._events:
            if type(event) is SequenceEndEvent:
                if len(rules) > checks.MAX_RULES:
                    raise _Declined
                return rules
            if not _is_start(event, MappingStartEvent):
                raise _Declined
            rules.append(self.rule())
        raise _Declined

    def rule(self) -> dict[str, object]:
        """One rule, its mapping's start already read: the keys in the checked reader's
        order (``RULE_KEYS``), whatever their order in the text."""
        fields: dict[str, object] = {}
        for event in self._events:
            if type(event) is MappingEndEvent:
                break
            key = _text(event)
            reader = _RULE_READERS.get(key)
            if reader is None or key in fields:
                raise _Declined
            fields[key] = reader(self)
        else:
            raise _Declined
        rule_id = fields.get("id")
        if rule_id is None or rule_id in self._rule_ids:
            raise _Declined
        self._rule_ids.add(rule_id)  # type: ignore[arg-type]
        if not fields.keys() >= _RULE_REQUIRED:
            raise _Declined
        return {key: fields[key] for key in RULE_KEYS if key in fields}

    def rule_id(self) -> str:
        rule_id = self.text()
        checks.check_rule_id(rule_id)
        return rule_id

    def effect(self) -> str:
        effect = self.text()
        if effect not in checks.EFFECTS:
            raise _Declined
        return effect

    def subjects(self) -> list[str]:
        return self.strings(self.check_subject)

    def check_subject(self, subject: str) -> None:
        group = checks.check_subject(subject)
        if group is not None:
            self._groups_named.add(group)

    def actions(self) -> list[str]:
        return self.strings(self.check_action)

    def check_action(self, action: str) -> None:
        """An action as ``checks.check_action`` checks it, kept for the vocabulary check."""
        checks.check_action(action)
        self._actions_named.add(action)

    def resources(self) -> list[str]:
        return self.strings(checks.check_resource_pattern)

    def when(self) -> dict[str, object]:
        fields = self.fields(_WHEN_READERS)
        if not fields:
            raise _Declined
        return {key: fields[key] for key in WHEN_KEYS if key in fields}

    def context(self) -> dict[str, object]:
        if not _is_start(self._next(), MappingStartEvent):
            raise _Declined
        context: dict[str, object] = {}
        for event in self._events:
            if type(event) is MappingEndEvent:
                if not context or len(context) > checks.MAX_CONTEXT_KEYS:
                    raise _Declined
                return {key: context[key] for key in dcbor.sorted_keys(context)}
            key = _text(event)
            if key in context:
                raise _Declined
            context[key] = self.strings(checks.check_context_value, checks.MAX_CONTEXT_VALUES)
        raise _Declined

    def time_window(self) -> str:
        window = self.text()
        checks.parse_time_window(window)
        return window

    def parent(self) -> dict[str, object]:
        fields = self.fields(_PARENT_READERS)
        return {key: fields[key] for key in PARENT_KEYS if key in fields}

    def parent_actions(self) -> list[str]:
        return self.strings(self.check_action)

    def parent_resources(self) -> list[str]:
        return self.strings(checks.check_resource_pattern)

    def parent_subjects(self) -> list[str]:
        return self.strings(checks.check_group_member)

    def parent_devices(self) -> list[str]:
        return self.strings(checks.check_device_ref)

    def max_depth(self) -> int:
        event = self._next()
        if type(event) is not ScalarEvent or event.anchor is not None or event.tag is not None:
            raise _Declined
        value: str = event.value
        if not event.implicit[0] or _plain_tag(value) != _INT or not _DEPTH.fullmatch(value):
            raise _Declined
        return int(value)


def _check_vocabulary_action(text: str) -> None:
    """An entry of the declared action vocabulary: an exact action, never ``*``."""
    checks.check_action(text)
    if text == checks.ANY:
        raise ValueError("the actions vocabulary lists exact actions; '*' is not one")


_TOP_READERS: dict[str, Callable[[_Stream], object]] = {
    "target": _Stream.top_target,
    "ttl": _Stream.top_ttl,
    "max_offline": _Stream.top_max_offline,
    "groups": _Stream.top_groups,
    "workloads": _Stream.top_workloads,
    "actions": _Stream.top_actions,
    "rules": _Stream.top_rules,
}
_TARGET_READERS: dict[str, Callable[[_Stream], object]] = {
    "region": _Stream.target_name,
    "groups": _Stream.target_names,
    "profiles": _Stream.target_names,
    "devices": _Stream.target_names,
}
_RULE_READERS: dict[str, Callable[[_Stream], object]] = {
    "id": _Stream.rule_id,
    "effect": _Stream.effect,
    "subjects": _Stream.subjects,
    "actions": _Stream.actions,
    "resources": _Stream.resources,
    "when": _Stream.when,
}
_WHEN_READERS: dict[str, Callable[[_Stream], object]] = {
    "context": _Stream.context,
    "time_utc": _Stream.time_window,
    "parent": _Stream.parent,
}
_PARENT_READERS: dict[str, Callable[[_Stream], object]] = {
    "action": _Stream.parent_actions,
    "resource": _Stream.parent_resources,
    "subject": _Stream.parent_subjects,
    "devices": _Stream.parent_devices,
    "max_age": _Stream.duration,
    "max_depth": _Stream.max_depth,
}

"""Policy source: the YAML operators write (DESIGN.md section 8), checked line by line.

:func:`load_policy_source` turns YAML text into a :class:`PolicySource`: the bundle target,
TTL, max_offline, the declared action vocabulary, and the ``policy`` payload that goes into
the bundle. Every fault raises :class:`PolicyError` carrying the file, the 1-based line and,
inside a rule, the rule id. :func:`compose_yaml` is the safe YAML reader itself, for the
hub's other YAML inputs (policy tests) and for tools that need a source's line numbers.

The YAML is parsed by libyaml and composed into a node tree, never constructed into Python
objects, so no YAML feature can run code; anchors, aliases, explicit tags, duplicate keys,
deep nesting and inputs over ``MAX_POLICY_SOURCE_BYTES`` are refused. A text that cannot hold
an anchor or a tag is composed by libyaml's own composer, in C; every other text, and every
text that composer does not accept, by the checked Python composer, which alone words the
errors (see ``_compose``). A policy source is read first by the quick reader
(:mod:`edge_agent.policy._source_events`: libyaml's events checked into values as they
come, no node tree); whatever it declines is read by the node-tree reader here, which alone
words every error, so both take the same texts and refuse them with the same messages.
Scalars where text is expected must be YAML strings: ``yes``,
``1`` or ``06:00`` unquoted are refused (quote them) rather than silently read as booleans
or numbers.

This module and its quick reader are the only modules of the package that import PyYAML (a
hub-side dependency). It does not sign or encode; the hub does that with the payload.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import yaml
from yaml.composer import Composer

from edge_agent.errors import PolicyError
from edge_agent.policy import _checks as checks
from edge_agent.policy._source_events import (
    ANY_CHAR_RESOLVERS,
    FIRST_CHAR_RESOLVERS,
    SourceValues,
    read_source_events,
)
from edge_agent.policy.compiler import (
    PARENT_KEYS,
    RULE_KEYS,
    WHEN_KEYS,
    compile_policy,
    policy_payload,
)
from edge_agent.policy.durations import MAX_DURATION_SECONDS, parse_duration
from edge_agent.protocol import dcbor
from edge_agent.protocol.allocation import paused_gc

__all__ = [
    "MAX_DURATION_SECONDS",
    "MAX_POLICY_SOURCE_BYTES",
    "MAX_YAML_DEPTH",
    "PolicySource",
    "compose_yaml",
    "load_policy_source",
    "parse_duration",
]

MAX_POLICY_SOURCE_BYTES = 8 * 1024 * 1024
"""Largest policy source read, in UTF-8 bytes (a 10,000-rule source is about 2 MiB)."""
MAX_YAML_DEPTH = 16
"""Deepest YAML nesting read; the format itself needs 6 levels."""

_T = TypeVar("_T")
_STR = "tag:yaml.org,2002:str"
_SURROGATE = re.compile("[\ud800-\udfff]")
_TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOP_KEYS = ("target", "ttl", "max_offline", "groups", "workloads", "actions", "rules")
_TARGET_KEYS = ("region", "groups", "profiles", "devices")
_RULE_KEYS = ("id", "effect", "subjects", "actions", "resources", "when")
_WHEN_KEYS = ("context", "time_utc", "parent")
_PARENT_KEYS = ("action", "resource", "subject", "devices", "max_age", "max_depth")
_INT = "tag:yaml.org,2002:int"
_DEPTH = re.compile(r"0|[1-9][0-9]{0,5}")


@dataclass(frozen=True, slots=True)
class PolicySource:
    """A checked policy source.

    ``target`` is ``{"region": str, "groups": [str], "profiles": [str], "devices": [str]}``
    (lists always present, maybe empty); ``policy`` is the bundle payload described in
    :mod:`edge_agent.policy.compiler`, deterministic-CBOR-encodable. ``actions`` is the
    action vocabulary the source declares (``None`` when it declares none): it is for the
    hub's policy lint only and never reaches the bundle, so devices decide the same with it.
    """

    target: dict[str, object]
    ttl_seconds: int | None
    max_offline_seconds: int | None
    policy: dict[str, object]
    actions: tuple[str, ...] | None = None


def load_policy_source(
    text: str, path: str = "<policy>", *, enforce_vocabulary: bool = True, compiles: bool = True
) -> PolicySource:
    """Read and check a YAML policy source.

    A source that declares its action vocabulary (``actions:``) may use no other action:
    a rule or parent condition naming one is refused with its line and the nearest declared
    action, so a typo such as ``exce`` never builds. ``enforce_vocabulary=False`` is for
    the policy lint, which reports every such action as a finding instead of stopping at
    the first.

    ``compiles=False`` leaves step 4's compile to a caller that compiles the payload anyway
    and, when that compile refuses it, reads the source again with ``compiles=True`` for the
    line-numbered error (``edge-hub bundle build``: the verification of the signed bytes
    compiles them as a device does).

    Steps: 1. bound the size; 2. read it with the quick reader, which checks libyaml's
    events as they come and declines, without a word, anything it does not take; 3. only
    then (a refusal, or a shape it does not take) compose the YAML node tree, refusing
    anchors, aliases, tags and deep nesting, and check every key and value with its line;
    4. build the payload and compile it, so what the hub signs is exactly what a device
    accepts (a compile refusing the quick reader's payload sends the text to step 3 for the
    line). Steps 2-4 run with the cyclic garbage collector paused: they make hundreds of
    thousands of small objects that all stay alive until the end, which collections would
    scan again and again.

    Raises:
        PolicyError: with ``path``, ``line`` (1-based) and, inside a rule, ``rule``.
    """
    with paused_gc():
        _check_bounds(text, path, "policy source")
        values = read_source_events(text, enforce_vocabulary=enforce_vocabulary)
        source = None if values is None else _quick_source(values, compiles)
        if source is None:
            root = compose_yaml(text, path, what="policy source")
            source = _Reader(path, enforce_vocabulary, compiles).source(root)
            # The node tree is garbage now: free it before the collector resumes, or the
            # collector's first pass scans every node of it.
            del root
    return source


def _quick_source(values: SourceValues, compiles: bool) -> PolicySource | None:
    """The source of the quick reader's ``values``; ``None`` when its policy does not
    compile (``compiles``), so the checked reader words the error with its line."""
    payload = policy_payload(values.groups, values.workloads, values.rules)
    if compiles:
        try:
            compile_policy(payload)
        except PolicyError:
            return None
    return PolicySource(
        values.target, values.ttl_seconds, values.max_offline_seconds, payload, values.actions
    )


def compose_yaml(text: str, path: str, *, what: str = "YAML file") -> yaml.Node:
    """Compose ``text`` into a YAML node tree, never into Python objects: the reader of
    every YAML input the hub takes from operators.

    At most ``MAX_POLICY_SOURCE_BYTES``; anchors, aliases, explicit tags, nesting deeper
    than ``MAX_YAML_DEPTH``, several documents, control characters and lone surrogates are
    refused; an empty text is refused too.

    Raises:
        PolicyError: with ``path`` and, when known, the 1-based ``line``.
    """
    _check_bounds(text, path, what)
    return _compose(text, path, what)


def _check_bounds(text: str, path: str, what: str) -> None:
    """Refuse a text over ``MAX_POLICY_SOURCE_BYTES`` or holding a lone surrogate."""
    # An ASCII text (known without a pass over it) is one byte per character, no surrogate.
    ascii_only = text.isascii()
    size = len(text) if ascii_only else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_POLICY_SOURCE_BYTES:
        raise PolicyError(
            f"{what} is {size} bytes, over the {MAX_POLICY_SOURCE_BYTES}-byte limit",
            path=path,
        )
    surrogate = None if ascii_only else _SURROGATE.search(text)
    if surrogate is not None:
        raise PolicyError(
            "not valid YAML: a lone UTF-16 surrogate is not text (is the file UTF-8?)",
            path=path,
            line=text.count("\n", 0, surrogate.start()) + 1,
        )


class _Refused(Exception):
    def __init__(self, message: str, mark: object) -> None:
        super().__init__(message)
        self.mark = mark


class _TooDeep(Exception):
    """The C composer reached a node deeper than ``MAX_YAML_DEPTH``."""


class _CLoader(yaml.CSafeLoader):
    """libyaml's own composer (C, ``CSafeLoader.get_single_node``), bounded in depth.

    The C composer calls ``descend_resolver`` before it composes a node's children and
    ``ascend_resolver`` after, so counting there stops it at ``MAX_YAML_DEPTH`` before its
    recursion can go deeper. It cannot refuse anchors or tags (it composes them silently),
    so it is only given texts that cannot hold one (see :func:`_compose`).
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def descend_resolver(self, current_node: object, current_index: object) -> None:
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _TooDeep

    def ascend_resolver(self) -> None:
        self._depth -= 1

    def resolve(
        self, kind: type[yaml.Node], value: str | None, implicit: tuple[bool, bool] | bool
    ) -> str:
        """PyYAML's ``BaseResolver.resolve`` for a loader without path resolvers, from
        tables built once: it runs for every node, and PyYAML's own builds a list each time."""
        if kind is yaml.ScalarNode and isinstance(implicit, tuple) and implicit[0]:
            text = value or ""
            for tag, pattern in FIRST_CHAR_RESOLVERS.get(text[:1], ANY_CHAR_RESOLVERS):
                if pattern.match(text):
                    return tag
        return _DEFAULT_TAGS[kind]


_ANY_CHAR_RESOLVERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    yaml.CSafeLoader.yaml_implicit_resolvers.get(None, [])
)
_FIRST_CHAR_RESOLVERS: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    first: (*resolvers, *_ANY_CHAR_RESOLVERS)
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
    if first is not None
}
_DEFAULT_TAGS: dict[type[yaml.Node], str] = {
    yaml.ScalarNode: yaml.CSafeLoader.DEFAULT_SCALAR_TAG,
    yaml.SequenceNode: yaml.CSafeLoader.DEFAULT_SEQUENCE_TAG,
    yaml.MappingNode: yaml.CSafeLoader.DEFAULT_MAPPING_TAG,
}


class _Loader(Composer, yaml.CSafeLoader):
    """A composer that refuses YAML features a policy never needs and an attacker could use:
    aliases (billion-laughs), anchors, explicit tags and unbounded nesting.

    libyaml (``CSafeLoader``'s parser) scans and parses; composition is in Python (PyYAML's
    ``Composer``, first in the method order), so every event passes the checks below before
    any node is built, and nesting is bounded before it can recurse. Nothing is ever
    constructed into Python objects. The reference the C path (``_CLoader``) is tested
    against, and the only path that words an error.
    """

    def __init__(self, text: str) -> None:
        yaml.CSafeLoader.__init__(self, text)
        Composer.__init__(self)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        mark = getattr(event, "start_mark", None)
        if isinstance(event, yaml.AliasEvent):
            raise _Refused("YAML aliases (*name) are not allowed", mark)
        if getattr(event, "anchor", None) is not None:
            raise _Refused("YAML anchors (&name) are not allowed", mark)
        if getattr(event, "tag", None) is not None:
            raise _Refused("explicit YAML tags (!tag) are not allowed", mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(f"YAML nests deeper than {MAX_YAML_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str, path: str, what: str) -> yaml.Node:
    """The node tree of ``text``: composed in C when the text allows it, else (and for
    every error) by :class:`_Loader`, which alone decides what is refused and how.

    A text without ``&`` and ``!`` holds no anchor and no tag (libyaml scans them only from
    those indicators), so no alias in it can resolve either: libyaml's composer raises on
    it. For such a text the C composer accepts exactly what :class:`_Loader` accepts and
    builds the same tree with the same marks (pinned by differential tests); whenever it
    does not accept, the text is composed again by :class:`_Loader` for its error.
    """
    if "&" not in text and "!" not in text:
        node = _compose_in_c(text)
        if node is not None:
            return node
    return _compose_checked(text, path, what)


def _compose_in_c(text: str) -> yaml.Node | None:
    """The C composer's tree of ``text``, or ``None`` when it fails for any reason."""
    loader = _CLoader(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
    except (yaml.YAMLError, _TooDeep):
        return None
    finally:
        loader.dispose()
    return node


def _compose_checked(text: str, path: str, what: str) -> yaml.Node:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except _Refused as exc:
        raise PolicyError(str(exc), path=path, line=_line(exc.mark)) from exc
    except yaml.reader.ReaderError as exc:
        # libyaml reports the offset in the UTF-8 bytes it parsed, not in characters.
        at = text.encode("utf-8")[: exc.position].count(b"\n") + 1
        problem = f"character #x{exc.character:04x} is not allowed ({exc.reason})"
        raise PolicyError(f"not valid YAML: {problem}", path=path, line=at) from exc
    except yaml.YAMLError as exc:
        line = _line(getattr(exc, "problem_mark", None))
        if line is not None:
            # libyaml places a problem found at the end of the text past its last line.
            line = min(line, text.count("\n") + 1)
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"not valid YAML: {problem}", path=path, line=line) from exc
    finally:
        loader.dispose()
    if node is None:
        raise PolicyError(f"{what} is empty", path=path, line=1)
    return node


def _line(mark: object) -> int | None:
    line = getattr(mark, "line", None)
    return line + 1 if isinstance(line, int) else None


class _Reader:
    """Walks the node tree; every error names the node's line and the current rule."""

    def __init__(self, path: str, enforce_vocabulary: bool = True, compiles: bool = True) -> None:
        self._path = path
        self._compiles = compiles
        self._rule: str | None = None
        self._enforce_vocabulary = enforce_vocabulary
        self._vocabulary: frozenset[str] | None = None

    def fail(self, node: yaml.Node, message: str) -> NoReturn:
        raise PolicyError(message, path=self._path, line=_line(node.start_mark), rule=self._rule)

    def source(self, root: yaml.Node) -> PolicySource:
        top = self.mapping(root, "the policy source", _TOP_KEYS, ("target", "rules"))
        target = self.target(top["target"])
        ttl = self.duration(top["ttl"], "ttl") if "ttl" in top else None
        max_offline = (
            self.duration(top["max_offline"], "max_offline") if "max_offline" in top else None
        )
        groups = self.string_lists(
            top.get("groups"), "groups", checks.check_group_name, checks.check_group_member
        )
        workloads = self.string_lists(
            top.get("workloads"), "workloads", checks.check_workload_id, checks.check_selector
        )
        actions = (
            tuple(self.strings(top["actions"], "actions", _check_vocabulary_action))
            if "actions" in top
            else None
        )
        if actions is not None and self._enforce_vocabulary:
            self._vocabulary = frozenset(actions)
        rules_node = top["rules"]
        rule_nodes = self.sequence(rules_node, "rules", checks.MAX_RULES, allow_empty=True)
        rules: list[dict[str, object]] = []
        rule_lines: dict[str, yaml.Node] = {}
        for number, rule_node in enumerate(rule_nodes, start=1):
            rule = self.rule(rule_node, number, groups, rule_lines)
            rules.append(rule)
        self._rule = None
        payload = policy_payload(groups, workloads, rules)
        if not self._compiles:
            return PolicySource(target, ttl, max_offline, payload, actions)
        try:
            compile_policy(payload)
        except PolicyError as exc:
            where = rule_lines.get(exc.rule or "", rules_node)
            error = PolicyError(exc.message, path=self._path, line=_line(where.start_mark))
            error.rule = exc.rule
            raise error from exc
        return PolicySource(target, ttl, max_offline, payload, actions)

    def target(self, node: yaml.Node) -> dict[str, object]:
        fields = self.mapping(node, "target", _TARGET_KEYS, ("region",))
        region = self.string(fields["region"], "target.region")
        self.check_target_name(fields["region"], region, "region")
        target: dict[str, object] = {"region": region}
        for key in _TARGET_KEYS[1:]:
            names: list[str] = []
            if key in fields:
                for item in self.sequence(fields[key], f"target.{key}", 10_000, allow_empty=True):
                    name = self.string(item, f"target.{key} entry")
                    self.check_target_name(item, name, key[:-1])
                    names.append(name)
                self.unique(fields[key], names, f"target.{key}")
            target[key] = names
        return target

    def check_target_name(self, node: yaml.Node, name: str, what: str) -> None:
        if not _TARGET_NAME.fullmatch(name):
            self.fail(
                node,
                f"{what} {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
            )

    def duration(self, node: yaml.Node, what: str) -> int:
        return self.checked(node, parse_duration, self.string(node, what))

    def rule(
        self,
        node: yaml.Node,
        number: int,
        groups: dict[str, list[str]],
        rule_lines: dict[str, yaml.Node],
    ) -> dict[str, object]:
        self._rule = None
        what = f"rule #{number}"
        id_node = self.peek_id(node)
        if id_node is not None:
            rule_id = self.string(id_node, f"{what} id")
            self.checked(id_node, checks.check_rule_id, rule_id)
            self._rule = rule_id
            if rule_id in rule_lines:
                first = _line(rule_lines[rule_id].start_mark)
                self.fail(id_node, f"duplicate rule id (first defined on line {first})")
            rule_lines[rule_id] = node
        fields = self.mapping(node, what, _RULE_KEYS, ("id",))
        rule_id = self.string(fields["id"], f"{what} id")
        for key in ("effect", "subjects", "actions", "resources"):
            if key not in fields:
                self.fail(node, f"missing {key!r}")
        effect = self.string(fields["effect"], "effect")
        if effect not in checks.EFFECTS:
            self.fail(fields["effect"], f"effect {effect!r} must be 'allow' or 'deny'")
        rule: dict[str, object] = {"id": rule_id, "effect": effect}
        rule["subjects"] = self.strings(fields["subjects"], "subjects", self.subject_check(groups))
        rule["actions"] = self.strings(fields["actions"], "actions", self.check_declared_action)
        rule["resources"] = self.strings(
            fields["resources"], "resources", checks.check_resource_pattern
        )
        if "when" in fields:
            rule["when"] = self.when(fields["when"])
        return _in_order(rule, RULE_KEYS)

    def check_declared_action(self, action: str) -> None:
        """An action as :func:`checks.check_action` checks it, and one of the declared
        vocabulary when the source declares one (``*`` stays any action)."""
        checks.check_action(action)
        vocabulary = self._vocabulary
        if vocabulary is None or action == checks.ANY or action in vocabulary:
            return
        import difflib  # for this refusal only: no build that reads its source pays for it

        nearest = difflib.get_close_matches(action, sorted(vocabulary), n=1)
        hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
        raise ValueError(
            f"action {action!r} is not in the policy's 'actions' vocabulary{hint} (add it "
            "there if it is meant)"
        )

    @staticmethod
    def peek_id(node: yaml.Node) -> yaml.Node | None:
        """The node of a rule's ``id``, found first so later errors can name the rule."""
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == "id":
                    return value_node  # type: ignore[no-any-return]
        return None

    def subject_check(self, groups: dict[str, list[str]]) -> Callable[[str], None]:
        def check(subject: str) -> None:
            group = checks.check_subject(subject)
            if group is not None and group not in groups:
                raise ValueError(f"subject {subject!r} names a group not defined under 'groups'")

        return check

    def when(self, node: yaml.Node) -> dict[str, object]:
        fields = self.mapping(node, "when", _WHEN_KEYS, ())
        if not fields:
            self.fail(node, "'when' is empty; omit it for an unconditional rule")
        when: dict[str, object] = {}
        if "context" in fields:
            context_node = fields["context"]
            context_fields = self.mapping(context_node, "when.context", None, ())
            if not context_fields:
                self.fail(context_node, "'when.context' is empty")
            if len(context_fields) > checks.MAX_CONTEXT_KEYS:
                self.fail(context_node, f"'when.context' tests over {checks.MAX_CONTEXT_KEYS} keys")
            context: dict[str, object] = {}
            for key, values_node in context_fields.items():
                context[key] = self.strings(
                    values_node,
                    f"when.context.{key}",
                    checks.check_context_value,
                    checks.MAX_CONTEXT_VALUES,
                )
            when["context"] = _in_order(context, dcbor.sorted_keys(context))
        if "time_utc" in fields:
            window = self.string(fields["time_utc"], "when.time_utc")
            self.checked(fields["time_utc"], checks.parse_time_window, window)
            when["time_utc"] = window
        if "parent" in fields:
            when["parent"] = self.parent(fields["parent"])
        return _in_order(when, WHEN_KEYS)

    def parent(self, node: yaml.Node) -> dict[str, object]:
        """``when.parent``: lists as the rule's own, ``max_age`` a duration such as ``30s``
        (the payload holds seconds), ``max_depth`` a whole number."""
        fields = self.mapping(node, "when.parent", _PARENT_KEYS, ())
        parent: dict[str, object] = {}
        checks_of: dict[str, Callable[[str], object]] = {
            "action": self.check_declared_action,
            "resource": checks.check_resource_pattern,
            "subject": checks.check_group_member,
            "devices": checks.check_device_ref,
        }
        for key, check in checks_of.items():
            if key in fields:
                parent[key] = self.strings(fields[key], f"when.parent.{key}", check)
        if "max_age" in fields:
            text = self.string(fields["max_age"], "when.parent.max_age")
            parent["max_age"] = self.checked(fields["max_age"], parse_duration, text)
        if "max_depth" in fields:
            depth = fields["max_depth"]
            if (
                not isinstance(depth, yaml.ScalarNode)
                or depth.tag != _INT
                or not _DEPTH.fullmatch(depth.value)
            ):
                self.fail(
                    depth,
                    "when.parent.max_depth must be a whole number such as 3, without a leading "
                    "zero (YAML 1.1 tools read 010 as octal 8)",
                )
            parent["max_depth"] = int(depth.value)
        return _in_order(parent, PARENT_KEYS)

    def string_lists(
        self,
        node: yaml.Node | None,
        what: str,
        check_key: Callable[[str], None],
        check_item: Callable[[str], None],
    ) -> dict[str, list[str]]:
        if node is None:
            return {}
        self.mapping(node, what, None, ())
        result: dict[str, list[str]] = {}
        for key_node, value_node in node.value:
            key = self.string(key_node, f"a key of {what}")
            self.checked(key_node, check_key, key)
            result[key] = self.strings(value_node, f"{what}.{key}", check_item)
        return result

    def mapping(
        self,
        node: yaml.Node,
        what: str,
        allowed: tuple[str, ...] | None,
        required: tuple[str, ...],
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping")
        fields: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = _text(key_node) or self.string(key_node, f"a key of {what}")
            if key in fields:
                self.fail(key_node, f"duplicate key {key!r} in {what}")
            if allowed is not None and key not in allowed:
                self.fail(
                    key_node,
                    f"unknown key {key!r} in {what} (expected one of {', '.join(allowed)})",
                )
            fields[key] = value_node
        for key in required:
            if key not in fields:
                self.fail(node, f"{what} is missing {key!r}")
        return fields

    def sequence(
        self, node: yaml.Node, what: str, limit: int, *, allow_empty: bool
    ) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"{what} must be a list")
        items: list[yaml.Node] = node.value
        if not items and not allow_empty:
            self.fail(node, f"{what} must not be empty")
        if len(items) > limit:
            self.fail(node, f"{what} has {len(items)} entries, over the limit of {limit}")
        return items

    def strings(
        self,
        node: yaml.Node,
        what: str,
        check: Callable[[str], object],
        limit: int = checks.MAX_RULE_ITEMS,
    ) -> list[str]:
        values: list[str] = []
        for item in self.sequence(node, what, limit, allow_empty=False):
            value = _text(item) or self.string(item, f"{what} entry")
            self.checked(item, check, value)
            values.append(value)
        if len(set(values)) < len(values):
            self.unique(node, values, what)
        return values

    def unique(self, node: yaml.Node, values: list[str], what: str) -> None:
        seen: set[str] = set()
        for item, value in zip(node.value, values, strict=True):
            if value in seen:
                self.fail(item, f"{what} lists {value!r} twice")
            seen.add(value)

    def string(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
            kind = "a YAML " + _kind(node)
            self.fail(node, f"{what} must be text, not {kind} (quote it)")
        value: str = node.value
        return value

    def checked(self, node: yaml.Node, check: Callable[[str], _T], value: str) -> _T:
        try:
            return check(value)
        except ValueError as exc:
            self.fail(node, str(exc))


def _check_vocabulary_action(text: str) -> None:
    """Check one entry of the declared action vocabulary: an exact action, never ``*``."""
    checks.check_action(text)
    if text == checks.ANY:
        raise ValueError("the actions vocabulary lists exact actions; '*' is not one")


def _text(node: yaml.Node) -> str | None:
    """A text scalar's value, else ``None``: the quick test before ``_Reader.string`` words
    the error (what a policy holds is mostly text, and most of it is read in lists)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
        value: str = node.value
        return value
    return None


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    tag = str(node.tag).rsplit(":", 1)[-1]
    return {"null": "null", "bool": "boolean", "int": "number", "float": "number"}.get(tag, tag)


def _in_order(fields: dict[str, object], order: Sequence[str]) -> dict[str, object]:
    """``fields`` rebuilt with its keys in ``order`` (its deterministic CBOR order), as the
    quick reader builds them: the checks ran in the reader's own order, which words the
    first error."""
    return {key: fields[key] for key in order if key in fields}

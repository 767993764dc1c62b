"""Policy payload: build it from checked source values, and compile a decoded one for decisions.

The payload is the ``policy`` member of a signed bundle, deterministic-CBOR-encodable (maps
with text keys, lists, text, integers; no floats)::

    {"format": 1,
     "groups":    {NAME: [MEMBER, ...]},
     "workloads": {WORKLOAD_ID: [SELECTOR, ...]},
     "rules": [{"id": ID, "effect": "allow" | "deny",
                "subjects": [...], "actions": [...], "resources": [...],
                "when": {"context": {KEY: [VALUE, ...]}, "time_utc": "HH:MM-HH:MM",
                         "parent": {"action": [...], "resource": [PATTERN, ...],
                                    "subject": [...], "devices": [ID | "group:NAME", ...],
                                    "max_age": SECONDS, "max_depth": N}}}]}

``when`` and each of its three members are optional (``when`` is never empty), and so is
each member of ``parent`` (``max_age`` defaults to 60 s). A rule's
position in ``rules`` is its precedence: the lowest-index matching deny decides, else the
lowest-index matching allow.

:func:`compile_policy` treats its input as hostile (``_payload`` checks every value and
raises :class:`PolicyError`, never another exception), then builds the indexes
:func:`edge_agent.policy.engine.evaluate` uses: action -> principal -> ``ResourceIndex``. A
``group:`` subject is filed once under its group, and a request whose identity is a member
looks the group up (``CompiledPolicy.acting``), so a large group costs the index one entry
per rule, not one per member.

This module does not read YAML (see ``source``) and does not decide (see ``engine``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edge_agent.errors import PolicyError
from edge_agent.policy import _checks as checks
from edge_agent.policy._index import FiledPattern, ResourceIndex, build_index
from edge_agent.policy._match import NO_MATCH, Match
from edge_agent.policy._payload import (
    CheckedRule,
    Condition,
    RuleReader,
    read_list,
    read_map,
    read_string_lists,
)
from edge_agent.protocol import dcbor
from edge_agent.protocol.allocation import paused_gc

__all__ = [
    "PARENT_KEYS",
    "RULE_KEYS",
    "WHEN_KEYS",
    "CompiledPolicy",
    "Condition",
    "RuleSummary",
    "compile_policy",
    "policy_payload",
]

_PAYLOAD_KEYS = frozenset({"format", "groups", "workloads", "rules"})

RULE_KEYS = ("id", "when", "effect", "actions", "subjects", "resources")
"""A rule's keys in deterministic CBOR order, the order the readers build a rule in."""
WHEN_KEYS = ("parent", "context", "time_utc")
"""``when``'s keys in deterministic CBOR order."""
PARENT_KEYS = ("action", "devices", "max_age", "subject", "resource", "max_depth")
"""``when.parent``'s keys in deterministic CBOR order."""

_Entry = tuple[int, tuple[str, ...], tuple[str, ...], tuple[FiledPattern, ...]]
"""What ``build_index`` files: (code, principals, actions with ``*`` expanded, patterns)."""


@dataclass(frozen=True, slots=True)
class RuleSummary:
    """One rule as ``bundle inspect`` shows it."""

    id: str
    effect: str


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicy:
    """A validated policy with its lookup indexes; immutable and safe to share.

    ``rule_ids`` and ``rule_effects`` list every rule in precedence order. The other fields
    are the engine's indexes: ``index[action][principal]`` (``*`` keys for any action and for
    anyone; a ``group:NAME`` subject is one principal) holding rule codes (see ``_index``: a
    deny's code is its index, an allow's code is the rule count plus its index);
    ``acting[identity]`` (for each identity a group or workload names: every principal it
    acts as, ``*`` last); ``prefix_lengths`` (the literal prefix segment counts, one or more,
    of the policy's wildcard patterns, ascending); ``conditions`` and ``verdicts`` (the
    :class:`Match` a rule returns when it decides) by rule code.
    """

    rule_ids: tuple[str, ...]
    rule_effects: tuple[str, ...]
    index: Mapping[str, Mapping[str, ResourceIndex]] = field(repr=False)
    acting: Mapping[str, tuple[str, ...]] = field(repr=False)
    prefix_lengths: tuple[int, ...] = field(repr=False)
    conditions: tuple[Condition | None, ...] = field(repr=False)
    verdicts: tuple[Match, ...] = field(repr=False)
    parent_rules: bool = field(default=False, repr=False)
    """Whether some rule has a parent condition (so a no-match deny may name it)."""

    @property
    def rules(self) -> tuple[RuleSummary, ...]:
        """Every rule in precedence order, as ``bundle inspect`` lists them."""
        return tuple(map(RuleSummary, self.rule_ids, self.rule_effects))

    @property
    def rule_count(self) -> int:
        """Number of rules."""
        return len(self.rule_ids)


def policy_payload(
    groups: Mapping[str, Sequence[str]],
    workloads: Mapping[str, Sequence[str]],
    rules: Sequence[Mapping[str, object]],
) -> dict[str, object]:
    """Assemble the bundle payload from source values the loader has already type-checked.

    Mapping order does not change the payload (deterministic CBOR orders keys), but a map
    whose keys already stand in that order is encoded without a sort: the payload's own maps
    are built so, and the readers build every rule in that order (``RULE_KEYS``,
    ``WHEN_KEYS``, ``PARENT_KEYS``, a context's keys sorted). Rule order is kept because it is
    precedence. Run :func:`compile_policy` on the result to check it fully.
    """
    return {
        "rules": [dict(rule) for rule in rules],
        "format": checks.PAYLOAD_FORMAT,
        "groups": {name: list(groups[name]) for name in dcbor.sorted_keys(groups)},
        "workloads": {wid: list(workloads[wid]) for wid in dcbor.sorted_keys(workloads)},
    }


def compile_policy(payload: object) -> CompiledPolicy:
    """Validate a decoded policy payload and build its decision indexes.

    Steps: 1. check the top-level shape and format; 2. check groups and workloads; 3. check
    every rule (ids unique, known groups); 4. bound the index size (``MAX_INDEX_ENTRIES``,
    counted with groups expanded); 5. index every (action, principal, resource pattern) of
    every rule, in one pass. The cyclic garbage collector is paused meanwhile (compiling
    allocates many small acyclic objects; collections would only scan them again).

    Raises:
        PolicyError: anything about the payload is invalid; ``rule`` names the rule at fault.
    """
    with paused_gc():
        return _compile(payload)


def _compile(payload: object) -> CompiledPolicy:
    top = read_map(payload, "policy payload", _PAYLOAD_KEYS, _PAYLOAD_KEYS)
    version = top["format"]
    if type(version) is not int or version != checks.PAYLOAD_FORMAT:
        raise PolicyError(
            f"policy payload format {version!r} is not supported "
            f"(this agent reads format {checks.PAYLOAD_FORMAT})"
        )
    groups = read_string_lists(
        top["groups"],
        "groups",
        checks.MAX_GROUPS,
        checks.MAX_GROUP_MEMBERS,
        checks.check_group_name,
        checks.check_group_member,
    )
    workloads = read_string_lists(
        top["workloads"],
        "workloads",
        checks.MAX_WORKLOADS,
        checks.MAX_SELECTORS_PER_WORKLOAD,
        checks.check_workload_id,
        checks.check_selector,
    )
    raw_rules = read_list(top["rules"], "rules", checks.MAX_RULES)
    reader = RuleReader(groups)
    rules = [reader.rule(position, raw) for position, raw in enumerate(raw_rules)]
    named = tuple(sorted(reader.named_actions))
    return _compiled(rules, named, _acting(groups, workloads), reader.prefix_lengths)


def _compiled(
    rules: list[CheckedRule],
    named: tuple[str, ...],
    acting: dict[str, tuple[str, ...]],
    prefix_lengths: tuple[int, ...],
) -> CompiledPolicy:
    """Number the rules by code, bound the index size, and index them.

    Deny codes come first, each effect in rule order, so ``build_index`` receives them in
    ascending code order. A rule with action ``*`` is filed under ``*`` and under every
    action some rule names, so a decision looks up one action.

    Raises:
        PolicyError: the policy expands to more than ``MAX_INDEX_ENTRIES`` entries.
    """
    count = len(rules)
    rule_ids: list[str] = []
    rule_effects: list[str] = []
    conditions: list[Condition | None] = [None] * (2 * count)
    verdicts: list[Match] = [NO_MATCH] * (2 * count)
    denies: list[_Entry] = []
    allows: list[_Entry] = []
    everything = (*named, checks.ANY)
    size = 0
    for position, rule_id, deny, subjects, reach, actions, patterns, condition in rules:
        targets = everything if checks.ANY in actions else actions
        size += reach * len(targets) * len(patterns)
        if size > checks.MAX_INDEX_ENTRIES:
            raise PolicyError(
                f"policy expands to more than {checks.MAX_INDEX_ENTRIES} "
                "(subject, action, resource) entries; split large groups or '*' actions",
                rule=rule_id,
            )
        rule_ids.append(rule_id)
        if deny:
            code = position
            rule_effects.append("deny")
            verdicts[code] = Match(False, "policy_denied", rule_id)
            denies.append((code, subjects, targets, patterns))
        else:
            code = count + position
            rule_effects.append("allow")
            verdicts[code] = Match(True, "allowed", rule_id)
            allows.append((code, subjects, targets, patterns))
        conditions[code] = condition
    return CompiledPolicy(
        rule_ids=tuple(rule_ids),
        rule_effects=tuple(rule_effects),
        index=build_index(itertools.chain(denies, allows)),
        acting=acting,
        prefix_lengths=prefix_lengths,
        conditions=tuple(conditions),
        verdicts=tuple(verdicts),
        parent_rules=any(c is not None and c.parent is not None for c in conditions),
    )


def _acting(
    groups: Mapping[str, tuple[str, ...]], workloads: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """For each identity a group or workload names: the identity, the workloads it acts as,
    the groups (as ``group:NAME``) it or those workloads belong to, and ``*``, in a fixed
    order."""
    workloads_of: dict[str, set[str]] = {}
    for workload, selectors in workloads.items():
        for selector in selectors:
            workloads_of.setdefault(selector, set()).add(workload)
    groups_of: dict[str, set[str]] = {}
    for name, members in groups.items():
        for member in members:
            groups_of.setdefault(member, set()).add(checks.GROUP_PREFIX + name)
    acting: dict[str, tuple[str, ...]] = {}
    for identity in sorted({*workloads_of, *groups_of}):
        via = sorted(workloads_of.get(identity, ()))
        principals = dict.fromkeys((identity, *via))
        for member in (identity, *via):
            principals.update(dict.fromkeys(sorted(groups_of.get(member, ()))))
        acting[identity] = (*principals, checks.ANY)
    return acting

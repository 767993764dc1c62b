"""Shadow evaluation on the hub: shipped decisions re-decided under a candidate bundle.

``edge-hub bundle diff`` (docs/rollout.md) streams every shipped decision of the devices a
candidate targets through :func:`diff_decisions`, which re-decides each one with the device's
own pure engine (:func:`edge_agent.policy.engine.evaluate`) at the decision's own time, and
compares the outcome with the baseline: the decision as recorded, or what another bundle's
policy decides (``--against-version``). Steps per entry:

1. read the entry (:class:`_EntryReader`): decision entries only, within the window;
2. a decision the device's gate denied before the policy was consulted (any reason but
   :data:`POLICY_REASONS`: no bundle, expired, revoked, attestation, clock, lineage,
   internal error) depended on device state no bundle holds: it is counted by reason and
   not re-decided;
3. the baseline outcome and the candidate's outcome, each a :class:`Match`;
4. classify: a **flip** (the verdict changes), the same verdict with **another reason**
   (``policy_denied`` against ``no_matching_rule``), the same verdict and reason with
   **another rule**, or unchanged; and note the candidate rule that decided and whether
   only the default deny caught the request.

Why the re-decision is exact: the engine's outcome depends only on the compiled policy, the
request (subject, selectors and context as the device saw them, all in the entry) and the
decision time. Nothing of the device enters it; the device's identity only decides whether
the candidate targets it at all, which the caller checks. So a policy is compiled once for
every device, and its decisions are cached per distinct request (:class:`Shadow`; with a
cited parent, also per span of the parent's age between the policy's ``max_age`` values).

Entries are read fast where that is exact (:class:`_EntryReader`): an entry whose fields
after its fixed head (seq, time, prev) are byte-identical to those of an entry already
decoded strictly holds the same values, so only the head is read again.

Determinism: the report depends on the entries' order (devices in the caller's order, each
by seq) and on values only; every collection in it is sorted. Memory is bounded: groups
past :data:`MAX_GROUPS` per section are counted, not kept; caches are cleared when full.

Pure: no I/O, no clock; the caller reads the registry and hands entries in.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from edge_agent.errors import LineageError
from edge_agent.policy.compiler import CompiledPolicy
from edge_agent.policy.engine import Match, evaluate
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.request import Request
from hub.registry.records import StoredEntry

__all__ = [
    "MAX_EXAMPLES",
    "MAX_GROUPS",
    "POLICY_REASONS",
    "ChangeGroup",
    "DeviceScope",
    "DiffReport",
    "Example",
    "RequestGroup",
    "Shadow",
    "diff_decisions",
]

POLICY_REASONS = frozenset({"allowed", "policy_denied", "no_matching_rule"})
"""Reasons of decisions the policy made (every gate check had passed): the ones re-decided."""
MAX_EXAMPLES = 3
"""Examples (device, seq, time) kept per group: the first ones in stream order."""
MAX_GROUPS = 10_000
"""Groups kept per report section; decisions of further groups are counted as untracked."""
MAX_CACHED_DECISIONS = 200_000
"""Distinct (request, span of the day) outcomes a :class:`Shadow` keeps before starting afresh."""
MAX_CACHED_BODIES = 200_000
"""Distinct entry bodies :class:`_EntryReader` remembers before starting afresh."""

_MINUTES_PER_DAY = 1440


class Shadow:
    """A compiled policy deciding requests exactly as the device's engine does, each
    distinct request once.

    The engine reads the decision time only through ``when.time_utc`` windows, each
    holding from its start minute of the UTC day to its end minute, and through
    ``when.parent`` conditions, each holding only while the cited parent is at most its
    ``max_age`` old (``now - parent time``; :class:`edge_agent.policy.compiler.Condition`).
    So between two consecutive window edges of the policy every window holds or fails
    alike, and between two consecutive ``max_age`` values every parent's age condition
    does: a policy without windows is cached per request, one with windows per (request,
    span between edges), and a request citing a verified parent under a policy with
    parent conditions also per span of its parent's age between the policy's ``max_age``
    values. (Everything else a parent condition reads is in the request.)
    """

    __slots__ = ("_cache", "_edges", "_max_ages", "_max_cached", "policy")

    def __init__(self, policy: CompiledPolicy, max_cached: int = MAX_CACHED_DECISIONS) -> None:
        self.policy = policy
        self._edges = tuple(
            sorted({m for c in policy.conditions if c is not None and c.window for m in c.window})
        )
        self._max_ages = tuple(
            sorted(
                {
                    c.parent.max_age
                    for c in policy.conditions
                    if c is not None and c.parent is not None
                }
            )
        )
        self._cache: dict[object, Match] = {}
        self._max_cached = max_cached

    def decide(self, request: Request, now: int) -> Match:
        """What the engine decides for ``request`` at unix time ``now``."""
        key: object = request
        if self._edges:
            key = (request, bisect_right(self._edges, now // 60 % _MINUTES_PER_DAY))
        facts = request.parent.facts if request.parent is not None else None
        if self._max_ages and facts is not None:
            # The count of max_age values the age exceeds: a condition fails past its own.
            key = (key, bisect_left(self._max_ages, now - facts.time))
        match = self._cache.get(key)
        if match is None:
            match = evaluate(self.policy, request, now)
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[key] = match
        return match


@dataclass(frozen=True, slots=True)
class DeviceScope:
    """One device whose decisions are diffed: its id, the label of its device groups in
    the report, and the baseline its decisions are compared with (``None``: as recorded)."""

    device_id: str
    groups: str
    baseline: Shadow | None = None


@dataclass(frozen=True, slots=True)
class Example:
    """One decision of a group: where it is in which device's log, and when it was made."""

    device: str
    seq: int
    time: int


@dataclass(frozen=True, slots=True)
class ChangeGroup:
    """Decisions whose outcome changes the same way: same subject, action, device groups,
    outcome before (``before``) and under the candidate (``after``)."""

    subject: str
    action: str
    groups: str
    before: Match
    after: Match
    count: int
    first_seen: int
    last_seen: int
    examples: tuple[Example, ...]


@dataclass(frozen=True, slots=True)
class RequestGroup:
    """Decisions of one (subject, action, resource) that only the candidate's default deny
    catches (no candidate rule matches them)."""

    subject: str
    action: str
    resource: str
    count: int
    first_seen: int
    last_seen: int
    examples: tuple[Example, ...]


@dataclass(frozen=True, slots=True)
class DiffReport:
    """What a candidate changes in the shipped decisions of a window.

    ``flips``, ``reason_changed`` and ``rule_changed`` partition the changed decisions:
    the verdict changes; else the reason changes (``policy_denied`` against
    ``no_matching_rule``); else only the deciding rule does. Their ``*_count`` fields count
    every such decision, including those of groups past :data:`MAX_GROUPS` (``untracked``).
    ``gated`` counts, by reason, the decisions the device's gate denied before the policy
    was consulted (not re-decided). ``dead_rules`` are the candidate's rules that decide
    none of the re-decided decisions, in precedence order.
    """

    decisions: int
    redecided: int
    unchanged: int
    gated: tuple[tuple[str, int], ...]
    flip_count: int
    reason_changed_count: int
    rule_changed_count: int
    default_deny_count: int
    flips: tuple[ChangeGroup, ...]
    reason_changed: tuple[ChangeGroup, ...]
    rule_changed: tuple[ChangeGroup, ...]
    default_deny_only: tuple[RequestGroup, ...]
    dead_rules: tuple[str, ...]
    untracked: int


def diff_decisions(
    candidate: Shadow,
    devices: Iterable[tuple[DeviceScope, Iterable[StoredEntry]]],
    *,
    since: int | None = None,
) -> DiffReport:
    """Re-decide every decision entry of ``devices`` (each with its stored entries, by
    seq) made at or after ``since`` under ``candidate``, and compare (module docstring).

    Raises:
        LineageError: an entry is malformed (a damaged registry), naming its device and seq.
    """
    reader = _EntryReader()
    tally = _Tally()
    for scope, entries in devices:
        for stored in entries:
            try:
                decision = reader.read(stored)
            except LineageError as exc:
                raise LineageError(
                    f"{exc.message} (the log {scope.device_id} shipped, as the registry holds it)"
                ) from exc
            if decision is None or (since is not None and decision.time < since):
                continue
            tally.decisions += 1
            recorded = decision.body.recorded
            if recorded.reason not in POLICY_REASONS:
                tally.gate(recorded.reason)
                continue
            request = decision.body.request
            after = candidate.decide(request, decision.time)
            before = (
                recorded
                if scope.baseline is None
                else scope.baseline.decide(request, decision.time)
            )
            tally.add(scope, stored.seq, decision.time, request, before, after)
    return tally.report(candidate.policy.rule_ids)


@dataclass(slots=True)
class _Group:
    """A group being counted."""

    count: int
    first_seen: int
    last_seen: int
    examples: list[Example]

    def add(self, example: Example) -> None:
        self.count += 1
        self.first_seen = min(self.first_seen, example.time)
        self.last_seen = max(self.last_seen, example.time)
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)


_ChangeKey = tuple[str, str, str, Match, Match]
_RequestKey = tuple[str, str, str]
_Key = TypeVar("_Key", _ChangeKey, _RequestKey)


class _Tally:
    """The counts of one diff, updated per decision."""

    def __init__(self) -> None:
        self.decisions = 0
        self.redecided = 0
        self.unchanged = 0
        self.untracked = 0
        self.gated: dict[str, int] = {}
        self.deciding: set[str] = set()
        self.flips: dict[_ChangeKey, _Group] = {}
        self.reasons: dict[_ChangeKey, _Group] = {}
        self.rules: dict[_ChangeKey, _Group] = {}
        self.default_deny: dict[_RequestKey, _Group] = {}
        self.counts = {"flips": 0, "reasons": 0, "rules": 0, "default_deny": 0}

    def gate(self, reason: str) -> None:
        self.gated[reason] = self.gated.get(reason, 0) + 1

    def add(
        self,
        scope: DeviceScope,
        seq: int,
        time: int,
        request: Request,
        before: Match,
        after: Match,
    ) -> None:
        self.redecided += 1
        if after.rule_id is not None:
            self.deciding.add(after.rule_id)
        else:
            key = (request.subject, request.action, request.resource)
            self._count("default_deny", self.default_deny, key, scope, seq, time)
        if before == after:
            self.unchanged += 1
            return
        change = (request.subject, request.action, scope.groups, before, after)
        if before.allowed != after.allowed:
            self._count("flips", self.flips, change, scope, seq, time)
        elif before.reason != after.reason:
            self._count("reasons", self.reasons, change, scope, seq, time)
        else:
            self._count("rules", self.rules, change, scope, seq, time)

    def _count(
        self,
        section: str,
        groups: dict[_Key, _Group],
        key: _Key,
        scope: DeviceScope,
        seq: int,
        time: int,
    ) -> None:
        self.counts[section] += 1
        group = groups.get(key)
        if group is None:
            if len(groups) >= MAX_GROUPS:
                self.untracked += 1
                return
            group = groups[key] = _Group(0, time, time, [])
        group.add(Example(scope.device_id, seq, time))

    def report(self, rule_ids: tuple[str, ...]) -> DiffReport:
        return DiffReport(
            decisions=self.decisions,
            redecided=self.redecided,
            unchanged=self.unchanged,
            gated=tuple(sorted(self.gated.items())),
            flip_count=self.counts["flips"],
            reason_changed_count=self.counts["reasons"],
            rule_changed_count=self.counts["rules"],
            default_deny_count=self.counts["default_deny"],
            flips=_changes(self.flips),
            reason_changed=_changes(self.reasons),
            rule_changed=_changes(self.rules),
            default_deny_only=_requests(self.default_deny),
            dead_rules=tuple(r for r in rule_ids if r not in self.deciding),
            untracked=self.untracked,
        )


def _match_key(match: Match) -> tuple[bool, str, str]:
    return (match.allowed, match.reason, match.rule_id or "")


def _changes(groups: dict[_ChangeKey, _Group]) -> tuple[ChangeGroup, ...]:
    """The groups, most decisions first, then by rule after and before, subject, action,
    device groups: an order of values only."""
    ordered = sorted(
        groups.items(),
        key=lambda item: (
            -item[1].count,
            item[0][4].rule_id or "",
            item[0][3].rule_id or "",
            item[0][0],
            item[0][1],
            item[0][2],
            _match_key(item[0][3]),
            _match_key(item[0][4]),
        ),
    )
    return tuple(
        ChangeGroup(
            subject,
            action,
            groups_label,
            before,
            after,
            g.count,
            g.first_seen,
            g.last_seen,
            tuple(g.examples),
        )
        for (subject, action, groups_label, before, after), g in ordered
    )


def _requests(groups: dict[_RequestKey, _Group]) -> tuple[RequestGroup, ...]:
    ordered = sorted(groups.items(), key=lambda item: (-item[1].count, item[0]))
    return tuple(
        RequestGroup(*key, g.count, g.first_seen, g.last_seen, tuple(g.examples))
        for key, g in ordered
    )


@dataclass(frozen=True, slots=True)
class _Body:
    """What a decision entry holds after its head, decoded once: the request and the
    recorded outcome."""

    request: Request
    recorded: Match


@dataclass(frozen=True, slots=True)
class _Decision:
    time: int
    body: _Body


_NOT_DECISION = object()


class _EntryReader:
    """Reads stored entries, each distinct body decoded strictly once.

    An entry is the map ``encode_entry`` writes: a one-byte head for 15 pairs, key 0 and
    ``seq``, key 1 and ``time`` (shortest-form unsigned integers), key 2 and the 32-byte
    ``prev``, then the body (keys 3 to 14: kind, outcome, bundle, request, detail). When the
    head has exactly that form and the body's bytes are those of an entry already decoded by
    :func:`~edge_agent.protocol.lineage_entries.decode_entry`, the whole entry is canonical
    and holds the same body values, so the head alone is read; anything else goes through
    ``decode_entry``.
    """

    __slots__ = ("_bodies", "_max_cached")

    def __init__(self, max_cached: int = MAX_CACHED_BODIES) -> None:
        self._bodies: dict[bytes, _Body | object] = {}
        self._max_cached = max_cached

    def read(self, stored: StoredEntry) -> _Decision | None:
        """The decision ``stored`` records (``None``: a trust transition).

        Raises:
            LineageError: the entry is malformed or says another seq than it is stored at.
        """
        data = stored.data
        head = _head(data)
        if head is not None:
            seq, time, offset = head
            body = self._bodies.get(data[offset:])
            if body is not None:
                if seq != stored.seq:
                    raise LineageError(f"entry says it is entry {seq}", seq=stored.seq)
                return _Decision(time, body) if isinstance(body, _Body) else None
        entry = decode_entry(data, stored.seq)
        if entry.seq != stored.seq:
            raise LineageError(f"entry says it is entry {entry.seq}", seq=stored.seq)
        decoded: _Body | object = _NOT_DECISION
        if entry.kind is Kind.DECISION and entry.request is not None:
            decoded = _Body(entry.request, Match(entry.allowed, entry.reason, entry.rule))
        if head is not None:
            if len(self._bodies) >= self._max_cached:
                self._bodies.clear()
            self._bodies[data[head[2] :]] = decoded
        return _Decision(entry.time, decoded) if isinstance(decoded, _Body) else None


_PREV_HEAD = b"\x02\x58\x20"
"""Key 2 and the head of a 32-byte byte string."""


def _head(data: bytes) -> tuple[int, int, int] | None:
    """``(seq, time, body offset)`` of an entry head in the form ``encode_entry`` writes,
    or ``None``. (A hot path: one call per shipped entry.)"""
    if len(data) < _MIN_ENTRY_BYTES or data[0] != 0xAF or data[1] != 0x00:
        return None
    seq = _uint(data, 2)
    if seq is None or data[seq[1]] != 0x01:
        return None
    time = _uint(data, seq[1] + 1)
    if time is None:
        return None
    position = time[1]
    if data[position : position + 3] != _PREV_HEAD:
        return None
    return seq[0], time[0], position + 35


_MIN_ENTRY_BYTES = 40
"""Bytes of the shortest head (map head, seq and time in one byte each, prev): no entry
is shorter, and every index :func:`_head` reads is below it. A body cut short leaves an
empty or unknown slice, which goes to the strict decoder."""
_WIDTHS = tuple(
    0 if byte < 0x18 else {0x18: 1, 0x19: 2, 0x1A: 4, 0x1B: 8}.get(byte, -1) for byte in range(256)
)
"""Bytes after a CBOR unsigned integer's first byte, by that byte (-1: not one)."""
_SHORTEST = {1: 0x18, 2: 1 << 8, 4: 1 << 16, 8: 1 << 32}
"""The least value each width may hold in the shortest form."""


def _uint(data: bytes, position: int) -> tuple[int, int] | None:
    """The shortest-form CBOR unsigned integer at ``position`` (at most ``MAX_COUNTER``)
    and the position after it, or ``None``."""
    first = data[position]
    width = _WIDTHS[first]
    if width == 0:
        return first, position + 1
    if width < 0:
        return None
    end = position + 1 + width
    value = int.from_bytes(data[position + 1 : end], "big")
    if value < _SHORTEST[width] or value > MAX_COUNTER:
        return None
    return value, end

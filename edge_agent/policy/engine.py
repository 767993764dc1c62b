"""The decision: one compiled policy, one request, one instant -> allowed or denied, and why.

Semantics (docs/policy.md is the long form):

- A request acts as its ``subject``, each of its ``selectors``, every workload that a
  ``workloads:`` entry maps one of those to, every group (``group:NAME``) one of those is a
  member of, and ``*`` (anyone).
- A rule matches when one of those principals is among its subjects, its
  actions hold the request's action or ``*``, one of its resource patterns matches the whole
  resource, and its ``when`` condition holds at ``now``.
- Any matching deny wins and the lowest-index matching deny is named; otherwise the
  lowest-index matching allow is named; no matching rule denies with ``no_matching_rule``,
  except when an allow rule that requires a parent (``when.parent``) would have matched but
  for its parent: then the deny names that rule (never a deny rule with a parent
  condition), with ``parent_missing`` (the request cited none) or ``parent_invalid`` (its
  receipt was refused, or the parent fails the condition).
  The index stores rules as codes ordered exactly so (see ``_index``): the decision is the
  smallest code whose rule holds, and each bucket is scanned only up to the best code so far.

Invariants: :func:`evaluate` is pure (no I/O, no clock: ``now`` is a parameter), never
scans all rules (it looks up the request's action and principals in the compiled index), and
its outcome depends only on values, not on hash seeds, dict order, locale or floats.
"""

from __future__ import annotations

from edge_agent.policy._match import NO_MATCH, Match
from edge_agent.policy._payload import Condition
from edge_agent.policy.compiler import CompiledPolicy
from edge_agent.protocol.request import Request

__all__ = ["Match", "evaluate"]

_ANY = "*"
_GROUP = "group:"
_NO_RULE = 1 << 62


def evaluate(policy: CompiledPolicy, request: Request, now: int) -> Match:
    """Decide ``request`` under ``policy`` at unix time ``now`` (seconds, UTC).

    Default deny: an empty policy, or one with no rule matching, denies. Only when nothing
    matched and the policy has parent conditions does a second, parent-blind pass look for
    the allow rule the parent kept from matching, to name the deny's reason: the rule that
    needed the parent, not a deny rule that would have matched with one.
    """
    best = _best(policy, request, now, False)
    if best != _NO_RULE:
        return policy.verdicts[best]
    if not policy.parent_rules:
        return NO_MATCH
    blind = _best(policy, request, now, True)
    condition = policy.conditions[blind] if blind != _NO_RULE else None
    if condition is None or condition.parent is None:
        return NO_MATCH
    reason = "parent_missing" if request.parent is None else "parent_invalid"
    return Match(False, reason, policy.verdicts[blind].rule_id)


def _best(policy: CompiledPolicy, request: Request, now: int, blind: bool) -> int:
    """The smallest code whose rule matches (``_NO_RULE`` when none); with ``blind``, the
    smallest allow rule's code that matches as if every parent requirement held."""
    index = policy.index
    by_principal = index.get(request.action)
    if by_principal is None:
        by_principal = index.get(_ANY)
        if by_principal is None:
            return _NO_RULE
    if request.selectors:
        principals = _principals(policy, request)
    else:
        principals = policy.acting.get(request.subject) or _alone(request.subject)
    conditions = policy.conditions
    verdicts = policy.verdicts
    resource = request.resource
    segments: list[str] = []
    probes: list[tuple[int, str]] | None = None
    best = _NO_RULE
    for principal in principals:
        node = by_principal.get(principal)
        if node is None:
            continue
        if probes is None:
            segments = resource.split("/")
            probes = _probes(resource, segments, policy.prefix_lengths)
        by_prefix = node.by_prefix
        for length, prefix in probes:
            entries = by_prefix.get(prefix)
            if entries is not None:
                for tail, codes in entries:
                    if codes[0] < best and (tail.anything or tail.matches(segments, length)):
                        best = _first_holding(
                            codes, best, conditions, verdicts, request, now, blind
                        )
        for tail, codes in node.root:
            if codes[0] < best and tail.matches(segments, 0):
                best = _first_holding(codes, best, conditions, verdicts, request, now, blind)
    return best


def _probes(resource: str, segments: list[str], lengths: tuple[int, ...]) -> list[tuple[int, str]]:
    """The (segment count, prefix) keys a decision probes in each index, cut from the
    resource once: every wildcard prefix length the policy uses that is shorter than the
    resource, then the whole resource (exact patterns, and wildcard tails that may match
    nothing, such as ``/**``)."""
    count = len(segments)
    probes: list[tuple[int, str]] = []
    for length in lengths:
        if length >= count:
            break
        probes.append((length, "/".join(segments[:length])))
    probes.append((count, resource))
    return probes


def _first_holding(
    codes: tuple[int, ...],
    best: int,
    conditions: tuple[Condition | None, ...],
    verdicts: tuple[Match, ...],
    request: Request,
    now: int,
    blind: bool,
) -> int:
    """The first code below ``best`` whose condition holds, else ``best`` (with ``blind``,
    allow rules only)."""
    for code in codes:
        if code >= best:
            return best
        condition = conditions[code]
        if (condition is None or condition.holds(request, now, blind=blind)) and not (
            blind and not verdicts[code].allowed
        ):
            return code
    return best


def _principals(policy: CompiledPolicy, request: Request) -> tuple[str, ...]:
    """Every principal the subject and its selectors act as, in a fixed order."""
    acting = policy.acting
    principals: dict[str, None] = {}
    for identity in (request.subject, *request.selectors):
        principals.update(dict.fromkeys(acting.get(identity) or _alone(identity)))
    return tuple(principals)


def _alone(identity: str) -> tuple[str, ...]:
    """The principals of an identity no group or workload names: itself and ``*``.

    A ``group:NAME`` principal is reached only through membership (``CompiledPolicy.acting``),
    never by a request that names the group as its identity.
    """
    if identity.startswith(_GROUP):
        return (_ANY,)
    return (identity, _ANY)

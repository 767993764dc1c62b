"""The decision: one compiled policy, one request, one instant -> allowed or denied, and why.

Semantics (docs/policy.md is the long form):

- A request acts as its ``subject``, each of its ``selectors``, every workload that a
  ``workloads:`` entry maps one of those to, and ``*`` (anyone).
- A rule matches when one of those principals is among its (group-expanded) subjects, its
  actions hold the request's action or ``*``, one of its resource patterns matches the whole
  resource, and its ``when`` condition holds at ``now``.
- Any matching deny wins and the lowest-index matching deny is named; otherwise the
  lowest-index matching allow is named; no matching rule denies with ``no_matching_rule``.

Invariants: :func:`evaluate` is pure (no I/O, no clock: ``now`` is a parameter), never
scans all rules (it looks up the request's action and principals in the compiled index), and
its outcome depends only on values, not on hash seeds, dict order, locale or floats.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.policy._index import Bucket
from edge_agent.policy._match import NO_MATCH, Match
from edge_agent.policy.compiler import CompiledPolicy

__all__ = ["Match", "Request", "evaluate"]

_ANY = "*"
_NO_RULE = 1 << 62


@dataclass(frozen=True, slots=True)
class Request:
    """What a workload asks to do.

    ``context`` holds sorted ``(key, value)`` pairs; ``selectors`` are kernel-derived
    identities such as ``uid:1001`` or ``exe:/opt/x``.
    """

    subject: str
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    selectors: tuple[str, ...] = ()


def evaluate(policy: CompiledPolicy, request: Request, now: int) -> Match:
    """Decide ``request`` under ``policy`` at unix time ``now`` (seconds, UTC).

    Default deny: an empty policy, or one with no rule matching, denies.
    """
    index = policy.index
    by_principal = index.get(request.action)
    if by_principal is None:
        by_principal = index.get(_ANY)
        if by_principal is None:
            return NO_MATCH
    subject = request.subject
    if request.selectors or subject in policy.workloads_of:
        principals = _principals(policy, request)
    else:
        principals = (subject, _ANY)
    buckets: list[Bucket] = []
    segments: list[str] | None = None
    for principal in principals:
        resource_index = by_principal.get(principal)
        if resource_index is not None:
            if segments is None:
                segments = request.resource.split("/")
            resource_index.collect(request.resource, segments, buckets)
    if not buckets:
        return NO_MATCH
    conditions = policy.conditions
    context = request.context
    best = _NO_RULE
    for bucket in buckets:
        for rule in bucket.deny:
            if rule >= best:
                break
            condition = conditions[rule]
            if condition is None or condition.holds(context, now):
                best = rule
                break
    if best != _NO_RULE:
        return policy.verdicts[best]
    for bucket in buckets:
        for rule in bucket.allow:
            if rule >= best:
                break
            condition = conditions[rule]
            if condition is None or condition.holds(context, now):
                best = rule
                break
    if best != _NO_RULE:
        return policy.verdicts[best]
    return NO_MATCH


def _principals(policy: CompiledPolicy, request: Request) -> tuple[str, ...]:
    """The subject, its selectors, the workloads they map to, and ``*``, in a fixed order."""
    workloads_of = policy.workloads_of
    acting: dict[str, None] = {request.subject: None}
    acting.update(dict.fromkeys(request.selectors))
    for identity in (request.subject, *request.selectors):
        acting.update(dict.fromkeys(workloads_of.get(identity, ())))
    acting[_ANY] = None
    return tuple(acting)

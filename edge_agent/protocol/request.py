"""What a workload asks to do: the request the gate decides and the lineage records.

Shared by the policy engine (which decides it), the lineage entry format (which stores it)
and the socket wire format, so it lives in the shared core as plain fields. A request may
cite a *parent*: an earlier decision (on this device or another) that caused it, as the
deciding agent judged it (:mod:`edge_agent.trust.parent` verifies the receipt; the engine
tests the facts; the lineage records them so a replay re-decides exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Parent", "ParentFacts", "Request"]


@dataclass(frozen=True, slots=True)
class ParentFacts:
    """What a verified parent receipt proves about the decision it cites.

    ``device`` signed it (found in the device directory, whose ``groups`` it lists);
    ``seq`` and ``leaf_hash`` name the entry in that device's log; ``subject``, ``action``,
    ``resource`` and ``time`` are the parent decision's; ``depth`` is the length of the chain
    ending at the child: 1 for a parent that has no valid parent itself, else its own depth
    plus 1.
    """

    device: str
    groups: tuple[str, ...]
    seq: int
    leaf_hash: bytes
    subject: str
    action: str
    resource: str
    time: int
    depth: int


@dataclass(frozen=True, slots=True)
class Parent:
    """A request's parent as the deciding agent judged it, against directory
    ``directory_version`` (``None`` when it held none).

    Exactly one of ``facts`` (the receipt verified) and ``refusal`` (the sentence saying why
    it did not) is set.
    """

    facts: ParentFacts | None
    directory_version: int | None
    refusal: str = ""

    def __post_init__(self) -> None:
        if (self.facts is None) == (not self.refusal):
            raise ValueError("a parent has either verified facts or a refusal, not both")


@dataclass(frozen=True, slots=True)
class Request:
    """What a workload asks to do.

    ``context`` holds sorted ``(key, value)`` pairs; ``selectors`` are kernel-derived
    identities such as ``uid:1001`` or ``exe:/opt/x``; ``parent`` is the decision the
    request cites as its cause, if any.
    """

    subject: str
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    selectors: tuple[str, ...] = ()
    parent: Parent | None = None

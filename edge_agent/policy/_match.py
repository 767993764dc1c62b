"""The result type of a decision, shared by the compiler (which builds one per rule once) and
the engine (which returns them), so deciding allocates nothing per request."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NO_MATCH", "Match"]


@dataclass(frozen=True, slots=True)
class Match:
    """The policy's answer: ``reason`` is ``allowed``, ``policy_denied`` or
    ``no_matching_rule``; ``rule_id`` names the deciding rule (``None`` when none matched)."""

    allowed: bool
    reason: str
    rule_id: str | None


NO_MATCH = Match(False, "no_matching_rule", None)

"""What ``edge-hub bundle inspect`` prints: every field of a bundle that changes a decision.

A rule reads as unconditional only when it is: its ``when`` conditions (request context,
UTC time window, parent receipt) are printed under it, as are the bundle's ``max_offline``
(how long devices keep deciding without a fresh token), its targeting (region, groups,
profiles, devices), its ``groups`` and ``workloads`` (who a subject stands for) and its
attestation expectations. Rules are listed in their order: any matching deny wins, else the
first matching allow (docs/policy.md).

The bundle is read before (or without) verification, so every value is shown as data: a
text with control characters is escaped (it cannot move the cursor or recolour the
terminal), and a value of an unexpected type is shown as it is, never trusted to have a shape.
"""

from __future__ import annotations

import shutil
import textwrap

from edge_agent.support.cli import expiry_text, format_duration, utc_text
from hub.cli.operations import BundleSummary

__all__ = ["MIN_WIDTH", "summary_json", "summary_lines", "terminal_width"]

MIN_WIDTH = 60
"""Narrowest layout: a narrower terminal is laid out as this wide (lines then wrap)."""
_LABEL = 9
_RULE_LABEL = 13


def terminal_width() -> int:
    """The terminal's width in columns (``$COLUMNS`` first, 80 without a terminal)."""
    return max(MIN_WIDTH, shutil.get_terminal_size((80, 24)).columns)


def summary_json(summary: BundleSummary) -> dict[str, object]:
    """The bundle as ``bundle inspect --json`` prints it (payload fields as decoded)."""
    payload = summary.payload
    policy = payload.get("policy")
    policy = policy if isinstance(policy, dict) else {}
    return {
        "version": _jsonable(payload.get("version")),
        "issued_at": _jsonable(payload.get("issued_at")),
        "expires_at": _jsonable(payload.get("expires_at")),
        "max_offline": _jsonable(payload.get("max_offline")),
        "target": _jsonable(payload.get("target")),
        "attestation": _jsonable(payload.get("attestation")),
        "groups": _jsonable(policy.get("groups", {})),
        "workloads": _jsonable(policy.get("workloads", {})),
        "digest": summary.digest.hex(),
        "size": summary.size,
        "signer_key_ids": list(summary.signer_hints),
        "verified_signers": summary.verified_signers,
        "verify_error": summary.verify_error,
        "rules": [_jsonable(rule) for rule in _rules(payload)],
    }


def _jsonable(value: object) -> object:
    """``value`` with byte strings as hex (attestation digests), the rest as decoded."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def summary_lines(summary: BundleSummary, now: int, width: int) -> list[str]:
    """The bundle as text, ``width`` columns wide (long values wrap under their label)."""
    payload = summary.payload
    out = _Lines(max(width, MIN_WIDTH))
    out.field("bundle", f"version {_text(payload.get('version'))}, {summary.size} bytes")
    out.field("sha256", summary.digest.hex())
    out.field("target", _target(payload.get("target")))
    out.field("issued", _time(payload.get("issued_at"), now, issued=True))
    out.field("expires", _time(payload.get("expires_at"), now, issued=False))
    out.field("offline", _max_offline(payload.get("max_offline")))
    out.field("signers", f"{', '.join(h[:16] for h in summary.signer_hints)} (key id hints)")
    if summary.verified_signers is not None:
        count = len(summary.verified_signers)
        out.field("verified", f"{count} signature{'' if count == 1 else 's'} valid under the root")
    elif summary.verify_error:
        out.field("verified", f"NO: {summary.verify_error}")
    else:
        out.field("verified", "not checked (pass --root to verify signatures)")
    out.field("attest", _attestation(payload.get("attestation")))
    policy = payload.get("policy")
    policy = policy if isinstance(policy, dict) else {}
    out.mapping("groups", policy.get("groups"))
    out.mapping("workloads", policy.get("workloads"))
    rules = _rules(payload)
    count = len(rules)
    out.field(
        "rules",
        f"{count} rule{'' if count == 1 else 's'} (any matching deny wins, else the first "
        "matching allow; no match denies)",
    )
    for number, rule in enumerate(rules, 1):
        out.rule(number, rule)
    return out.lines


class _Lines:
    """Labelled lines, wrapped to a width."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.lines: list[str] = []

    def field(self, label: str, value: str, indent: int = 0, label_width: int = _LABEL) -> None:
        prefix = " " * indent + label.ljust(label_width) + " "
        self.lines += textwrap.wrap(
            value,
            self.width,
            initial_indent=prefix,
            subsequent_indent=" " * len(prefix),
            break_on_hyphens=False,
            break_long_words=False,
        ) or [prefix.rstrip()]

    def mapping(self, label: str, value: object) -> None:
        if not isinstance(value, dict) or not value:
            self.field(label, "none" if value in (None, {}) else _text(value))
            return
        self.field(label, f"{len(value)} defined")
        for name in sorted(value, key=str):
            self.field(_text(name), _text(value[name]), indent=2)

    def rule(self, number: int, rule: dict[object, object]) -> None:
        effect = _text(rule.get("effect", "?"))
        self.lines.append(f"  {number:>3}. {effect.upper()} {_text(rule.get('id'))}")
        for key in ("subjects", "actions", "resources"):
            self.field(key, _text(rule.get(key, "?")), 7, _RULE_LABEL)
        when = rule.get("when")
        if when is None:
            self.field("when", "always (no condition)", 7, _RULE_LABEL)
        elif not isinstance(when, dict):
            self.field("when", _text(when), 7, _RULE_LABEL)
        else:
            for key in sorted(when, key=str):
                self.field(f"when {_text(key)}", _condition(key, when[key]), 7, _RULE_LABEL)


def _rules(payload: dict[str, object]) -> list[dict[object, object]]:
    policy = payload.get("policy")
    rules = policy.get("rules") if isinstance(policy, dict) else None
    if not isinstance(rules, list):
        return []
    return [r for r in rules if isinstance(r, dict)]


def _condition(key: object, value: object) -> str:
    """One ``when`` condition in words."""
    if key == "context" and isinstance(value, dict):
        return "; ".join(f"{_text(k)} is one of {_text(v)}" for k, v in sorted(value.items()))
    if key == "time_utc":
        return f"{_text(value)} UTC (outside it the rule does not match)"
    if key == "parent" and isinstance(value, dict):
        parts = []
        for name in ("subject", "action", "resource", "devices"):
            if name in value:
                parts.append(f"{name} {_text(value[name])}")
        age = value.get("max_age")
        if isinstance(age, int):
            parts.append(f"at most {format_duration(age)} old")
        elif age is not None:
            parts.append(f"max_age {_text(age)}")
        if "max_depth" in value:
            parts.append(f"depth at most {_text(value['max_depth'])}")
        return "a verified parent receipt: " + ("; ".join(parts) or "any")
    return _text(value)


def _target(value: object) -> str:
    if not isinstance(value, dict):
        return _text(value)
    parts = [f"region {_text(value.get('region'))}"]
    for key in ("groups", "profiles", "devices"):
        listed = value.get(key)
        parts.append(f"{key} {_text(listed) if listed else '(all)'}")
    return "; ".join(parts)


def _time(value: object, now: int, *, issued: bool) -> str:
    if not isinstance(value, int):
        return _text(value)
    when = utc_text(value, "%Y-%m-%dT%H:%M:%SZ")
    if issued:
        return when
    return f"{when} ({expiry_text(value - now)})"


def _max_offline(value: object) -> str:
    if value is None:
        return "max_offline none: devices keep deciding without fresh tokens until it expires"
    if isinstance(value, int):
        return (
            f"max_offline {format_duration(value)}: a device without a fresh token for this "
            "long denies everything"
        )
    return _text(value)


def _attestation(value: object) -> str:
    if not value:
        return "no attestation required"
    if not isinstance(value, dict):
        return _text(value)
    profiles = value.get("profiles", value)
    if not isinstance(profiles, dict):
        return _text(profiles)
    return "attestation required for " + ", ".join(sorted(_text(name) for name in profiles))


def _text(value: object) -> str:
    """``value`` as one line of plain text: a list joined by commas, a map as
    ``key: value``, control characters escaped."""
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) or "(none)"
    if isinstance(value, dict):
        return "; ".join(f"{_text(k)}: {_text(v)}" for k, v in value.items())
    if isinstance(value, bytes):
        return value.hex()
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

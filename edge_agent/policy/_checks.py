"""Value grammar and limits shared by the YAML source loader and the payload compiler.

Both sides apply the same checks so that a payload the hub builds from valid source always
compiles on the device, and a payload crafted by hand is held to the same rules. Every
function here takes one value and raises ``ValueError`` with a sentence naming the fault; the
callers add the file, line or rule id.

This module does not know about YAML, CBOR or rule precedence.
"""

from __future__ import annotations

import re

__all__ = [
    "ANY",
    "EFFECTS",
    "GLOBSTAR",
    "GROUP_PREFIX",
    "MAX_CONTEXT_KEYS",
    "MAX_CONTEXT_VALUES",
    "MAX_GROUPS",
    "MAX_GROUP_MEMBERS",
    "MAX_INDEX_ENTRIES",
    "MAX_NAME_CHARS",
    "MAX_PARENT_AGE_S",
    "MAX_PARENT_DEPTH",
    "MAX_PATTERN_CHARS",
    "MAX_PATTERN_SEGMENTS",
    "MAX_RULES",
    "MAX_RULE_ITEMS",
    "MAX_SELECTORS_PER_WORKLOAD",
    "MAX_WORKLOADS",
    "PARENT_MAX_AGE_DEFAULT_S",
    "PAYLOAD_FORMAT",
    "SELECTOR_PREFIXES",
    "check_action",
    "check_context_key",
    "check_context_value",
    "check_device_ref",
    "check_group_member",
    "check_group_name",
    "check_resource_pattern",
    "check_rule_id",
    "check_selector",
    "check_subject",
    "check_workload_id",
    "is_selector",
    "parse_time_window",
]

PAYLOAD_FORMAT = 1
"""Version of the policy payload inside a bundle; a device refuses any other."""

MAX_RULES = 50_000
"""Rules in one policy; the reference fleet policy has 10,000."""
MAX_RULE_ITEMS = 1_024
"""Entries in one rule's ``subjects``, ``actions`` or ``resources`` list."""
MAX_GROUPS = 10_000
MAX_GROUP_MEMBERS = 10_000
"""Members of one subject group."""
MAX_WORKLOADS = 10_000
MAX_SELECTORS_PER_WORKLOAD = 256
MAX_CONTEXT_KEYS = 32
"""Context keys one ``when`` condition may test."""
MAX_CONTEXT_VALUES = 256
"""Allowed values listed for one context key."""
MAX_NAME_CHARS = 256
"""Characters in a rule id, subject, action, group name, context key or context value."""
MAX_PATTERN_CHARS = 4_096
"""Characters in one resource pattern (PATH_MAX on Linux)."""
MAX_PATTERN_SEGMENTS = 64
"""``/``-separated segments in one resource pattern."""
MAX_INDEX_ENTRIES = 2_000_000
"""(principal, action, resource) triples the compiled index may hold after group expansion;
bounds the memory a small payload can make a device spend."""

PARENT_MAX_AGE_DEFAULT_S = 60
"""A parent condition's ``max_age`` when it names none: a parent receipt is a claim about
one moment, so every rule that trusts one bounds how long ago that was."""
MAX_PARENT_AGE_S = 86_400
"""Largest ``max_age`` a parent condition may name (one day)."""
MAX_PARENT_DEPTH = 1_024
"""Largest ``max_depth`` a parent condition may name."""

ANY = "*"
GLOBSTAR = "**"
GROUP_PREFIX = "group:"
EFFECTS = ("allow", "deny")
SELECTOR_PREFIXES = ("uid:", "gid:", "user:", "exe:", "exe-sha256:")

_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TOKEN = re.compile(r"[!-~]+")
"""Printable ASCII without space: subjects, actions and context keys are identifiers."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,10}")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\$?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def _check_length(text: str, what: str, limit: int = MAX_NAME_CHARS) -> None:
    if not text:
        raise ValueError(f"{what} must not be empty")
    if len(text) > limit:
        raise ValueError(f"{what} is {len(text)} characters, over the {limit}-character limit")


def check_rule_id(text: str) -> None:
    """Check a rule id: a letter or digit, then letters, digits, ``.``, ``_``, ``:``, ``-``.

    Raises:
        ValueError: the id is empty, too long or holds another character.
    """
    _check_length(text, "rule id")
    if not _RULE_ID.fullmatch(text):
        raise ValueError(f"rule id {text!r} may only hold letters, digits, '.', '_', ':' and '-'")


def check_group_name(text: str) -> None:
    """Check a subject group name (the part after ``group:``).

    Raises:
        ValueError: the name is empty, too long or holds another character.
    """
    _check_length(text, "group name")
    if not _GROUP_NAME.fullmatch(text):
        raise ValueError(f"group name {text!r} may only hold letters, digits, '.', '_' and '-'")


def check_selector(text: str) -> None:
    """Check a kernel-derived selector: ``uid:N``, ``gid:N``, ``user:NAME``, ``exe:/PATH``
    or ``exe-sha256:HEX``.

    Raises:
        ValueError: unknown prefix or a value that prefix never carries.
    """
    _check_length(text, "selector", MAX_PATTERN_CHARS)
    kind, _, value = text.partition(":")
    if kind in ("uid", "gid"):
        ok = _DIGITS.fullmatch(value) is not None
    elif kind == "user":
        ok = len(value) <= 64 and _USER.fullmatch(value) is not None
    elif kind == "exe":
        ok = value.startswith("/") and not _CONTROL.search(value)
    elif kind == "exe-sha256":
        ok = _SHA256.fullmatch(value) is not None
    else:
        raise ValueError(
            f"selector {text!r} has an unknown kind; use one of {', '.join(SELECTOR_PREFIXES)}"
        )
    if not ok:
        raise ValueError(f"selector {text!r} has a malformed {kind} value")


def is_selector(text: str) -> bool:
    """Whether ``text`` is written as a selector (by its prefix), valid or not."""
    return text.startswith(SELECTOR_PREFIXES)


def check_workload_id(text: str) -> None:
    """Check a workload id such as ``svc:camera``: one printable token, not a selector, not a
    group reference, no wildcard characters.

    Raises:
        ValueError: the id breaks one of those rules.
    """
    _check_length(text, "workload id")
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"workload id {text!r} must be printable ASCII without spaces")
    if "*" in text or "?" in text:
        raise ValueError(f"workload id {text!r} must not hold '*' or '?'")
    if text.startswith(GROUP_PREFIX):
        raise ValueError(f"workload id {text!r} must not start with {GROUP_PREFIX!r}")
    if is_selector(text):
        raise ValueError(f"workload id {text!r} is written as a selector")


def check_group_member(text: str) -> None:
    """Check one member of a subject group: a workload id or a selector.

    Raises:
        ValueError: the member is ``*``, another group, or malformed.
    """
    if text == ANY or text.startswith(GROUP_PREFIX):
        raise ValueError(f"group member {text!r} must be a workload id or a selector")
    if is_selector(text):
        check_selector(text)
    else:
        check_workload_id(text)


def check_subject(text: str) -> str | None:
    """Check a rule subject; return the group name when it is ``group:NAME``.

    Raises:
        ValueError: the subject is malformed.
    """
    if text == ANY:
        return None
    if text.startswith(GROUP_PREFIX):
        name = text[len(GROUP_PREFIX) :]
        check_group_name(name)
        return name
    check_group_member(text)
    return None


def check_action(text: str) -> None:
    """Check an action: one printable token; ``*`` alone means any action.

    Raises:
        ValueError: the action is empty, too long, has spaces or a ``*`` inside it.
    """
    _check_length(text, "action")
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"action {text!r} must be printable ASCII without spaces")
    if text != ANY and ("*" in text or "?" in text):
        raise ValueError(f"action {text!r} is exact; only '*' alone matches any action")


def check_resource_pattern(text: str) -> tuple[str, ...]:
    """Check a resource pattern and return its ``/``-separated segments.

    Raises:
        ValueError: empty, too long, too many segments, a control character, or ``**`` used
            inside a segment rather than as a whole segment.
    """
    _check_length(text, "resource pattern", MAX_PATTERN_CHARS)
    if _CONTROL.search(text):
        raise ValueError(f"resource pattern {text!r} holds a control character")
    segments = tuple(text.split("/"))
    if len(segments) > MAX_PATTERN_SEGMENTS:
        raise ValueError(
            f"resource pattern {text!r} has {len(segments)} segments, "
            f"over the {MAX_PATTERN_SEGMENTS}-segment limit"
        )
    if "**" in text:
        for segment in segments:
            if "**" in segment and segment != GLOBSTAR:
                raise ValueError(
                    f"resource pattern {text!r}: '**' must be a whole segment, "
                    f"not part of {segment!r}"
                )
    return segments


def check_device_ref(text: str) -> str | None:
    """Check a parent condition's device: a device id, or ``group:NAME`` (a device group of
    the device directory); return the group name for the latter.

    Raises:
        ValueError: empty, too long, not one printable token, or a malformed group name.
    """
    if text.startswith(GROUP_PREFIX):
        name = text[len(GROUP_PREFIX) :]
        check_group_name(name)
        return name
    _check_length(text, "device id")
    if not _TOKEN.fullmatch(text) or "*" in text or "?" in text:
        raise ValueError(f"device id {text!r} must be printable ASCII without spaces or wildcards")
    return None


def check_context_key(text: str) -> None:
    """Check a context key named in a condition.

    Raises:
        ValueError: empty, too long or not one printable token.
    """
    _check_length(text, "context key")
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"context key {text!r} must be printable ASCII without spaces")


def check_context_value(text: str) -> None:
    """Check an allowed context value (exact, case-sensitive).

    Raises:
        ValueError: too long or holding a control character.
    """
    if len(text) > MAX_NAME_CHARS:
        raise ValueError(f"context value is over the {MAX_NAME_CHARS}-character limit")
    if _CONTROL.search(text):
        raise ValueError(f"context value {text!r} holds a control character")


def parse_time_window(text: str) -> tuple[int, int]:
    """Parse ``"HH:MM-HH:MM"`` (UTC, 24-hour) into start and end minutes of the day.

    The window includes its start and excludes its end; an end earlier than the start wraps
    past midnight.

    Raises:
        ValueError: not that shape, an hour over 23, a minute over 59, or start equal to end
            (which would be ambiguous between "never" and "always").
    """
    start_text, sep, end_text = text.partition("-")
    start = _HHMM.fullmatch(start_text)
    end = _HHMM.fullmatch(end_text)
    if not sep or start is None or end is None:
        raise ValueError(f"time window {text!r} must look like '06:00-22:00' (UTC, hours 00-23)")
    start_min = int(start.group(1)) * 60 + int(start.group(2))
    end_min = int(end.group(1)) * 60 + int(end.group(2))
    if start_min == end_min:
        raise ValueError(
            f"time window {text!r} starts and ends at the same minute; "
            "omit time_utc to allow the whole day"
        )
    return start_min, end_min

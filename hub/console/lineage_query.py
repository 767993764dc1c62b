"""The lineage explorer's search, as a URL: parse and validate its query string into a
:class:`~hub.registry.lineage_records.LineageQuery` and a page cursor, and write it back.

Every search is a GET URL, so it can be bookmarked and shared: :func:`search_params` writes
exactly the filters that are set, in a fixed order, and :func:`parse_search` reads them back
to the same search (a round trip). Every field is checked (known field, bounded length,
well-formed value) and every problem is reported at once, each as a sentence naming the
field, before anything is read from the registry. This module does no I/O.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.lineage_entries import Kind
from hub.registry.lineage_records import LineageCursor, LineageQuery

__all__ = [
    "DEFAULT_PAGE_ROWS",
    "FIELDS",
    "MAX_FIELD_CHARS",
    "PAGE_SIZES",
    "Search",
    "SearchError",
    "encode_cursor",
    "form_values",
    "format_time",
    "parse_search",
    "search_params",
    "search_url",
]

DEFAULT_PAGE_ROWS = 50
PAGE_SIZES = (20, 50, 100, 200)
"""Page sizes a search may ask for (``rows``)."""
MAX_FIELD_CHARS = 256
"""Longest value of one search field."""
VERDICTS = {"allow": True, "deny": False}

FIELDS = (
    "device",
    "group",
    "since",
    "until",
    "verdict",
    "kind",
    "reason",
    "rule",
    "subject",
    "action",
    "resource",
    "version",
    "rows",
    "after",
)
"""The query string's fields, in the order URLs write them: the filters, the page size and
the cursor (``after``)."""
_TEXT = {
    "device": "device",
    "group": "group",
    "kind": "kind",
    "reason": "reason",
    "rule": "rule",
    "subject": "subject",
    "action": "action",
    "resource": "resource_prefix",
}
_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%MZ", "%Y-%m-%dT%H:%M")


class SearchError(ValueError):
    """The query string is not a valid search; ``problems`` holds one sentence per field."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Search:
    """A parsed search: the filters, the page size and where the page starts."""

    query: LineageQuery
    rows: int = DEFAULT_PAGE_ROWS
    after: LineageCursor | None = None


def parse_search(params: Sequence[tuple[str, str]]) -> Search:
    """The search a query string (its ``(name, value)`` pairs, in order) asks for. Empty
    values are unset filters.

    Raises:
        SearchError: unknown or repeated fields, values too long, times, verdicts, kinds,
            versions, page sizes or cursors that are not valid, or ``since`` not before
            ``until`` (every problem, one sentence each).
    """
    problems: list[str] = []
    values: dict[str, str] = {}
    for name, value in params:
        if name not in FIELDS:
            problems.append(f"unknown search field {name[:40]!r}; the fields are {_names()}")
        elif name in values:
            problems.append(f"the field {name!r} is given twice; give it once")
        elif len(value) > MAX_FIELD_CHARS:
            problems.append(f"{name} is longer than {MAX_FIELD_CHARS} characters")
        else:
            values[name] = value.strip()
    text = {attribute: values.get(name) or None for name, attribute in _TEXT.items()}
    kind = text["kind"]
    if kind is not None and kind not in {str(k) for k in Kind}:
        problems.append(f"unknown kind {kind[:40]!r}; kinds are " + ", ".join(str(k) for k in Kind))
    since = _time("since", values["since"], problems) if values.get("since") else None
    until = _time("until", values["until"], problems) if values.get("until") else None
    if since is not None and until is not None and since >= until:
        problems.append("since must be before until (since is included, until is not)")
    allowed = None
    if values.get("verdict"):
        allowed = VERDICTS.get(values["verdict"])
        if allowed is None:
            problems.append(f"unknown verdict {values['verdict'][:40]!r}; give allow or deny")
    version = _counter("version", values["version"], problems) if values.get("version") else None
    rows = DEFAULT_PAGE_ROWS
    if values.get("rows"):
        if values["rows"] in {str(n) for n in PAGE_SIZES}:
            rows = int(values["rows"])
        else:
            problems.append(f"rows is one of {', '.join(map(str, PAGE_SIZES))}")
    after = _cursor(values["after"], problems) if values.get("after") else None
    if problems:
        raise SearchError(problems)
    query = LineageQuery(
        device=text["device"],
        group=text["group"],
        since=since,
        until=until,
        allowed=allowed,
        kind=kind,
        reason=text["reason"],
        rule=text["rule"],
        subject=text["subject"],
        action=text["action"],
        resource_prefix=text["resource_prefix"],
        bundle_version=version,
    )
    return Search(query, rows, after)


def search_params(search: Search) -> list[tuple[str, str]]:
    """The query string of ``search``: the fields set, in :data:`FIELDS` order (the page
    size only when not the default)."""
    query = search.query
    values: dict[str, str] = {
        name: str(getattr(query, attribute))
        for name, attribute in _TEXT.items()
        if getattr(query, attribute) is not None
    }
    if query.since is not None:
        values["since"] = format_time(query.since)
    if query.until is not None:
        values["until"] = format_time(query.until)
    if query.allowed is not None:
        values["verdict"] = "allow" if query.allowed else "deny"
    if query.bundle_version is not None:
        values["version"] = str(query.bundle_version)
    if search.rows != DEFAULT_PAGE_ROWS:
        values["rows"] = str(search.rows)
    if search.after is not None:
        values["after"] = encode_cursor(search.after)
    return [(name, values[name]) for name in FIELDS if name in values]


def search_url(path: str, search: Search) -> str:
    """``path`` with the query string of ``search``."""
    params = search_params(search)
    return f"{path}?{urlencode(params)}" if params else path


def form_values(search: Search) -> Mapping[str, str]:
    """Every field's value for the search form (empty when unset; no cursor)."""
    values = dict(search_params(Search(search.query, search.rows)))
    return {name: values.get(name, "") for name in FIELDS if name != "after"}


def format_time(seconds: int) -> str:
    """Unix seconds as the ISO 8601 UTC form the search fields take."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_cursor(cursor: LineageCursor) -> str:
    """``cursor`` as an opaque URL-safe token."""
    text = f"{cursor.time}:{cursor.seq}:{cursor.device}"
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def _cursor(token: str, problems: list[str]) -> LineageCursor | None:
    try:
        padded = token + "=" * (-len(token) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
        time, seq, device = text.split(":", 2)
        cursor = LineageCursor(int(time), device, int(seq))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        cursor = None
    if cursor is None or not device or encode_cursor(cursor) != token:
        problems.append("the page cursor (after) is damaged: start the search from page 1")
        return None
    return cursor


def _time(name: str, value: str, problems: list[str]) -> int | None:
    """``value`` as Unix seconds: digits, or an ISO 8601 UTC date and time (or date)."""
    if value.isascii() and value.isdigit():
        return _counter(name, value, problems)
    for pattern in (*_TIME_FORMATS, "%Y-%m-%d"):
        try:
            parsed = datetime.strptime(value, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
        return int(parsed.timestamp())
    problems.append(
        f"{name} {value[:40]!r} is not a time: give UTC as 2026-12-07T14:02:00Z, "
        "2026-12-07 or Unix seconds"
    )
    return None


def _counter(name: str, value: str, problems: list[str]) -> int | None:
    if value.isascii() and value.isdigit() and int(value) <= MAX_COUNTER:
        return int(value)
    problems.append(f"{name} {value[:40]!r} is not a whole number from 0 to {MAX_COUNTER}")
    return None


def _names() -> str:
    return ", ".join(FIELDS)

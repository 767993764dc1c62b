"""The values of a fleet-wide lineage search (the console's lineage explorer): the filter, the
keyset cursor, one hit and one page.

A hit is the filter columns of one shipped entry, as the registry indexed them when the
batch was stored; the entry's own bytes stay in the device's log (``Registry.entries``).
Results are ordered newest first by (time, device, seq), all descending: the cursor is the
last hit of a page, and the next page holds the hits strictly after it in that order. An
entry stored meanwhile therefore never shifts a page: it lands before the cursor (newer, not
shown again) or after it (shown once, in its place).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LineageCursor", "LineageHit", "LineagePage", "LineageQuery"]


@dataclass(frozen=True, slots=True)
class LineageQuery:
    """Every filter of a lineage search; ``None`` does not filter.

    ``since`` and ``until`` bound the entry's time (``since <= time < until``, Unix seconds);
    ``allowed`` is the verdict (the decision allowed, or the transition took effect);
    ``resource_prefix`` matches resources starting with it; the others match exactly.
    ``group`` matches the devices registered in that group now.
    """

    device: str | None = None
    group: str | None = None
    since: int | None = None
    until: int | None = None
    allowed: bool | None = None
    kind: str | None = None
    reason: str | None = None
    rule: str | None = None
    subject: str | None = None
    action: str | None = None
    resource_prefix: str | None = None
    bundle_version: int | None = None


@dataclass(frozen=True, slots=True)
class LineageCursor:
    """A position in the search order: the last hit of the page before."""

    time: int
    device: str
    seq: int


@dataclass(frozen=True, slots=True)
class LineageHit:
    """One matching entry: where it is (device, seq) and its filter columns."""

    device: str
    seq: int
    time: int
    kind: str
    allowed: bool
    reason: str
    rule: str | None
    subject: str | None
    action: str | None
    resource: str | None
    bundle_version: int | None

    @property
    def cursor(self) -> LineageCursor:
        return LineageCursor(self.time, self.device, self.seq)


@dataclass(frozen=True, slots=True)
class LineagePage:
    """One page of hits; ``next`` is the cursor of the page after (``None``: the last).
    ``past_retention``: the search's retention cut, when the query's range reaches before
    it (entries before the cut are not searched: their search rows were pruned)."""

    hits: tuple[LineageHit, ...]
    next: LineageCursor | None
    past_retention: int | None = None

"""Calendar months of the lineage search, and the search's retention cut: pure arithmetic
on Unix seconds (UTC), shared by both backends and the ``registry prune-search`` command.

PostgreSQL keeps ``lineage_search`` in one partition per month of its ``time`` column
(:data:`hub.registry.schema.SEARCH_TABLE`); SQLite keeps one table. Retention works in
whole months on both, so both give one answer: a prune of ``DAYS`` keeps every row of the
month holding the instant ``DAYS`` days ago and of every month after it, and drops the rows
of the months before (on partitioned PostgreSQL, whole partitions). The cut is therefore
the start of a month (:func:`retention_cut`), which is also what the registry records and
what a search reaching before it is told (a search of the retained range is complete).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "DAY_S",
    "MAX_MONTHS_AHEAD",
    "MAX_RETENTION_DAYS",
    "MIN_RETENTION_DAYS",
    "MONTHS_AHEAD",
    "Month",
    "month_of",
    "months_ahead",
    "months_between",
    "parse_bound",
    "retention_cut",
]

DAY_S = 86_400
MONTHS_AHEAD = 3
"""Months after the current one the hub keeps a search partition ready for (created when a
registry is opened and on the leader's schedule): a hub that is not restarted and loses the
lease for three months still finds its months there; rows of a month with none land in the
DEFAULT partition, never refused."""
MAX_MONTHS_AHEAD = 120
"""Most months one call creates partitions for (a bound on a caller's range)."""
MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 36_500
"""The retention ``registry prune-search --older-than`` accepts, in days (a day to a
hundred years: past that there is nothing older to drop)."""

_FIRST_YEAR = 1970
_LAST_YEAR = 9998
_BOUND = re.compile(r"^FOR VALUES FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)$")


@dataclass(frozen=True, slots=True, order=True)
class Month:
    """One calendar month (UTC): ``start`` <= time < ``end``, Unix seconds."""

    start: int
    end: int

    @property
    def label(self) -> str:
        """``YYYY-MM``."""
        return datetime.fromtimestamp(self.start, UTC).strftime("%Y-%m")

    def partition(self, table: str) -> str:
        """The name of ``table``'s partition for this month: ``TABLE_yYYYYmMM``."""
        moment = datetime.fromtimestamp(self.start, UTC)
        return f"{table}_y{moment.year:04d}m{moment.month:02d}"


def month_of(time: int) -> Month:
    """The month holding ``time`` (clamped to 1970-01 .. 9998-12).

    Raises:
        ValueError: ``time`` is not an integer.
    """
    if not isinstance(time, int) or isinstance(time, bool):
        raise ValueError(f"a time is integer Unix seconds, not {time!r}")
    lowest = int(datetime(_FIRST_YEAR, 1, 1, tzinfo=UTC).timestamp())
    highest = int(datetime(_LAST_YEAR, 12, 1, tzinfo=UTC).timestamp())
    moment = datetime.fromtimestamp(min(max(time, lowest), highest), UTC)
    return _month(moment.year, moment.month)


def months_between(first: int, last: int) -> list[Month]:
    """Every month from the one holding ``first`` to the one holding ``last``, at most
    :data:`MAX_MONTHS_AHEAD` + 1 of them (the first ones)."""
    month, final = month_of(first), month_of(last)
    months: list[Month] = []
    while month <= final and len(months) <= MAX_MONTHS_AHEAD:
        months.append(month)
        month = month_of(month.end)
        if month.start != months[-1].end:
            break
    return months


def months_ahead(now: int) -> list[Month]:
    """The month holding ``now`` and the :data:`MONTHS_AHEAD` after it."""
    first = month_of(now)
    return months_between(first.start, first.start + (MONTHS_AHEAD * 31 + 15) * DAY_S)


def retention_cut(now: int, days: int) -> int:
    """The start of the month holding the instant ``days`` days before ``now``: search
    rows before it are dropped by a prune of ``days``.

    Raises:
        ValueError: ``days`` is not :data:`MIN_RETENTION_DAYS` to :data:`MAX_RETENTION_DAYS`.
    """
    if (
        not isinstance(days, int)
        or isinstance(days, bool)
        or not MIN_RETENTION_DAYS <= days <= MAX_RETENTION_DAYS
    ):
        raise ValueError(
            f"a search retention is {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS} days, not {days!r}"
        )
    return month_of(now - days * DAY_S).start


def parse_bound(text: str) -> Month | None:
    """The month of a range partition's bound as PostgreSQL prints it (``FOR VALUES FROM
    ('1764547200') TO ('1767225600')``); ``None`` for the DEFAULT partition or a range that
    is not one calendar month."""
    found = _BOUND.match(text.strip())
    if found is None:
        return None
    start, end = int(found[1]), int(found[2])
    month = month_of(start)
    return month if month == Month(start, end) else None


def _month(year: int, month: int) -> Month:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return Month(int(start.timestamp()), int(end.timestamp()))

"""The fleet-wide lineage search in the SQLite registry (table ``lineage_search``).

A device's entries are stored as bytes (``lineage_entries``); searching millions of them by
decoding each would take minutes. So the batch that stores entries also stores, in the same
transaction, one row per entry with the columns a search filters on (time, device, seq,
kind, verdict, reason, rule, subject, action, resource, bundle version), keyed by the search
order (time, device, seq) and indexed by the selective filters followed by that order
(:data:`hub.registry.schema.INDEXES`). A filter with an index then reads its matches
already in order, and a page costs the rows it returns plus those the other filters skip,
wherever the page is: pagination is by keyset (a cursor, the last hit shown), never by offset.

The columns are read from entries the hub verified before storing them (strict decode,
canonical form, chain, tree), so :func:`search_row` reads them with a plain CBOR decode.

A registry written before this table existed gets it when opened, filled from the stored
entries in one transaction (:func:`ensure_search`): an interrupted fill leaves no table, and
the next open fills it again. Every statement binds its values; the only SQL assembled is
the fixed clause per filter.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from hub.registry.interface import RegistryError
from hub.registry.lineage_records import LineageCursor, LineageHit, LineagePage, LineageQuery
from hub.registry.records import Accepted
from hub.registry.rows import entry_row, lineage_hit_row, search_row
from hub.registry.sqlite.schema import SEARCH_SCHEMA
from hub.registry.sqlite.transactions import (
    SqliteTransactions,
    as_int,
)

__all__ = [
    "MAX_PAGE_ROWS",
    "SEARCH_INSERT",
    "LineageSearchTables",
    "ensure_search",
    "store_search_rows",
]

logger = logging.getLogger(__name__)

MAX_PAGE_ROWS = 500
"""Most hits one search page returns."""
_EXPORT_PAGE_ROWS = 1000
_BACKFILL_ROWS = 10_000


SEARCH_INSERT = "INSERT OR IGNORE INTO lineage_search VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
"""One search row (:func:`search_row`'s columns in order)."""


_COLUMNS = (
    "device, seq, time, kind, allowed, reason, rule, subject, action, resource, bundle_version"
)
_ORDER = " ORDER BY time DESC, device DESC, seq DESC LIMIT ?"
_MEMBERS = "SELECT d.id FROM devices AS d, json_each(d.groups) AS g WHERE g.value = ?"
_GROUP_BY_DEVICE = f"device IN ({_MEMBERS})"
_GROUP_IN_TIME_ORDER = f"+device IN ({_MEMBERS})"
"""A group filter, read through the device index (a small group: its entries are found at
once and sorted) or in time order skipping other devices (the unary ``+`` keeps SQLite off
the device index: for a large group a page fills after a few rows per hit)."""
_GROUP_SHARE = f"SELECT (SELECT count(*) FROM ({_MEMBERS})), (SELECT count(*) FROM devices)"
LARGE_GROUP_PERCENT = 1
"""A group holding at least this share of the registered devices is read in time order."""


def store_search_rows(db: sqlite3.Connection, accepted: Accepted) -> None:
    """Write the search rows of a verified batch's entries inside the caller's transaction
    (the one storing the entries), from the entries verification decoded when it kept
    them."""
    device = accepted.device
    if len(accepted.decoded) == len(accepted.entries):
        rows = [entry_row(device, entry) for entry in accepted.decoded]
    else:
        rows = [
            search_row(device, accepted.first_seq + i, e) for i, e in enumerate(accepted.entries)
        ]
    db.executemany(SEARCH_INSERT, rows)


def ensure_search(db: sqlite3.Connection, path: Path) -> None:
    """Create the search table and indexes when missing; when the table itself was missing
    and entries are stored, fill it from them in the same transaction.

    Raises:
        RegistryError: the registry cannot be written, or holds an entry that is not one.
    """
    try:
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lineage_search'"
        ).fetchone()
        if exists:
            db.executescript(SEARCH_SCHEMA)
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in SEARCH_SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            filled = _backfill(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise RegistryError(f"cannot index the lineage of the hub registry {path}: {exc}") from exc
    if filled:
        logger.info("lineage search rows stored for %d entries (registry from before them)", filled)


def _backfill(db: sqlite3.Connection) -> int:
    rows = db.execute("SELECT device, seq, CAST(data AS BLOB) FROM lineage_entries")
    filled = 0
    while chunk := rows.fetchmany(_BACKFILL_ROWS):
        db.executemany(SEARCH_INSERT, [search_row(d, s, data) for d, s, data in chunk])
        filled += len(chunk)
    return filled


class LineageSearchTables(SqliteTransactions):
    """The lineage search operations of :class:`hub.registry.interface.Registry`."""

    def search_lineage(
        self, query: LineageQuery, *, after: LineageCursor | None = None, limit: int = 50
    ) -> LineagePage:
        if not 1 <= limit <= MAX_PAGE_ROWS:
            raise ValueError(f"a search page holds 1 to {MAX_PAGE_ROWS} hits")
        hits = self._search(query, after, limit + 1)
        more = len(hits) > limit
        hits = hits[:limit]
        return LineagePage(tuple(hits), hits[-1].cursor if more else None)

    def iter_lineage(self, query: LineageQuery) -> Iterator[LineageHit]:
        after: LineageCursor | None = None
        while True:
            hits = self._search(query, after, _EXPORT_PAGE_ROWS)
            yield from hits
            if len(hits) < _EXPORT_PAGE_ROWS:
                return
            after = hits[-1].cursor

    def lineage_hit(self, device: str, seq: int) -> LineageHit | None:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM lineage_search WHERE device = ? AND seq = ? LIMIT 1",
            (device, seq),
        )
        return lineage_hit_row(rows[0]) if rows else None

    def _search(
        self, query: LineageQuery, after: LineageCursor | None, limit: int
    ) -> list[LineageHit]:
        clauses, params = _where(query)
        if query.group is not None:
            members, devices = self._read(_GROUP_SHARE, (query.group,))[0]
            large = as_int(members) * 100 >= as_int(devices) * LARGE_GROUP_PERCENT
            clauses.append(_GROUP_IN_TIME_ORDER if large else _GROUP_BY_DEVICE)
            params.append(query.group)
        if after is not None:
            clauses.append("(time, device, seq) < (?, ?, ?)")
            params.extend((after.time, after.device, after.seq))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT {_COLUMNS} FROM lineage_search{where}{_ORDER}", (*params, limit))
        return [lineage_hit_row(row) for row in rows]


def _where(query: LineageQuery) -> tuple[list[str], list[object]]:
    """The fixed clause of each filter set in ``query`` but the group, and its bound
    values."""
    clauses: list[str] = []
    params: list[object] = []

    def equal(column: str, value: object) -> None:
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)

    equal("device", query.device)
    if query.since is not None:
        clauses.append("time >= ?")
        params.append(query.since)
    if query.until is not None:
        clauses.append("time < ?")
        params.append(query.until)
    equal("allowed", None if query.allowed is None else int(query.allowed))
    equal("kind", query.kind)
    equal("reason", query.reason)
    equal("rule", query.rule)
    equal("subject", query.subject)
    equal("action", query.action)
    equal("bundle_version", query.bundle_version)
    if query.resource_prefix is not None:
        clauses.append("resource GLOB ?")
        params.append(_glob_prefix(query.resource_prefix))
    return clauses, params


def _glob_prefix(prefix: str) -> str:
    """A GLOB pattern matching exactly the strings that start with ``prefix`` (its ``*``,
    ``?`` and ``[`` made literal; GLOB is case-sensitive, as the prefix is)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in prefix) + "*"

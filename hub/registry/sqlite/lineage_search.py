"""The fleet-wide lineage search's rows in the SQLite registry (table ``lineage_search``;
the search itself: :mod:`hub.registry.queries.device_logs`).

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
the next open fills it again.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from hub.registry.interface import RegistryError
from hub.registry.queries.base import Session
from hub.registry.queries.device_logs import search_rows
from hub.registry.records import Accepted
from hub.registry.rows import search_row
from hub.registry.sqlite.schema import SEARCH_SCHEMA

__all__ = ["SEARCH_INSERT", "ensure_search", "store_search_rows"]

logger = logging.getLogger(__name__)

_BACKFILL_ROWS = 10_000


SEARCH_INSERT = "INSERT OR IGNORE INTO lineage_search VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
"""One search row (:func:`search_row`'s columns in order)."""


def store_search_rows(db: Session, accepted: Accepted) -> None:
    """Write the search rows of a verified batch's entries inside the caller's transaction
    (the one storing the entries)."""
    db.executemany(SEARCH_INSERT, search_rows(accepted))


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

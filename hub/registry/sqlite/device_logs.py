"""Device logs in the SQLite registry: the queries of :mod:`hub.registry.queries.device_logs`
with SQLite's own bulk insert of a batch (one prepared statement per table, run for each
row) and its plan for a group filter of the lineage search."""

from __future__ import annotations

from hub.registry.queries.base import Session
from hub.registry.queries.device_logs import (
    CHECKPOINT_INSERT,
    CLAIM_FIRST,
    CLAIM_NEXT,
    MEMBERS,
    store_params,
)
from hub.registry.queries.device_logs import DeviceLogTables as SharedDeviceLogTables
from hub.registry.records import Accepted
from hub.registry.rows import as_int
from hub.registry.sqlite.lineage_search import store_search_rows
from hub.registry.sqlite.transactions import SqliteTransactions
from hub.registry.tree_reader import NODE_LEVEL

__all__ = ["LARGE_GROUP_PERCENT", "DeviceLogTables"]

_MEMBERS = MEMBERS["sqlite"]
_GROUP_BY_DEVICE = f"device IN ({_MEMBERS})"
_GROUP_IN_TIME_ORDER = f"+device IN ({_MEMBERS})"
"""A group filter, read through the device index (a small group: its entries are found at
once and sorted) or in time order skipping other devices (the unary ``+`` keeps SQLite off
the device index: for a large group a page fills after a few rows per hit)."""
_GROUP_SHARE = f"SELECT (SELECT count(*) FROM ({_MEMBERS})), (SELECT count(*) FROM devices)"
LARGE_GROUP_PERCENT = 1
"""A group holding at least this share of the registered devices is read in time order."""


class DeviceLogTables(SharedDeviceLogTables, SqliteTransactions):
    """The device log operations of :class:`hub.registry.interface.Registry` on SQLite."""

    def store_batch(self, accepted: Accepted, *, expected_size: int, received_at: int) -> bool:
        params = store_params(accepted, expected_size=expected_size, received_at=received_at)
        with self._write("store the lineage batch") as db:
            claim = CLAIM_FIRST if expected_size == 0 else CLAIM_NEXT
            if db.execute(claim, params).rowcount != 1:
                return False
            self._insert_batch(db, accepted)
            db.execute(CHECKPOINT_INSERT, params)
        return True

    def _insert_batch(self, db: Session, accepted: Accepted) -> None:
        """Insert a verified batch's entries, their search rows and the tree nodes of level
        :data:`~hub.registry.tree_reader.NODE_LEVEL` and up, inside the caller's write."""
        db.executemany(
            "INSERT INTO lineage_entries VALUES (?, ?, ?)",
            [
                (accepted.device, accepted.first_seq + i, data)
                for i, data in enumerate(accepted.entries)
            ],
        )
        store_search_rows(db, accepted)
        db.executemany(
            "INSERT INTO lineage_nodes VALUES (?, ?, ?, ?)",
            [
                (accepted.device, node.level, node.index, node.hash)
                for node in accepted.nodes
                if node.level >= NODE_LEVEL
            ],
        )

    def _group_clause(self, group: str) -> str:
        members, devices = self._read(_GROUP_SHARE, (group,))[0]
        large = as_int(members) * 100 >= as_int(devices) * LARGE_GROUP_PERCENT
        return _GROUP_IN_TIME_ORDER if large else _GROUP_BY_DEVICE

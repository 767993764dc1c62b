"""Device logs in the PostgreSQL registry: the queries of
:mod:`hub.registry.queries.device_logs` with PostgreSQL's own bulk insert of a batch (one
statement per table over binary arrays) and its group filter of the lineage search."""

from __future__ import annotations

from hub.registry.postgres.transactions import PostgresTransactions, cursor_of
from hub.registry.queries.base import Session
from hub.registry.queries.device_logs import MEMBERS, search_rows
from hub.registry.queries.device_logs import DeviceLogTables as SharedDeviceLogTables
from hub.registry.records import Accepted
from hub.registry.tree_reader import NODE_LEVEL

__all__ = ["DeviceLogTables"]

_ENTRIES_INSERT = (
    "INSERT INTO lineage_entries SELECT %s, seq, data FROM unnest(%s::bigint[], %s::bytea[]) "
    "AS batch(seq, data)"
)
_SEARCH_INSERT = (
    "INSERT INTO lineage_search SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[], "
    "%s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::bigint[]) ON CONFLICT DO NOTHING"
)
_NODES_INSERT = (
    "INSERT INTO lineage_nodes SELECT %s, level, idx, hash FROM "
    "unnest(%s::bigint[], %s::bigint[], %s::bytea[]) AS batch(level, idx, hash)"
)
"""A batch's rows go in as one binary array per column, one statement per table: a
statement per row costs the hub and the server a parameter conversion and an execution each
(bench/scale.py measured the CPU per entry of both)."""
_GROUP = f"device IN ({MEMBERS['postgresql']})"


class DeviceLogTables(SharedDeviceLogTables, PostgresTransactions):
    """The device log operations of :class:`hub.registry.interface.Registry` on PostgreSQL."""

    def _insert_batch(self, db: Session, accepted: Accepted) -> None:
        cursor = cursor_of(db)
        first = accepted.first_seq
        seqs = list(range(first, first + len(accepted.entries)))
        cursor.execute(
            _ENTRIES_INSERT, (accepted.device, seqs, list(accepted.entries)), binary=True
        )
        columns = [list(column) for column in zip(*search_rows(accepted), strict=True)]
        if columns:
            cursor.execute(_SEARCH_INSERT, columns, binary=True)
        nodes = [node for node in accepted.nodes if node.level >= NODE_LEVEL]
        cursor.execute(
            _NODES_INSERT,
            (
                accepted.device,
                [node.level for node in nodes],
                [node.index for node in nodes],
                [node.hash for node in nodes],
            ),
            binary=True,
        )

    def _group_clause(self, group: str) -> str:
        return _GROUP

"""Device logs in the PostgreSQL registry: the queries of
:mod:`hub.registry.queries.device_logs`, a batch stored in one statement (the shared
compare-and-set, then each table's rows as binary arrays) and PostgreSQL's group filter of
the lineage search."""

from __future__ import annotations

from hub.registry.postgres.arrays import bytea_array, int8_array, text_array
from hub.registry.postgres.transactions import PostgresTransactions
from hub.registry.queries.base import render
from hub.registry.queries.device_logs import (
    CLAIM_FIRST,
    CLAIM_NEXT,
    MEMBERS,
    search_rows,
    store_params,
)
from hub.registry.queries.device_logs import DeviceLogTables as SharedDeviceLogTables
from hub.registry.records import Accepted
from hub.registry.rows import SearchRow, as_int
from hub.registry.tree_reader import NODE_LEVEL

__all__ = ["DeviceLogTables"]

_CLAIMED = "WHERE EXISTS (SELECT FROM claim)"
_ROWS = (
    "entries AS (INSERT INTO lineage_entries SELECT %(device)s, seq, data FROM "
    f"unnest(%(seqs)b::bigint[], %(data)b::bytea[]) AS batch(seq, data) {_CLAIMED}), "
    "search AS (INSERT INTO lineage_search SELECT * FROM unnest(%(s_time)b::bigint[], "
    "%(s_device)b::text[], %(s_seq)b::bigint[], %(s_kind)b::text[], %(s_allowed)b::bigint[], "
    "%(s_reason)b::text[], %(s_rule)b::text[], %(s_subject)b::text[], %(s_action)b::text[], "
    f"%(s_resource)b::text[], %(s_version)b::bigint[]) AS batch {_CLAIMED} "
    "ON CONFLICT DO NOTHING), "
    "nodes AS (INSERT INTO lineage_nodes SELECT %(device)s, level, idx, hash FROM "
    "unnest(%(levels)b::bigint[], %(indexes)b::bigint[], %(hashes)b::bytea[]) "
    f"AS batch(level, idx, hash) {_CLAIMED}), "
    "checkpoint AS (INSERT INTO lineage_checkpoints SELECT %(device)s, %(size)s, %(root)s, "
    f"%(note)s, %(received_at)s {_CLAIMED} ON CONFLICT (device, size) DO UPDATE SET "
    "root = excluded.root, note = excluded.note, received_at = excluded.received_at) "
    "SELECT count(*) FROM claim"
)
_STORE = {
    first: f"WITH claim AS ({render(claim, 'postgresql')} RETURNING 1), {_ROWS}"
    for first, claim in ((True, CLAIM_FIRST), (False, CLAIM_NEXT))
}
"""A batch in one statement (one round trip, one parse once prepared): the claim
(:data:`~hub.registry.queries.device_logs.CLAIM_FIRST` or ``CLAIM_NEXT``) and every row of
the batch, the checkpoint's as ``CHECKPOINT_INSERT`` writes it, each insert kept to a claim
that changed a row (``WHERE EXISTS``: a batch another hub stored first leaves nothing of
this one). The rows go in as one array per column in binary format (``%b``,
:mod:`hub.registry.postgres.arrays`): a statement per row
costs the hub and the server a parameter conversion and an execution each, and arrays sent
as text cost both a quoting and a parse of every element (bench/scale.py measured the CPU
per entry of each)."""
_GROUP = f"device IN ({MEMBERS['postgresql']})"


class DeviceLogTables(SharedDeviceLogTables, PostgresTransactions):
    """The device log operations of :class:`hub.registry.interface.Registry` on PostgreSQL."""

    def store_batch(self, accepted: Accepted, *, expected_size: int, received_at: int) -> bool:
        params = store_params(accepted, expected_size=expected_size, received_at=received_at)
        first = accepted.first_seq
        params["seqs"] = int8_array(range(first, first + len(accepted.entries)))
        params["data"] = bytea_array(accepted.entries)
        params.update(_search_arrays(search_rows(accepted)))
        nodes = [node for node in accepted.nodes if node.level >= NODE_LEVEL]
        params["levels"] = int8_array([node.level for node in nodes])
        params["indexes"] = int8_array([node.index for node in nodes])
        params["hashes"] = bytea_array([node.hash for node in nodes])
        claimed = self._write_one("store the lineage batch", _STORE[expected_size == 0], params)
        return as_int(claimed[0][0]) == 1

    def _group_clause(self, group: str) -> str:
        return _GROUP


def _search_arrays(rows: list[SearchRow]) -> dict[str, object]:
    """The search rows of a batch as the statement's column arrays."""
    return {
        "s_time": int8_array([row[0] for row in rows]),
        "s_device": text_array([row[1] for row in rows]),
        "s_seq": int8_array([row[2] for row in rows]),
        "s_kind": text_array([row[3] for row in rows]),
        "s_allowed": int8_array([row[4] for row in rows]),
        "s_reason": text_array([row[5] for row in rows]),
        "s_rule": text_array([row[6] for row in rows]),
        "s_subject": text_array([row[7] for row in rows]),
        "s_action": text_array([row[8] for row in rows]),
        "s_resource": text_array([row[9] for row in rows]),
        "s_version": int8_array([row[10] for row in rows]),
    }

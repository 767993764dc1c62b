"""Device logs in the PostgreSQL registry: each device's shipped lineage entries, the hub's
state of its log, every checkpoint it verified, the upper Merkle tree nodes proofs read,
fork evidence, and the fleet-wide lineage search rows stored with the entries (the search
and its keyset pages as in :mod:`hub.registry.sqlite.lineage_search`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from edge_agent.protocol.merkle import HASH_SIZE, Frontier, NodeFetcher
from hub.registry.interface import MAX_FORK_EVIDENCE, RegistryError
from hub.registry.lineage_records import LineageCursor, LineageHit, LineagePage, LineageQuery
from hub.registry.postgres.transactions import PostgresTransactions
from hub.registry.records import (
    Accepted,
    DeviceLog,
    ForkEvidence,
    StoredCheckpoint,
    StoredEntry,
    StoredLog,
)
from hub.registry.rollout_records import LineageTally
from hub.registry.rows import (
    as_bytes,
    as_int,
    as_opt_int,
    as_text,
    entry_row,
    lineage_hit_row,
    search_row,
    stored_checkpoint,
)
from hub.registry.tree_reader import NODE_LEVEL, NodeReader

__all__ = ["MAX_PAGE_ROWS", "DeviceLogTables"]

PAGE_ROWS = 1000
"""Entries (or checkpoints, after the first pages) read per query by the iterators."""
FIRST_CHECKPOINT_PAGE = 4
"""Checkpoints in the first page of :meth:`DeviceLogTables.iter_checkpoints` (then 4 times
more per page up to :data:`PAGE_ROWS`): a receipt usually needs only the newest."""
MAX_PAGE_ROWS = 500
"""Most hits one search page returns."""
_EXPORT_PAGE_ROWS = 1000

_NODE_SQL = "SELECT hash FROM lineage_nodes WHERE device = %s AND level = %s AND idx = %s"
_BLOCK_SQL = (
    "SELECT seq, data FROM lineage_entries WHERE device = %s AND seq >= %s AND seq < %s "
    "ORDER BY seq"
)
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
_COLUMNS = (
    "device, seq, time, kind, allowed, reason, rule, subject, action, resource, bundle_version"
)
_ORDER = " ORDER BY time DESC, device DESC, seq DESC LIMIT %s"
_MEMBERS = (
    "SELECT d.id FROM devices AS d WHERE EXISTS (SELECT 1 FROM "
    "jsonb_array_elements_text(d.groups::jsonb) AS g WHERE g = %s)"
)


class DeviceLogTables(PostgresTransactions):
    """The device log and lineage search operations of
    :class:`hub.registry.interface.Registry`."""

    def lineage_state(self, device: str) -> DeviceLog:
        rows = self._read(
            "SELECT size, frontier, last_hash, checkpoint FROM lineage_state WHERE device = %s",
            (device,),
        )
        if not rows:
            return DeviceLog()
        size, frontier, last_hash, checkpoint = rows[0]
        blob, count = as_bytes(frontier), as_int(size)
        hashes = tuple(blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE))
        try:
            return DeviceLog(
                count,
                Frontier(count, hashes),
                as_bytes(last_hash),
                None if checkpoint is None else as_text(checkpoint),
            )
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"the lineage state of {device} in {self.path} is damaged") from exc

    def stored_log(self, device: str) -> StoredLog:
        return _DeviceStoredLog(self, device)

    def entries(self, device: str, start: int, stop: int) -> list[bytes]:
        rows = self._read(
            "SELECT data FROM lineage_entries WHERE device = %s AND seq >= %s AND seq < %s "
            "ORDER BY seq",
            (device, start, stop),
        )
        return [as_bytes(r[0]) for r in rows]

    def iter_entries(self, device: str, start: int = 0) -> Iterator[StoredEntry]:
        position = start
        while True:
            rows = self._read(
                "SELECT seq, data FROM lineage_entries WHERE device = %s AND seq >= %s "
                "ORDER BY seq LIMIT %s",
                (device, position, PAGE_ROWS),
            )
            for seq, data in rows:
                yield StoredEntry(as_int(seq), as_bytes(data))
            if len(rows) < PAGE_ROWS:
                return
            position = as_int(rows[-1][0]) + 1

    def checkpoint_root(self, device: str, size: int) -> bytes | None:
        rows = self._read(
            "SELECT root FROM lineage_checkpoints WHERE device = %s AND size = %s",
            (device, size),
        )
        return as_bytes(rows[0][0]) if rows else None

    def checkpoint(self, device: str, size: int) -> StoredCheckpoint | None:
        rows = self._read(
            "SELECT size, root, note, received_at FROM lineage_checkpoints "
            "WHERE device = %s AND size = %s",
            (device, size),
        )
        return stored_checkpoint(rows[0]) if rows else None

    def iter_checkpoints(self, device: str, *, min_size: int = 0) -> Iterator[StoredCheckpoint]:
        below = 2**63 - 1
        page = FIRST_CHECKPOINT_PAGE
        while True:
            rows = self._read(
                "SELECT size, root, note, received_at FROM lineage_checkpoints "
                "WHERE device = %s AND size >= %s AND size < %s ORDER BY size DESC LIMIT %s",
                (device, min_size, below, page),
            )
            yield from (stored_checkpoint(row) for row in rows)
            if len(rows) < page:
                return
            below = as_int(rows[-1][0])
            page = min(page * 4, PAGE_ROWS)

    def tree_nodes(self, device: str) -> NodeFetcher:
        return NodeReader(
            self._read, device, str(self.path), node_sql=_NODE_SQL, block_sql=_BLOCK_SQL
        )

    def store_batch(self, accepted: Accepted, *, expected_size: int, received_at: int) -> bool:
        log = accepted.log
        with self._write("store the lineage batch") as cursor:
            # The compare-and-set first: the new state replaces only a state of
            # expected_size, as committed (the row lock makes a concurrent writer wait, then
            # re-check; a first batch inserts, and a concurrent first insert waits for the
            # other's commit, then finds a held state whose size is no longer 0). So of two
            # hubs storing the same batch, one stores it and the other stores nothing.
            state = (
                log.size,
                b"".join(log.frontier.hashes),
                log.last_hash,
                log.checkpoint,
                received_at,
            )
            if expected_size == 0:
                claimed = cursor.execute(
                    "INSERT INTO lineage_state VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (device) DO UPDATE SET size = excluded.size, "
                    "frontier = excluded.frontier, last_hash = excluded.last_hash, "
                    "checkpoint = excluded.checkpoint, updated_at = excluded.updated_at "
                    "WHERE lineage_state.size = 0",
                    (accepted.device, *state),
                ).rowcount
            else:
                claimed = cursor.execute(
                    "UPDATE lineage_state SET size = %s, frontier = %s, last_hash = %s, "
                    "checkpoint = %s, updated_at = %s WHERE device = %s AND size = %s",
                    (*state, accepted.device, expected_size),
                ).rowcount
            if claimed != 1:
                return False
            first = accepted.first_seq
            seqs = list(range(first, first + len(accepted.entries)))
            cursor.execute(
                _ENTRIES_INSERT, (accepted.device, seqs, list(accepted.entries)), binary=True
            )
            columns = [list(column) for column in zip(*_search_rows(accepted), strict=True)]
            if columns:
                cursor.execute(_SEARCH_INSERT, columns, binary=True)
            cursor.execute(
                "INSERT INTO lineage_checkpoints VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (device, size) DO UPDATE SET root = excluded.root, "
                "note = excluded.note, received_at = excluded.received_at",
                (accepted.device, log.size, log.root, log.checkpoint or "", received_at),
            )
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
        return True

    def record_fork(self, evidence: ForkEvidence, detected_at: int) -> None:
        with self._write("record fork evidence") as db:
            self._lock(db, f"forks {evidence.device}")
            held = db.execute(
                "SELECT count(*) FROM forks WHERE device = %s", (evidence.device,)
            ).fetchone()
            if held is not None and as_int(held[0]) < MAX_FORK_EVIDENCE:
                db.execute(
                    "INSERT INTO forks (device, reason, held_note, new_note, batch, detected_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        evidence.device,
                        evidence.reason,
                        evidence.held_note,
                        evidence.new_note,
                        evidence.batch,
                        detected_at,
                    ),
                )

    def forks(self, device: str) -> list[ForkEvidence]:
        rows = self._read(
            "SELECT device, reason, held_note, new_note, batch FROM forks WHERE device = %s "
            "ORDER BY id",
            (device,),
        )
        return [
            ForkEvidence(
                as_text(d), as_text(r), None if h is None else as_text(h), as_text(n), as_bytes(b)
            )
            for d, r, h, n, b in rows
        ]

    # Lineage search.

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
            f"SELECT {_COLUMNS} FROM lineage_search WHERE device = %s AND seq = %s LIMIT 1",
            (device, seq),
        )
        return lineage_hit_row(rows[0]) if rows else None

    def _search(
        self, query: LineageQuery, after: LineageCursor | None, limit: int
    ) -> list[LineageHit]:
        clauses, params = _where(query)
        if after is not None:
            clauses.append("(time, device, seq) < (%s, %s, %s)")
            params.extend((after.time, after.device, after.seq))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT {_COLUMNS} FROM lineage_search{where}{_ORDER}", (*params, limit))
        return [lineage_hit_row(row) for row in rows]

    # Staged rollouts' tallies of stored entries.

    def lineage_tallies(self, devices: Sequence[str], since: int, until: int) -> list[LineageTally]:
        rows = self._read(
            "SELECT kind, allowed, reason, rule, bundle_version, count(*), "
            "count(DISTINCT device) FROM lineage_search WHERE device = ANY(%s) AND time >= %s "
            "AND time < %s GROUP BY kind, allowed, reason, rule, bundle_version "
            "ORDER BY kind, allowed, reason, rule NULLS FIRST, bundle_version NULLS FIRST",
            (list(devices), since, until),
        )
        return [
            LineageTally(
                as_text(kind),
                bool(as_int(allowed)),
                as_text(reason),
                None if rule is None else as_text(rule),
                as_opt_int(version),
                as_int(count),
                as_int(distinct),
            )
            for kind, allowed, reason, rule, version, count, distinct in rows
        ]

    def devices_with_entry(self, devices: Sequence[str], kind: str, since: int) -> list[str]:
        rows = self._read(
            "SELECT DISTINCT device FROM lineage_search WHERE device = ANY(%s) AND time >= %s "
            "AND kind = %s ORDER BY device",
            (list(devices), since, kind),
        )
        return [as_text(r[0]) for r in rows]


def _search_rows(accepted: Accepted) -> list[tuple[object, ...]]:
    """The search rows of a verified batch's entries, from the entries verification decoded
    when it kept them."""
    device = accepted.device
    if len(accepted.decoded) == len(accepted.entries):
        return [entry_row(device, entry) for entry in accepted.decoded]
    return [search_row(device, accepted.first_seq + i, e) for i, e in enumerate(accepted.entries)]


def _where(query: LineageQuery) -> tuple[list[str], list[object]]:
    """The fixed clause of each filter set in ``query``, and its bound values."""
    clauses: list[str] = []
    params: list[object] = []

    def equal(column: str, value: object) -> None:
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)

    equal("device", query.device)
    if query.since is not None:
        clauses.append("time >= %s")
        params.append(query.since)
    if query.until is not None:
        clauses.append("time < %s")
        params.append(query.until)
    equal("allowed", None if query.allowed is None else int(query.allowed))
    equal("kind", query.kind)
    equal("reason", query.reason)
    equal("rule", query.rule)
    equal("subject", query.subject)
    equal("action", query.action)
    equal("bundle_version", query.bundle_version)
    if query.resource_prefix is not None:
        clauses.append("starts_with(resource, %s)")
        params.append(query.resource_prefix)
    if query.group is not None:
        clauses.append(f"device IN ({_MEMBERS})")
        params.append(query.group)
    return clauses, params


class _DeviceStoredLog:
    """:class:`hub.core.ingest.StoredLog` over one device's rows."""

    def __init__(self, tables: DeviceLogTables, device: str) -> None:
        self._tables = tables
        self._device = device

    def entries(self, start: int, stop: int) -> Sequence[bytes]:
        return self._tables.entries(self._device, start, stop)

    def checkpoint_root(self, size: int) -> bytes | None:
        return self._tables.checkpoint_root(self._device, size)

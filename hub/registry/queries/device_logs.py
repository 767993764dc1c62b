"""Device logs in the registry, either backend: each device's shipped lineage entries, the
hub's state of its log (size, frontier, last entry hash, last checkpoint note), every
checkpoint the hub verified (it is the log's witness), the upper Merkle tree nodes proofs
read, fork evidence, the fleet-wide lineage search over the rows stored with the entries,
and the per-stage tallies of those rows a staged rollout is judged on (tables
``lineage_state``, ``lineage_entries``, ``lineage_checkpoints``, ``lineage_nodes``,
``forks``, ``lineage_search``).

Each backend stores a batch its own way (``store_batch``); the compare-and-set that decides
whether the batch is stored at all (:data:`CLAIM_FIRST`, :data:`CLAIM_NEXT`) and its
checkpoint's row are shared. The search
pages by keyset (a cursor, the last hit shown), never by offset; every statement binds its
values, the only SQL assembled is the fixed clause per filter.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence

from edge_agent.protocol.merkle import HASH_SIZE, Frontier, NodeFetcher
from hub.registry.interface import MAX_FORK_EVIDENCE, RegistryError
from hub.registry.lineage_records import LineageCursor, LineageHit, LineagePage, LineageQuery
from hub.registry.queries.base import RegistryQueries
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
    SearchRow,
    as_bytes,
    as_int,
    as_opt_int,
    as_text,
    entry_row,
    lineage_hit_row,
    search_row,
    searchable,
    stored_checkpoint,
)
from hub.registry.schema import RETENTION_TABLE, Dialect
from hub.registry.tree_reader import NodeReader

__all__ = [
    "CHECKPOINT_INSERT",
    "CLAIM_FIRST",
    "CLAIM_NEXT",
    "FIRST_CHECKPOINT_PAGE",
    "MAX_PAGE_ROWS",
    "MEMBERS",
    "PAGE_ROWS",
    "DeviceLogTables",
    "search_rows",
    "store_params",
]

PAGE_ROWS = 1000
"""Entries (or checkpoints, after the first pages) read per query by the iterators."""
FIRST_CHECKPOINT_PAGE = 4
"""Checkpoints in the first page of :meth:`DeviceLogTables.iter_checkpoints` (then 4 times
more per page up to :data:`PAGE_ROWS`): a receipt usually needs only the newest."""
MAX_PAGE_ROWS = 500
"""Most hits one search page returns."""
_EXPORT_PAGE_ROWS = 1000
_MAX_SIZE = 2**63 - 1
"""The largest integer both databases store: above every checkpoint size."""

_DATA: dict[Dialect, str] = {"sqlite": "CAST(data AS BLOB)", "postgresql": "data"}
"""An entry's bytes (SQLite: as a blob whatever the storage class it was written with)."""

MEMBERS: dict[Dialect, str] = {
    "sqlite": "SELECT d.id FROM devices AS d, json_each(d.groups) AS g WHERE g.value = ?",
    "postgresql": (
        "SELECT d.id FROM devices AS d WHERE EXISTS (SELECT 1 FROM "
        "jsonb_array_elements_text(d.groups::jsonb) AS g WHERE g = ?)"
    ),
}
"""The ids of the devices in a group (the ``groups`` column holds a JSON array)."""

_DEVICE_SET: dict[Dialect, tuple[str, Callable[[Sequence[str]], object]]] = {
    "sqlite": ("device IN (SELECT value FROM json_each(?))", lambda d: json.dumps(list(d))),
    "postgresql": ("device = ANY(?)", list),
}
"""A clause matching rows of the given devices, and the value it binds."""

_PREFIX: dict[Dialect, tuple[str, Callable[[str], str]]] = {
    "sqlite": (
        "resource GLOB ?",
        lambda p: "".join(f"[{c}]" if c in "*?[" else c for c in p) + "*",
    ),
    "postgresql": ("starts_with(resource, ?)", str),
}
"""A clause matching the resources that start with a prefix, and the value it binds
(SQLite: a GLOB pattern, its ``*``, ``?`` and ``[`` made literal; case-sensitive, as the
prefix is, and read through the resource index)."""

CLAIM_FIRST = (
    "INSERT INTO lineage_state VALUES (:device, :size, :frontier, :last_hash, :checkpoint, "
    ":received_at) ON CONFLICT (device) DO UPDATE SET size = excluded.size, "
    "frontier = excluded.frontier, last_hash = excluded.last_hash, "
    "checkpoint = excluded.checkpoint, updated_at = excluded.updated_at "
    "WHERE lineage_state.size = 0"
)
CLAIM_NEXT = (
    "UPDATE lineage_state SET size = :size, frontier = :frontier, last_hash = :last_hash, "
    "checkpoint = :checkpoint, updated_at = :received_at "
    "WHERE device = :device AND size = :expected_size"
)
"""The compare-and-set that decides whether a batch is stored at all (of a device's first
batch, and of the next ones): the new state replaces only a state of the expected size, as
committed. PostgreSQL's row lock makes a concurrent writer wait, then re-check, and a
concurrent first insert waits for the other's commit, then finds a held state whose size is
no longer 0; SQLite's write lock lets one writer in at a time. So of two hubs storing the
same batch, one stores it and the other stores nothing: the batch's rows go in only with a
claim that changed one row (:func:`store_params` binds both)."""
CHECKPOINT_INSERT = (
    "INSERT INTO lineage_checkpoints VALUES (:device, :size, :root, :note, :received_at) "
    "ON CONFLICT (device, size) DO UPDATE SET root = excluded.root, note = excluded.note, "
    "received_at = excluded.received_at"
)
"""The checkpoint a stored batch ends on."""

_COLUMNS = (
    "device, seq, time, kind, allowed, reason, rule, subject, action, resource, bundle_version"
)
_ORDER = " ORDER BY time DESC, device DESC, seq DESC LIMIT ?"


class DeviceLogTables(RegistryQueries):
    """The device log, lineage search and rollout tally operations of
    :class:`hub.registry.interface.Registry`."""

    @abstractmethod
    def _group_clause(self, group: str) -> str:
        """The search clause keeping a group's devices (binding ``group`` once)."""

    def lineage_state(self, device: str) -> DeviceLog:
        rows = self._rows(
            "SELECT size, frontier, last_hash, checkpoint FROM lineage_state WHERE device = ?",
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
        rows = self._rows(
            f"SELECT {_DATA[self.dialect]} FROM lineage_entries "
            "WHERE device = ? AND seq >= ? AND seq < ? ORDER BY seq",
            (device, start, stop),
        )
        return [as_bytes(r[0]) for r in rows]

    def iter_entries(self, device: str, start: int = 0) -> Iterator[StoredEntry]:
        position = start
        while True:
            rows = self._rows(
                f"SELECT seq, {_DATA[self.dialect]} FROM lineage_entries "
                "WHERE device = ? AND seq >= ? ORDER BY seq LIMIT ?",
                (device, position, PAGE_ROWS),
            )
            for seq, data in rows:
                yield StoredEntry(as_int(seq), as_bytes(data))
            if len(rows) < PAGE_ROWS:
                return
            position = as_int(rows[-1][0]) + 1

    def checkpoint_root(self, device: str, size: int) -> bytes | None:
        rows = self._rows(
            "SELECT root FROM lineage_checkpoints WHERE device = ? AND size = ?", (device, size)
        )
        return as_bytes(rows[0][0]) if rows else None

    def checkpoint(self, device: str, size: int) -> StoredCheckpoint | None:
        rows = self._rows(
            "SELECT size, root, note, received_at FROM lineage_checkpoints "
            "WHERE device = ? AND size = ?",
            (device, size),
        )
        return stored_checkpoint(rows[0]) if rows else None

    def iter_checkpoints(self, device: str, *, min_size: int = 0) -> Iterator[StoredCheckpoint]:
        below = _MAX_SIZE
        page = FIRST_CHECKPOINT_PAGE
        while True:
            rows = self._rows(
                "SELECT size, root, note, received_at FROM lineage_checkpoints "
                "WHERE device = ? AND size >= ? AND size < ? ORDER BY size DESC LIMIT ?",
                (device, min_size, below, page),
            )
            yield from (stored_checkpoint(row) for row in rows)
            if len(rows) < page:
                return
            below = as_int(rows[-1][0])
            page = min(page * 4, PAGE_ROWS)

    def tree_nodes(self, device: str) -> NodeFetcher:
        return NodeReader(
            self._read,
            device,
            str(self.path),
            node_sql=self._sql(
                "SELECT hash FROM lineage_nodes WHERE device = ? AND level = ? AND idx = ?"
            ),
            block_sql=self._sql(
                f"SELECT seq, {_DATA[self.dialect]} FROM lineage_entries "
                "WHERE device = ? AND seq >= ? AND seq < ? ORDER BY seq"
            ),
        )

    def record_fork(self, evidence: ForkEvidence, detected_at: int) -> None:
        with self._write("record fork evidence") as db:
            self._lock(db, f"forks {evidence.device}")
            held = db.execute(
                self._sql("SELECT count(*) FROM forks WHERE device = ?"), (evidence.device,)
            ).fetchone()
            if held is not None and as_int(held[0]) < MAX_FORK_EVIDENCE:
                db.execute(
                    self._sql(
                        "INSERT INTO forks (device, reason, held_note, new_note, batch, "
                        "detected_at) VALUES (?, ?, ?, ?, ?, ?)"
                    ),
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
        rows = self._rows(
            "SELECT device, reason, held_note, new_note, batch FROM forks WHERE device = ? "
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
        rows = self._rows("SELECT cut FROM retention WHERE name = ?", (RETENTION_TABLE,))
        cut = as_int(rows[0][0]) if rows else None
        reaches = cut is not None and (query.since is None or query.since < cut)
        return LineagePage(tuple(hits), hits[-1].cursor if more else None, cut if reaches else None)

    def iter_lineage(self, query: LineageQuery) -> Iterator[LineageHit]:
        after: LineageCursor | None = None
        while True:
            hits = self._search(query, after, _EXPORT_PAGE_ROWS)
            yield from hits
            if len(hits) < _EXPORT_PAGE_ROWS:
                return
            after = hits[-1].cursor

    def lineage_hit(self, device: str, seq: int) -> LineageHit | None:
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM lineage_search WHERE device = ? AND seq = ? LIMIT 1",
            (device, seq),
        )
        return lineage_hit_row(rows[0]) if rows else None

    def _search(
        self, query: LineageQuery, after: LineageCursor | None, limit: int
    ) -> list[LineageHit]:
        clauses, params = _where(query, self.dialect)
        if query.group is not None:
            clauses.append(self._group_clause(query.group))
            params.append(query.group)
        if after is not None:
            clauses.append("(time, device, seq) < (?, ?, ?)")
            params.extend((after.time, after.device, after.seq))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(f"SELECT {_COLUMNS} FROM lineage_search{where}{_ORDER}", (*params, limit))
        return [lineage_hit_row(row) for row in rows]

    # Staged rollouts' tallies of stored entries.

    def lineage_tallies(self, devices: Sequence[str], since: int, until: int) -> list[LineageTally]:
        among, value = _DEVICE_SET[self.dialect]
        rows = self._rows(
            "SELECT kind, allowed, reason, rule, bundle_version, count(*), "
            f"count(DISTINCT device) FROM lineage_search WHERE {among} AND time >= ? "
            "AND time < ? GROUP BY kind, allowed, reason, rule, bundle_version "
            "ORDER BY kind, allowed, reason, rule NULLS FIRST, bundle_version NULLS FIRST",
            (value(devices), since, until),
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
        among, value = _DEVICE_SET[self.dialect]
        rows = self._rows(
            f"SELECT DISTINCT device FROM lineage_search WHERE {among} AND time >= ? "
            "AND kind = ? ORDER BY device",
            (value(devices), since, kind),
        )
        return [as_text(r[0]) for r in rows]


def store_params(accepted: Accepted, *, expected_size: int, received_at: int) -> dict[str, object]:
    """The values :data:`CLAIM_FIRST`, :data:`CLAIM_NEXT` and :data:`CHECKPOINT_INSERT` bind
    for ``accepted`` stored on a log of ``expected_size`` entries."""
    log = accepted.log
    return {
        "device": accepted.device,
        "size": log.size,
        "frontier": b"".join(log.frontier.hashes),
        "last_hash": log.last_hash,
        "checkpoint": log.checkpoint,
        "received_at": received_at,
        "expected_size": expected_size,
        "root": log.root,
        "note": log.checkpoint or "",
    }


def search_rows(accepted: Accepted) -> list[SearchRow]:
    """The search rows of a verified batch's entries, from the entries verification decoded
    when it kept them."""
    device = accepted.device
    if len(accepted.decoded) == len(accepted.entries):
        return [entry_row(device, entry) for entry in accepted.decoded]
    return [search_row(device, accepted.first_seq + i, e) for i, e in enumerate(accepted.entries)]


def _where(query: LineageQuery, dialect: Dialect) -> tuple[list[str], list[object]]:
    """The fixed clause of each filter set in ``query`` but the group, and its bound
    values."""
    clauses: list[str] = []
    params: list[object] = []

    def equal(column: str, value: object) -> None:
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(searchable(value) if isinstance(value, str) else value)

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
        clause, pattern = _PREFIX[dialect]
        clauses.append(clause)
        params.append(pattern(searchable(query.resource_prefix) or ""))
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

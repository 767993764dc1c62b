"""Device logs in the SQLite registry: each device's shipped lineage entries, the hub's
state of its log (size, frontier, last entry hash, last checkpoint note), every checkpoint
the hub verified (it is the log's witness), the upper Merkle tree nodes proofs read
(:mod:`.tree_nodes`) and fork evidence (tables ``lineage_state``, ``lineage_entries``,
``lineage_checkpoints``, ``lineage_nodes``, ``forks``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from edge_agent.protocol.merkle import HASH_SIZE, Frontier, NodeFetcher
from hub.registry.interface import MAX_FORK_EVIDENCE, RegistryError
from hub.registry.records import (
    Accepted,
    DeviceLog,
    ForkEvidence,
    StoredCheckpoint,
    StoredEntry,
    StoredLog,
)
from hub.registry.rows import stored_checkpoint
from hub.registry.sqlite.lineage_search import store_search_rows
from hub.registry.sqlite.transactions import SqliteTransactions, as_bytes, as_int, as_text
from hub.registry.sqlite.tree_nodes import BLOCK_SQL, NODE_LEVEL, NODE_SQL
from hub.registry.tree_reader import NodeReader

__all__ = ["FIRST_CHECKPOINT_PAGE", "PAGE_ROWS", "DeviceLogTables"]

PAGE_ROWS = 1000
"""Entries (or checkpoints) read per query by :meth:`DeviceLogTables.iter_entries` (and
:meth:`DeviceLogTables.iter_checkpoints`, after its first pages)."""
FIRST_CHECKPOINT_PAGE = 4
"""Checkpoints in :meth:`DeviceLogTables.iter_checkpoints`'s first page (then 4 times more
per page up to :data:`PAGE_ROWS`): a receipt usually needs only the newest."""


class DeviceLogTables(SqliteTransactions):
    """The device log operations of :class:`hub.registry.interface.Registry`."""

    def lineage_state(self, device: str) -> DeviceLog:
        rows = self._read(
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
        rows = self._read(
            "SELECT CAST(data AS BLOB) FROM lineage_entries "
            "WHERE device = ? AND seq >= ? AND seq < ? ORDER BY seq",
            (device, start, stop),
        )
        return [as_bytes(r[0]) for r in rows]

    def iter_entries(self, device: str, start: int = 0) -> Iterator[StoredEntry]:
        position = start
        while True:
            rows = self._read(
                "SELECT seq, CAST(data AS BLOB) FROM lineage_entries WHERE device = ? AND seq >= ? "
                "ORDER BY seq LIMIT ?",
                (device, position, PAGE_ROWS),
            )
            for seq, data in rows:
                yield StoredEntry(as_int(seq), as_bytes(data))
            if len(rows) < PAGE_ROWS:
                return
            position = as_int(rows[-1][0]) + 1

    def checkpoint_root(self, device: str, size: int) -> bytes | None:
        rows = self._read(
            "SELECT root FROM lineage_checkpoints WHERE device = ? AND size = ?", (device, size)
        )
        return as_bytes(rows[0][0]) if rows else None

    def checkpoint(self, device: str, size: int) -> StoredCheckpoint | None:
        rows = self._read(
            "SELECT size, root, note, received_at FROM lineage_checkpoints "
            "WHERE device = ? AND size = ?",
            (device, size),
        )
        return stored_checkpoint(rows[0]) if rows else None

    def iter_checkpoints(self, device: str, *, min_size: int = 0) -> Iterator[StoredCheckpoint]:
        # Callers mostly want the newest: the first page is small, later ones grow.
        below: int | None = None
        page = FIRST_CHECKPOINT_PAGE
        while True:
            rows = self._read(
                "SELECT size, root, note, received_at FROM lineage_checkpoints "
                "WHERE device = ? AND size >= ? AND (? IS NULL OR size < ?) "
                "ORDER BY size DESC LIMIT ?",
                (device, min_size, below, below, page),
            )
            yield from (stored_checkpoint(row) for row in rows)
            if len(rows) < page:
                return
            below = as_int(rows[-1][0])
            page = min(page * 4, PAGE_ROWS)

    def tree_nodes(self, device: str) -> NodeFetcher:
        return NodeReader(
            self._read, device, str(self.path), node_sql=NODE_SQL, block_sql=BLOCK_SQL
        )

    def store_batch(self, accepted: Accepted, *, expected_size: int, received_at: int) -> bool:
        log = accepted.log
        with self._write("store the lineage batch") as db:
            row = db.execute(
                "SELECT size FROM lineage_state WHERE device = ?", (accepted.device,)
            ).fetchone()
            if (int(row[0]) if row else 0) != expected_size:
                return False
            db.executemany(
                "INSERT INTO lineage_entries VALUES (?, ?, ?)",
                [
                    (accepted.device, accepted.first_seq + i, data)
                    for i, data in enumerate(accepted.entries)
                ],
            )
            store_search_rows(db, accepted)
            db.execute(
                "INSERT OR REPLACE INTO lineage_state VALUES (?, ?, ?, ?, ?, ?)",
                (
                    accepted.device,
                    log.size,
                    b"".join(log.frontier.hashes),
                    log.last_hash,
                    log.checkpoint,
                    received_at,
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO lineage_checkpoints VALUES (?, ?, ?, ?, ?)",
                (accepted.device, log.size, log.root, log.checkpoint or "", received_at),
            )
            db.executemany(
                "INSERT INTO lineage_nodes VALUES (?, ?, ?, ?)",
                [
                    (accepted.device, node.level, node.index, node.hash)
                    for node in accepted.nodes
                    if node.level >= NODE_LEVEL
                ],
            )
        return True

    def record_fork(self, evidence: ForkEvidence, detected_at: int) -> None:
        with self._write("record fork evidence") as db:
            held = db.execute(
                "SELECT count(*) FROM forks WHERE device = ?", (evidence.device,)
            ).fetchone()[0]
            if held < MAX_FORK_EVIDENCE:
                db.execute(
                    "INSERT INTO forks (device, reason, held_note, new_note, batch, detected_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
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


class _DeviceStoredLog:
    """:class:`hub.core.ingest.StoredLog` over one device's rows."""

    def __init__(self, tables: DeviceLogTables, device: str) -> None:
        self._tables = tables
        self._device = device

    def entries(self, start: int, stop: int) -> Sequence[bytes]:
        return self._tables.entries(self._device, start, stop)

    def checkpoint_root(self, size: int) -> bytes | None:
        return self._tables.checkpoint_root(self._device, size)

"""Merkle tree nodes of the device logs in the SQLite registry (table ``lineage_nodes``).

Proofs (:func:`edge_agent.protocol.merkle.inclusion_proof`, ``consistency_proof``,
``root_at``) fetch O(log n) perfect nodes. The registry keeps the perfect nodes of level
:data:`NODE_LEVEL` and up, as ingest closes them (``store_batch`` writes them in the batch's
transaction), and recomputes a node below that level from the at most
``2**NODE_LEVEL`` stored entries of its block. So a proof in a log of a million entries
reads at most two blocks of entries and about thirty node rows, while ingest writes one node
row per ``2**(NODE_LEVEL - 1)`` entries.

A registry written before this table existed holds entries but no nodes: :func:`backfill`
streams each such device's entries once, in one transaction per device, checks that the
rebuilt tree ends in the frontier the hub stored, and only then writes the nodes. A node the
registry does not hold is an error, never a guess: no proof is built from a missing node.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_agent.protocol.lineage_entries import TreeEdge
from edge_agent.protocol.merkle import HASH_SIZE, Frontier, leaf_hash, node_hash
from hub.registry.interface import RegistryError
from hub.registry.records import STORED_NODE_LEVEL

__all__ = ["BLOCK_CACHE", "NODE_LEVEL", "NodeReader", "backfill"]

NODE_LEVEL = STORED_NODE_LEVEL
"""Lowest tree level stored: a node below it is rehashed from its block of
``2**NODE_LEVEL`` (64) entries, about 20 KiB of typical entries: small enough that a proof
rehashes little, large enough that ingest writes few node rows."""
BLOCK_CACHE = 4
"""Blocks of rehashed levels one :class:`NodeReader` keeps (a proof needs at most two)."""
_PAGE_ROWS = 4096

ReadRows = Callable[[str, Sequence[object]], list[tuple[object, ...]]]
"""Runs one read query (the registry's ``_read``)."""


class NodeReader:
    """:data:`edge_agent.protocol.merkle.NodeFetcher` over one device's stored log.

    Perfect nodes never change once complete, so reads made at different moments agree;
    the caller asks only for nodes inside a size the hub had stored.
    """

    def __init__(self, read: ReadRows, device: str, path: Path) -> None:
        self._read = read
        self._device = device
        self._path = path
        self._blocks: dict[int, list[list[bytes]]] = {}

    def __call__(self, level: int, index: int) -> bytes:
        """The hash of perfect node (``level``, ``index``).

        Raises:
            RegistryError: the registry holds no such node (or not all of its entries).
        """
        if level >= NODE_LEVEL:
            rows = self._read(
                "SELECT hash FROM lineage_nodes WHERE device = ? AND level = ? AND idx = ?",
                (self._device, level, index),
            )
            if not rows or not isinstance(rows[0][0], bytes):
                raise self._missing(level, index)
            return rows[0][0]
        block = (index << level) >> NODE_LEVEL
        levels = self._block(block)
        offset = index - (block << (NODE_LEVEL - level))
        if offset >= len(levels[level]):
            raise self._missing(level, index)
        return levels[level][offset]

    def _block(self, block: int) -> list[list[bytes]]:
        """Every perfect node of ``block`` below :data:`NODE_LEVEL`, by level, from its
        stored entries (a partial last block gives the nodes its entries complete)."""
        levels = self._blocks.get(block)
        if levels is not None:
            return levels
        start = block << NODE_LEVEL
        rows = self._read(
            "SELECT seq, CAST(data AS BLOB) FROM lineage_entries "
            "WHERE device = ? AND seq >= ? AND seq < ? ORDER BY seq",
            (self._device, start, start + (1 << NODE_LEVEL)),
        )
        leaves = []
        for position, (seq, data) in enumerate(rows):
            if seq != start + position or not isinstance(data, bytes):
                break
            leaves.append(leaf_hash(data))
        levels = [leaves]
        while len(levels) < NODE_LEVEL:
            below = levels[-1]
            levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
        if len(self._blocks) >= BLOCK_CACHE:
            self._blocks.pop(next(iter(self._blocks)))
        self._blocks[block] = levels
        return levels

    def _missing(self, level: int, index: int) -> RegistryError:
        return RegistryError(
            f"the hub registry {self._path} holds no Merkle node (level {level}, index "
            f"{index}) of {self._device}'s log: its entries or tree nodes are missing"
        )


def backfill(db: sqlite3.Connection, path: Path) -> list[str]:
    """Store the tree nodes of every device log that has entries but lacks its nodes (a
    registry written before ``lineage_nodes`` existed); return the devices backfilled.

    A device's log needs it when it reaches a node of :data:`NODE_LEVEL` and the newest
    such node is missing (store_batch writes nodes with their entries, so a log that has its
    newest node has all). One transaction per device: its entries are streamed, the tree
    rebuilt must end in the stored frontier, and only then are the nodes written.

    Raises:
        RegistryError: the entries do not rebuild the stored tree (the registry is
            damaged), or the database cannot be read or written.
    """
    done = []
    try:
        for device, size in _needing_nodes(db):
            db.execute("BEGIN IMMEDIATE")
            try:
                if any(d == device for d, _ in _needing_nodes(db)):
                    _backfill_device(db, path, device, size)
                    done.append(device)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
    except sqlite3.Error as exc:
        raise RegistryError(f"cannot store tree nodes in {path}: {exc}") from exc
    return done


def _needing_nodes(db: sqlite3.Connection) -> list[tuple[str, int]]:
    rows = db.execute(
        "SELECT device, size FROM lineage_state AS s WHERE size >= ? AND NOT EXISTS ("
        "SELECT 1 FROM lineage_nodes AS n WHERE n.device = s.device AND n.level = ? "
        "AND n.idx = (s.size >> ?) - 1)",
        (1 << NODE_LEVEL, NODE_LEVEL, NODE_LEVEL),
    ).fetchall()
    return [(str(device), int(size)) for device, size in rows]


def _backfill_device(db: sqlite3.Connection, path: Path, device: str, size: int) -> None:
    edge = TreeEdge(Frontier())
    position = 0
    while position < size:
        rows = db.execute(
            "SELECT seq, CAST(data AS BLOB) FROM lineage_entries WHERE device = ? AND seq >= ? "
            "AND seq < ? ORDER BY seq LIMIT ?",
            (device, position, size, _PAGE_ROWS),
        ).fetchall()
        if not rows:
            break
        nodes: list[tuple[object, ...]] = []
        for seq, data in rows:
            if seq != edge.size:
                break
            closed = edge.push(leaf_hash(data))
            nodes.extend(
                (device, level, seq >> level, closed[(level - 1) * HASH_SIZE : level * HASH_SIZE])
                for level in range(NODE_LEVEL, len(closed) // HASH_SIZE + 1)
            )
        db.executemany("INSERT OR IGNORE INTO lineage_nodes VALUES (?, ?, ?, ?)", nodes)
        if edge.size != position + len(rows):
            break
        position = edge.size
    stored = db.execute(
        "SELECT frontier FROM lineage_state WHERE device = ?", (device,)
    ).fetchone()[0]
    if edge.size != size or b"".join(edge.frontier().hashes) != bytes(stored):
        raise RegistryError(
            f"the entries of {device} in {path} do not rebuild the tree the hub stored at size "
            f"{size}: the registry is damaged; restore it from a backup"
        )

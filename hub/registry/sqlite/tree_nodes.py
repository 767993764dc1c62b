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
from pathlib import Path

from edge_agent.protocol.lineage_entries import TreeEdge
from edge_agent.protocol.merkle import HASH_SIZE, Frontier, leaf_hash
from hub.registry.interface import RegistryError
from hub.registry.tree_reader import NODE_LEVEL

__all__ = ["NODE_LEVEL", "backfill"]

_PAGE_ROWS = 4096


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

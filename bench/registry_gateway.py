"""The same registry write, off the event loop two ways: aiosqlite statement by statement,
or the whole sqlite3 transaction in one hop through
:class:`hub.registry.gateway.RegistryGateway`.

The write is shaped like the hub's lineage ingest (:meth:`Registry.store_batch` in the
intake's write group): per batch a savepoint, the stored size read, the batch's entries
inserted, the log state and checkpoint replaced, the tree nodes inserted, the savepoint
released; ``--group`` batches per transaction (1: one ``store_batch`` on its own; the
intake's bursts hold many). SQLite in WAL mode with ``synchronous=FULL`` as the registry
opens it. Each row is run ``--runs`` times on a fresh database; the table gives batches
stored per second, median [min-max].

aiosqlite is not one of the hub's dependencies: install it where this runs
(``pip install aiosqlite``).

Usage: python bench/registry_gateway.py [--batches 2000] [--group 1 32] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosqlite

from hub.registry.gateway import RegistryGateway

ENTRIES = 16
"""Entries per batch (each 200 bytes), with as many tree nodes."""

SCHEMA = (
    "CREATE TABLE state (device TEXT PRIMARY KEY, size INTEGER, frontier BLOB, at INTEGER)",
    "CREATE TABLE entries (device TEXT, seq INTEGER, data BLOB, PRIMARY KEY (device, seq))",
    "CREATE TABLE checkpoints (device TEXT, size INTEGER, root BLOB, PRIMARY KEY (device, size))",
    "CREATE TABLE nodes (device TEXT, level INTEGER, idx INTEGER, hash BLOB,"
    " PRIMARY KEY (device, level, idx))",
)


def _rows(batch: int) -> tuple[list[tuple[str, int, bytes]], list[tuple[str, int, int, bytes]]]:
    device, first = f"d{batch % 50}", (batch // 50) * ENTRIES
    entries = [(device, first + i, bytes(200)) for i in range(ENTRIES)]
    nodes = [(device, 1, first + i, bytes(32)) for i in range(ENTRIES)]
    return entries, nodes


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    for statement in SCHEMA:
        db.execute(statement)
    return db


def _store_group(db: sqlite3.Connection, batches: range) -> None:
    """One transaction of ``batches``, in plain sqlite3 (what runs on the gateway's thread)."""
    db.execute("BEGIN IMMEDIATE")
    for batch in batches:
        entries, nodes = _rows(batch)
        device = entries[0][0]
        db.execute("SAVEPOINT batch")
        db.execute("SELECT size FROM state WHERE device = ?", (device,)).fetchone()
        db.executemany("INSERT INTO entries VALUES (?, ?, ?)", entries)
        db.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", (device, 1, bytes(64), 0))
        db.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)", (device, batch, bytes(32))
        )
        db.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?)", nodes)
        db.execute("RELEASE batch")
    db.execute("COMMIT")


async def _gateway(path: Path, total: int, group: int) -> float:
    db, gateway = _open(path), RegistryGateway("bench")
    try:
        started = time.perf_counter()
        for first in range(0, total, group):
            await gateway(_store_group, db, range(first, min(first + group, total)))
        return total / (time.perf_counter() - started)
    finally:
        gateway.close()
        db.close()


async def _aiosqlite(path: Path, total: int, group: int) -> float:
    _open(path).close()
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("PRAGMA synchronous = FULL")
        started = time.perf_counter()
        for first in range(0, total, group):
            await db.execute("BEGIN IMMEDIATE")
            for batch in range(first, min(first + group, total)):
                entries, nodes = _rows(batch)
                device = entries[0][0]
                await db.execute("SAVEPOINT batch")
                async with db.execute(
                    "SELECT size FROM state WHERE device = ?", (device,)
                ) as cursor:
                    await cursor.fetchone()
                await db.executemany("INSERT INTO entries VALUES (?, ?, ?)", entries)
                await db.execute(
                    "INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", (device, 1, bytes(64), 0)
                )
                await db.execute(
                    "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
                    (device, batch, bytes(32)),
                )
                await db.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?)", nodes)
                await db.execute("RELEASE batch")
            await db.execute("COMMIT")
        return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--group", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ways: dict[str, Callable[[Path, int, int], Awaitable[float]]] = {
        "aiosqlite, statement by statement": _aiosqlite,
        "gateway, one hop per transaction": _gateway,
    }
    print(f"{'batches/transaction':>20}  {'way':<36} batches/s median [min-max]")
    for group in args.group:
        rates: dict[str, list[float]] = {name: [] for name in ways}
        for run in range(args.runs):
            for name, way in ways.items():
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / f"r{run}.db"
                    rates[name].append(asyncio.run(way(path, args.batches, group)))
        for name, values in rates.items():
            print(
                f"{group:>20}  {name:<36} {statistics.median(values):>8.0f} "
                f"[{min(values):.0f}-{max(values):.0f}]"
            )


if __name__ == "__main__":
    main()

"""The lineage in its own SQLite file (``lineage.db``, WAL): entries, perfect nodes, checkpoints.

Invariants:
- one append transaction writes a whole batch of entries, the perfect Merkle nodes they
  complete, the new tree size and (when due) a signed checkpoint: a group commit, one fsync
  under ``synchronous=FULL``. A crash leaves the log at a batch boundary.
- the tree is extended from the frontier (O(log n) per entry), never recomputed; when another
  process appended since we last looked, the frontier is reloaded from stored nodes.
- every sqlite error becomes :class:`LineageError` here, and a failed write leaves nothing
  behind; the connection is reopened on the next attempt, so the log recovers on its own when
  space returns or a lock is released. Waiting for a lock is bounded (``busy_timeout_s``).
- a file whose write permission bits are all cleared is opened read-only, even by root.

Reads for ``log show``/``verify``/``export`` stream rows in pages and never load the log.
"""

from __future__ import annotations

import contextlib
import sqlite3
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from edge_agent.errors import LineageError
from edge_agent.lineage.entries import GENESIS_PREV, Entry, encode_entry, entry_hash
from edge_agent.protocol.merkle import HASH_SIZE, Frontier, Node

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "LINEAGE_DB",
    "PAGE_ROWS",
    "Appended",
    "LineageStore",
    "StoredCheckpoint",
]

LINEAGE_DB = "lineage.db"
SCHEMA_VERSION = 1
DEFAULT_BUSY_TIMEOUT_S = 2.0
"""Longest wait for another writer's lock before the write fails (and the decision denies)."""
PAGE_ROWS = 1000
"""Rows fetched per page when streaming entries."""
SYNCHRONOUS_MODES = ("FULL", "NORMAL")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    allowed INTEGER NOT NULL,
    reason TEXT NOT NULL,
    subject TEXT,
    action TEXT,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_time ON entries (time);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    note TEXT NOT NULL
);
"""

Signer = Callable[[int, bytes], str]
"""``sign(size, root) -> signed note`` of the checkpoint at that size."""


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a batch landed: its first seq and the tree size after it."""

    first_seq: int
    size: int


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    time: int
    note: str


@dataclass(frozen=True, slots=True)
class Tip:
    """The log's state: ``base`` (first stored seq), ``size``, last entry hash."""

    base: int
    base_prev: bytes | None
    size: int
    prev: bytes


class LineageStore:
    """One lineage database file."""

    def __init__(self, path: Path, synchronous: str, busy_timeout_s: float) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._frontier = Frontier()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> LineageStore:
        """Open (creating if absent) the lineage database at ``path``.

        Raises:
            LineageError: the file cannot be opened or is not a lineage database.
        """
        store = cls(path, synchronous, busy_timeout_s)
        store._connect()
        return store

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        with _translate(f"cannot open the lineage database {self.path}"):
            read_only = self.path.exists() and not self.path.stat().st_mode & (
                stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
            )
            uri = f"file:{self.path}?mode=ro" if read_only else f"file:{self.path}"
            db = sqlite3.connect(
                uri,
                uri=True,
                isolation_level=None,
                timeout=self.busy_timeout_s,
                check_same_thread=False,
            )
            try:
                if not read_only:
                    db.execute("PRAGMA journal_mode = WAL")
                    db.execute(f"PRAGMA synchronous = {self.synchronous}")
                    db.executescript(_SCHEMA)
                    db.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                        (SCHEMA_VERSION,),
                    )
                row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if row is None or row[0] != SCHEMA_VERSION:
                    raise LineageError(f"{self.path} is not a lineage database of schema 1")
            except BaseException:
                db.close()
                raise
        self._db = db
        return db

    def _reset(self) -> None:
        """Forget the connection after a failed write; the next call reconnects."""
        self.close()

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back on any error,
        the connection dropped after a failure so the next call starts clean.

        Raises:
            LineageError: the transaction failed (``what`` says which); nothing changed.
        """
        try:
            with _translate(what):
                db = self._connect()
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
        except LineageError:
            self._reset()
            raise

    def get_node(self, level: int, index: int) -> bytes:
        """A stored perfect node (``merkle.NodeFetcher``).

        Raises:
            LineageError: the node is missing or not a 32-byte hash.
        """
        with _translate("cannot read the lineage tree"):
            row = (
                self._connect()
                .execute("SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index))
                .fetchone()
            )
        if row is None or not isinstance(row[0], bytes) or len(row[0]) != HASH_SIZE:
            raise LineageError(f"tree node ({level}, {index}) is missing or damaged")
        return bytes(row[0])

    def tip(self) -> Tip:
        """The log's base, size and last entry hash, as last committed.

        Raises:
            LineageError: unreadable, or the recorded values are damaged.
        """
        with _translate("cannot read the lineage database"):
            meta = dict(self._connect().execute("SELECT key, value FROM meta").fetchall())
        base, size = meta.get("base", 0), meta.get("size", 0)
        prev, base_prev = meta.get("prev", GENESIS_PREV), meta.get("base_prev", GENESIS_PREV)
        if not (isinstance(base, int) and isinstance(size, int) and 0 <= base <= size):
            raise LineageError("the recorded lineage size is damaged")
        if not (_is_hash(prev) and (base_prev is None or _is_hash(base_prev))):
            raise LineageError("the recorded last entry hash is damaged")
        return Tip(base, base_prev, size, prev)

    def frontier(self, size: int | None = None) -> Frontier:
        """The tree's frontier at ``size`` (default: now), from stored nodes.

        Raises:
            LineageError: a needed node is missing or damaged.
        """
        return Frontier.load(self.tip().size if size is None else size, self.get_node)

    def append_batch(
        self,
        drafts: Sequence[Entry],
        *,
        sign: Signer | None = None,
        checkpoint_every: int = 0,
        now: int = 0,
        checkpoint_after_s: int = 0,
    ) -> Appended:
        """Append ``drafts`` (their seq and prev are assigned here) in one transaction.

        A checkpoint is signed and stored in the same transaction when ``sign`` is given and
        ``checkpoint_every`` entries or ``checkpoint_after_s`` seconds passed since the last.

        Raises:
            LineageError: the write failed (disk full, read-only, locked past the bound,
                corrupted); nothing was written.
        """
        with self._write("cannot write the lineage") as db:
            appended, frontier = self._append(db, drafts)
            if sign is not None and self._checkpoint_due(
                db, frontier.size, now, checkpoint_every, checkpoint_after_s
            ):
                self._insert_checkpoint(
                    db, frontier.size, now, sign(frontier.size, frontier.root())
                )
        self._frontier = frontier
        return appended

    def _append(self, db: sqlite3.Connection, drafts: Sequence[Entry]) -> tuple[Appended, Frontier]:
        tip = self.tip()
        frontier = self._frontier
        if frontier.size != tip.size:
            frontier = Frontier.load(tip.size, self.get_node)
        first, prev = tip.size, tip.prev
        rows, nodes = [], list[Node]()
        for offset, draft in enumerate(drafts):
            entry = replace(draft, seq=first + offset, prev=prev)
            data = encode_entry(entry)
            prev = entry_hash(data)
            frontier, completed = frontier.append(prev)
            nodes.extend(completed)
            request = entry.request
            rows.append(
                (
                    entry.seq,
                    entry.time,
                    str(entry.kind),
                    int(entry.allowed),
                    entry.reason,
                    request.subject if request else None,
                    request.action if request else None,
                    data,
                )
            )
        db.executemany(
            "INSERT INTO entries (seq, time, kind, allowed, reason, subject, action, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            "INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
            [(n.level, n.index, n.hash) for n in nodes],
        )
        _set_meta(db, size=frontier.size, prev=prev)
        return Appended(first, frontier.size), frontier

    def _checkpoint_due(
        self, db: sqlite3.Connection, size: int, now: int, every: int, after_s: int
    ) -> bool:
        last = db.execute(
            "SELECT size, time FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        last_size, last_time = last if last else (0, 0)
        if size <= last_size:
            return False
        return (every > 0 and size - last_size >= every) or (
            after_s > 0 and now - last_time >= after_s
        )

    @staticmethod
    def _insert_checkpoint(db: sqlite3.Connection, size: int, now: int, note: str) -> None:
        db.execute(
            "INSERT OR REPLACE INTO checkpoints (size, time, note) VALUES (?, ?, ?)",
            (size, now, note),
        )

    def add_checkpoint(self, sign: Signer, now: int) -> StoredCheckpoint | None:
        """Sign and store a checkpoint at the current size unless one exists there.

        Raises:
            LineageError: the write failed.
        """
        with self._write("cannot write a lineage checkpoint") as db:
            size = self.tip().size
            exists = db.execute("SELECT 1 FROM checkpoints WHERE size = ?", (size,)).fetchone()
            stored = None
            if size > 0 and not exists:
                note = sign(size, Frontier.load(size, self.get_node).root())
                self._insert_checkpoint(db, size, now, note)
                stored = StoredCheckpoint(size, now, note)
        return stored

    def checkpoints(self, min_size: int = 0) -> list[StoredCheckpoint]:
        """Stored checkpoints of at least ``min_size``, smallest first.

        Raises:
            LineageError: unreadable.
        """
        with _translate("cannot read the lineage checkpoints"):
            rows = (
                self._connect()
                .execute(
                    "SELECT size, time, note FROM checkpoints WHERE size >= ? ORDER BY size",
                    (min_size,),
                )
                .fetchall()
            )
        return [StoredCheckpoint(int(s), int(t), str(n)) for s, t, n in rows]

    def latest_checkpoint(self, max_size: int | None = None) -> StoredCheckpoint | None:
        """The largest checkpoint (of at most ``max_size``), if any.

        Raises:
            LineageError: unreadable.
        """
        limit = max_size if max_size is not None else 2**63 - 1
        with _translate("cannot read the lineage checkpoints"):
            row = (
                self._connect()
                .execute(
                    "SELECT size, time, note FROM checkpoints WHERE size <= ? "
                    "ORDER BY size DESC LIMIT 1",
                    (limit,),
                )
                .fetchone()
            )
        return StoredCheckpoint(int(row[0]), int(row[1]), str(row[2])) if row else None

    def iter_rows(
        self,
        start: int = 0,
        where: str = "",
        params: Sequence[object] = (),
        limit: int = -1,
        descending: bool = False,
    ) -> Iterator[tuple[int, bytes, tuple[object, ...]]]:
        """Stream ``(seq, data, columns)`` from ``start`` on, in pages of :data:`PAGE_ROWS`.

        ``columns`` are the filter columns stored beside the entry (time, kind, allowed,
        reason, subject, action), for checking them against the entry itself.

        ``where`` is an SQL condition on the entry columns (built by the caller from fixed
        fragments, values in ``params``). Keyset pagination: each page is one bounded query.

        Raises:
            LineageError: unreadable; the error carries the seq where reading stopped.
        """
        position = start
        remaining = limit
        order, compare = ("DESC", "<=") if descending else ("ASC", ">=")
        if descending:
            position = 2**63 - 1
        condition = f" AND ({where})" if where else ""
        while remaining != 0:
            page = PAGE_ROWS if remaining < 0 else min(PAGE_ROWS, remaining)
            try:
                with _translate("cannot read the lineage entries"):
                    rows = (
                        self._connect()
                        .execute(
                            "SELECT seq, CAST(data AS BLOB), time, kind, allowed, reason, "
                            f"subject, action FROM entries WHERE seq {compare} ? AND seq >= ?"
                            f"{condition} ORDER BY seq {order} LIMIT ?",
                            (position, start, *params, page),
                        )
                        .fetchall()
                    )
            except LineageError as exc:
                raise LineageError(str(exc), seq=position) from exc
            for seq, data, *columns in rows:
                yield int(seq), data, tuple(columns)
            if len(rows) < page:
                return
            position = int(rows[-1][0]) + (-1 if descending else 1)
            remaining = remaining - len(rows) if remaining > 0 else remaining

    def max_seq(self) -> int | None:
        """The largest stored seq, whatever the recorded size says.

        Raises:
            LineageError: unreadable.
        """
        with _translate("cannot read the lineage entries"):
            row = self._connect().execute("SELECT max(seq) FROM entries").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def rebase(self, base: int, base_prev: bytes | None, *, drop_below: bool) -> None:
        """Move the log's base to ``base`` (a signed checkpoint's size), in one transaction.

        With ``drop_below``, entries below ``base``, checkpoints below it and every node
        wholly below it except the frontier at ``base`` are deleted (prune); proofs for later
        entries and consistency from the checkpoint at ``base`` stay possible.

        Raises:
            LineageError: the write failed; nothing changed.
        """
        keep = {(level, index) for level, index in _cover(base)}
        with self._write("cannot prune the lineage") as db:
            if drop_below:
                db.execute("DELETE FROM entries WHERE seq < ?", (base,))
                db.execute("DELETE FROM checkpoints WHERE size < ?", (base,))
                for level in range(max(base.bit_length(), 1)):
                    db.execute(
                        "DELETE FROM nodes WHERE level = ? AND (idx + 1) * ? <= ? AND idx != ?",
                        (level, 1 << level, base, _kept_index(keep, level)),
                    )
            _set_meta(db, base=base, base_prev=base_prev)

    def get_meta(self, key: str) -> object:
        """A raw meta value (``None`` if absent).

        Raises:
            LineageError: unreadable.
        """
        with _translate("cannot read the lineage database"):
            row = self._connect().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, **values: object) -> None:
        """Write meta values in one transaction.

        Raises:
            LineageError: the write failed.
        """
        with self._write("cannot write the lineage database") as db:
            _set_meta(db, **values)

    def set_page_limit(self, pages: int) -> None:
        """Cap the file at ``pages`` pages (``PRAGMA max_page_count``): a full disk, on purpose.

        Raises:
            LineageError: the pragma failed.
        """
        with _translate("cannot set the lineage page limit"):
            self._connect().execute(f"PRAGMA max_page_count = {int(pages)}")


def _set_meta(db: sqlite3.Connection, **values: object) -> None:
    db.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        list(values.items()),
    )


def _cover(size: int) -> list[tuple[int, int]]:
    cover, position = [], 0
    for level in reversed(range(size.bit_length())):
        if (size >> level) & 1:
            cover.append((level, position >> level))
            position += 1 << level
    return cover


def _kept_index(keep: set[tuple[int, int]], level: int) -> int:
    return next((index for lv, index in keep if lv == level), -1)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    """Turn sqlite and OS errors into :class:`LineageError`, once, here."""
    try:
        yield
    except sqlite3.Error as exc:
        raise LineageError(f"{what}: {exc}") from exc
    except OSError as exc:
        raise LineageError(f"{what}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise LineageError(f"{what}: {exc}") from exc

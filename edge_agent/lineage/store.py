"""The lineage in its own SQLite file (``lineage.db``, WAL): entries, perfect nodes, checkpoints.

Layout: one row per entry, in seq order, holding the entry bytes, the filter columns and the
perfect Merkle nodes the entry closed, its leaf first (node ``(level, index)`` is closed by
leaf ``(index + 1) * 2**level - 1``, at offset ``level * 32`` of that row's ``nodes``). So an
append writes only at the end of one table (few pages per commit), any node is one
primary-key lookup, and the tree never changes once written, whatever happens to the entry
bytes beside it (a tampered entry no longer matches its leaf, which is how it is found).
The ``nodes`` table holds only the nodes kept when entries are pruned: the frontier at the
new base, which proofs and checkpoints after it still need.

Invariants:
- one append transaction writes a whole batch of entries, the perfect Merkle nodes they
  complete, the new tree size and (when due) a signed checkpoint: a group commit, one fsync
  under ``synchronous=FULL``. A crash leaves the log at a batch boundary.
- the tree is extended from the frontier (O(log n) per entry), never recomputed; when another
  process appended since we last looked, the frontier is reloaded from stored nodes.
- every sqlite error becomes :class:`LineageError` here, and a failed write leaves nothing
  behind; the connection is reopened on the next attempt, so the log recovers on its own when
  space returns or a lock is released. Waiting for a lock is bounded (``busy_timeout_s``).
- one connection serves every thread of the process, and one lock serialises its use: a
  reader in one thread never sees another thread's uncommitted batch (which a failed commit
  could still take back).
- a file whose write permission bits are all cleared is opened read-only, even by root.
- the files are the owner's alone (0600, as ``state.db``): a new log is created so (SQLite
  gives its WAL files the database's mode), and an older one's group and other bits are
  cleared when it is opened.
- the file a writer opened first is the one it keeps writing until :meth:`close`: it holds a
  descriptor on it (and on its WAL while connected), reconnects after a failure only to
  that same file (never creating one),
  and :meth:`LineageStore.check_files` says when the file was deleted, replaced, cut short
  or overwritten under it. A file SQLite finds corrupt raises :class:`LineageDamagedError`.
- the acknowledgement watermark (how many leading entries the hub has stored and verified)
  only moves up, and never past the log's size.

Reads for ``log show``/``verify``/``export`` stream rows in pages and never load the log. A
verification reads through :meth:`LineageStore.snapshot`, one read transaction on a connection
of its own, so appends committed meanwhile are never half-seen.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import LineageDamagedError, LineageError
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Draft, TreeEdge, place_draft
from edge_agent.protocol.merkle import HASH_SIZE, Frontier, leaf_hash
from edge_agent.support.readonly import connect_read_only, is_read_only

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "FILE_MODE",
    "LINEAGE_DB",
    "PAGE_ROWS",
    "Appended",
    "LineageStore",
    "StoredCheckpoint",
    "Tip",
    "WouldWait",
]

LINEAGE_DB = "lineage.db"
SCHEMA_VERSION = 2
DEFAULT_BUSY_TIMEOUT_S = 2.0
"""Longest wait for another writer's lock before the write fails (and the decision denies)."""
PAGE_ROWS = 1000
"""Rows fetched per page when streaming entries."""
SYNCHRONOUS_MODES = ("FULL", "NORMAL")
FILE_MODE = 0o600
"""Permissions of the lineage files: decisions name subjects and resources."""
_MAGIC = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""
_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
"""SQLite's primary result codes for a file that is not an intact database."""
_INSERT_CHUNKS = (256, 64, 16, 4, 1)
"""Rows per multi-row INSERT: a batch is written in a few statements (each one SQLite call,
so one release of the GIL), not one per row; the fixed sizes keep the statement cache warm."""
_NO_LIMIT = 2**63 - 1
_CHECKPOINT_PAGE = 64
"""Checkpoints read per page when searching them (the first usually serves)."""

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
    data BLOB NOT NULL,
    nodes BLOB NOT NULL
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


class WouldWait(Exception):
    """A write asked not to wait found the write lock held; nothing was written."""


class _Watched:
    """A file this process writes through SQLite, held open by a descriptor of its own: its
    identity (device, inode) and the largest size seen. SQLite never shrinks the database
    file (no vacuum) nor the WAL while a connection holds it open (no size limit is set)."""

    __slots__ = ("fd", "identity", "path", "size")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        info = os.fstat(self.fd)
        self.identity = (info.st_dev, info.st_ino)
        self.size = info.st_size

    def close(self) -> None:
        os.close(self.fd)

    def same_file(self) -> bool:
        """Whether ``path`` still names the file held open."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (info.st_dev, info.st_ino) == self.identity

    def problem(self, *, database: bool) -> str | None:
        """Why the file is no longer the one written (``None``: it is), a few syscalls."""
        info = os.fstat(self.fd)
        if info.st_nlink == 0 or not self.same_file():
            what = "replaced by another file" if self.path.exists() else "deleted or moved away"
            return f"{self.path} was {what} while the agent was writing it"
        if info.st_size < self.size:
            return (
                f"{self.path} was cut from {self.size} to {info.st_size} bytes while the agent "
                "was writing it"
            )
        self.size = info.st_size
        if database and info.st_size and os.pread(self.fd, len(_MAGIC), 0) != _MAGIC:
            return f"{self.path} was overwritten: it is no longer an SQLite database"
        return None


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a batch landed: its first seq and the tree size after it, and the root of the
    checkpoint signed with it (``None``: none was due)."""

    first_seq: int
    size: int
    checkpoint_root: bytes | None = None


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    time: int
    note: str


@dataclass(frozen=True, slots=True)
class Tip:
    """The log's state: ``base`` (first stored seq), ``size``, last entry hash, and
    ``acked``, how many leading entries the hub has acknowledged."""

    base: int
    base_prev: bytes | None
    size: int
    prev: bytes
    acked: int


class LineageStore:
    """One lineage database file."""

    def __init__(self, path: Path, synchronous: str, busy_timeout_s: float) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._frontier = Frontier()
        self._wal = False
        """Whether the connection is in WAL mode: only then does a transaction wait for
        another writer at ``BEGIN`` alone, which is what a write asked not to wait needs."""
        self._file: _Watched | None = None
        """The database file first opened for writing, kept until :meth:`close`."""
        self._wal_file: _Watched | None = None
        """Its WAL while the connection is open (SQLite deletes it when the last closes)."""

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
        with store._lock:
            store._connect()
        return store

    def close(self) -> None:
        """Close the connection and let go of the file: a later use opens (or creates)
        whatever file the path names then (a new log started by this or another process)."""
        with self._lock:
            self._disconnect()
            if self._file is not None:
                self._file.close()
                self._file = None

    def _disconnect(self) -> None:
        """Close the connection (and the WAL held with it), keeping the file: the next use
        reconnects to that same file."""
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
            if self._wal_file is not None:
                self._wal_file.close()
                self._wal_file = None

    def check_files(self) -> str | None:
        """Why the file this store writes is no longer the intact file at its path: deleted,
        replaced, cut short or overwritten (and the same for its WAL); ``None`` when it is,
        or when nothing was opened for writing yet, or a write holds the store (the next
        check sees it). A handful of syscalls: the running agent calls it with its periodic
        state check."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._file is None:
                return None
            problem = self._file.problem(database=True)
            if problem is None and self._wal_file is not None:
                problem = self._wal_file.problem(database=False)
            return problem
        except OSError as exc:
            return f"{self.path} cannot be checked: {exc.strerror or exc}"
        finally:
            self._lock.release()

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        with _translate(f"cannot open the lineage database {self.path}"):
            read_only = self._read_only()
            self._wal = False
            if self.inspecting:
                db = connect_read_only(self.path, self.busy_timeout_s)
            else:
                if read_only:
                    uri = f"file:{self.path}?mode=ro"
                elif self._file is not None:
                    # Reconnecting: to the file this store wrote, never to a new one made here.
                    uri = f"file:{self.path}?mode=rw"
                else:
                    _create_private(self.path)
                    uri = f"file:{self.path}"
                db = sqlite3.connect(
                    uri,
                    uri=True,
                    isolation_level=None,
                    timeout=self.busy_timeout_s,
                    check_same_thread=False,
                )
            try:
                if not read_only:
                    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    self._wal = str(mode).lower() == "wal"
                    db.execute(f"PRAGMA synchronous = {self.synchronous}")
                row = _schema_row(db)
                # A log that has its schema is opened without writing: a reader never
                # waits for the write lock of a busy agent just to open the file.
                if row is None and not read_only:
                    db.executescript(_SCHEMA)
                    db.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                        (SCHEMA_VERSION,),
                    )
                    row = _schema_row(db)
                if row is None or row[0] != SCHEMA_VERSION:
                    found = "no schema" if row is None else f"schema {row[0]!r}"
                    raise LineageError(
                        f"{self.path} is not a lineage database of schema {SCHEMA_VERSION} "
                        f"(it has {found}); move it aside to start a new log"
                    )
                if not read_only:
                    self._watch()
            except BaseException:
                db.close()
                raise
        self._db = db
        return db

    def _watch(self) -> None:
        """Hold the files just connected to (the database, and its WAL in WAL mode).

        Raises:
            LineageError: reconnecting found another file at the path than the one written.
        """
        if self._file is None:
            self._file = _Watched(self.path)
        elif not self._file.same_file():
            raise LineageError(
                f"{self.path} is not the lineage file this agent was writing (replaced)"
            )
        wal = self.path.with_name(self.path.name + "-wal")
        if self._wal and self._wal_file is None and wal.exists():
            self._wal_file = _Watched(wal)

    def _read_only(self) -> bool:
        return self.inspecting or (
            self.path.exists()
            and not self.path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        )

    @property
    def inspecting(self) -> bool:
        """Opened for inspection only (:mod:`edge_agent.support.readonly`): an existing log
        in a directory this process cannot write, or under ``edge-agent --read-only``. It
        is read without creating or changing any file; nothing is stored."""
        return self.path.exists() and is_read_only(self.path)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[LineageStore]:
        """A read-only view of the log as of one moment, for a whole verification.

        The view has a connection of its own holding one read transaction: everything it
        reads (size, checkpoints, entries, nodes) is from the same committed state however
        long it takes, while this store's writers go on appending (in WAL mode a reader
        never blocks them). Without it a verification could read the size before an append
        and the entries after it, and take the new entries for tampering.

        Raises:
            LineageError: the file cannot be opened (never created here) or read.
        """
        view = LineageStore(self.path, self.synchronous, self.busy_timeout_s)
        with _translate(f"cannot read the lineage database {self.path}"):
            if self.inspecting:
                db = connect_read_only(self.path, self.busy_timeout_s)
            else:
                mode = "ro" if self._read_only() else "rw"
                db = sqlite3.connect(
                    f"file:{self.path}?mode={mode}",
                    uri=True,
                    isolation_level=None,
                    timeout=self.busy_timeout_s,
                    check_same_thread=False,
                )
            try:
                db.execute("BEGIN")
                db.execute("SELECT count(*) FROM meta").fetchone()
            except BaseException:
                db.close()
                raise
        view._db = db
        try:
            yield view
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            db.close()
            view._db = None

    def start_over(
        self, suffix: str | None, first: Draft, sign: Signer, now: int
    ) -> tuple[Path | None, Appended]:
        """Start a new log whose first entry is ``first``, checkpointed at once.

        With ``suffix``, the database file (and its WAL files) is first moved to
        ``<name>.<suffix>[.N]`` (a name not yet taken), kept as evidence; without, a
        connection to a file deleted under it is dropped. Nothing else is written between
        the move and ``first``: the lock is held throughout. Return where the old file went
        (``None``: nowhere) and where ``first`` landed.

        Raises:
            LineageError: the file could not be moved or the new log written.
        """
        with self._lock:
            self.close()
            self._frontier = Frontier()
            aside = None
            if suffix is not None and self.path.exists():
                aside = self.path.with_name(f"{self.path.name}.{suffix}")
                for taken in itertools.count(1):
                    if not aside.exists():
                        break
                    aside = self.path.with_name(f"{self.path.name}.{suffix}.{taken}")
                with _translate(f"cannot move {self.path} aside"):
                    for extension in ("", "-wal", "-shm"):
                        source = self.path.with_name(self.path.name + extension)
                        if source.exists():
                            source.replace(aside.with_name(aside.name + extension))
            return aside, self.append_batch([first], sign=sign, checkpoint_every=1, now=now)

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, held by this thread for one read; errors become LineageError."""
        with self._lock, _translate(what):
            yield self._connect()

    @contextlib.contextmanager
    def _write(self, what: str, *, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back on any error,
        the connection dropped after a failure so the next call starts clean.

        With ``wait=False`` it starts only if neither another thread of this process nor
        another connection holds the write lock, and the connection is open (reopening it
        after a failure may wait) and in WAL mode (otherwise ``COMMIT`` may wait for
        readers); otherwise it raises :class:`WouldWait` before anything started.

        Raises:
            LineageError: the transaction failed (``what`` says which); nothing changed.
            WouldWait: ``wait`` is false and a lock is held.
        """
        if not self._lock.acquire(blocking=wait):
            raise WouldWait
        try:
            if not wait and (self._db is None or not self._wal):
                raise WouldWait
            with _translate(what):
                db = self._connect()
                if wait:
                    db.execute("BEGIN IMMEDIATE")
                else:
                    _begin_at_once(db, self.busy_timeout_s)
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
        except LineageError:
            self._disconnect()
            raise
        finally:
            self._lock.release()

    def get_node(self, level: int, index: int) -> bytes:
        """A stored perfect node (``merkle.NodeFetcher``).

        Raises:
            LineageError: the node is missing or not a 32-byte hash.
        """
        with self._reading("cannot read the lineage tree") as db:
            found = _node(db, level, index)
        if found is None:
            raise LineageError(f"tree node ({level}, {index}) is missing or damaged")
        return found

    def tip(self) -> Tip:
        """The log's base, size, last entry hash and watermark, as last committed.

        Raises:
            LineageError: unreadable, or the recorded values are damaged.
        """
        with self._reading("cannot read the lineage database") as db:
            return _tip(db.execute(_TIP_SQL).fetchone())

    def frontier(self, size: int | None = None) -> Frontier:
        """The tree's frontier at ``size`` (default: now), from stored nodes.

        Raises:
            LineageError: a needed node is missing or damaged.
        """
        return Frontier.load(self.tip().size if size is None else size, self.get_node)

    def append_batch(
        self,
        drafts: Sequence[Draft],
        *,
        sign: Signer | None = None,
        checkpoint_every: int = 0,
        now: int = 0,
        checkpoint_after_s: int = 0,
        wait: bool = True,
    ) -> Appended:
        """Append ``drafts`` in order, in one transaction, placing each after the last.

        A checkpoint is signed and stored in the same transaction when ``sign`` is given and
        ``checkpoint_every`` entries or ``checkpoint_after_s`` seconds passed since the last.
        With ``wait=False`` the append happens only if no lock has to be waited for: a
        caller that must not block (an event loop) tries first and hands the batch to a
        thread when it raises :class:`WouldWait`.

        Raises:
            LineageError: the write failed (disk full, read-only, locked past the bound,
                corrupted); nothing was written.
            WouldWait: ``wait`` is false and another thread or connection holds the write
                lock; nothing was written.
        """
        with self._write("cannot write the lineage", wait=wait) as db:
            row = db.execute(_TIP_SQL).fetchone()
            tip, (last_size, last_time) = _tip(row), (row[5] or 0, row[6] or 0)
            appended, frontier = self._append(db, tip, drafts)
            due = frontier.size > last_size and (
                (checkpoint_every > 0 and frontier.size - last_size >= checkpoint_every)
                or (checkpoint_after_s > 0 and now - last_time >= checkpoint_after_s)
            )
            if sign is not None and due:
                root = frontier.root()
                self._insert_checkpoint(db, frontier.size, now, sign(frontier.size, root))
                appended = Appended(appended.first_seq, appended.size, root)
        self._frontier = frontier
        return appended

    def _append(
        self, db: sqlite3.Connection, tip: Tip, drafts: Sequence[Draft]
    ) -> tuple[Appended, Frontier]:
        frontier = self._frontier
        if frontier.size != tip.size:
            frontier = Frontier.load(tip.size, self.get_node)
        edge = TreeEdge(frontier)
        first, prev = tip.size, tip.prev
        rows: list[tuple[object, ...]] = []
        for seq, draft in enumerate(drafts, first):
            data = place_draft(draft, seq, prev)
            prev = leaf_hash(data)
            closed = edge.push(prev)
            rows.append(
                (
                    seq,
                    draft.time,
                    draft.kind.value,
                    int(draft.allowed),
                    draft.reason,
                    draft.subject,
                    draft.action,
                    data,
                    prev + closed,
                )
            )
        _insert(
            db, "entries (seq, time, kind, allowed, reason, subject, action, data, nodes)", 9, rows
        )
        _set_meta(db, size=edge.size, prev=prev)
        return Appended(first, edge.size), edge.frontier()

    @staticmethod
    def _insert_checkpoint(db: sqlite3.Connection, size: int, now: int, note: str) -> None:
        db.execute(
            "INSERT OR REPLACE INTO checkpoints (size, time, note) VALUES (?, ?, ?)",
            (size, now, note),
        )

    def add_checkpoint(
        self, sign: Signer, now: int, size: int | None = None
    ) -> StoredCheckpoint | None:
        """Sign and store a checkpoint at ``size`` (default: the current size) unless one is
        stored there; return the one stored at that size (``None`` for an empty log).

        A size below the current one is signed from the stored nodes: the same root the
        tree had then, so it is consistent with every other checkpoint by construction.

        Raises:
            LineageError: ``size`` is outside the stored log, or the write failed.
        """
        if self.inspecting:
            return self._checkpoint_unstored(sign, now, size)
        with self._write("cannot write a lineage checkpoint") as db:
            tip = self.tip()
            size = tip.size if size is None else size
            if not tip.base <= size <= tip.size:
                raise LineageError(
                    f"no checkpoint can be signed at size {size}: the log holds entries "
                    f"{tip.base} to {tip.size - 1}"
                )
            row = db.execute(
                "SELECT size, time, note FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
            if row is not None:
                return StoredCheckpoint(int(row[0]), int(row[1]), str(row[2]))
            if size == 0:
                return None
            note = sign(size, Frontier.load(size, self.get_node).root())
            self._insert_checkpoint(db, size, now, note)
        return StoredCheckpoint(size, now, note)

    def _checkpoint_unstored(
        self, sign: Signer, now: int, size: int | None
    ) -> StoredCheckpoint | None:
        """:meth:`add_checkpoint` for a log opened for inspection: the checkpoint stored at
        ``size``, else one signed now and returned without being stored."""
        tip = self.tip()
        size = tip.size if size is None else size
        if not tip.base <= size <= tip.size:
            raise LineageError(
                f"no checkpoint can be signed at size {size}: the log holds entries "
                f"{tip.base} to {tip.size - 1}"
            )
        with self._reading("cannot read the lineage checkpoints") as db:
            row = db.execute(
                "SELECT size, time, note FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
        if row is not None:
            return StoredCheckpoint(int(row[0]), int(row[1]), str(row[2]))
        if size == 0:
            return None
        return StoredCheckpoint(size, now, sign(size, Frontier.load(size, self.get_node).root()))

    def replace_checkpoint(self, size: int, note: str, now: int) -> StoredCheckpoint:
        """Store ``note`` as the checkpoint at ``size``, in place of the note stored there
        (keeping the time that one was signed), or as a new checkpoint at ``now``.

        The caller has verified ``note`` (a checkpoint of this log at ``size`` with a
        cosignature added): what is stored at a size is always a note signing the tree
        the log holds there.

        Raises:
            LineageError: ``size`` is 0 or outside the stored log, or the write failed;
                nothing changed.
        """
        with self._write("cannot write a lineage checkpoint") as db:
            tip = self.tip()
            if size == 0 or not tip.base <= size <= tip.size:
                raise LineageError(
                    f"no checkpoint can be stored at size {size}: the log holds entries "
                    f"{tip.base} to {tip.size - 1}"
                )
            row = db.execute("SELECT time FROM checkpoints WHERE size = ?", (size,)).fetchone()
            signed = now if row is None else int(row[0])
            self._insert_checkpoint(db, size, signed, note)
        return StoredCheckpoint(size, signed, note)

    def checkpoints_holding(self, min_size: int, text: str) -> Iterator[StoredCheckpoint]:
        """Stored checkpoints of at least ``min_size`` whose note holds ``text``, smallest
        first, streamed in pages (a prefilter, e.g. a witness's signature-line prefix: the
        caller still verifies what it finds).

        Raises:
            LineageError: unreadable.
        """
        position = min_size
        while True:
            with self._reading("cannot read the lineage checkpoints") as db:
                rows = db.execute(
                    "SELECT size, time, note FROM checkpoints WHERE size >= ? "
                    "AND instr(note, ?) > 0 ORDER BY size LIMIT ?",
                    (position, text, _CHECKPOINT_PAGE),
                ).fetchall()
            for size, time, note in rows:
                yield StoredCheckpoint(int(size), int(time), str(note))
            if len(rows) < _CHECKPOINT_PAGE:
                return
            position = int(rows[-1][0]) + 1

    def checkpoints(self, min_size: int = 0) -> list[StoredCheckpoint]:
        """Stored checkpoints of at least ``min_size``, smallest first.

        Raises:
            LineageError: unreadable.
        """
        with self._reading("cannot read the lineage checkpoints") as db:
            rows = db.execute(
                "SELECT size, time, note FROM checkpoints WHERE size >= ? ORDER BY size",
                (min_size,),
            ).fetchall()
        return [StoredCheckpoint(int(s), int(t), str(n)) for s, t, n in rows]

    def latest_checkpoint(self, max_size: int | None = None) -> StoredCheckpoint | None:
        """The largest checkpoint (of at most ``max_size``), if any.

        Raises:
            LineageError: unreadable.
        """
        limit = max_size if max_size is not None else _NO_LIMIT
        with self._reading("cannot read the lineage checkpoints") as db:
            row = db.execute(
                "SELECT size, time, note FROM checkpoints WHERE size <= ? "
                "ORDER BY size DESC LIMIT 1",
                (limit,),
            ).fetchone()
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

        ``columns`` are what is stored beside the entry (time, kind, allowed, reason,
        subject, action, and the tree nodes it closed), for checking them against it.

        ``where`` is an SQL condition on the entry columns (built by the caller from fixed
        fragments, values in ``params``). Keyset pagination: each page is one bounded query.

        Raises:
            LineageError: unreadable; the error carries the seq where reading stopped.
        """
        for page in self.iter_pages(start, where, params, limit, descending):
            for seq, data, *columns in page:
                yield seq, data, tuple(columns)

    def iter_pages(
        self,
        start: int = 0,
        where: str = "",
        params: Sequence[object] = (),
        limit: int = -1,
        descending: bool = False,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """:meth:`iter_rows` a page at a time, rows as SQLite returns them: ``(seq, data,
        time, kind, allowed, reason, subject, action, nodes)`` (for verifying millions).

        Raises:
            LineageError: unreadable; the error carries the seq where reading stopped.
        """
        position = _NO_LIMIT if descending else start
        remaining = limit
        order, compare = ("DESC", "<=") if descending else ("ASC", ">=")
        condition = f" AND ({where})" if where else ""
        while remaining != 0:
            page = PAGE_ROWS if remaining < 0 else min(PAGE_ROWS, remaining)
            try:
                with self._reading("cannot read the lineage entries") as db:
                    rows: list[tuple[Any, ...]] = db.execute(
                        "SELECT seq, CAST(data AS BLOB), time, kind, allowed, reason, "
                        f"subject, action, nodes FROM entries WHERE seq {compare} ? AND seq >= ?"
                        f"{condition} ORDER BY seq {order} LIMIT ?",
                        (position, start, *params, page),
                    ).fetchall()
            except LineageError as exc:
                raise LineageError(str(exc), seq=position) from exc
            if rows:
                yield rows
            if len(rows) < page:
                return
            position = int(rows[-1][0]) + (-1 if descending else 1)
            remaining = remaining - len(rows) if remaining > 0 else remaining

    def entry(self, seq: int) -> bytes:
        """The stored bytes of entry ``seq``.

        Raises:
            LineageError: unreadable, or no such entry is stored.
        """
        with self._reading("cannot read the lineage entries") as db:
            row = db.execute(
                "SELECT CAST(data AS BLOB) FROM entries WHERE seq = ?", (seq,)
            ).fetchone()
        if row is None:
            raise LineageError(f"entry {seq} is not in the log", seq=seq)
        return bytes(row[0])

    def first_seq_at_or_after(self, time: int) -> int | None:
        """The smallest stored seq whose entry time is at least ``time`` (index lookup).

        Raises:
            LineageError: unreadable.
        """
        with self._reading("cannot read the lineage entries") as db:
            row = db.execute("SELECT min(seq) FROM entries WHERE time >= ?", (time,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def rebase(self, base: int, base_prev: bytes | None, *, drop_below: bool) -> None:
        """Move the log's base to ``base`` (a signed checkpoint's size), in one transaction.

        With ``drop_below``, entries and checkpoints below ``base`` are deleted (prune) and
        the frontier at ``base`` is kept in the ``nodes`` table: proofs for later entries and
        consistency from the checkpoint at ``base`` stay possible, because every node they
        need that lies wholly below ``base`` is part of that frontier.

        Raises:
            LineageError: the write failed; nothing changed.
        """
        with self._write("cannot prune the lineage") as db:
            if drop_below:
                kept = [(level, index, _node(db, level, index)) for level, index in _cover(base)]
                if any(node is None for _, _, node in kept):
                    raise LineageError(f"the tree nodes at entry {base} are missing", seq=base)
                db.execute("DELETE FROM nodes")
                db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", kept)
                db.execute("DELETE FROM entries WHERE seq < ?", (base,))
                db.execute("DELETE FROM checkpoints WHERE size < ?", (base,))
            _set_meta(db, base=base, base_prev=base_prev)

    def acknowledge(self, acked: int) -> int:
        """Raise the watermark to ``acked`` entries (never lower it); return the watermark.

        Raises:
            LineageError: ``acked`` is beyond the log's size, or the write failed.
        """
        with self._write("cannot record the lineage acknowledgement") as db:
            tip = self.tip()
            if acked > tip.size:
                raise LineageError(
                    f"the hub acknowledged {acked} entries but the log holds {tip.size}",
                    seq=tip.size,
                )
            if acked > tip.acked:
                _set_meta(db, acked=acked)
        return max(acked, tip.acked)

    def get_meta(self, key: str) -> object:
        """A raw meta value (``None`` if absent).

        Raises:
            LineageError: unreadable.
        """
        with self._reading("cannot read the lineage database") as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
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
        with self._reading("cannot set the lineage page limit") as db:
            db.execute(f"PRAGMA max_page_count = {int(pages)}")


def _schema_row(db: sqlite3.Connection) -> tuple[object, ...] | None:
    """The schema version row, ``None`` for a file without the lineage tables."""
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return None
    row: tuple[object, ...] | None = db.execute(
        "SELECT value FROM meta WHERE key = 'schema'"
    ).fetchone()
    return row


def _insert(
    db: sqlite3.Connection, into: str, width: int, rows: Sequence[tuple[object, ...]]
) -> None:
    """Insert ``rows`` with a few multi-row statements (see :data:`_INSERT_CHUNKS`)."""
    position = 0
    for chunk in _INSERT_CHUNKS:
        while len(rows) - position >= chunk:
            values = list(itertools.chain.from_iterable(rows[position : position + chunk]))
            db.execute(_insert_sql(into, width, chunk), values)
            position += chunk


@functools.cache
def _insert_sql(into: str, width: int, count: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"INSERT INTO {into} VALUES " + ", ".join([row] * count)


_TIP_SQL = """
SELECT
    (SELECT value FROM meta WHERE key = 'base'),
    (SELECT value FROM meta WHERE key = 'base_prev'),
    (SELECT value FROM meta WHERE key = 'size'),
    (SELECT value FROM meta WHERE key = 'prev'),
    (SELECT value FROM meta WHERE key = 'acked'),
    (SELECT max(size) FROM checkpoints),
    (SELECT time FROM checkpoints ORDER BY size DESC LIMIT 1),
    (SELECT count(*) FROM meta WHERE key = 'base_prev')
"""
"""The tip and the last checkpoint in one single-row query: one SQLite call per batch."""


def _tip(row: tuple[object, ...]) -> Tip:
    """The :class:`Tip` of a :data:`_TIP_SQL` row.

    Raises:
        LineageError: the recorded values are damaged.
    """
    base, base_prev, size, prev, acked, _, _, has_base_prev = row
    base = 0 if base is None else base
    size = 0 if size is None else size
    acked = 0 if acked is None else acked
    prev = GENESIS_PREV if prev is None else prev
    base_prev = GENESIS_PREV if not has_base_prev else base_prev
    if not (isinstance(base, int) and isinstance(size, int) and 0 <= base <= size):
        raise LineageError("the recorded lineage size is damaged")
    if not isinstance(prev, bytes) or len(prev) != HASH_SIZE:
        raise LineageError("the recorded last entry hash is damaged")
    if base_prev is not None and (not isinstance(base_prev, bytes) or len(base_prev) != HASH_SIZE):
        raise LineageError("the recorded hash before the first entry is damaged")
    if not (isinstance(acked, int) and 0 <= acked <= size):
        raise LineageError("the recorded acknowledgement watermark is damaged")
    return Tip(base, base_prev, size, prev, acked)


def _set_meta(db: sqlite3.Connection, **values: object) -> None:
    items = list(values.items())
    db.execute(
        "INSERT INTO meta (key, value) VALUES "
        + ", ".join(["(?, ?)"] * len(items))
        + " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        list(itertools.chain.from_iterable(items)),
    )


def _node(db: sqlite3.Connection, level: int, index: int) -> bytes | None:
    """Node ``(level, index)``: from the entry that closed it, else from the kept nodes."""
    row = db.execute("SELECT nodes FROM entries WHERE seq = ?", (((index + 1) << level) - 1,))
    found = row.fetchone()
    if found is not None and isinstance(found[0], bytes):
        node = found[0][level * HASH_SIZE : (level + 1) * HASH_SIZE]
        return bytes(node) if len(node) == HASH_SIZE else None
    found = db.execute(
        "SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index)
    ).fetchone()
    if found is not None and isinstance(found[0], bytes) and len(found[0]) == HASH_SIZE:
        return bytes(found[0])
    return None


def _cover(size: int) -> list[tuple[int, int]]:
    """The perfect nodes ``(level, index)`` the tree of ``size`` decomposes into."""
    cover, position = [], 0
    for level in reversed(range(size.bit_length())):
        if (size >> level) & 1:
            cover.append((level, position >> level))
            position += 1 << level
    return cover


def _begin_at_once(db: sqlite3.Connection, busy_timeout_s: float) -> None:
    """``BEGIN IMMEDIATE`` without waiting for another connection's write lock.

    Raises:
        WouldWait: another connection holds it; no transaction started.
    """
    db.execute("PRAGMA busy_timeout = 0")
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise WouldWait from None
        raise
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")


def _create_private(path: Path) -> None:
    """Create ``path`` empty with :data:`FILE_MODE` unless it exists; clear the group and
    other bits of an existing one (and of its WAL files), keeping its write bits' meaning
    (a file without them stays read-only).

    Raises:
        OSError: the file cannot be created.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
    for extension in ("", "-wal", "-shm"):
        name = path.with_name(path.name + extension)
        with contextlib.suppress(FileNotFoundError, PermissionError):
            mode = stat.S_IMODE(name.stat().st_mode)
            if mode & 0o077:
                os.chmod(name, mode & 0o700)


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    """Turn sqlite and OS errors into :class:`LineageError`, once, here: a file SQLite finds
    corrupt or not a database into :class:`LineageDamagedError`."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode & 0xFF in _DAMAGED:
            raise LineageDamagedError(f"{what}: {exc}") from exc
        raise LineageError(f"{what}: {exc}") from exc
    except sqlite3.Error as exc:
        raise LineageError(f"{what}: {exc}") from exc
    except OSError as exc:
        raise LineageError(f"{what}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise LineageError(f"{what}: {exc}") from exc

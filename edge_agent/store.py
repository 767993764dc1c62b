"""The agent's persistent trust state in SQLite, under the state directory.

Holds the pinned trust roots (every version, so the chain can be re-verified), every bundle
ever installed (by digest, so any logged decision can be replayed), which bundle is active,
the device identity, the trusted-time floor (one mark per signing role, ``floor:<role>``,
the observed floor ``floor:observed``, and ``time_floor``, a floor of no known source kept
from before marks existed), every applied revocation, the newest freshness token pinning the
active bundle, the freshness token naming the newest bundle (the pin), the highest device
directory version the agent kept (``directory_version``, the directory's rollback floor: the
directory itself is a file beside the database, which can be lost or replaced, see
:mod:`edge_agent.directory_file`), and the broker settings of ``edge-agent init``. Every
change is one transaction; only verified objects are written. The store does not verify
anything itself: it hands bytes to the pure core and stores what the core accepted.
sqlite3 errors stay in this module.

Several processes share the database (``edge-agent run`` and the commands an operator runs
beside it), so every change is also optimistic: it names the ``generation`` it was computed
from, and is refused (:class:`StaleStateError`, nothing written) when another process
committed a change since; the caller reloads, verifies again and re-applies. Each change
raises the generation by one. :meth:`StateStore.changed` tells, cheaply, whether another
process committed since the state was loaded.

The outbox: a change that is a trust transition carries its lineage entry, written in the
same transaction into ``pending_transitions``; the caller appends it to the lineage, then
clears it. The lineage is another file, so a process killed between the two leaves the entry
here, and whoever opens the state next appends it. While a process writes and logs a
transition it holds :meth:`StateStore.transition_lock` (an ``flock``, released by the kernel
when the process dies), so a row whose lock is free is one its writer left behind.

It also keeps the lineage's head (:class:`LineageHeadStore`): the lineage's own file can be
deleted or edited, so the agent records what it last signed outside it.

Every long-running agent (``run``, ``serve``, ``enforce``) holds :func:`agent_lock` shared
for its lifetime, so a command that must not run beside one (``log acknowledge-break``: a
running agent would keep its view of the old log) can tell.

A state directory the process cannot write, or any under ``edge-agent --read-only``, is
opened read-only (:mod:`edge_agent.support.readonly`): nothing is written or created there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import EdgeGovError, StateError
from edge_agent.protocol import dcbor
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.roles import HUB_ROLES, Role
from edge_agent.support.readonly import connect_read_only, is_read_only
from edge_agent.trust.clock import TimeFloor

__all__ = [
    "AGENT_LOCK_NAME",
    "DB_NAME",
    "LineageHeadStore",
    "RecordedHead",
    "StaleStateError",
    "StateStore",
    "StoredState",
    "Written",
    "agent_lock",
]

DB_NAME = "state.db"
TRANSITION_LOCK_NAME = ".transitions.lock"
AGENT_LOCK_NAME = ".agent.lock"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 5.0
MAX_IDENTITY_BYTES = 4096
_MARKS = {role: f"floor:{role}" for role in HUB_ROLES}
_OBSERVED = "floor:observed"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE roots (
    version INTEGER PRIMARY KEY,
    data BLOB NOT NULL,
    installed_at INTEGER NOT NULL
);
CREATE TABLE bundles (
    digest BLOB PRIMARY KEY,
    version INTEGER NOT NULL,
    data BLOB NOT NULL,
    installed_at INTEGER NOT NULL
);
CREATE TABLE active (
    slot TEXT PRIMARY KEY CHECK (slot = 'bundle'),
    digest BLOB NOT NULL REFERENCES bundles (digest)
);
"""
_SYNC_SCHEMA = """
CREATE TABLE IF NOT EXISTS revocations (
    epoch INTEGER PRIMARY KEY,
    data BLOB NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_transitions (
    id INTEGER PRIMARY KEY,
    entry BLOB NOT NULL
);
"""


class StaleStateError(StateError):
    """Another process changed the agent state since this one loaded it: nothing was
    written. The caller reloads, verifies again and re-applies its change."""

    code = "state_changed"


@dataclass(frozen=True, slots=True)
class Written:
    """A committed change: the state's new ``generation`` and the id of the pending
    transition written with it (``None``: none)."""

    generation: int
    transition: int | None


@dataclass(frozen=True, slots=True)
class StoredState:
    """The raw stored state, before the core re-verifies it."""

    identity: DeviceIdentity
    roots: tuple[bytes, ...]
    active_bundle: bytes | None
    floor: TimeFloor
    revocations: tuple[bytes, ...] = ()
    seen_epoch: int = 0
    announced_epoch: int = 0
    freshness: bytes | None = None
    active_version: int = 0
    revocation_epochs: tuple[int, ...] = ()
    """The epoch of each of ``revocations``, in the same order."""
    pin: bytes | None = None
    """The freshness token naming the newest bundle (see ``TrustState.pin``)."""
    directory_version: int = 0
    """The highest device directory version kept (see ``TrustState.directory_version``)."""
    generation: int = 0
    """How many changes were committed: what a change computed from this state names."""


class StateStore:
    """One SQLite database file holding the agent's trust state, on a connection any thread
    may use (one at a time)."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._lock = threading.RLock()
        self._data_version: object = None
        self.read_only = False
        """Opened for inspection only (:mod:`edge_agent.support.readonly`): a write fails."""

    @classmethod
    def create(
        cls,
        state_dir: Path,
        identity: DeviceIdentity,
        root: bytes,
        now: int,
        settings: dict[str, str] | None = None,
    ) -> None:
        """Create the database with ``identity``, the pinned ``root`` and text ``settings``,
        all or nothing.

        The database is built under a temporary name and renamed into place last, so an
        interrupted ``init`` leaves no half-made state behind.

        Raises:
            StateError: the state directory already holds a database, or cannot be written.
        """
        final = state_dir / DB_NAME
        if final.exists():
            raise StateError(
                f"{state_dir} is already initialised; to re-enrol this device, move "
                f"{final} away first"
            )
        temp = state_dir / f".{DB_NAME}.init-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        try:
            db = sqlite3.connect(temp, isolation_level=None)
            try:
                db.executescript(_SCHEMA)
                with _transaction(db):
                    db.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        [
                            ("schema", SCHEMA_VERSION),
                            ("identity", _encode_identity(identity)),
                            ("time_floor", 0),
                            *((f"setting:{k}", v) for k, v in (settings or {}).items()),
                        ],
                    )
                    db.execute(
                        "INSERT INTO roots (version, data, installed_at) VALUES (1, ?, ?)",
                        (root, now),
                    )
            finally:
                db.close()
            os.chmod(temp, 0o600)
            os.replace(temp, final)
            _fsync_dir(state_dir)
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise StateError(f"cannot create the agent state in {state_dir}: {exc}") from exc

    @classmethod
    def open(cls, state_dir: Path) -> StateStore:
        """Open the database of an initialised state directory.

        Raises:
            StateError: not initialised, unreadable, or not an edgegov state database.
        """
        path = _initialised(state_dir)
        read_only = is_read_only(path)
        try:
            if read_only:
                db = connect_read_only(path, BUSY_TIMEOUT_S)
            else:
                db = sqlite3.connect(
                    path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
                )
                db.execute("PRAGMA foreign_keys = ON")
                # WAL: one fsync per durable commit instead of the rollback journal's several.
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is not None and row[0] == SCHEMA_VERSION:
                if read_only:
                    _empty_tables_for_reading(db, _SYNC_SCHEMA)
                else:
                    db.executescript(_SYNC_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"cannot read the agent state database {path}: {exc}") from exc
        if row is None or row[0] != SCHEMA_VERSION:
            db.close()
            raise StateError(f"{path} is not an edgegov agent state database of schema 1")
        store = cls(path, db)
        store.read_only = read_only
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def changed(self, generation: int) -> bool:
        """Whether another process committed a change after the state of ``generation`` was
        loaded. Cheap when nothing was committed at all (SQLite's ``data_version``, a
        counter in shared memory), one indexed read otherwise.

        Raises:
            StateError: the database cannot be read.
        """
        with self._lock:
            try:
                version = self._db.execute("PRAGMA data_version").fetchone()[0]
                if version == self._data_version:
                    return False
                self._data_version = version
                return self._generation() != generation
            except sqlite3.Error as exc:
                raise StateError(
                    f"cannot read the agent state database {self.path}: {exc}"
                ) from exc

    def load(self) -> StoredState:
        """Read the whole stored state in one read transaction.

        Raises:
            StateError: the database cannot be read or holds values of the wrong type.
        """
        with self._lock:
            return self._load()

    def _load(self) -> StoredState:
        try:
            self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
            with _transaction(self._db, "BEGIN"):
                meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
                roots = self._db.execute("SELECT data FROM roots ORDER BY version").fetchall()
                active = self._db.execute(
                    "SELECT b.data, b.version FROM active a JOIN bundles b ON b.digest = a.digest"
                ).fetchone()
                revocations = self._db.execute(
                    "SELECT epoch, data FROM revocations ORDER BY epoch"
                ).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the agent state database {self.path}: {exc}") from exc
        numbers = {
            key: meta.get(key, 0)
            for key in (
                "time_floor",
                "seen_epoch",
                "announced_epoch",
                "directory_version",
                "generation",
                _OBSERVED,
                *_MARKS.values(),
            )
        }
        tokens = (meta.get("freshness"), meta.get("pin"))
        if (
            not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers.values())
            or not all(t is None or isinstance(t, bytes) for t in tokens)
            or "time_floor" not in meta
            or not roots
        ):
            raise StateError(f"the agent state database {self.path} is damaged")
        floor = TimeFloor(
            base=numbers["time_floor"],
            marks=tuple((role, numbers[key]) for role, key in _MARKS.items() if key in meta),
            observed=numbers[_OBSERVED],
        )
        return StoredState(
            identity=_decode_identity(meta.get("identity")),
            roots=tuple(_blob(r[0]) for r in roots),
            active_bundle=_blob(active[0]) if active else None,
            floor=floor,
            revocations=tuple(_blob(r[1]) for r in revocations),
            revocation_epochs=tuple(int(r[0]) for r in revocations),
            seen_epoch=numbers["seen_epoch"],
            announced_epoch=numbers["announced_epoch"],
            freshness=tokens[0],
            active_version=active[1] if active else 0,
            pin=tokens[1],
            directory_version=numbers["directory_version"],
            generation=numbers["generation"],
        )

    def pending_transitions(self) -> tuple[tuple[int, bytes], ...]:
        """The transitions committed with a change and not yet cleared: (id, entry), oldest
        first.

        Raises:
            StateError: the database cannot be read or holds a damaged row.
        """
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, entry FROM pending_transitions ORDER BY id"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StateError(
                    f"cannot read the agent state database {self.path}: {exc}"
                ) from exc
        return tuple((int(row[0]), _blob(row[1])) for row in rows)

    def clear_transition(self, transition: int) -> None:
        """Forget the pending transition ``transition``: it is in the lineage now.

        Raises:
            StateError: the write failed.
        """
        with self._lock:
            try:
                with _transaction(self._db, "BEGIN IMMEDIATE"):
                    self._db.execute("DELETE FROM pending_transitions WHERE id = ?", (transition,))
            except sqlite3.Error as exc:
                raise StateError(
                    f"cannot write the agent state database {self.path}: {exc}"
                ) from exc

    @contextlib.contextmanager
    def transition_lock(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold the lock under which a transition is written and logged; yields whether it
        is held (``wait=False``: ``False`` at once when another process or agent holds it).

        Raises:
            StateError: the lock file cannot be opened.
        """
        path = self.path.parent / TRANSITION_LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the transition lock {path}: {exc}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            except OSError as exc:
                raise StateError(f"cannot take the transition lock {path}: {exc}") from exc
            yield True
        finally:
            os.close(fd)

    def record_revocation(
        self,
        *,
        data: bytes,
        epoch: int,
        applied: bool,
        seen_epoch: int,
        floor: TimeFloor,
        now: int,
        generation: int,
        transition: bytes | None = None,
    ) -> Written:
        """Record a verified revocation (kept when ``applied``), its epoch and signed time.

        Raises:
            StaleStateError: the state is no longer that of ``generation``; nothing changed.
            StateError: the write failed; nothing changed.
        """
        statements: list[tuple[str, tuple[object, ...]]] = [
            *self._meta_update("seen_epoch", seen_epoch),
            *self._floor_update(floor),
        ]
        if applied:
            statements.append(
                (
                    "INSERT OR IGNORE INTO revocations (epoch, data, recorded_at) VALUES (?, ?, ?)",
                    (epoch, data, now),
                )
            )
        return self._write(statements, generation, durable=applied, transition=transition)

    def record_freshness(
        self,
        *,
        data: bytes | None,
        floor: TimeFloor,
        generation: int,
        announced_epoch: int = 0,
        pin: bytes | None = None,
    ) -> Written:
        """Keep ``data`` as the freshness token pinning the active bundle (when given),
        ``pin`` as the token naming the newest bundle (when given), the highest kill epoch
        tokens announced, and raise the time floor.

        Raises:
            StaleStateError: the state is no longer that of ``generation``; nothing changed.
            StateError: the write failed; nothing changed.
        """
        statements = self._floor_update(floor)
        statements.append(
            (
                "INSERT INTO meta (key, value) VALUES ('announced_epoch', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                (announced_epoch,),
            )
        )
        if data is not None:
            statements.extend(self._meta_update("freshness", data))
        if pin is not None:
            statements.extend(self._meta_update("pin", pin))
        return self._write(statements, generation, durable=False)

    def record_directory_version(self, version: int, *, generation: int) -> Written:
        """Raise the device directory's version floor to ``version`` (never lower it: another
        process may have raised it meanwhile), durably: a floor lost at a power cut would let
        an older signed directory back in.

        Raises:
            StaleStateError: the state is no longer that of ``generation``; nothing changed.
            StateError: the write failed; nothing changed.
        """
        return self._write(
            [
                (
                    "INSERT INTO meta (key, value) VALUES ('directory_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                    (version,),
                )
            ],
            generation,
        )

    def record_floor(self, floor: TimeFloor, *, generation: int) -> Written:
        """Raise the stored time floor to ``floor`` (durably: an observed deadline must
        survive a power cut, or an expired bundle could come back).

        Raises:
            StaleStateError: the state is no longer that of ``generation``; nothing changed.
            StateError: the write failed; nothing changed.
        """
        return self._write(self._floor_update(floor), generation)

    def get_setting(self, key: str) -> str | None:
        """A text setting recorded by ``edge-agent init`` (for example the broker URL)."""
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT value FROM meta WHERE key = ?", (f"setting:{key}",)
                ).fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the agent state database {self.path}: {exc}") from exc
        return row[0] if row and isinstance(row[0], str) else None

    def install_bundle(
        self,
        *,
        data: bytes,
        digest: bytes,
        version: int,
        floor: TimeFloor,
        now: int,
        generation: int,
        transition: bytes | None = None,
    ) -> Written:
        """Record ``data`` as the active bundle and raise the time floor, in one transaction.

        Raises:
            StaleStateError: the state is no longer that of ``generation``; nothing changed.
            StateError: the write failed; nothing changed.
        """
        return self._write(
            [
                (
                    "INSERT OR IGNORE INTO bundles (digest, version, data, installed_at) "
                    "VALUES (?, ?, ?, ?)",
                    (digest, version, data, now),
                ),
                (
                    "INSERT INTO active (slot, digest) VALUES ('bundle', ?) "
                    "ON CONFLICT (slot) DO UPDATE SET digest = excluded.digest",
                    (digest,),
                ),
                ("DELETE FROM meta WHERE key = 'freshness'", ()),
                *self._floor_update(floor),
            ],
            generation,
            transition=transition,
        )

    def install_root(
        self,
        *,
        data: bytes,
        version: int,
        floor: TimeFloor,
        rotated: frozenset[Role],
        announced_epoch: int | None,
        seen_epoch: int | None,
        void_revocations: tuple[int, ...],
        void_tokens: tuple[str, ...],
        now: int,
        generation: int,
        transition: bytes | None = None,
    ) -> Written:
        """Record root ``version`` (already verified as the next one), in one transaction,
        with what the rotation voids: the time marks of the ``rotated`` roles, the
        revocations of epochs ``void_revocations`` and the freshness tokens named in
        ``void_tokens`` (``"freshness"``, ``"pin"``) no longer verify, and, when the verifier
        role is among the ``rotated``, the device directory's version floor (what its old key
        signed no longer counts, as for the bundle's version); the announced kill
        epoch is set to ``announced_epoch`` when given (the freshness role was rotated: what its
        old key announced no longer counts), and the seen revocation epoch to ``seen_epoch``
        when given (the revoke role was rotated: epochs its old key signed no longer count).

        Raises:
            StaleStateError: the state is no longer that of ``generation``; nothing changed.
            StateError: the write failed (or that version is already stored); nothing changed.
        """
        return self._write(
            [
                (
                    "INSERT INTO roots (version, data, installed_at) VALUES (?, ?, ?)",
                    (version, data, now),
                ),
                *(("DELETE FROM meta WHERE key = ?", (_MARKS[role],)) for role in sorted(rotated)),
                *(("DELETE FROM revocations WHERE epoch = ?", (e,)) for e in void_revocations),
                *(("DELETE FROM meta WHERE key = ?", (key,)) for key in void_tokens),
                *(
                    [("DELETE FROM meta WHERE key = 'directory_version'", ())]
                    if Role.VERIFIER in rotated
                    else []
                ),
                *(
                    self._meta_update("announced_epoch", announced_epoch)
                    if announced_epoch is not None
                    else []
                ),
                *(self._meta_update("seen_epoch", seen_epoch) if seen_epoch is not None else []),
                *self._floor_update(floor),
            ],
            generation,
            transition=transition,
        )

    def bundle_by_digest(self, digest: bytes) -> bytes | None:
        """The bytes of any bundle this device ever installed, by its SHA-256 digest."""
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT data FROM bundles WHERE digest = ?", (digest,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the agent state database {self.path}: {exc}") from exc
        return _blob(row[0]) if row else None

    @staticmethod
    def _meta_update(key: str, value: object) -> list[tuple[str, tuple[object, ...]]]:
        return [
            (
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        ]

    @staticmethod
    def _floor_update(floor: TimeFloor) -> list[tuple[str, tuple[object, ...]]]:
        """Raise each stored mark to ``floor``'s (never lower one: another process may have
        raised it meanwhile)."""
        values = [(_MARKS[role], seconds) for role, seconds in floor.marks]
        values.append((_OBSERVED, floor.observed))
        return [
            (
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                (key, seconds),
            )
            for key, seconds in values
        ]

    def _generation(self) -> object:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return row[0] if row else 0

    def _write(
        self,
        statements: list[tuple[str, tuple[object, ...]]],
        generation: int,
        *,
        durable: bool = True,
        transition: bytes | None = None,
    ) -> Written:
        """Apply ``statements`` in one transaction if the state is still that of
        ``generation``, raising the generation and adding ``transition`` to the outbox.
        ``durable=False`` skips the fsync (WAL, ``synchronous=NORMAL``): for what a power cut
        may lose because losing it can only make the device deny sooner (signed time,
        freshness, epochs seen elsewhere); a crash of the process still loses nothing."""
        with self._lock:
            try:
                if not durable:
                    self._db.execute("PRAGMA synchronous = NORMAL")
                try:
                    with _transaction(self._db, "BEGIN IMMEDIATE"):
                        current = self._generation()
                        if current != generation:
                            raise StaleStateError(
                                f"the agent state in {self.path} was changed by another "
                                f"process (generation {current}, this one loaded {generation})"
                            )
                        for sql, params in statements:
                            self._db.execute(sql, params)
                        self._db.execute(*self._meta_update("generation", generation + 1)[0])
                        row = None
                        if transition is not None:
                            row = self._db.execute(
                                "INSERT INTO pending_transitions (entry) VALUES (?)",
                                (transition,),
                            ).lastrowid
                finally:
                    if not durable:
                        self._db.execute("PRAGMA synchronous = FULL")
            except (sqlite3.Error, OverflowError) as exc:
                # OverflowError: an integer past SQLite's signed 64 bits. Decoders bound every
                # counter well below that (limits.MAX_COUNTER); this keeps a miss from escaping.
                raise StateError(
                    f"cannot write the agent state database {self.path}: {exc}"
                ) from exc
        return Written(generation + 1, row)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    db.execute(begin)
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _blob(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise StateError("the agent state database holds a damaged record")
    return value


def _encode_identity(identity: DeviceIdentity) -> bytes:
    return dcbor.encode(
        {
            "device_id": identity.device_id,
            "region": identity.region,
            "groups": list(identity.groups),
            "profile": identity.profile,
        }
    )


def _decode_identity(value: object) -> DeviceIdentity:
    try:
        decoded = dcbor.decode(_blob(value), max_bytes=MAX_IDENTITY_BYTES, what="identity")
        if not isinstance(decoded, dict) or not all(isinstance(key, str) for key in decoded):
            raise TypeError
        record: dict[str, object] = {str(key): item for key, item in decoded.items()}
        groups = record["groups"]
        if not isinstance(groups, list):
            raise TypeError
        fields = (record["device_id"], record["region"], record["profile"], *groups)
        if not all(isinstance(f, str) for f in fields):
            raise TypeError
        return DeviceIdentity(
            str(record["device_id"]),
            str(record["region"]),
            tuple(str(g) for g in groups),
            str(record["profile"]),
        )
    except (EdgeGovError, KeyError, TypeError) as exc:
        raise StateError("the device identity in the agent state database is damaged") from exc


# --- the lineage head --------------------------------------------------------------------

_HEAD_SCHEMA = """
CREATE TABLE IF NOT EXISTS lineage_head (
    slot TEXT PRIMARY KEY CHECK (slot = 'head'),
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    acked INTEGER NOT NULL,
    acked_root BLOB NOT NULL,
    broken TEXT
);
"""
_NO_ROOT = bytes(32)


@dataclass(frozen=True, slots=True)
class RecordedHead:
    """The lineage as last signed, recorded outside the lineage's own file.

    ``size``/``root``: the last checkpoint the agent signed; ``acked``/``acked_root``: the
    tree the hub last acknowledged; ``broken``: why the lineage was found missing or edited,
    until an operator acknowledges it (the gate stays closed meanwhile). Sizes are 0 (and
    roots zero bytes) before anything was recorded.
    """

    size: int = 0
    root: bytes = _NO_ROOT
    acked: int = 0
    acked_root: bytes = _NO_ROOT
    broken: str | None = None


class LineageHeadStore:
    """The lineage head in ``state.db``, on a connection of its own that any thread may use
    (the lineage's writer threads record checkpoints through it).

    ``advance`` and ``acknowledge`` only move the head up and skip the fsync: the head is a
    lower bound of the log, so one lost at a power cut only makes the check weaker until the
    next checkpoint, never a false alarm. Marking and clearing a break are durable.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._lock = threading.Lock()
        self._data_version: object = None
        self._broken: str | None = None
        self.read_only = False
        """Opened for inspection only (:mod:`edge_agent.support.readonly`): a write fails."""

    @classmethod
    def open(cls, state_dir: Path) -> LineageHeadStore:
        """Open the head table of an initialised state directory (creating the table).

        Raises:
            StateError: not initialised or unreadable.
        """
        path = state_dir / DB_NAME
        if not path.is_file():
            raise StateError(f"no agent state in {state_dir}: the lineage head cannot be read")
        read_only = is_read_only(path)
        try:
            if read_only:
                db = connect_read_only(path, BUSY_TIMEOUT_S)
                _empty_tables_for_reading(db, _HEAD_SCHEMA)
            else:
                db = sqlite3.connect(
                    path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
                )
                db.execute("PRAGMA journal_mode = WAL")
                db.executescript(_HEAD_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"cannot open the lineage head in {path}: {exc}") from exc
        store = cls(path, db)
        store.read_only = read_only
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def load(self) -> RecordedHead:
        """The recorded head (all zero when none was recorded yet).

        Raises:
            StateError: unreadable or damaged.
        """
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT size, root, acked, acked_root, broken FROM lineage_head"
                ).fetchone()
            except sqlite3.Error as exc:
                raise StateError(f"cannot read the lineage head in {self.path}: {exc}") from exc
        if row is None:
            return RecordedHead()
        size, root, acked, acked_root, broken = row
        if not (
            isinstance(size, int)
            and isinstance(acked, int)
            and acked >= 0
            and size >= 0
            and isinstance(root, bytes)
            and isinstance(acked_root, bytes)
            and len(root) == len(acked_root) == len(_NO_ROOT)
            and (broken is None or isinstance(broken, str))
        ):
            raise StateError(f"the lineage head in {self.path} is damaged")
        return RecordedHead(size, root, acked, acked_root, broken)

    def recorded_break(self) -> str | None:
        """The recorded break, read again only when another connection committed to
        ``state.db`` since the last call (SQLite's ``data_version``: about a microsecond
        otherwise), so the running agent can ask on its periodic state check.

        Raises:
            StateError: unreadable or damaged.
        """
        with self._lock:
            try:
                version = self._db.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise StateError(f"cannot read the lineage head in {self.path}: {exc}") from exc
            if version == self._data_version:
                return self._broken
        broken = self.load().broken
        with self._lock:
            self._data_version, self._broken = version, broken
        return broken

    def advance(self, size: int, root: bytes, *, durable: bool = False) -> None:
        """Record a checkpoint at ``size`` with ``root`` if it is beyond the recorded one.

        Raises:
            StateError: the write failed.
        """
        self._upsert(
            "size = excluded.size, root = excluded.root WHERE excluded.size > size",
            RecordedHead(size, root),
            durable=durable,
        )

    def acknowledge(self, acked: int, root: bytes) -> None:
        """Record that the hub acknowledged the tree of ``acked`` entries with ``root``.

        Raises:
            StateError: the write failed.
        """
        self._upsert(
            "acked = excluded.acked, acked_root = excluded.acked_root WHERE excluded.acked > acked",
            RecordedHead(acked=acked, acked_root=root),
            durable=False,
        )

    def mark_broken(self, why: str) -> None:
        """Record a break: every process opening the lineage denies until it is cleared.

        Raises:
            StateError: the write failed.
        """
        self._upsert("broken = excluded.broken", RecordedHead(broken=why), durable=True)

    def restart(self, head: RecordedHead) -> None:
        """Replace the head (a new segment, or a break acknowledged by an operator).

        Raises:
            StateError: the write failed.
        """
        self._upsert(
            "size = excluded.size, root = excluded.root, acked = excluded.acked, "
            "acked_root = excluded.acked_root, broken = excluded.broken",
            head,
            durable=True,
        )

    def _upsert(self, update: str, head: RecordedHead, *, durable: bool) -> None:
        with self._lock:
            try:
                self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._db.execute(
                    "INSERT INTO lineage_head (slot, size, root, acked, acked_root, broken) "
                    "VALUES ('head', ?, ?, ?, ?, ?) "
                    f"ON CONFLICT (slot) DO UPDATE SET {update}",
                    (head.size, head.root, head.acked, head.acked_root, head.broken),
                )
            except sqlite3.Error as exc:
                raise StateError(f"cannot record the lineage head in {self.path}: {exc}") from exc


@contextlib.contextmanager
def agent_lock(state_dir: Path, *, exclusive: bool = False) -> Iterator[bool]:
    """Hold the lock that tells whether an agent runs on ``state_dir`` (an ``flock``,
    released by the kernel when the process dies); yield whether it is held.

    A long-running agent holds it shared (``exclusive=False``; it waits only while a
    command holds it exclusive, for as long as that command runs). A command that must
    not run beside an agent takes it ``exclusive``, without waiting: ``False`` when an
    agent holds it.

    Raises:
        StateError: ``state_dir`` is not initialised, or the lock cannot be taken.
    """
    path = _initialised(state_dir).with_name(AGENT_LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"cannot open the agent lock {path}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            yield False
            return
        except OSError as exc:
            raise StateError(f"cannot take the agent lock {path}: {exc}") from exc
        yield True
    finally:
        os.close(fd)


def _initialised(state_dir: Path) -> Path:
    """The state database of ``state_dir``.

    Raises:
        StateError: there is none (``edge-agent init`` was not run).
    """
    path = state_dir / DB_NAME
    if not path.is_file():
        raise StateError(
            f"no agent state in {state_dir}: run 'edge-agent init --state-dir {state_dir} "
            "...' first"
        )
    return path


def _empty_tables_for_reading(db: sqlite3.Connection, schema: str) -> None:
    """On a connection opened read-only, stand in an empty temporary table for each table
    of ``schema`` the database does not have yet (a state no agent has run on since
    ``init``): it reads as holding nothing, as it would once created, and nothing is
    written to the database."""
    for statement in schema.split(";"):
        table = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", statement)
        if table is None:
            continue
        found = db.execute(
            "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?", (table[1],)
        ).fetchone()
        if found is None:
            db.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

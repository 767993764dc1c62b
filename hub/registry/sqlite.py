"""The hub's registry in SQLite: devices, what was published, what devices reported and shipped.

One database file (``hub.db`` in the hub directory), shared by ``edge-hub serve`` and the
other ``edge-hub`` commands: WAL mode, every change one ``BEGIN IMMEDIATE`` transaction (or
one savepoint inside a :meth:`Registry.write_group`, which commits a burst of changes with
one fsync), a bounded busy timeout. It holds:

- devices: id, region, groups, profile, registered public key (and its key epoch);
- published bundles and which bundle is current on each (region, channel);
- revocations issued, with their epoch per region (the region's kill epoch is the highest);
- the last freshness token issued per (region, channel);
- each device's last signed status and when the hub last heard from it (a newer signed
  status or a nonce-bound attestation: nothing a replay can produce);
- each device's shipped lineage: entries, the tree frontier, last entry hash and last
  checkpoint note, and every checkpoint the hub verified (it is the log's witness);
- fork evidence (two signed, inconsistent checkpoints) and rejection counters;
- attestation: every challenge nonce issued (spent at most once) and each device's last
  attestation outcome with the signed result.

The registry stores what callers verified; it verifies nothing itself. sqlite3 errors stay
in this module: they become :class:`RegistryError`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import ConfigError, StateError
from edge_agent.protocol.attestation import Challenge
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.merkle import HASH_SIZE, Frontier
from edge_agent.protocol.shipping import DeviceStatus
from hub.core.ingest import Accepted, DeviceLog, ForkEvidence

__all__ = [
    "MAX_FORK_EVIDENCE",
    "UNREGISTERED",
    "AttestationRecord",
    "DeviceRecord",
    "FleetRow",
    "IssuedRevocation",
    "PublishedBundle",
    "Registry",
    "RegistryError",
]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0
MAX_FORK_EVIDENCE = 8
"""Fork evidence rows kept per device; later forks are only counted (a compromised device
key must not be able to fill the hub's disk)."""
UNREGISTERED = "*"
"""The device column of rejections for messages naming no registered device."""
PAGE_ROWS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, region TEXT NOT NULL, groups TEXT NOT NULL, profile TEXT NOT NULL,
    public_key BLOB NOT NULL, key_epoch INTEGER NOT NULL, added_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bundles (
    digest BLOB PRIMARY KEY, version INTEGER NOT NULL, region TEXT NOT NULL,
    data BLOB NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    max_offline INTEGER, target TEXT NOT NULL, pushed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    region TEXT NOT NULL, channel TEXT NOT NULL,
    digest BLOB NOT NULL REFERENCES bundles (digest), updated_at INTEGER NOT NULL,
    PRIMARY KEY (region, channel)
);
CREATE TABLE IF NOT EXISTS revocations (
    region TEXT NOT NULL, epoch INTEGER NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
    reason TEXT NOT NULL, data BLOB NOT NULL, issued_at INTEGER NOT NULL,
    PRIMARY KEY (region, epoch)
);
CREATE TABLE IF NOT EXISTS freshness (
    region TEXT NOT NULL, channel TEXT NOT NULL, data BLOB NOT NULL,
    hub_time INTEGER NOT NULL, expires_at INTEGER NOT NULL, kill_epoch INTEGER NOT NULL,
    PRIMARY KEY (region, channel)
);
CREATE TABLE IF NOT EXISTS status (
    device TEXT PRIMARY KEY, data BLOB NOT NULL, time INTEGER NOT NULL,
    online INTEGER NOT NULL, bundle_version INTEGER, expires_at INTEGER,
    gate TEXT NOT NULL, lineage_size INTEGER NOT NULL, acked INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS activity (device TEXT PRIMARY KEY, last_seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS lineage_state (
    device TEXT PRIMARY KEY, size INTEGER NOT NULL, frontier BLOB NOT NULL,
    last_hash BLOB NOT NULL, checkpoint TEXT, updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lineage_entries (
    device TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lineage_checkpoints (
    device TEXT NOT NULL, size INTEGER NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL,
    received_at INTEGER NOT NULL, PRIMARY KEY (device, size)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS forks (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, reason TEXT NOT NULL, held_note TEXT,
    new_note TEXT NOT NULL, batch BLOB NOT NULL, detected_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS challenges (
    device TEXT NOT NULL, nonce BLOB NOT NULL, issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, spent_at INTEGER, PRIMARY KEY (device, nonce)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attestation (
    device TEXT PRIMARY KEY, verdict TEXT NOT NULL, detail TEXT NOT NULL,
    measured BLOB NOT NULL, nonce BLOB NOT NULL, issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, bundle_digest BLOB, lineage_size INTEGER NOT NULL,
    measurements TEXT NOT NULL, result BLOB NOT NULL, verified_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tpm_keys (
    device TEXT PRIMARY KEY, public_key BLOB NOT NULL, registered_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    device TEXT NOT NULL, code TEXT NOT NULL, count INTEGER NOT NULL,
    last_at INTEGER NOT NULL, last_detail TEXT NOT NULL, PRIMARY KEY (device, code)
);
"""


class RegistryError(StateError):
    """The hub registry cannot be read or written (or is damaged)."""

    code = "registry_error"


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device: who it is and the public key its lineage and status verify with."""

    device_id: str
    region: str
    groups: tuple[str, ...]
    profile: str
    public_key: PublicKey
    key_epoch: int = 1
    added_at: int = 0


@dataclass(frozen=True, slots=True)
class PublishedBundle:
    """The bundle current on one channel of a region."""

    region: str
    channel: str
    version: int
    digest: bytes
    data: bytes
    expires_at: int
    max_offline: int | None
    pushed_at: int


@dataclass(frozen=True, slots=True)
class IssuedRevocation:
    region: str
    epoch: int
    kind: str
    value: str
    reason: str
    data: bytes
    issued_at: int


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One device as ``edge-hub fleet`` shows it."""

    device_id: str
    region: str
    groups: tuple[str, ...]
    online: bool | None
    bundle_version: int | None
    expires_at: int | None
    gate: str | None
    status_time: int | None
    last_seen: int | None
    device_lineage_size: int | None
    lineage_size: int
    forks: int
    rejections: dict[str, int]


@dataclass(frozen=True, slots=True)
class AttestationRecord:
    """A device's last attestation outcome at the hub, with the signed result sent to it.

    ``measurements`` is the evidence's name -> hex digest map as JSON (what ``edge-hub
    attest expect --from-device`` builds expectations from)."""

    device: str
    verdict: str
    detail: str
    measured: bytes
    nonce: bytes
    issued_at: int
    expires_at: int
    bundle_digest: bytes | None
    lineage_size: int
    measurements: str
    result: bytes
    verified_at: int


class _DeviceStoredLog:
    """:class:`hub.core.ingest.StoredLog` over one device's rows."""

    def __init__(self, registry: Registry, device: str) -> None:
        self._registry = registry
        self._device = device

    def entries(self, start: int, stop: int) -> Sequence[bytes]:
        return self._registry.entries(self._device, start, stop)

    def checkpoint_root(self, size: int) -> bytes | None:
        return self._registry.checkpoint_root(self._device, size)


class Registry:
    """An open registry database. Use as a context manager, or call :meth:`close`."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._grouped = False

    @classmethod
    def open(cls, path: Path) -> Registry:
        """Open (creating if needed) the registry at ``path``.

        Raises:
            RegistryError: it cannot be opened, or it is another program's database.
        """
        try:
            db = sqlite3.connect(
                path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                db.close()
                raise RegistryError(
                    f"{path} is a registry of schema {version}; this hub reads {SCHEMA_VERSION}"
                )
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open the hub registry {path}: {exc}") from exc
        return cls(db, path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def write_group(self) -> Iterator[None]:
        """Make every write until the block ends part of one transaction: a burst of lineage
        batches and statuses costs one commit and one fsync instead of one each. Each write
        stays atomic on its own (a savepoint). Nothing written in the block is durable
        before it ends, so whatever depends on durability (an ack) waits for the end. An
        exception out of the block rolls all of it back. Nested groups join the outer one.

        Raises:
            RegistryError: the transaction could not begin or commit; nothing was stored.
        """
        if self._grouped:
            yield
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot begin a write in {self.path}: {exc}") from exc
        self._grouped = True
        try:
            yield
        except BaseException:
            self._grouped = False
            self._rollback()
            raise
        self._grouped = False
        if not self._db.in_transaction:
            raise RegistryError(f"cannot commit to {self.path}: a failure rolled the group back")
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise RegistryError(f"cannot commit to {self.path}: {exc}") from exc

    def _rollback(self) -> None:
        with suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        if self._grouped and not self._db.in_transaction:
            # SQLite rolls a whole transaction back on a full disk or an I/O error.
            raise RegistryError(
                f"cannot {what} in {self.path}: an earlier failure rolled back this group"
            )
        begin, commit, rollback = (
            ("SAVEPOINT write", "RELEASE write", ("ROLLBACK TO write", "RELEASE write"))
            if self._grouped
            else ("BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",))
        )
        try:
            self._db.execute(begin)
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    for statement in rollback:
                        self._db.execute(statement)
                raise
            self._db.execute(commit)
        except sqlite3.Error as exc:
            if not self._grouped:
                self._rollback()
            raise RegistryError(f"cannot {what} in {self.path}: {exc}") from exc

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read the hub registry {self.path}: {exc}") from exc

    # Devices.

    def add_device(self, record: DeviceRecord) -> None:
        """Register a device.

        A key registered to another device is refused: statuses and lineage signed by one
        device would verify as the other's (a phantom device reported online).

        Raises:
            ConfigError: a device with that id, or with that public key, is registered already.
            RegistryError: the write failed.
        """
        with self._write("register the device") as db:
            if db.execute("SELECT 1 FROM devices WHERE id = ?", (record.device_id,)).fetchone():
                raise ConfigError(f"device {record.device_id!r} is registered already")
            holder = db.execute(
                "SELECT id FROM devices WHERE public_key = ?", (record.public_key.raw,)
            ).fetchone()
            if holder:
                raise ConfigError(
                    f"this public key is registered already to device {holder[0]!r}; every "
                    f"device needs its own key (read {record.device_id}'s with "
                    "'edge-agent pubkey' on that device)"
                )
            db.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.device_id,
                    record.region,
                    json.dumps(list(record.groups)),
                    record.profile,
                    record.public_key.raw,
                    record.key_epoch,
                    record.added_at,
                ),
            )

    def device(self, device_id: str) -> DeviceRecord | None:
        rows = self._read("SELECT * FROM devices WHERE id = ?", (device_id,))
        return _device(rows[0]) if rows else None

    def devices(self) -> list[DeviceRecord]:
        return [_device(row) for row in self._read("SELECT * FROM devices ORDER BY id")]

    def regions(self) -> list[str]:
        """Every region a device, bundle or revocation of this hub is in."""
        rows = self._read(
            "SELECT region FROM devices UNION SELECT region FROM channels "
            "UNION SELECT region FROM revocations ORDER BY 1"
        )
        return [_text(r[0]) for r in rows]

    # Bundles.

    def record_bundle(
        self,
        *,
        bundle: PublishedBundle,
        issued_at: int,
        target: Mapping[str, object],
        channels: Sequence[str],
    ) -> None:
        """Record a verified bundle and make it current on ``channels`` of its region.

        Raises:
            RegistryError: the write failed; nothing changed.
        """
        with self._write("record the bundle") as db:
            db.execute(
                "INSERT OR IGNORE INTO bundles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    bundle.digest,
                    bundle.version,
                    bundle.region,
                    bundle.data,
                    issued_at,
                    bundle.expires_at,
                    bundle.max_offline,
                    json.dumps(target, sort_keys=True),
                    bundle.pushed_at,
                ),
            )
            db.executemany(
                "INSERT INTO channels VALUES (?, ?, ?, ?) ON CONFLICT (region, channel) "
                "DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                [(bundle.region, c, bundle.digest, bundle.pushed_at) for c in channels],
            )

    def bundle_versions(self, region: str) -> list[int]:
        """Every bundle version ever pushed to ``region``, lowest first."""
        rows = self._read(
            "SELECT DISTINCT version FROM bundles WHERE region = ? ORDER BY 1", (region,)
        )
        return [_int(r[0]) for r in rows]

    def current_bundles(self, region: str | None = None) -> list[PublishedBundle]:
        """The bundle current on each channel (of ``region``, or of every region)."""
        sql = (
            "SELECT c.region, c.channel, b.version, b.digest, b.data, b.expires_at, "
            "b.max_offline, c.updated_at FROM channels c JOIN bundles b ON b.digest = c.digest"
        )
        params: tuple[object, ...] = ()
        if region is not None:
            sql += " WHERE c.region = ?"
            params = (region,)
        return [_bundle(row) for row in self._read(sql + " ORDER BY 1, 2", params)]

    # Revocations.

    def kill_epoch(self, region: str) -> int:
        """The highest revocation epoch issued for ``region`` (0: none)."""
        rows = self._read("SELECT max(epoch) FROM revocations WHERE region = ?", (region,))
        return _int(rows[0][0] or 0)

    def record_revocation(self, revocation: IssuedRevocation) -> None:
        """Record a signed revocation.

        Raises:
            ConfigError: its epoch was taken meanwhile by another ``revoke`` (run it again).
            RegistryError: the write failed.
        """
        with self._write("record the revocation") as db:
            if db.execute(
                "SELECT 1 FROM revocations WHERE region = ? AND epoch = ?",
                (revocation.region, revocation.epoch),
            ).fetchone():
                raise ConfigError(
                    f"revocation epoch {revocation.epoch} of region {revocation.region} was "
                    "issued meanwhile by another command; run revoke again"
                )
            db.execute(
                "INSERT INTO revocations VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    revocation.region,
                    revocation.epoch,
                    revocation.kind,
                    revocation.value,
                    revocation.reason,
                    revocation.data,
                    revocation.issued_at,
                ),
            )

    def current_revocations(self) -> list[IssuedRevocation]:
        """The newest revocation for each (region, kind, value): what is retained on its topic."""
        rows = self._read(
            "SELECT r.* FROM revocations r JOIN (SELECT region, kind, value, max(epoch) AS e "
            "FROM revocations GROUP BY region, kind, value) m ON m.region = r.region AND "
            "m.e = r.epoch ORDER BY r.region, r.epoch"
        )
        return [
            IssuedRevocation(_text(g), _int(e), _text(k), _text(v), _text(r), _bytes(d), _int(t))
            for g, e, k, v, r, d, t in rows
        ]

    # Freshness.

    def record_freshness(self, tokens: Sequence[tuple[str, str, bytes, int, int, int]]) -> None:
        """Keep the last token issued per (region, channel): ``(region, channel, data,
        hub_time, expires_at, kill_epoch)`` each.

        Raises:
            RegistryError: the write failed.
        """
        with self._write("record freshness tokens") as db:
            db.executemany(
                "INSERT OR REPLACE INTO freshness VALUES (?, ?, ?, ?, ?, ?)", list(tokens)
            )

    def freshness(self, region: str, channel: str) -> tuple[bytes, int, int, int] | None:
        """The last token issued on (region, channel): data, hub time, expiry, kill epoch."""
        rows = self._read(
            "SELECT data, hub_time, expires_at, kill_epoch FROM freshness "
            "WHERE region = ? AND channel = ?",
            (region, channel),
        )
        if not rows:
            return None
        data, hub_time, expires_at, kill_epoch = rows[0]
        return _bytes(data), _int(hub_time), _int(expires_at), _int(kill_epoch)

    # Status and activity.

    def record_status(self, status: DeviceStatus, raw: bytes, received_at: int) -> bool:
        """Keep a verified status unless the one held is newer; return whether it was kept.
        Only a status with a later signed time records that the device was heard from at
        ``received_at``.

        An older status is a replay or a stale last will (signed at connect, so older than
        every heartbeat since): it changes nothing. One of the same second with other
        contents replaces the one held (a trust event, or a clean stop, just after a
        heartbeat) but, as a replay could do the same, does not count as being heard from.

        Raises:
            RegistryError: the write failed.
        """
        with self._write("record the device status") as db:
            held = db.execute(
                "SELECT time, data FROM status WHERE device = ?", (status.device,)
            ).fetchone()
            if held is not None and (
                status.time < held[0] or (status.time == held[0] and raw == held[1])
            ):
                return False
            db.execute(
                "INSERT OR REPLACE INTO status VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    status.device,
                    raw,
                    status.time,
                    int(status.online),
                    status.bundle_version,
                    status.expires_at,
                    status.gate,
                    status.lineage_size,
                    status.acked,
                    received_at,
                ),
            )
            if held is None or status.time > held[0]:
                _touch(db, status.device, received_at)
        return True

    # Lineage.

    def lineage_state(self, device: str) -> DeviceLog:
        """The hub's state of ``device``'s log (empty when it never shipped).

        Raises:
            RegistryError: unreadable or damaged.
        """
        rows = self._read(
            "SELECT size, frontier, last_hash, checkpoint FROM lineage_state WHERE device = ?",
            (device,),
        )
        if not rows:
            return DeviceLog()
        size, frontier, last_hash, checkpoint = rows[0]
        blob, count = _bytes(frontier), _int(size)
        hashes = tuple(blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE))
        try:
            return DeviceLog(
                count,
                Frontier(count, hashes),
                _bytes(last_hash),
                None if checkpoint is None else _text(checkpoint),
            )
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"the lineage state of {device} in {self.path} is damaged") from exc

    def stored_log(self, device: str) -> _DeviceStoredLog:
        """Read access to ``device``'s stored entries and checkpoints, for ingest."""
        return _DeviceStoredLog(self, device)

    def entries(self, device: str, start: int, stop: int) -> list[bytes]:
        rows = self._read(
            "SELECT CAST(data AS BLOB) FROM lineage_entries "
            "WHERE device = ? AND seq >= ? AND seq < ? ORDER BY seq",
            (device, start, stop),
        )
        return [_bytes(r[0]) for r in rows]

    def iter_entries(self, device: str, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """Stream ``(seq, data)`` of ``device`` from ``start``, a page at a time."""
        position = start
        while True:
            rows = self._read(
                "SELECT seq, CAST(data AS BLOB) FROM lineage_entries WHERE device = ? AND seq >= ? "
                "ORDER BY seq LIMIT ?",
                (device, position, PAGE_ROWS),
            )
            for seq, data in rows:
                yield _int(seq), _bytes(data)
            if len(rows) < PAGE_ROWS:
                return
            position = _int(rows[-1][0]) + 1

    def checkpoint_root(self, device: str, size: int) -> bytes | None:
        rows = self._read(
            "SELECT root FROM lineage_checkpoints WHERE device = ? AND size = ?", (device, size)
        )
        return _bytes(rows[0][0]) if rows else None

    def store_batch(self, accepted: Accepted, *, expected_size: int, received_at: int) -> bool:
        """Store a verified batch, its new log state and checkpoint, in one transaction.

        Returns ``False`` (storing nothing) when the stored size is no longer
        ``expected_size``: another hub process stored a batch of this device meanwhile, so
        the batch must be verified again against the new state.

        Raises:
            RegistryError: the write failed; nothing was stored.
        """
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
        return True

    def record_fork(self, evidence: ForkEvidence, detected_at: int) -> None:
        """Keep fork evidence (up to :data:`MAX_FORK_EVIDENCE` per device).

        Raises:
            RegistryError: the write failed.
        """
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
            ForkEvidence(_text(d), _text(r), None if h is None else _text(h), _text(n), _bytes(b))
            for d, r, h, n, b in rows
        ]

    # Attestation.

    def record_challenge(self, challenge: Challenge) -> None:
        """Record an issued challenge nonce (spendable once, until it expires).

        Raises:
            RegistryError: the write failed.
        """
        with self._write("record the attestation challenge") as db:
            db.execute(
                "INSERT INTO challenges VALUES (?, ?, ?, ?, NULL)",
                (challenge.device, challenge.nonce, challenge.issued_at, challenge.expires_at),
            )

    def spend_challenge(self, device: str, nonce: bytes, now: int) -> str | None:
        """Spend ``nonce`` for ``device``: ``None`` when it was issued to that device, is
        unexpired and was not spent; otherwise why not. One conditional update, so two hub
        processes can never both spend one nonce.

        Raises:
            RegistryError: the write failed.
        """
        with self._write("spend the attestation nonce") as db:
            spent = db.execute(
                "UPDATE challenges SET spent_at = ? WHERE device = ? AND nonce = ? "
                "AND spent_at IS NULL AND expires_at > ?",
                (now, device, nonce, now),
            ).rowcount
            if spent:
                return None
            row = db.execute(
                "SELECT expires_at, spent_at FROM challenges WHERE device = ? AND nonce = ?",
                (device, nonce),
            ).fetchone()
        if row is None:
            return "its nonce was never issued to this device (replayed or misaddressed)"
        if row[1] is not None:
            return "its nonce was already used (replayed evidence)"
        return f"its nonce expired {now - int(row[0])} s ago"

    def prune_challenges(self, before: int) -> None:
        """Forget challenges that expired before ``before`` (they can no longer be spent).

        Raises:
            RegistryError: the write failed.
        """
        with self._write("prune attestation challenges") as db:
            db.execute("DELETE FROM challenges WHERE expires_at < ?", (before,))

    def bundle_data(self, digest: bytes) -> bytes | None:
        """The bytes of the recorded bundle with ``digest``, if this hub recorded it."""
        rows = self._read("SELECT data FROM bundles WHERE digest = ?", (digest,))
        return _bytes(rows[0][0]) if rows else None

    def record_attestation(self, record: AttestationRecord) -> None:
        """Make ``record`` the device's last attestation outcome.

        Raises:
            RegistryError: the write failed.
        """
        with self._write("record the attestation outcome") as db:
            db.execute(
                "INSERT OR REPLACE INTO attestation VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.device,
                    record.verdict,
                    record.detail,
                    record.measured,
                    record.nonce,
                    record.issued_at,
                    record.expires_at,
                    record.bundle_digest,
                    record.lineage_size,
                    record.measurements,
                    record.result,
                    record.verified_at,
                ),
            )
            _touch(db, record.device, record.verified_at)

    def attestation(self, device: str) -> AttestationRecord | None:
        rows = self._read("SELECT * FROM attestation WHERE device = ?", (device,))
        return _attestation(rows[0]) if rows else None

    def attestations(self) -> dict[str, AttestationRecord]:
        """Every device's last attestation outcome, by device id."""
        return {
            record.device: record
            for record in map(_attestation, self._read("SELECT * FROM attestation"))
        }

    # TPM attestation keys (an added table: older registries gain it when opened).

    def set_tpm_ak(self, device: str, public_key: bytes | None, at: int) -> None:
        """Register ``device``'s TPM attestation key (DER ``SubjectPublicKeyInfo``),
        replacing any; ``None`` removes it.

        Raises:
            RegistryError: the write failed.
        """
        with self._write("record the TPM attestation key") as db:
            if public_key is None:
                db.execute("DELETE FROM tpm_keys WHERE device = ?", (device,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO tpm_keys VALUES (?, ?, ?)", (device, public_key, at)
                )

    def tpm_ak(self, device: str) -> bytes | None:
        """The DER public key of ``device``'s registered TPM attestation key, if any."""
        rows = self._read("SELECT public_key FROM tpm_keys WHERE device = ?", (device,))
        return _bytes(rows[0][0]) if rows else None

    # Rejections.

    def add_rejections(self, counts: Mapping[tuple[str, str], tuple[int, str]], at: int) -> None:
        """Add to the rejection counters: ``{(device, code): (count, last detail)}``.

        Raises:
            RegistryError: the write failed.
        """
        if not counts:
            return
        with self._write("record rejections") as db:
            db.executemany(
                "INSERT INTO rejections VALUES (?, ?, ?, ?, ?) ON CONFLICT (device, code) "
                "DO UPDATE SET count = count + excluded.count, last_at = excluded.last_at, "
                "last_detail = excluded.last_detail",
                [(d, c, n, at, detail[:500]) for (d, c), (n, detail) in counts.items()],
            )

    def rejections(self, device: str | None = None) -> list[tuple[str, str, int, int, str]]:
        """``(device, code, count, last_at, last_detail)`` rows, for one device or all."""
        sql, params = "SELECT * FROM rejections", tuple[str, ...]()
        if device is not None:
            sql, params = sql + " WHERE device = ?", (device,)
        return [
            (_text(d), _text(c), _int(n), _int(t), _text(x))
            for d, c, n, t, x in self._read(sql + " ORDER BY device, code", params)
        ]

    # Fleet.

    def fleet(self) -> list[FleetRow]:
        """One row per registered device, for ``edge-hub fleet``."""
        rows = self._read(
            "SELECT d.id, d.region, d.groups, s.online, s.bundle_version, s.expires_at, "
            "s.gate, s.time, a.last_seen, s.lineage_size, coalesce(l.size, 0), "
            "(SELECT count(*) FROM forks f WHERE f.device = d.id) "
            "FROM devices d LEFT JOIN status s ON s.device = d.id "
            "LEFT JOIN activity a ON a.device = d.id "
            "LEFT JOIN lineage_state l ON l.device = d.id ORDER BY d.id"
        )
        rejected: dict[str, dict[str, int]] = {}
        for device, code, count, _, _ in self.rejections():
            rejected.setdefault(device, {})[code] = count
        result = []
        for row in rows:
            device_id, region, groups, online, version, expires, gate, time, seen = row[:9]
            device_size, size, forks = row[9:]
            result.append(
                FleetRow(
                    device_id=_text(device_id),
                    region=_text(region),
                    groups=_groups(groups),
                    online=None if online is None else bool(_int(online)),
                    bundle_version=_opt_int(version),
                    expires_at=_opt_int(expires),
                    gate=None if gate is None else _text(gate),
                    status_time=_opt_int(time),
                    last_seen=_opt_int(seen),
                    device_lineage_size=_opt_int(device_size),
                    lineage_size=_int(size),
                    forks=_int(forks),
                    rejections=rejected.get(_text(device_id), {}),
                )
            )
        return result


def _touch(db: sqlite3.Connection, device: str, at: int) -> None:
    db.execute(
        "INSERT INTO activity VALUES (?, ?) ON CONFLICT (device) "
        "DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
        (device, at),
    )


def _int(value: object) -> int:
    if not isinstance(value, int):
        raise RegistryError(f"the hub registry holds {type(value).__name__} for an integer")
    return value


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise RegistryError(f"the hub registry holds {type(value).__name__} for bytes")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise RegistryError(f"the hub registry holds {type(value).__name__} for text")
    return value


def _groups(value: object) -> tuple[str, ...]:
    try:
        groups = json.loads(_text(value))
    except ValueError as exc:
        raise RegistryError("the hub registry holds a damaged group list") from exc
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise RegistryError("the hub registry holds a damaged group list")
    return tuple(groups)


def _device(row: tuple[object, ...]) -> DeviceRecord:
    device_id, region, groups, profile, key, epoch, added_at = row
    return DeviceRecord(
        device_id=_text(device_id),
        region=_text(region),
        groups=_groups(groups),
        profile=_text(profile),
        public_key=PublicKey(_bytes(key)),
        key_epoch=_int(epoch),
        added_at=_int(added_at),
    )


def _attestation(row: tuple[object, ...]) -> AttestationRecord:
    device, verdict, detail, measured, nonce, issued, expires = row[:7]
    bundle_digest, lineage_size, measurements, result, verified_at = row[7:]
    return AttestationRecord(
        device=_text(device),
        verdict=_text(verdict),
        detail=_text(detail),
        measured=_bytes(measured),
        nonce=_bytes(nonce),
        issued_at=_int(issued),
        expires_at=_int(expires),
        bundle_digest=None if bundle_digest is None else _bytes(bundle_digest),
        lineage_size=_int(lineage_size),
        measurements=_text(measurements),
        result=_bytes(result),
        verified_at=_int(verified_at),
    )


def _bundle(row: tuple[object, ...]) -> PublishedBundle:
    region, channel, version, digest, data, expires_at, max_offline, updated_at = row
    return PublishedBundle(
        region=_text(region),
        channel=_text(channel),
        version=_int(version),
        digest=_bytes(digest),
        data=_bytes(data),
        expires_at=_int(expires_at),
        max_offline=_opt_int(max_offline),
        pushed_at=_int(updated_at),
    )

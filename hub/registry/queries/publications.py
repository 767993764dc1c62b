"""Publications in the registry, either backend: bundles and the bundle current on each
channel, revocations with their epochs, the last freshness token per channel and the device
directory per region with its earlier versions (tables ``bundles``, ``channels``,
``revocations``, ``freshness``, ``directories``, ``directory_versions``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from edge_agent.errors import ConfigError
from hub.registry.queries.base import RegistryQueries
from hub.registry.records import (
    IssuedDirectory,
    IssuedFreshness,
    IssuedRevocation,
    PublishedBundle,
)
from hub.registry.rows import as_bytes, as_int, as_text, published_bundle

__all__ = ["PublicationTables"]


class PublicationTables(RegistryQueries):
    """The publication operations of :class:`hub.registry.interface.Registry`."""

    def record_bundle(
        self,
        *,
        bundle: PublishedBundle,
        issued_at: int,
        target: Mapping[str, object],
        channels: Sequence[str],
    ) -> None:
        with self._write("record the bundle") as db:
            db.execute(
                self._sql(
                    "INSERT INTO bundles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (digest) DO NOTHING"
                ),
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
                self._sql(
                    "INSERT INTO channels VALUES (?, ?, ?, ?) ON CONFLICT (region, channel) "
                    "DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at"
                ),
                [(bundle.region, c, bundle.digest, bundle.pushed_at) for c in channels],
            )

    def bundle_versions(self, region: str) -> list[int]:
        rows = self._rows(
            "SELECT DISTINCT version FROM bundles WHERE region = ? ORDER BY 1", (region,)
        )
        return [as_int(r[0]) for r in rows]

    def current_bundles(self, region: str | None = None) -> list[PublishedBundle]:
        sql = (
            "SELECT c.region, c.channel, b.version, b.digest, b.data, b.expires_at, "
            "b.max_offline, c.updated_at FROM channels c JOIN bundles b ON b.digest = c.digest"
        )
        params: tuple[object, ...] = ()
        if region is not None:
            sql += " WHERE c.region = ?"
            params = (region,)
        return [published_bundle(row) for row in self._rows(sql + " ORDER BY 1, 2", params)]

    def bundle_data(self, digest: bytes) -> bytes | None:
        rows = self._rows("SELECT data FROM bundles WHERE digest = ?", (digest,))
        return as_bytes(rows[0][0]) if rows else None

    def bundles_of_version(self, region: str, version: int) -> list[bytes]:
        rows = self._rows(
            "SELECT data FROM bundles WHERE region = ? AND version = ? ORDER BY digest",
            (region, version),
        )
        return [as_bytes(r[0]) for r in rows]

    def kill_epoch(self, region: str) -> int:
        rows = self._rows("SELECT max(epoch) FROM revocations WHERE region = ?", (region,))
        return as_int(rows[0][0] or 0)

    def record_revocation(self, revocation: IssuedRevocation) -> None:
        with self._write("record the revocation") as db:
            # The primary key decides, against what is committed: a concurrent insert of
            # the same epoch waits for the first to commit (PostgreSQL's row lock, SQLite's
            # write lock), then inserts nothing.
            inserted = db.execute(
                self._sql(
                    "INSERT INTO revocations VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (region, epoch) DO NOTHING"
                ),
                (
                    revocation.region,
                    revocation.epoch,
                    revocation.kind,
                    revocation.value,
                    revocation.reason,
                    revocation.data,
                    revocation.issued_at,
                ),
            ).rowcount
            if inserted != 1:
                raise ConfigError(
                    f"revocation epoch {revocation.epoch} of region {revocation.region} was "
                    "issued meanwhile by another command; run revoke again"
                )

    def current_revocations(self) -> list[IssuedRevocation]:
        rows = self._rows(
            "SELECT r.* FROM revocations r JOIN (SELECT region, kind, value, max(epoch) AS e "
            "FROM revocations GROUP BY region, kind, value) m ON m.region = r.region AND "
            "m.e = r.epoch ORDER BY r.region, r.epoch"
        )
        return [
            IssuedRevocation(
                as_text(g), as_int(e), as_text(k), as_text(v), as_text(r), as_bytes(d), as_int(t)
            )
            for g, e, k, v, r, d, t in rows
        ]

    def record_freshness(self, tokens: Sequence[IssuedFreshness]) -> None:
        with self._write("record freshness tokens") as db:
            db.executemany(
                self._sql(
                    "INSERT INTO freshness VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (region, channel) DO UPDATE SET data = excluded.data, "
                    "hub_time = excluded.hub_time, expires_at = excluded.expires_at, "
                    "kill_epoch = excluded.kill_epoch"
                ),
                [
                    (t.region, t.channel, t.data, t.hub_time, t.expires_at, t.kill_epoch)
                    for t in tokens
                ],
            )

    def freshness(self, region: str, channel: str) -> IssuedFreshness | None:
        rows = self._rows(
            "SELECT data, hub_time, expires_at, kill_epoch FROM freshness "
            "WHERE region = ? AND channel = ?",
            (region, channel),
        )
        if not rows:
            return None
        data, hub_time, expires_at, kill_epoch = rows[0]
        return IssuedFreshness(
            region=region,
            channel=channel,
            data=as_bytes(data),
            hub_time=as_int(hub_time),
            expires_at=as_int(expires_at),
            kill_epoch=as_int(kill_epoch),
        )

    def record_directory(self, directory: IssuedDirectory) -> bool:
        with self._write("record the device directory") as db:
            # ON CONFLICT compares with the held row as committed (PostgreSQL locks it).
            recorded = db.execute(
                self._sql(
                    "INSERT INTO directories VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (region) "
                    "DO UPDATE SET version = excluded.version, content = excluded.content, "
                    "data = excluded.data, issued_at = excluded.issued_at, "
                    "expires_at = excluded.expires_at "
                    "WHERE excluded.version > directories.version"
                ),
                (
                    directory.region,
                    directory.version,
                    directory.content,
                    directory.data,
                    directory.issued_at,
                    directory.expires_at,
                ),
            ).rowcount
            if recorded != 1:
                return False
            db.execute(
                self._sql("INSERT INTO directory_versions VALUES (?, ?, ?) ON CONFLICT DO NOTHING"),
                (directory.region, directory.version, directory.data),
            )
            return True

    def directory_version(self, region: str, version: int) -> bytes | None:
        rows = self._rows(
            "SELECT data FROM directory_versions WHERE region = ? AND version = ? "
            "UNION ALL SELECT data FROM directories WHERE region = ? AND version = ?",
            (region, version, region, version),
        )
        return as_bytes(rows[0][0]) if rows else None

    def directory(self, region: str) -> IssuedDirectory | None:
        rows = self._rows(
            "SELECT version, content, data, issued_at, expires_at FROM directories "
            "WHERE region = ?",
            (region,),
        )
        if not rows:
            return None
        version, content, data, issued_at, expires_at = rows[0]
        return IssuedDirectory(
            region=region,
            version=as_int(version),
            content=as_bytes(content),
            data=as_bytes(data),
            issued_at=as_int(issued_at),
            expires_at=as_int(expires_at),
        )

    def clear_channels(self, region: str, channels: Sequence[str]) -> None:
        with self._write("clear channels") as db:
            db.executemany(
                self._sql("DELETE FROM channels WHERE region = ? AND channel = ?"),
                [(region, c) for c in channels],
            )
            db.executemany(
                self._sql("DELETE FROM freshness WHERE region = ? AND channel = ?"),
                [(region, c) for c in channels],
            )

"""The SQLite registry's schema: nineteen tables, version :data:`SCHEMA_VERSION` (SQLite's
``user_version``). Tables are created when missing, so an older registry gains a table
added since (``tpm_keys``, ``directory_versions``, ``lineage_nodes``: backfilled when opened, see
:mod:`.tree_nodes`) when it is opened; a column change needs a new version."""

from __future__ import annotations

__all__ = ["SCHEMA", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS lineage_nodes (
    device TEXT NOT NULL, level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (device, level, idx)
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
CREATE TABLE IF NOT EXISTS directories (
    region TEXT PRIMARY KEY, version INTEGER NOT NULL, content BLOB NOT NULL,
    data BLOB NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS directory_versions (
    region TEXT NOT NULL, version INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (region, version)
);
"""

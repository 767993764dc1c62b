"""Attestation in the SQLite registry: every challenge nonce issued (spent at most once),
each device's last attestation outcome with the signed result, and registered TPM
attestation keys (tables ``challenges``, ``attestation``, ``tpm_keys``)."""

from __future__ import annotations

from edge_agent.protocol.attestation import Challenge
from hub.registry.records import AttestationRecord
from hub.registry.rows import attestation_record
from hub.registry.sqlite.devices import touch_activity
from hub.registry.sqlite.transactions import SqliteTransactions, as_bytes

__all__ = ["AttestationTables"]


class AttestationTables(SqliteTransactions):
    """The attestation operations of :class:`hub.registry.interface.Registry`."""

    def record_challenge(self, challenge: Challenge) -> None:
        with self._write("record the attestation challenge") as db:
            db.execute(
                "INSERT INTO challenges VALUES (?, ?, ?, ?, NULL)",
                (challenge.device, challenge.nonce, challenge.issued_at, challenge.expires_at),
            )

    def spend_challenge(self, device: str, nonce: bytes, now: int) -> str | None:
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
        with self._write("prune attestation challenges") as db:
            db.execute("DELETE FROM challenges WHERE expires_at < ?", (before,))

    def record_attestation(self, record: AttestationRecord) -> None:
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
            touch_activity(db, record.device, record.verified_at)

    def attestation(self, device: str) -> AttestationRecord | None:
        rows = self._read("SELECT * FROM attestation WHERE device = ?", (device,))
        return attestation_record(rows[0]) if rows else None

    def attestations(self) -> dict[str, AttestationRecord]:
        return {
            record.device: record
            for record in map(attestation_record, self._read("SELECT * FROM attestation"))
        }

    def set_tpm_ak(self, device: str, public_key: bytes | None, at: int) -> None:
        with self._write("record the TPM attestation key") as db:
            if public_key is None:
                db.execute("DELETE FROM tpm_keys WHERE device = ?", (device,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO tpm_keys VALUES (?, ?, ?)", (device, public_key, at)
                )

    def tpm_ak(self, device: str) -> bytes | None:
        rows = self._read("SELECT public_key FROM tpm_keys WHERE device = ?", (device,))
        return as_bytes(rows[0][0]) if rows else None

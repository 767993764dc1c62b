"""Staged rollouts in the SQLite registry (table ``rollouts``; the per-stage tallies of
shipped entries a rollout is judged on: :mod:`hub.registry.queries.device_logs`).

A rollout is one row: its id, region and state as columns (one active rollout per region
is checked against them), its bytes (candidate, rollback) as blobs, and the rest of the
record as canonical JSON (sorted keys), which is also what a compare-and-set update
compares: a write made from a stale read changes nothing. The table is created when
missing, so a registry from before rollouts gains it when opened.
"""

from __future__ import annotations

from edge_agent.errors import ConfigError
from hub.registry.rollout_records import RolloutRecord, RolloutState
from hub.registry.rows import rollout_json, rollout_record
from hub.registry.sqlite.transactions import (
    SqliteTransactions,
)

__all__ = ["RolloutTables"]

_ACTIVE = tuple(str(s) for s in RolloutState if s.active)


class RolloutTables(SqliteTransactions):
    """The rollout operations of :class:`hub.registry.interface.Registry`."""

    def create_rollout(self, record: RolloutRecord) -> None:
        with self._write("record the rollout") as db:
            if db.execute("SELECT 1 FROM rollouts WHERE id = ?", (record.rollout_id,)).fetchone():
                raise ConfigError(
                    f"rollout {record.rollout_id} exists already: a candidate version is "
                    "rolled out once (build the next version)"
                )
            busy = db.execute(
                f"SELECT id FROM rollouts WHERE region = ? AND state IN "
                f"({', '.join('?' * len(_ACTIVE))})",
                (record.region, *_ACTIVE),
            ).fetchone()
            if busy:
                raise ConfigError(
                    f"rollout {busy[0]} is active in {record.region}: finish, abort or let it "
                    "halt first (edge-hub rollout status)"
                )
            db.execute(
                "INSERT INTO rollouts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.rollout_id,
                    record.region,
                    str(record.state),
                    record.created_at,
                    record.candidate,
                    record.rollback,
                    rollout_json(record),
                ),
            )

    def rollout(self, rollout_id: str) -> RolloutRecord | None:
        rows = self._read(
            "SELECT id, region, state, created_at, candidate, rollback, record FROM rollouts "
            "WHERE id = ?",
            (rollout_id,),
        )
        return rollout_record(rows[0]) if rows else None

    def rollouts(self, *, active: bool = False) -> list[RolloutRecord]:
        sql = "SELECT id, region, state, created_at, candidate, rollback, record FROM rollouts"
        params: tuple[str, ...] = ()
        if active:
            sql += f" WHERE state IN ({', '.join('?' * len(_ACTIVE))})"
            params = _ACTIVE
        return [rollout_record(row) for row in self._read(sql + " ORDER BY created_at, id", params)]

    def update_rollout(self, record: RolloutRecord, *, expected: RolloutRecord) -> bool:
        if record.rollout_id != expected.rollout_id:
            raise ValueError("update_rollout: record and expected are different rollouts")
        with self._write("update the rollout") as db:
            cursor = db.execute(
                "UPDATE rollouts SET state = ?, record = ? WHERE id = ? AND record = ?",
                (
                    str(record.state),
                    rollout_json(record),
                    record.rollout_id,
                    rollout_json(expected),
                ),
            )
            return cursor.rowcount == 1

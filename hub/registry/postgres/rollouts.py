"""Staged rollouts in the PostgreSQL registry (table ``rollouts``): one row per rollout, the
rest of the record as canonical JSON (:func:`hub.registry.rows.rollout_json`), which is
also what a compare-and-set update compares."""

from __future__ import annotations

from edge_agent.errors import ConfigError
from hub.registry.postgres.transactions import PostgresTransactions
from hub.registry.rollout_records import RolloutRecord, RolloutState
from hub.registry.rows import rollout_json, rollout_record

__all__ = ["RolloutTables"]

_ACTIVE = [str(s) for s in RolloutState if s.active]
_COLUMNS = "id, region, state, created_at, candidate, rollback, record"


class RolloutTables(PostgresTransactions):
    """The rollout operations of :class:`hub.registry.interface.Registry`."""

    def create_rollout(self, record: RolloutRecord) -> None:
        with self._write("record the rollout") as db:
            # One rollout per id, one active per region: the checks and the insert run alone.
            self._lock(db, "rollouts")
            if db.execute("SELECT 1 FROM rollouts WHERE id = %s", (record.rollout_id,)).fetchone():
                raise ConfigError(
                    f"rollout {record.rollout_id} exists already: a candidate version is "
                    "rolled out once (build the next version)"
                )
            busy = db.execute(
                "SELECT id FROM rollouts WHERE region = %s AND state = ANY(%s)",
                (record.region, _ACTIVE),
            ).fetchone()
            if busy:
                raise ConfigError(
                    f"rollout {busy[0]} is active in {record.region}: finish, abort or let it "
                    "halt first (edge-hub rollout status)"
                )
            db.execute(
                "INSERT INTO rollouts VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
        rows = self._read(f"SELECT {_COLUMNS} FROM rollouts WHERE id = %s", (rollout_id,))
        return rollout_record(rows[0]) if rows else None

    def rollouts(self, *, active: bool = False) -> list[RolloutRecord]:
        where, params = (" WHERE state = ANY(%s)", (_ACTIVE,)) if active else ("", ())
        rows = self._read(f"SELECT {_COLUMNS} FROM rollouts{where} ORDER BY created_at, id", params)
        return [rollout_record(row) for row in rows]

    def update_rollout(self, record: RolloutRecord, *, expected: RolloutRecord) -> bool:
        if record.rollout_id != expected.rollout_id:
            raise ValueError("update_rollout: record and expected are different rollouts")
        with self._write("update the rollout") as db:
            # The row lock makes a concurrent update wait, then compare with its result.
            updated = db.execute(
                "UPDATE rollouts SET state = %s, record = %s WHERE id = %s AND record = %s",
                (
                    str(record.state),
                    rollout_json(record),
                    record.rollout_id,
                    rollout_json(expected),
                ),
            ).rowcount
            return updated == 1

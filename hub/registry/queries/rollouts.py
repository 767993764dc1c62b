"""Staged rollouts in the registry, either backend (table ``rollouts``).

A rollout is one row: its id, region and state as columns (one active rollout per region
is checked against them), its bytes (candidate, rollback) as blobs, and the rest of the
record as canonical JSON (:func:`hub.registry.rows.rollout_json`, sorted keys), which is
also what a compare-and-set update compares: a write made from a stale read changes
nothing.
"""

from __future__ import annotations

from edge_agent.errors import ConfigError
from hub.registry.queries.base import RegistryQueries
from hub.registry.rollout_records import RolloutRecord, RolloutState
from hub.registry.rows import rollout_json, rollout_record

__all__ = ["RolloutTables"]

_ACTIVE = tuple(str(s) for s in RolloutState if s.active)
_IS_ACTIVE = f"state IN ({', '.join('?' * len(_ACTIVE))})"
_COLUMNS = "id, region, state, created_at, candidate, rollback, record"


class RolloutTables(RegistryQueries):
    """The rollout operations of :class:`hub.registry.interface.Registry`."""

    def create_rollout(self, record: RolloutRecord) -> None:
        with self._write("record the rollout") as db:
            # One rollout per id, one active per region: the checks and the insert run alone.
            self._lock(db, "rollouts")
            if db.execute(
                self._sql("SELECT 1 FROM rollouts WHERE id = ?"), (record.rollout_id,)
            ).fetchone():
                raise ConfigError(
                    f"rollout {record.rollout_id} exists already: a candidate version is "
                    "rolled out once (build the next version)"
                )
            busy = db.execute(
                self._sql(f"SELECT id FROM rollouts WHERE region = ? AND {_IS_ACTIVE}"),
                (record.region, *_ACTIVE),
            ).fetchone()
            if busy:
                raise ConfigError(
                    f"rollout {busy[0]} is active in {record.region}: finish, abort or let it "
                    "halt first (edge-hub rollout status)"
                )
            db.execute(
                self._sql("INSERT INTO rollouts VALUES (?, ?, ?, ?, ?, ?, ?)"),
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
        rows = self._rows(f"SELECT {_COLUMNS} FROM rollouts WHERE id = ?", (rollout_id,))
        return rollout_record(rows[0]) if rows else None

    def rollouts(self, *, active: bool = False) -> list[RolloutRecord]:
        where, params = (f" WHERE {_IS_ACTIVE}", _ACTIVE) if active else ("", ())
        rows = self._rows(f"SELECT {_COLUMNS} FROM rollouts{where} ORDER BY created_at, id", params)
        return [rollout_record(row) for row in rows]

    def update_rollout(self, record: RolloutRecord, *, expected: RolloutRecord) -> bool:
        if record.rollout_id != expected.rollout_id:
            raise ValueError("update_rollout: record and expected are different rollouts")
        with self._write("update the rollout") as db:
            # Compared with the row as committed: a concurrent update waits (PostgreSQL's
            # row lock, SQLite's write lock), then compares with its result.
            updated = db.execute(
                self._sql("UPDATE rollouts SET state = ?, record = ? WHERE id = ? AND record = ?"),
                (
                    str(record.state),
                    rollout_json(record),
                    record.rollout_id,
                    rollout_json(expected),
                ),
            ).rowcount
            return updated == 1

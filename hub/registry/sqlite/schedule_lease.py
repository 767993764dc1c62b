"""The schedule lease in the SQLite registry (table ``schedule_lease``, statements in
:mod:`hub.registry.lease_sql`): every hub process on one ``hub.db`` claims it, one leads."""

from __future__ import annotations

from hub.registry.lease_sql import CLAIM, RELEASE, check_claim
from hub.registry.sqlite.transactions import SqliteTransactions, as_int

__all__ = ["ScheduleLeaseTables"]

_CLAIM = CLAIM.format(p="?")
_RELEASE = RELEASE.format(p="?")


class ScheduleLeaseTables(SqliteTransactions):
    """The schedule lease operations of :class:`hub.registry.interface.Registry`."""

    def claim_schedule_lease(self, holder: str, now: int, ttl_s: int) -> int | None:
        check_claim(holder, ttl_s)
        with self._write("claim the schedule lease") as db:
            row = db.execute(_CLAIM, (holder, now + ttl_s, now)).fetchone()
        return None if row is None else as_int(row[0])

    def release_schedule_lease(self, holder: str) -> None:
        with self._write("release the schedule lease") as db:
            db.execute(_RELEASE, (holder,))

"""The schedule lease in the SQLite registry (table ``schedule_lease``, statements in
:mod:`hub.registry.lease_sql`): every hub process on one ``hub.db`` claims it, one leads."""

from __future__ import annotations

from hub.registry.lease_sql import CLAIM, HOLDER, RELEASE, check_claim
from hub.registry.records import ScheduleLeaseHolder
from hub.registry.rows import as_int, as_text
from hub.registry.sqlite.transactions import SqliteTransactions

__all__ = ["ScheduleLeaseTables"]

_CLAIM = CLAIM.format(p="?")
_RELEASE = RELEASE.format(p="?")


class ScheduleLeaseTables(SqliteTransactions):
    """The schedule lease operations of :class:`hub.registry.interface.Registry`."""

    def claim_schedule_lease(self, holder: str, now: int, ttl_s: int) -> int | None:
        params = check_claim(holder, now, ttl_s)
        with self._write("claim the schedule lease") as db:
            row = db.execute(_CLAIM, params).fetchone()
        return None if row is None else as_int(row[0])

    def schedule_lease(self) -> ScheduleLeaseHolder | None:
        rows = self._read(HOLDER)
        if not rows:
            return None
        holder, token, expires_at = rows[0]
        return ScheduleLeaseHolder(as_text(holder), as_int(token), as_int(expires_at))

    def release_schedule_lease(self, holder: str) -> None:
        with self._write("release the schedule lease") as db:
            db.execute(_RELEASE, (holder,))

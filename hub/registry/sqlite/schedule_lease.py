"""The schedule lease in the SQLite registry (table ``schedule_lease``, statements in
:mod:`hub.registry.lease_sql`): every hub process on one ``hub.db`` claims it, one leads."""

from __future__ import annotations

from collections.abc import Sequence

from hub.registry.lease_sql import CLAIM, HOLDER, RELEASE, check_claim, refuse_exhausted
from hub.registry.records import ScheduleLeaseClaim, ScheduleLeaseHolder
from hub.registry.rows import as_int, as_text
from hub.registry.sqlite.transactions import SqliteTransactions

__all__ = ["ScheduleLeaseTables"]

_CLAIM = CLAIM.format(p="?")
_RELEASE = RELEASE.format(p="?")


class ScheduleLeaseTables(SqliteTransactions):
    """The schedule lease operations of :class:`hub.registry.interface.Registry`."""

    def claim_schedule_lease(self, holder: str, now: int, ttl_s: int) -> ScheduleLeaseClaim:
        params = check_claim(holder, now, ttl_s)
        with self._write("claim the schedule lease") as db:
            # Read in the claim's transaction, under the write lock: the lease the claim
            # decides against (SQLite's RETURNING gives only the row written).
            held = db.execute(HOLDER).fetchone()
            row = db.execute(_CLAIM, params).fetchone()
        before = None if held is None else _holder(held)
        if row is None:
            refuse_exhausted(before, holder, now, ttl_s)
            return ScheduleLeaseClaim(None, before)
        return ScheduleLeaseClaim(as_int(row[0]), before)

    def schedule_lease(self) -> ScheduleLeaseHolder | None:
        rows = self._read(HOLDER)
        if not rows:
            return None
        return _holder(rows[0])

    def release_schedule_lease(self, holder: str) -> None:
        with self._write("release the schedule lease") as db:
            db.execute(_RELEASE, (holder,))


def _holder(row: Sequence[object]) -> ScheduleLeaseHolder:
    holder, token, expires_at = row
    return ScheduleLeaseHolder(as_text(holder), as_int(token), as_int(expires_at))

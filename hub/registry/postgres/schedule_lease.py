"""The schedule lease in the PostgreSQL registry (table ``schedule_lease``, statements in
:mod:`hub.registry.lease_sql`): every hub process on the database claims it, one leads."""

from __future__ import annotations

from collections.abc import Sequence

from hub.registry.interface import RegistryError
from hub.registry.lease_sql import (
    CLAIM_NAMING_HOLDER,
    HOLDER,
    RELEASE,
    check_claim,
    refuse_exhausted,
)
from hub.registry.postgres.transactions import PostgresTransactions
from hub.registry.records import ScheduleLeaseClaim, ScheduleLeaseHolder
from hub.registry.rows import as_int, as_text

__all__ = ["ScheduleLeaseTables"]

_CLAIM = CLAIM_NAMING_HOLDER.format(p="%s")
_RELEASE = RELEASE.format(p="%s")


class ScheduleLeaseTables(PostgresTransactions):
    """The schedule lease operations of :class:`hub.registry.interface.Registry`."""

    def claim_schedule_lease(self, holder: str, now: int, ttl_s: int) -> ScheduleLeaseClaim:
        params = check_claim(holder, now, ttl_s)
        with self._write("claim the schedule lease") as db:
            row = db.execute(_CLAIM, params).fetchone()
        if row is None:
            raise RegistryError("the schedule lease claim returned no row")
        token, *held = row
        before = None if held[0] is None else _holder(held)
        if token is None:
            refuse_exhausted(before, holder, now, ttl_s)
            return ScheduleLeaseClaim(None, before)
        return ScheduleLeaseClaim(as_int(token), before)

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

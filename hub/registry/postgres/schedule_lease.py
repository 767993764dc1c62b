"""The schedule lease in the PostgreSQL registry (table ``schedule_lease``, statements in
:mod:`hub.registry.lease_sql`): every hub process on the database claims it, one leads."""

from __future__ import annotations

from hub.registry.lease_sql import CLAIM, RELEASE, check_claim
from hub.registry.postgres.transactions import PostgresTransactions
from hub.registry.rows import as_int

__all__ = ["ScheduleLeaseTables"]

_CLAIM = CLAIM.format(p="%s")
_RELEASE = RELEASE.format(p="%s")


class ScheduleLeaseTables(PostgresTransactions):
    """The schedule lease operations of :class:`hub.registry.interface.Registry`."""

    def claim_schedule_lease(self, holder: str, now: int, ttl_s: int) -> int | None:
        check_claim(holder, ttl_s)
        with self._write("claim the schedule lease") as db:
            row = db.execute(_CLAIM, (holder, now + ttl_s, now)).fetchone()
        return None if row is None else as_int(row[0])

    def release_schedule_lease(self, holder: str) -> None:
        with self._write("release the schedule lease") as db:
            db.execute(_RELEASE, (holder,))

"""The schedule lease (table ``schedule_lease``, statements in :mod:`hub.registry.lease_sql`):
every hub process on one registry claims it, one leads. The same operations on both
backends; only how a claim reads the lease it replaced differs (below)."""

from __future__ import annotations

from collections.abc import Sequence

from hub.registry.interface import RegistryError
from hub.registry.lease_sql import (
    CLAIM,
    CLAIM_NAMING_HOLDER,
    HOLDER,
    RELEASE,
    check_claim,
    refuse_exhausted,
)
from hub.registry.queries.base import RegistryQueries
from hub.registry.records import ScheduleLeaseClaim, ScheduleLeaseHolder
from hub.registry.rows import as_int, as_text

__all__ = ["ScheduleLeaseTables"]

_CLAIM = CLAIM.format(p="?")
_CLAIM_NAMING_HOLDER = CLAIM_NAMING_HOLDER.format(p="?")
_RELEASE = RELEASE.format(p="?")


class ScheduleLeaseTables(RegistryQueries):
    """The schedule lease operations of :class:`hub.registry.interface.Registry`."""

    def claim_schedule_lease(self, holder: str, now: int, ttl_s: int) -> ScheduleLeaseClaim:
        params = check_claim(holder, now, ttl_s)
        with self._write("claim the schedule lease") as db:
            if self.dialect == "postgresql":
                # One statement: the claim, and the lease as it was in the claim's snapshot.
                row = db.execute(self._sql(_CLAIM_NAMING_HOLDER), params).fetchone()
                if row is None:
                    raise RegistryError("the schedule lease claim returned no row")
                token, *held = row
                before = None if held[0] is None else _holder(held)
            else:
                # SQLite has no writing WITH: the lease is read in the claim's transaction,
                # under the write lock (its RETURNING gives only the row written).
                read = db.execute(HOLDER).fetchone()
                claimed = db.execute(_CLAIM, params).fetchone()
                before = None if read is None else _holder(read)
                token = None if claimed is None else claimed[0]
        if token is None:
            refuse_exhausted(before, holder, now, ttl_s)
            return ScheduleLeaseClaim(None, before)
        return ScheduleLeaseClaim(as_int(token), before)

    def schedule_lease(self) -> ScheduleLeaseHolder | None:
        rows = self._rows(HOLDER)
        return _holder(rows[0]) if rows else None

    def release_schedule_lease(self, holder: str) -> None:
        with self._write("release the schedule lease") as db:
            db.execute(self._sql(_RELEASE), (holder,))


def _holder(row: Sequence[object]) -> ScheduleLeaseHolder:
    holder, token, expires_at = row
    return ScheduleLeaseHolder(as_text(holder), as_int(token), as_int(expires_at))

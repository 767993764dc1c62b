"""The schedule lease's statements, the same in both backends but for their placeholders
(``?`` in SQLite, ``%s`` in PostgreSQL), and the check of a claim's arguments.

One statement takes, renews or refuses the lease (:data:`CLAIM`): an insert of the first
row, or an update of the held one only where its holder is the claimant, its expiry has
passed, or its expiry is further ahead than any correct holder writes (more than
:data:`LEASE_SKEW_LIMIT_S` beyond the claimant's ``now + ttl``: a hub whose clock ran
years ahead and died, or a tampered row, would otherwise stop the schedule for good),
deciding against the committed row (SQLite: under the write lock every write takes;
PostgreSQL: ``ON CONFLICT DO UPDATE`` locks the row and re-checks its condition on the
latest committed version). The token goes up by one when the holder changes, never else,
and a release keeps it, so it only ever grows.
"""

from __future__ import annotations

from hub.registry.schema import SCHEDULE_LEASE

__all__ = ["CLAIM", "HOLDER", "LEASE_SKEW_LIMIT_S", "RELEASE", "check_claim"]

LEASE_SKEW_LIMIT_S = 60
"""How far beyond a claimant's own ``now + ttl`` a lease may end and still be honoured: a
correct holder writes its ``now + ttl``, so one ending later was written by a clock this
far ahead of the claimant's, or by no hub; it is taken over like an expired one. Hubs whose
clocks differ by more than this may take the lease from each other (fencing still lets one
publish at a time): keep them in step (NTP)."""

CLAIM = (
    "INSERT INTO schedule_lease AS lease (name, holder, token, expires_at) "
    f"VALUES ('{SCHEDULE_LEASE}', {{p}}, 1, {{p}}) "
    "ON CONFLICT (name) DO UPDATE SET "
    "token = CASE WHEN lease.holder = excluded.holder THEN lease.token "
    "ELSE lease.token + 1 END, "
    "holder = excluded.holder, expires_at = excluded.expires_at "
    "WHERE lease.holder = excluded.holder OR lease.expires_at <= {p} "
    "OR lease.expires_at > {p} "
    "RETURNING token"
)
"""Parameters: holder, its new expiry, now, and the latest expiry honoured (the new
expiry plus :data:`LEASE_SKEW_LIMIT_S`). Returns the token, or no row when refused."""

HOLDER = f"SELECT holder, token, expires_at FROM schedule_lease WHERE name = '{SCHEDULE_LEASE}'"
"""The lease as committed: its holder (empty when released), token and expiry."""

RELEASE = (
    "UPDATE schedule_lease SET holder = '', expires_at = 0 "
    f"WHERE name = '{SCHEDULE_LEASE}' AND holder = {{p}}"
)
"""Parameter: holder. The token stays, so the next holder's is above it."""


def check_claim(holder: str, now: int, ttl_s: int) -> tuple[str, int, int, int]:
    """The parameters of :data:`CLAIM` for ``holder`` claiming at ``now`` for ``ttl_s``,
    refusing a claim no lease can be given for.

    Raises:
        ValueError: ``holder`` is empty (a released lease's) or ``ttl_s`` is not positive.
    """
    if not holder:
        raise ValueError("a schedule lease holder must be named")
    if ttl_s <= 0:
        raise ValueError("a schedule lease must last a positive time")
    return (holder, now + ttl_s, now, now + ttl_s + LEASE_SKEW_LIMIT_S)

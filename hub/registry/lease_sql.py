"""The schedule lease's statements, the same in both backends but for their placeholders
(``?`` in SQLite, ``%s`` in PostgreSQL), and the check of a claim's arguments.

One statement takes, renews or refuses the lease (:data:`CLAIM`): an insert of the first
row, or an update of the held one only where its holder is the claimant or its expiry has
passed, deciding against the committed row (SQLite: under the write lock every write takes;
PostgreSQL: ``ON CONFLICT DO UPDATE`` locks the row and re-checks its condition on the
latest committed version). The token goes up by one when the holder changes, never else,
and a release keeps it, so it only ever grows.
"""

from __future__ import annotations

from hub.registry.schema import SCHEDULE_LEASE

__all__ = ["CLAIM", "RELEASE", "check_claim"]

CLAIM = (
    "INSERT INTO schedule_lease AS lease (name, holder, token, expires_at) "
    f"VALUES ('{SCHEDULE_LEASE}', {{p}}, 1, {{p}}) "
    "ON CONFLICT (name) DO UPDATE SET "
    "token = CASE WHEN lease.holder = excluded.holder THEN lease.token "
    "ELSE lease.token + 1 END, "
    "holder = excluded.holder, expires_at = excluded.expires_at "
    "WHERE lease.holder = excluded.holder OR lease.expires_at <= {p} "
    "RETURNING token"
)
"""Parameters: holder, its new expiry, now. Returns the token, or no row when refused."""

RELEASE = (
    "UPDATE schedule_lease SET holder = '', expires_at = 0 "
    f"WHERE name = '{SCHEDULE_LEASE}' AND holder = {{p}}"
)
"""Parameter: holder. The token stays, so the next holder's is above it."""


def check_claim(holder: str, ttl_s: int) -> None:
    """Refuse a claim no lease can be given for.

    Raises:
        ValueError: ``holder`` is empty (a released lease's) or ``ttl_s`` is not positive.
    """
    if not holder:
        raise ValueError("a schedule lease holder must be named")
    if ttl_s <= 0:
        raise ValueError("a schedule lease must last a positive time")

"""Trusted time: what "now" may be believed to be, and when the clock is not to be trusted.

Rules (DESIGN.md section 2, docs/trust.md "Time"):

1. The signed floor only moves up, and only from signed time: each signing role keeps its own
   mark (a root's or bundle's ``issued_at``, a freshness token's ``hub_time``, a revocation's
   or attestation result's ``issued_at``, each minus :data:`SIGNED_TIME_SKEW_S`). A wall
   clock below the signed floor is untrusted: every decision denies.
2. Rotating a role's keys in a new trust root drops that role's mark (TUF's fast-forward
   recovery): time vouched for only by a compromised online key stops counting once the
   operator replaces the key.
3. The observed floor holds the latest signed deadline (a bundle's expiry or the end of its
   ``max_offline``) this device has seen pass. A wall clock behind it (but not behind the
   signed floor) is read as the observed floor, so a deadline once passed stays passed. It
   only ever holds a signed deadline, never a wall-clock reading: a wall clock far ahead can
   expire things early (and they stay expired) but its own value is never persisted.

Nothing here reads a clock: the shell reads it once per operation and passes it in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from edge_agent.errors import ClockError
from edge_agent.protocol.roles import Role

__all__ = [
    "SIGNED_TIME_SKEW_S",
    "TimeFloor",
    "advance_floor",
    "check_clock",
    "observe_deadline",
    "trusted_now",
    "without_roles",
]

SIGNED_TIME_SKEW_S = 300
"""Seconds a signer's clock may run ahead of this device's before decisions stop.

A bundle issued at T proves that it is at least T; the floor moves to T minus this skew, so a
hub a few minutes fast does not make freshly installed bundles deny until clocks meet. It is
also how far ahead of trusted time a bundle's ``issued_at`` may be (docs/trust.md).
"""


@dataclass(frozen=True, slots=True)
class TimeFloor:
    """The persisted lower bounds on trusted time, in Unix seconds.

    ``base`` is a floor of no known source (a database written before floors were kept per
    role); it is never dropped. ``marks`` holds each signing role's contribution, sorted by
    role. ``observed`` is the latest signed deadline seen to pass (rule 3).
    """

    base: int = 0
    marks: tuple[tuple[Role, int], ...] = ()
    observed: int = 0

    @property
    def signed(self) -> int:
        """The signed floor: a wall clock below it is untrusted."""
        return max((self.base, *(seconds for _, seconds in self.marks)))

    @property
    def seconds(self) -> int:
        """The least "now" can be: the higher of the signed and observed floors."""
        return max(self.signed, self.observed)

    def mark(self, role: Role) -> int:
        """What ``role``'s signed time contributes (0: nothing)."""
        return dict(self.marks).get(role, 0)


def check_clock(wall: int, floor: TimeFloor) -> int:
    """Return the time decisions use, or raise when the wall clock is below the signed floor.

    Raises:
        ClockError: ``wall`` is before the signed floor (clock rolled back, or a board that
            booted without a real-time clock).
    """
    if wall < floor.signed:
        raise ClockError(
            f"the device clock ({wall}) is {floor.signed - wall} s behind the last trusted "
            f"time ({floor.signed}); set the clock or wait for signed time from the hub"
        )
    return trusted_now(wall, floor)


def trusted_now(wall: int, floor: TimeFloor) -> int:
    """The time decisions use: the wall clock, or the observed floor when the wall clock is
    behind it but not behind the signed floor. A wall clock behind the signed floor is
    returned as it is (the clock check then fails: how far back it is cannot be known)."""
    if wall < floor.signed:
        return wall
    return max(wall, floor.observed)


def advance_floor(floor: TimeFloor, signed_time: int, role: Role) -> TimeFloor:
    """The floor after learning, from an object ``role`` signed, that it is at least
    ``signed_time``."""
    marks = dict(floor.marks)
    marks[role] = max(marks.get(role, 0), signed_time - SIGNED_TIME_SKEW_S)
    return replace(floor, marks=tuple(sorted(marks.items())))


def without_roles(floor: TimeFloor, roles: Iterable[Role]) -> TimeFloor:
    """The floor once ``roles`` were rotated: what only their keys vouched for is dropped."""
    dropped = frozenset(roles)
    return replace(floor, marks=tuple((r, s) for r, s in floor.marks if r not in dropped))


def observe_deadline(floor: TimeFloor, deadline: int) -> TimeFloor:
    """The floor after seeing the signed ``deadline`` pass (it is already in the past)."""
    if deadline <= floor.observed:
        return floor
    return replace(floor, observed=deadline)

"""Trusted time: what "now" may be believed to be, and when the clock is not to be trusted.

Rules (DESIGN.md section 2): the persisted floor only moves up, and only from signed time
(a bundle's ``issued_at``, later freshness tokens and attestation results) or from time
computed from them; a wall clock below the floor is untrusted (every decision denies); a wall
clock far ahead may expire things early but is never persisted. Nothing here reads a clock:
the shell reads it once per operation and passes it in.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import ClockError

__all__ = ["SIGNED_TIME_SKEW_S", "TimeFloor", "advance_floor", "check_clock"]

SIGNED_TIME_SKEW_S = 300
"""Seconds a signer's clock may run ahead of this device's before decisions stop.

A bundle issued at T proves that it is at least T; the floor moves to T minus this skew, so a
hub a few minutes fast does not make freshly installed bundles deny until clocks meet.
"""


@dataclass(frozen=True, slots=True)
class TimeFloor:
    """The persisted lower bound on trusted time, in Unix seconds."""

    seconds: int = 0


def check_clock(wall: int, floor: TimeFloor) -> int:
    """Return the time decisions use, or raise when the wall clock is below the floor.

    Raises:
        ClockError: ``wall`` is before the trusted floor (clock rolled back, or a board that
            booted without a real-time clock).
    """
    if wall < floor.seconds:
        raise ClockError(
            f"the device clock ({wall}) is {floor.seconds - wall} s behind the last trusted "
            f"time ({floor.seconds}); set the clock or wait for signed time from the hub"
        )
    return wall


def advance_floor(floor: TimeFloor, signed_time: int) -> TimeFloor:
    """The floor after learning, from a signed object, that it is at least ``signed_time``."""
    return TimeFloor(max(floor.seconds, signed_time - SIGNED_TIME_SKEW_S))

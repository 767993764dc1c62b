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
4. The anchor (DESIGN.md section 2: trusted time is at least the last authenticated time
   plus the monotonic time elapsed since): the newest signed time a process verified, with
   its monotonic clock reading at that moment. It only pushes trusted time forward, so a
   wall clock set back (but not behind the signed floor) cannot make time run backwards
   from signed time. It lives in the process (a monotonic clock means nothing after a
   reboot) and counts only while the floor still holds its role's signed time: rotating
   that role drops it with the mark (rule 2).

A verified bundle issued more than :data:`SIGNED_TIME_SKEW_S` ahead of trusted time is
refused for now (:func:`check_not_ahead`): its signed time would otherwise raise the floor
past the wall clock for good.

Nothing here reads a clock: the shell reads it once per operation and passes it in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edge_agent.errors import BundleError, ClockError
from edge_agent.protocol.limits import SIGNED_TIME_SKEW_S
from edge_agent.protocol.roles import Role

if TYPE_CHECKING:
    from edge_agent.policy.bundle import CompiledBundle

__all__ = [
    "SIGNED_TIME_SKEW_S",
    "BundleAheadError",
    "TimeAnchor",
    "TimeFloor",
    "advance_anchor",
    "advance_floor",
    "check_clock",
    "check_not_ahead",
    "earliest_now",
    "observe_deadline",
    "steady_now",
    "trusted_now",
    "without_roles",
]


class BundleAheadError(BundleError):
    """A verified bundle issued too far ahead of trusted time: refused for now, not for its
    bytes. It is admissible once trusted time reaches ``admissible_at`` (a freshness token
    raising the floor, or the clock advancing), so a shell may try it again then."""

    code = "bundle_future"

    def __init__(self, message: str, *, admissible_at: int) -> None:
        super().__init__(message)
        self.admissible_at = admissible_at


def check_not_ahead(bundle: CompiledBundle, now: int) -> None:
    """Refuse ``bundle`` when its ``issued_at`` is more than :data:`SIGNED_TIME_SKEW_S` ahead
    of trusted ``now`` (rule 1 of :func:`edge_agent.trust.state.check_admissible`). The hub
    applies it too before publishing and when it builds a bundle, so it never records or writes
    a bundle every device would refuse. It lives here, with trusted time, so the hub's build
    imports it without the trust state's revocation, attestation and freshness modules.

    Raises:
        BundleAheadError: ``bundle_future``.
    """
    ahead = bundle.issued_at - now
    if ahead > SIGNED_TIME_SKEW_S:
        raise BundleAheadError(
            f"bundle version {bundle.version} was issued {ahead} s ahead of this device's "
            f"trusted time (at most {SIGNED_TIME_SKEW_S} s allowed); set the device clock or "
            "let it receive a freshness token first, and check the signer's clock",
            admissible_at=bundle.issued_at - SIGNED_TIME_SKEW_S,
        )


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


@dataclass(frozen=True, slots=True)
class TimeAnchor:
    """Signed time a process verified (``signed``, Unix seconds, vouched for by ``role``)
    and its monotonic clock (``monotonic``, seconds) when it did (rule 4)."""

    signed: int
    monotonic: float
    role: Role

    def at(self, monotonic: float) -> int:
        """The least the time can be at monotonic reading ``monotonic``."""
        return _elapsed_from(self.signed, self.monotonic, monotonic)


def _elapsed_from(seconds: int, since: float, monotonic: float) -> int:
    """``seconds`` plus the monotonic time elapsed from reading ``since`` to ``monotonic``."""
    return seconds + max(0, int(monotonic - since))


def advance_anchor(
    anchor: TimeAnchor | None, signed_time: int, role: Role, monotonic: float
) -> TimeAnchor:
    """The anchor after verifying, at monotonic reading ``monotonic``, an object ``role``
    signed at ``signed_time``: whichever of the two puts trusted time further ahead."""
    if anchor is not None and anchor.at(monotonic) >= signed_time:
        return anchor
    return TimeAnchor(signed_time, monotonic, role)


def _anchored(floor: TimeFloor, anchor: TimeAnchor | None, monotonic: float) -> int:
    """What ``anchor`` vouches for at ``monotonic``: 0 when there is none, or when the floor
    no longer holds its role's signed time (the role was rotated: rule 2)."""
    if anchor is None:
        return 0
    for role, seconds in floor.marks:
        if role is anchor.role and seconds >= anchor.signed - SIGNED_TIME_SKEW_S:
            return anchor.at(monotonic)
    return 0


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


def trusted_now(
    wall: int, floor: TimeFloor, anchor: TimeAnchor | None = None, monotonic: float = 0.0
) -> int:
    """The time decisions use: the latest of the wall clock, the observed floor and the
    ``anchor`` at ``monotonic`` (rule 4). A wall clock behind the signed floor is returned
    as it is (the clock check then fails: how far back it is cannot be known)."""
    if wall < floor.signed:
        return wall
    return max(wall, floor.observed, _anchored(floor, anchor, monotonic))


def earliest_now(
    wall: int, floor: TimeFloor, anchor: TimeAnchor | None = None, monotonic: float = 0.0
) -> int:
    """The least "now" can be, for judging expiry when installing: the latest of the wall
    clock, the floor and the ``anchor`` at ``monotonic``. Unlike :func:`trusted_now` it is
    never below the floor: a clock set back must not make an expired object look valid."""
    return max(wall, floor.seconds, _anchored(floor, anchor, monotonic))


def steady_now(wall: int, start_wall: int, start_monotonic: float, monotonic: float) -> int:
    """The wall clock ``wall``, never earlier than the wall clock at a start (``start_wall``,
    read with monotonic ``start_monotonic``) plus the monotonic time elapsed since: time
    that a clock set back cannot make run backwards within one process (exec enforcement's
    break-glass windows). It is not trusted time: nothing signed vouches for the start."""
    return max(wall, _elapsed_from(start_wall, start_monotonic, monotonic))


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

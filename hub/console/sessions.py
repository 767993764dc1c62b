"""The console's in-memory state about who is logged in: sessions and the login rate limit.

A session is a 256-bit random id (the cookie) mapped to the token name and role it logged
in with, its CSRF token and its expiry. Sessions live in this process only: a restart of the
hub logs everyone out, and a revoked token ends its sessions at their next request (the
handler re-reads the token, :func:`hub.console.auth.current_user`).
"""

from __future__ import annotations

import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from hub.core.limits import RateLimiter

__all__ = [
    "LOGIN_BURST",
    "LOGIN_RATE",
    "MAX_SESSIONS",
    "SESSION_IDLE_S",
    "SESSION_MAX_S",
    "LoginLimit",
    "Session",
    "Sessions",
]

SESSION_IDLE_S = 60 * 60
"""A session unused this long is over."""
SESSION_MAX_S = 12 * 60 * 60
"""A session is over this long after login, used or not."""
MAX_SESSIONS = 1024
"""Sessions kept; logging in past this ends the least recently used one."""
LOGIN_RATE = 1 / 12
"""Login attempts per second per client address, sustained (five a minute) ..."""
LOGIN_BURST = 5
"""... after a burst of this many."""


@dataclass(slots=True)
class Session:
    """One logged-in browser: the token it logged in with and its CSRF token."""

    name: str
    role: str
    token_digest: bytes
    csrf: str
    created_at: int
    used_at: int


class Sessions:
    """Sessions by id, bounded (least recently used dropped first)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._max = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, name: str, role: str, token_digest: bytes, now: int) -> tuple[str, Session]:
        """A new session (its id and record) for the token ``name`` with ``role``."""
        session_id = secrets.token_urlsafe(32)
        session = Session(name, role, token_digest, secrets.token_urlsafe(32), now, now)
        self._sessions[session_id] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str, now: int) -> Session | None:
        """The live session ``session_id`` (its use recorded); ``None`` when unknown or over."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if now - session.used_at > SESSION_IDLE_S or now - session.created_at > SESSION_MAX_S:
            del self._sessions[session_id]
            return None
        session.used_at = now
        self._sessions.move_to_end(session_id)
        return session

    def end(self, session_id: str) -> None:
        """End ``session_id`` (logout); nothing when unknown."""
        self._sessions.pop(session_id, None)


class LoginLimit:
    """Failed login attempts allowed per client address (a token bucket each, bounded in
    number); a successful login gets its attempt back."""

    def __init__(self, rate: float = LOGIN_RATE, burst: int = LOGIN_BURST) -> None:
        self._rate = rate
        self._limiter = RateLimiter(rate, burst)

    def allow(self, client: str, now: float) -> bool:
        """Take one attempt from ``client``'s budget; ``False`` when it has none left."""
        return self._limiter.allow(client, now)

    def refund(self, client: str) -> None:
        """Give back the attempt a successful login took: only failures count."""
        self._limiter.refund(client, 1.0)

    @property
    def retry_after_s(self) -> int:
        """Whole seconds until a client out of attempts has one again."""
        return math.ceil(1 / self._rate)

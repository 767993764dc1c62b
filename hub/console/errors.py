"""The console's refusals, each turned into a page by :mod:`hub.console.app`: a sentence
saying what was wrong and what to do, never a traceback."""

from __future__ import annotations

__all__ = ["BadRequest", "ConsoleError", "Forbidden", "LoginRequired", "NotFound"]


class ConsoleError(Exception):
    """An error page: ``status``, ``title`` and ``message`` (what was wrong, what to do)."""

    status = 400
    title = "Bad request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ConsoleError):
    """The request's input is not valid (a 400 page naming the field and why)."""


class NotFound(ConsoleError):
    """What the request names does not exist (a 404 page)."""

    status = 404
    title = "Not found"


class Forbidden(ConsoleError):
    """Logged in, but this needs the operator role, or the CSRF token is missing or wrong."""

    status = 403
    title = "Forbidden"


class LoginRequired(ConsoleError):
    """No live session: a page redirects to the login page, anything else is a 401."""

    status = 401
    title = "Log in"

    def __init__(self, message: str = "log in with your console token first") -> None:
        super().__init__(message)

"""Logging in and out: ``GET /login`` (the form), ``POST /login`` (a token for a session
cookie, rate-limited per client address), ``POST /logout``.

The login form carries its own CSRF token (a random value in a ``SameSite=Strict`` cookie
and a hidden field that must match), so another site cannot log a browser in as someone
else either.
"""

from __future__ import annotations

import hmac
import secrets
import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from hub.console.auth import (
    COOKIE,
    CSRF_FIELD,
    MAX_FORM_BYTES,
    checked_form,
    console_context,
    current_user,
    find_token,
)
from hub.console.errors import BadRequest
from hub.console.render import render

__all__ = ["LOGIN_COOKIE", "ROUTES", "safe_next"]

LOGIN_COOKIE = "edgegov_login"
"""The login form's CSRF value (double-submitted: cookie and hidden field)."""
MAX_TOKEN_CHARS = 128


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path of this console (``/`` otherwise), so a crafted
    link cannot send the operator to another site. Browsers drop tabs and newlines from a
    URL and read ``\\`` as ``/``, so ``/<TAB>/evil.example`` is refused like ``//evil``."""
    if (
        not value
        or not value.startswith("/")
        or any(c == "\\" or ord(c) < 0x21 or ord(c) == 0x7F for c in value)
        or value.startswith("//")
    ):
        return "/"
    return value


async def login_page(request: Request) -> Response:
    """The login form (or the dashboard, for someone logged in already)."""
    target = safe_next(request.query_params.get("next"))
    if current_user(request) is not None:
        return RedirectResponse(target, status_code=303)
    return _form(request, target, None, 200)


async def login(request: Request) -> Response:
    """Check the token typed; on success start a session and go where the user was headed."""
    context = console_context(request)
    client = request.client.host if request.client else "unknown"
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > MAX_FORM_BYTES:
        raise BadRequest("the login form must be sent with its length, at most 64 KiB")
    form = await request.form(max_files=0, max_fields=8)
    target = safe_next(_text(form.get("next")))
    sent, expected = _text(form.get(CSRF_FIELD)), request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _form(request, target, "The login form expired: log in again.", 403)
    limit = context.login_limit
    if not limit.allow(client, time.monotonic()):
        refused = _form(
            request, target, "Too many login attempts from this address: wait a minute.", 429
        )
        refused.headers["Retry-After"] = str(limit.retry_after_s)
        return refused
    token = _text(form.get("token")).strip()
    if not token or len(token) > MAX_TOKEN_CHARS:
        return _form(request, target, "Paste the console token you were given.", 400)
    stored = find_token(context.registry, token)
    if stored is None:
        return _form(request, target, "That token is not valid (or was revoked).", 401)
    limit.refund(client)
    session_id, _ = context.sessions.create(
        stored.name, stored.role, stored.digest, context.clock()
    )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE, session_id, httponly=True, samesite="strict", secure=context.secure, path="/"
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


async def logout(request: Request) -> Response:
    """End the session (CSRF-checked) and go back to the login page."""
    await checked_form(request, operator=False)
    context = console_context(request)
    context.sessions.end(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _form(request: Request, target: str, error: str | None, status: int) -> Response:
    context = console_context(request)
    value = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {"next": target, "login_csrf": value, "error": error},
        status=status,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        value,
        httponly=True,
        samesite="strict",
        secure=context.secure,
        path="/login",
        max_age=3600,
    )
    return response


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


ROUTES = [
    Route("/login", login_page, methods=["GET"], name="login"),
    Route("/login", login, methods=["POST"], name="login_post"),
    Route("/logout", logout, methods=["POST"], name="logout"),
]

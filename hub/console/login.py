"""Logging in and out: ``GET /login`` (the form), ``POST /login`` (a token for a session
cookie, rate-limited per client address), ``POST /logout``.

The login form carries its own CSRF value, in a ``SameSite=Strict`` cookie and a hidden
field that must match, so another site cannot log a browser in as someone else either. A
cookie is not isolated by port, so a page on another loopback port could plant one; the
value is therefore not just random but signed by the console (:func:`login_csrf_value`: a
random nonce and an expiry, HMAC'd with a per-process secret), and a login the browser
says comes from another origin (``Sec-Fetch-Site``, ``Origin``) is refused outright.
"""

from __future__ import annotations

import base64
import hashlib
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
    check_length,
    checked_form,
    console_context,
    current_user,
    find_token,
    read_form,
)
from hub.console.render import render

__all__ = [
    "LOGIN_COOKIE",
    "LOGIN_FORM_TTL_S",
    "ROUTES",
    "login_csrf_valid",
    "login_csrf_value",
    "safe_next",
]

LOGIN_COOKIE = "edgegov_login"
"""The login form's CSRF value (double-submitted: cookie and hidden field)."""
MAX_TOKEN_CHARS = 128
LOGIN_FORM_TTL_S = 3600
"""A login form's CSRF value is good for this long."""


def login_csrf_value(secret: bytes, now: int) -> str:
    """A fresh login CSRF value: ``NONCE.EXPIRES.MAC``, the MAC an HMAC-SHA256 of nonce and
    expiry under ``secret``, so only this console can make one."""
    body = f"{secrets.token_urlsafe(24)}.{now + LOGIN_FORM_TTL_S}"
    return f"{body}.{_mac(secret, body)}"


def login_csrf_valid(secret: bytes, value: str, now: int) -> bool:
    """``value`` was made by :func:`login_csrf_value` with ``secret`` and has not expired."""
    body, _, mac = value.rpartition(".")
    _, _, expires = body.rpartition(".")
    return (
        bool(body)
        and expires.isdigit()
        and now <= int(expires)
        and hmac.compare_digest(mac.encode(), _mac(secret, body).encode())
    )


def _mac(secret: bytes, body: str) -> str:
    digest = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _same_origin(request: Request) -> bool:
    """Not a form sent by another origin's page, as far as the browser says: its
    ``Sec-Fetch-Site`` (when sent) is ``same-origin`` or ``none`` (typed by the user), and
    its ``Origin`` (when sent, and not ``null``: the console's ``no-referrer`` policy makes
    the browser send ``null`` for the console's own forms) is the console's own. A page on
    another loopback port is ``same-site``, not ``same-origin``, and is refused."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


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
    check_length(request, MAX_FORM_BYTES)
    form = await read_form(request, max_files=0, max_fields=8)
    target = safe_next(_text(form.get("next")))
    sent, expected = _text(form.get(CSRF_FIELD)), request.cookies.get(LOGIN_COOKIE, "")
    if (
        not _same_origin(request)
        or not expected
        or not hmac.compare_digest(sent.encode(), expected.encode())
        or not login_csrf_valid(context.login_secret, sent, context.clock())
    ):
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
    stored = await context.db(find_token, context.registry, token)
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
    response.delete_cookie(
        LOGIN_COOKIE, path="/login", httponly=True, samesite="strict", secure=context.secure
    )
    return response


async def logout(request: Request) -> Response:
    """End the session (CSRF-checked) and go back to the login page."""
    await checked_form(request, operator=False)
    context = console_context(request)
    context.sessions.end(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=context.secure
    )
    return response


def _form(request: Request, target: str, error: str | None, status: int) -> Response:
    context = console_context(request)
    value = login_csrf_value(context.login_secret, context.clock())
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
        max_age=LOGIN_FORM_TTL_S,
    )
    return response


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


ROUTES = [
    Route("/login", login_page, methods=["GET"], name="login"),
    Route("/login", login, methods=["POST"], name="login_post"),
    Route("/logout", logout, methods=["POST"], name="logout"),
]

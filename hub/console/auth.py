"""Who may do what in the console: login tokens, sessions, roles and CSRF.

- **Tokens** (:mod:`hub.console.tokens`, ``edge-hub console token add``): the registry keeps
  only their SHA-256 digest. A login compares the digest of what was typed with every stored
  digest in constant time (:func:`find_token`).
- **Sessions**: a login sets the ``edgegov_session`` cookie (``HttpOnly``,
  ``SameSite=Strict``, ``Secure`` when served under TLS) naming an in-memory session
  (:mod:`hub.console.sessions`). Every request re-reads the token the session logged in with
  (:func:`read_session_user`, before the route, on the console's registry gateway worker):
  a revoked token's sessions end at once.
- **Roles**: every handler starts with :func:`require_viewer` or :func:`require_operator`
  (operator includes viewer); they raise :class:`LoginRequired` (anonymous: the login page
  for a page, 401 for anything else) or :class:`Forbidden` (403).
- **CSRF**: every state-changing request carries the session's CSRF token, as the form field
  ``csrf`` or the ``X-CSRF-Token`` header (htmx sets it from ``<meta name="csrf-token">``,
  static/console.js). A POST handler reads its form with :func:`checked_form`, which checks
  the role first, then the token: a header before the body is read, a field once the
  (bounded) form is parsed, before the handler sees any of it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Scope

from edge_agent.errors import EdgeGovError
from hub.console.context import ConsoleContext
from hub.console.errors import BadRequest, Forbidden, LoginRequired
from hub.console.tokens import Role, token_digest
from hub.registry import ConsoleToken, Registry

__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "MAX_FORM_BYTES",
    "Role",
    "User",
    "check_csrf",
    "check_length",
    "checked_form",
    "console_context",
    "csrf_token",
    "current_user",
    "find_token",
    "read_form",
    "read_session_user",
    "require_operator",
    "require_viewer",
    "session_user",
]

COOKIE = "edgegov_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
MAX_FORM_BYTES = 64 * 1024
"""Largest urlencoded form body a handler parses (uploads set their own bound)."""
USER = "console_user"
"""Where the request scope holds its session's user once read."""
USER_ERROR = "console_user_error"
"""Where the request scope holds why its session's user could not be read."""


@dataclass(frozen=True, slots=True)
class User:
    """Who sent the request: the token's name and role, and the session's CSRF token."""

    name: str
    role: Role
    csrf: str


def find_token(registry: Registry, token: str) -> ConsoleToken | None:
    """The stored token ``token`` is, compared with every stored digest in constant time."""
    digest = token_digest(token)
    found = None
    for stored in registry.console_tokens():
        if hmac.compare_digest(stored.digest, digest):
            found = stored
    return found


def console_context(request: Request) -> ConsoleContext:
    """The :class:`ConsoleContext` of the application serving ``request``."""
    context: ConsoleContext = request.app.state.console
    return context


def current_user(request: Request) -> User | None:
    """The user of ``request``'s session; ``None`` when there is no live session or its token
    was revoked (the session then ends). Read once per request, by :func:`read_session_user`
    before the route runs (here if it did not).

    Raises:
        RegistryError: the tokens could not be read.
    """
    scope = request.scope
    if USER_ERROR in scope:
        raise scope[USER_ERROR]
    if USER not in scope:
        scope[USER] = session_user(console_context(request), request.cookies.get(COOKIE))
    cached: User | None = scope[USER]
    return cached


async def read_session_user(context: ConsoleContext, scope: Scope) -> None:
    """Read the user of the request ``scope``'s session on ``context``'s registry gateway
    worker, for :func:`current_user` (an error reading it is raised there, in the route)."""
    session_id = Request(scope).cookies.get(COOKIE)
    try:
        scope[USER] = await context.db(session_user, context, session_id) if session_id else None
    except EdgeGovError as exc:
        scope[USER_ERROR] = exc


def session_user(context: ConsoleContext, session_id: str | None) -> User | None:
    """The user of the session ``session_id`` if it is live and its token still stored
    (else ``None``, and a session whose token was revoked ends)."""
    if not session_id:
        return None
    session = context.sessions.get(session_id, context.clock())
    if session is None:
        return None
    live = any(
        hmac.compare_digest(t.digest, session.token_digest) and t.name == session.name
        for t in context.registry.console_tokens()
    )
    if not live:
        context.sessions.end(session_id)
        return None
    return User(session.name, Role(session.role), session.csrf)


def require_viewer(request: Request) -> User:
    """The logged-in user (any role).

    Raises:
        LoginRequired: no live session.
    """
    user = current_user(request)
    if user is None:
        raise LoginRequired()
    return user


def require_operator(request: Request) -> User:
    """The logged-in user, who must hold the operator role.

    Raises:
        LoginRequired: no live session.
        Forbidden: the user is a viewer.
    """
    user = require_viewer(request)
    if user.role is not Role.OPERATOR:
        raise Forbidden(f"{user.name} is a viewer; this needs an operator token")
    return user


def csrf_token(request: Request) -> str:
    """The CSRF token of ``request``'s session (``""`` when logged out)."""
    user = current_user(request)
    return "" if user is None else user.csrf


async def checked_form(
    request: Request, *, operator: bool = True, max_bytes: int = MAX_FORM_BYTES
) -> FormData:
    """The form of a state-changing request, after checking its role (operator unless
    ``operator=False``) and its CSRF token (header ``X-CSRF-Token`` or field ``csrf``).

    Raises:
        LoginRequired: no live session.
        Forbidden: the role or the CSRF token is wrong or missing.
        BadRequest: the body is larger than ``max_bytes``.
    """
    user = require_operator(request) if operator else require_viewer(request)
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        check_csrf(user, header)
    check_length(request, max_bytes)
    form = await read_form(request, max_files=1, max_fields=64, max_part_size=max_bytes)
    if header is None:
        sent = form.get(CSRF_FIELD)
        check_csrf(user, sent if isinstance(sent, str) else None)
    return form


def check_length(request: Request, max_bytes: int) -> None:
    """Refuse a body without a ``Content-Length`` or longer than ``max_bytes``, before
    reading any of it.

    Raises:
        BadRequest: saying which.
    """
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise BadRequest(
            "the form was sent without its length (Content-Length): send it from the console's page"
        )
    if int(declared) > max_bytes:
        raise BadRequest(
            f"the form is {int(declared)} bytes; this page accepts at most {max_bytes} bytes: "
            "send a smaller file"
        )


async def read_form(
    request: Request, *, max_files: int, max_fields: int, max_part_size: int = 1024 * 1024
) -> FormData:
    """``request``'s form, bounded; a body that is not a well-formed form is a
    :class:`BadRequest` (a 400 page with a sentence), never a parser's traceback.

    Raises:
        BadRequest: malformed multipart or urlencoded body, or too many parts or fields.
    """
    try:
        return await request.form(
            max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
        )
    except FormParserError as exc:
        raise BadRequest(
            "the form's body is not a well-formed form (multipart/form-data or urlencoded): "
            "send it again from the console's page"
        ) from exc
    except HTTPException as exc:
        raise BadRequest(
            f"the form was refused ({exc.detail}): send it again from the console's page"
        ) from exc


def check_csrf(user: User, sent: str | None) -> None:
    """Refuse a state-changing request whose CSRF token is not ``user``'s session's.

    Raises:
        Forbidden: missing or wrong.
    """
    if not sent or not hmac.compare_digest(sent.encode(), user.csrf.encode()):
        raise Forbidden(
            "the form's security token is missing or out of date: reload the page and try again"
        )

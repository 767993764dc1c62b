"""The console's Starlette application: :func:`create_app`.

Routes come from each page module's ``ROUTES`` list (:data:`PAGE_MODULES`). Around them:

- ``Connection: close`` on every response: a connection serves one request, so none is
  held idle between requests (:mod:`hub.console.serve` bounds the rest);
- a ``Host`` check before any route (:data:`LOOPBACK_HOSTS` and the context's ``hosts``):
  another name is a 421, so a page whose DNS name is rebound to 127.0.0.1 never gets a
  same-origin answer;
- security headers on every response, errors and static files included (a strict
  Content-Security-Policy with no inline script or style, ``X-Frame-Options: DENY``,
  ``nosniff``, no referrer, ``no-store`` for pages);
- error pages: a :class:`~hub.console.errors.ConsoleError` a handler raises becomes its page
  (400, 403, 404 ...), a page asked for without a session redirects to the login page, and
  anything unexpected is logged and shown as a 500 page without a traceback.

Authentication, roles and CSRF are checked by each handler (:mod:`hub.console.auth`); the
security tests walk every route to hold them to it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.console import actions, audit, dashboard, devices, lineage, login, proof
from hub.console.auth import read_session_user
from hub.console.context import ConsoleContext
from hub.console.errors import ConsoleError, LoginRequired
from hub.console.render import environment, render

__all__ = ["CSP", "HSTS", "LOOPBACK_HOSTS", "PAGE_MODULES", "SECURITY_HEADERS", "create_app"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PAGE_MODULES = (login, dashboard, devices, lineage, proof, actions, audit)
"""Every module whose ``ROUTES`` the console serves."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "localhost"})
"""``Host`` names every console answers to (with any port)."""
_HOST = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?")

HSTS = "max-age=31536000"
"""``Strict-Transport-Security`` of a console served under TLS."""


class ConsoleApp(Starlette):
    """Starlette with the security headers outermost, so error responses carry them too."""

    def build_middleware_stack(self) -> ASGIApp:
        context: ConsoleContext = self.state.console
        headers = dict(SECURITY_HEADERS)
        if context.secure:
            headers["strict-transport-security"] = HSTS
        headers["connection"] = "close"
        inner = _SessionUser(super().build_middleware_stack(), context)
        return _SecurityHeaders(_HostCheck(inner, context), headers)


def create_app(context: ConsoleContext) -> Starlette:
    """The console serving ``context``'s hub."""
    routes: list[BaseRoute] = [
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    for module in PAGE_MODULES:
        page_routes: Sequence[BaseRoute] = module.ROUTES
        routes.extend(page_routes)
    app = ConsoleApp(
        routes=routes,
        exception_handlers={
            ConsoleError: _console_error,
            HTTPException: _http_error,
            ClientDisconnect: _client_gone,
            Exception: _internal_error,
        },
    )
    app.state.console = context
    app.state.templates = environment()
    return app


async def _console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    if isinstance(exc, LoginRequired):
        if _wants_page(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        response = _error_page(request, exc.status, exc.title, exc.message)
        if request.headers.get("hx-request"):
            page = urlsplit(request.headers.get("hx-current-url", ""))
            back = (page.path or "/") + (f"?{page.query}" if page.query else "")
            response.headers["HX-Redirect"] = f"/login?next={quote(back, safe='')}"
        return response
    return _error_page(request, exc.status, exc.title, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error_page(request, 404, "Not found", "There is no such page in the console.")
    if exc.status_code == 405:
        return _error_page(
            request, 405, "Method not allowed", f"{request.method} is not allowed here."
        )
    return _error_page(request, exc.status_code, "Error", str(exc.detail))


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The browser went away mid-request: nobody reads the answer, and it is no error."""
    logger.debug("console: %s %s: the client disconnected", request.method, request.url.path)
    return Response(status_code=400)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("console: %s %s failed", request.method, request.url.path, exc_info=exc)
    return _error_page(
        request,
        500,
        "Internal error",
        "The console failed to answer this request; the hub's log says why.",
    )


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    if request.headers.get("hx-request"):
        return Response(message, status_code=status, media_type="text/plain")
    return render(request, "error.html", {"title": title, "message": message}, status=status)


def _wants_page(request: Request) -> bool:
    """A full page asked for by a browser (a GET that is not an htmx fragment)."""
    return request.method in ("GET", "HEAD") and not request.headers.get("hx-request")


def host_allowed(header: str, hosts: frozenset[str]) -> bool:
    """``header`` (a ``Host`` value, port optional) names loopback or one of ``hosts``."""
    found = _HOST.fullmatch(header)
    if found is None:
        return False
    name = found.group(1).lower()
    return name in LOOPBACK_HOSTS or name in hosts


class _HostCheck:
    """Pure ASGI middleware refusing (421, before any route) a request whose ``Host`` is not
    a name this console serves: a hostile page rebinding its own DNS name to 127.0.0.1
    would otherwise be same-origin with the console."""

    def __init__(self, app: ASGIApp, context: ConsoleContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hosts = [v for k, v in scope.get("headers", []) if k == b"host"]
            header = hosts[0].decode("latin-1") if len(hosts) == 1 else ""
            if not host_allowed(header, self.context.hosts):
                response = Response(
                    "This console answers only to the addresses it serves (127.0.0.1, [::1], "
                    "localhost, or its configured name): open it by one of those.\n",
                    status_code=421,
                    media_type="text/plain",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _SessionUser:
    """Pure ASGI middleware reading the user of the request's session before the route
    (:func:`read_session_user`: the registry read off the event loop), so the handlers'
    :func:`current_user` never reads the registry on the loop."""

    def __init__(self, app: ASGIApp, context: ConsoleContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await read_session_user(self.context, scope)
        await self.app(scope, receive, send)


class _SecurityHeaders:
    """Pure ASGI middleware adding ``headers`` (and ``no-store`` outside ``/static/``) to
    every HTTP response, replacing any the application set."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        self.names = {k.encode() for k in headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in self.names
                ]
                headers.extend(self.headers)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

"""Rendering and errors shared by every console page.

:func:`render` fills a Jinja2 template (autoescaped: every value from the registry or the
request is text, never markup) with what every page needs: the user, the CSRF token, the
time it was rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from edge_agent.support.cli import utc_text
from hub.console.auth import console_context, current_user

__all__ = ["TEMPLATES_DIR", "environment", "render"]

TEMPLATES_DIR = Path(__file__).parent / "templates"


def environment() -> Environment:
    """The console's Jinja2 environment: autoescaped, undefined names an error."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html", "svg"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = _utc
    return env


def render(
    request: Request,
    template: str,
    values: Mapping[str, object] | None = None,
    *,
    status: int = 200,
) -> HTMLResponse:
    """``template`` filled with ``values`` plus ``user`` (``None`` when logged out),
    ``csrf`` (the session's token, ``""`` logged out), ``now`` and ``request``."""
    context = console_context(request)
    user = current_user(request)
    env: Environment = request.app.state.templates
    page = env.get_template(template).render(
        request=request,
        user=user,
        csrf="" if user is None else user.csrf,
        now=context.clock(),
        **(values or {}),
    )
    return HTMLResponse(page, status_code=status)


def _utc(seconds: int | None) -> str:
    """Unix seconds as ``YYYY-MM-DD HH:MM:SS UTC`` (``never`` for ``None``)."""
    return "never" if seconds is None else utc_text(seconds, "%Y-%m-%d %H:%M:%S UTC")

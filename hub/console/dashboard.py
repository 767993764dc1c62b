"""The health dashboard (``/``): the fleet at a glance, refreshed live by htmx."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.console.auth import console_context, require_viewer
from hub.console.render import render

__all__ = ["ROUTES"]


async def dashboard(request: Request) -> Response:
    """The dashboard page."""
    require_viewer(request)
    context = console_context(request)
    return render(request, "dashboard.html", {"devices": len(context.registry.devices())})


ROUTES = [Route("/", dashboard, methods=["GET"], name="dashboard")]

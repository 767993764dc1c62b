"""The health dashboard (``/``): the fleet at a glance.

The page renders everything server-side (it works without JavaScript); htmx replaces its
health section from ``/fragments/health`` every ``refresh_s`` seconds. Numbers come from
:func:`hub.console.health.fleet_health`: a device not heard from within the heartbeat window
counts as stale/unknown, never as its last reported state, and every count says how old the
reports behind it are.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.console.auth import console_context, require_viewer
from hub.console.health import FleetHealth, fleet_health
from hub.console.render import render

__all__ = ["ROUTES", "read_health"]


async def read_health(request: Request) -> FleetHealth:
    """The fleet's health now, read from the registry through its typed interface (on the
    console's registry gateway worker)."""
    context = console_context(request)
    now = context.clock()
    summary = await context.db(context.registry.fleet_summary, now, context.stale_after_s)
    return fleet_health(summary, now)


async def dashboard(request: Request) -> Response:
    """The dashboard page."""
    require_viewer(request)
    context = console_context(request)
    return render(
        request,
        "dashboard.html",
        {
            "health": await read_health(request),
            "refresh_s": context.refresh_s,
            "stale_after_s": context.stale_after_s,
        },
    )


async def health_fragment(request: Request) -> Response:
    """The dashboard's health section alone (what htmx swaps in on each refresh)."""
    require_viewer(request)
    context = console_context(request)
    return render(
        request,
        "_health.html",
        {"health": await read_health(request), "stale_after_s": context.stale_after_s},
    )


ROUTES = [
    Route("/", dashboard, methods=["GET"], name="dashboard"),
    Route("/fragments/health", health_fragment, methods=["GET"], name="health_fragment"),
]

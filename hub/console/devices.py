"""The devices list (``/devices``) and each device's page (``/devices/{device_id}``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.console.auth import console_context, require_viewer
from hub.console.errors import NotFound
from hub.console.render import render

__all__ = ["ROUTES"]


async def device_list(request: Request) -> Response:
    """Every registered device."""
    require_viewer(request)
    context = console_context(request)
    return render(request, "devices.html", {"rows": context.registry.fleet()})


async def device_page(request: Request) -> Response:
    """One device."""
    require_viewer(request)
    context = console_context(request)
    device_id = request.path_params["device_id"]
    device = context.registry.device(device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r} is registered")
    return render(request, "device.html", {"device": device})


ROUTES = [
    Route("/devices", device_list, methods=["GET"], name="devices"),
    Route("/devices/{device_id}", device_page, methods=["GET"], name="device"),
]

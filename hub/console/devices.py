"""The devices list (``/devices``) and each device's page (``/devices/{device_id}``).

The list filters by state (``?state=open``, ``stale``, ``never_seen`` ...) and region, a page
of :data:`PAGE_SIZE` at a time (keyset: ``?after=`` the last id shown). A
device page shows its state now (stale/unknown when not heard from within the heartbeat
window), a timeline of its status history as server-rendered SVG with the gaps the hub
heard nothing in drawn as unknown, the bundle it runs and should run, its last attestation
measurement by measurement against what its bundle expects, the revocations that apply to
it, its lineage head and shipping status, fork evidence and rejections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge_agent.errors import EdgeGovError
from hub.console.auth import console_context, require_viewer
from hub.console.context import ConsoleContext
from hub.console.errors import BadRequest, NotFound
from hub.console.health import (
    GATE_ORDER,
    UNKNOWN,
    MeasurementRow,
    Segment,
    applying_revocations,
    device_state,
    listened_channels,
    measurement_rows,
    target_version,
    timeline,
)
from hub.console.query import check_params
from hub.console.render import render
from hub.core.attestation_judging import recorded_bundle_view
from hub.registry import AttestationRecord, DeviceRecord

__all__ = ["MAX_DEVICE_ID", "PAGE_SIZE", "ROUTES", "TimelineView", "timeline_view"]

MAX_DEVICE_ID = 256
"""Longest device id a URL may name (a registered id is far shorter)."""
PAGE_SIZE = 200
"""Devices per page of the list (the next page starts after the last id shown)."""
MAX_HOURS = 24 * 14
"""Longest timeline a device page draws."""
_REGION = re.compile(r"[A-Za-z0-9._-]{1,64}")
SVG_WIDTH = 1000
SVG_BAR_Y = 8
SVG_BAR_HEIGHT = 36
TICKS = 6


@dataclass(frozen=True, slots=True)
class Bar:
    """One segment of the timeline drawn: its x and width (SVG units) and its label."""

    x: float
    width: float
    segment: Segment


@dataclass(frozen=True, slots=True)
class TimelineView:
    """A device's timeline ready to draw: bars over ``[start, end]`` and axis ticks."""

    start: int
    end: int
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, int], ...]
    width: int = SVG_WIDTH
    bar_y: int = SVG_BAR_Y
    bar_height: int = SVG_BAR_HEIGHT


def timeline_view(segments: list[Segment], start: int, end: int) -> TimelineView:
    """``segments`` (covering ``[start, end]``) scaled onto the SVG's width."""
    span = max(1, end - start)

    def x(at: int) -> float:
        return round((at - start) * SVG_WIDTH / span, 2)

    bars = tuple(Bar(x(s.start), round(x(s.end) - x(s.start), 2), s) for s in segments)
    ticks = tuple((x(at), at) for at in (start + span * i // TICKS for i in range(TICKS + 1)))
    return TimelineView(start, end, bars, ticks)


async def device_list(request: Request) -> Response:
    """The registered devices, a page at a time in id order (``after``: the last id of the
    page before), filtered by ``state`` and ``region`` when given."""
    require_viewer(request)
    context = console_context(request)
    check_params(request, ("state", "region", "after"))
    state = request.query_params.get("state") or None
    region = request.query_params.get("region") or None
    if state is not None and state not in GATE_ORDER:
        raise BadRequest(
            f"state {state[:64]!r} is not a state the console shows; use one of "
            + ", ".join(GATE_ORDER)
        )
    if region is not None and not _REGION.fullmatch(region):
        raise BadRequest("region: 1 to 64 letters, digits, '.', '_' or '-'")
    after = request.query_params.get("after", "")
    if len(after) > MAX_DEVICE_ID:
        raise BadRequest(f"after: a device id, at most {MAX_DEVICE_ID} characters")
    now = context.clock()
    page = await context.db(
        context.registry.console_devices,
        now=now,
        stale_after_s=context.stale_after_s,
        limit=PAGE_SIZE + 1,
        after=after,
        state=state,
        region=region,
    )
    rows = [(row, device_state(row, now, context.stale_after_s)) for row in page[:PAGE_SIZE]]
    following = None
    if len(page) > PAGE_SIZE:
        query = {"after": page[PAGE_SIZE - 1].device_id, "state": state, "region": region}
        following = "/devices?" + urlencode({k: v for k, v in query.items() if v})
    return render(
        request,
        "devices.html",
        {
            "rows": rows,
            "state": state,
            "region": region,
            "states": GATE_ORDER,
            "after": after,
            "following": following,
        },
    )


async def device_page(request: Request) -> Response:
    """One device, everything the hub knows about it."""
    require_viewer(request)
    context = console_context(request)
    device_id: str = request.path_params["device_id"]
    if len(device_id) > MAX_DEVICE_ID:
        raise BadRequest(f"a device id is at most {MAX_DEVICE_ID} characters")
    check_params(request, ("hours",))
    hours = _hours(request.query_params.get("hours"))
    return render(
        request, "device.html", await context.db(_device_values, context, device_id, hours)
    )


def _device_values(context: ConsoleContext, device_id: str, hours: int) -> dict[str, object]:
    """What the device page shows of ``device_id`` over the last ``hours``, read in one
    registry operation (on the console's registry gateway worker).

    Raises:
        NotFound: no such device is registered.
    """
    registry = context.registry
    device = registry.device(device_id)
    row = registry.console_device(device_id)
    if device is None or row is None:
        raise NotFound(f"no device {device_id!r} is registered")
    now = context.clock()
    start = now - hours * 3600
    segments = timeline(
        registry.status_history(device_id, start),
        start=start,
        now=now,
        stale_after_s=context.stale_after_s,
    )
    current = {(b.region, b.channel): b for b in registry.current_bundles(device.region)}
    attestation = registry.attestation(device_id)
    revocations = applying_revocations(
        registry.current_revocations(),
        region=device.region,
        device=device_id,
        groups=device.groups,
        bundle_version=row.bundle_version,
    )
    channels = set(listened_channels(device_id, device.groups))
    return {
        "device": device,
        "row": row,
        "state": device_state(row, now, context.stale_after_s),
        "stale_after_s": context.stale_after_s,
        "hours": hours,
        "timeline": timeline_view(segments, start, now),
        "unknown": UNKNOWN,
        "target": target_version(row, current),
        "bundles": [b for (_, c), b in sorted(current.items()) if c in channels],
        "attestation": attestation,
        "measurements": _measurements(context, device, attestation),
        "revocations": revocations,
        "lineage": registry.lineage_state(device_id),
        "forks": registry.forks(device_id),
        "rejections": registry.rejections(device_id),
    }


def _hours(text: str | None) -> int:
    if text is None or text == "":
        return 24
    if not text.isdigit() or not 1 <= int(text) <= MAX_HOURS:
        raise BadRequest(f"hours: a whole number of hours from 1 to {MAX_HOURS}")
    return int(text)


def _measurements(
    context: ConsoleContext, device: DeviceRecord, record: AttestationRecord | None
) -> list[MeasurementRow] | str:
    """``record``'s measurements against the expectations of the bundle it was judged
    under; a sentence instead when they cannot be read."""
    if record is None:
        return "this device has never attested"
    expectations = None
    if record.bundle_digest is not None:
        data = context.registry.bundle_data(record.bundle_digest)
        if data is None:
            return "the bundle this attestation was judged under is not recorded at this hub"
        try:
            view = recorded_bundle_view(data, root=context.keys().root)
        except EdgeGovError as exc:
            return f"the expectations cannot be read: {exc}"
        if view.problem is not None:
            return view.problem
        expectations = view.expectations
    return measurement_rows(record, expectations, device.profile)


ROUTES = [
    Route("/devices", device_list, methods=["GET"], name="devices"),
    Route("/devices/{device_id:path}", device_page, methods=["GET"], name="device"),
]

"""The operator audit log (``/audit``): every governance action the console carried out, who
asked, what, when and how it ended, newest first.

Paged by id (``?before=ID``, keyset: a page costs the same anywhere in the log); the link to
the next page carries the last id shown. Viewers may read it: it is the record of what
operators did, and changes nothing.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.console.auth import console_context, require_viewer
from hub.console.errors import BadRequest
from hub.console.query import check_params
from hub.console.render import render

__all__ = ["PAGE_SIZE", "ROUTES"]

PAGE_SIZE = 50
MAX_ID_DIGITS = 19


async def audit_page(request: Request) -> Response:
    """One page of the audit log, newest first."""
    require_viewer(request)
    check_params(request, ("before",))
    before_text = request.query_params.get("before", "")
    before = None
    if before_text:
        if not before_text.isdigit() or len(before_text) > MAX_ID_DIGITS:
            raise BadRequest("before must be an audit entry id (a whole number)")
        before = int(before_text)
    context = console_context(request)
    entries = await context.db(context.registry.audit_log, before=before, limit=PAGE_SIZE + 1)
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    return render(
        request,
        "audit.html",
        {
            "entries": entries,
            "next_before": entries[-1].id if more else None,
            "paged": before is not None,
        },
    )


ROUTES: list[BaseRoute] = [Route("/audit", audit_page, methods=["GET"], name="audit")]

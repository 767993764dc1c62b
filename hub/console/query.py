"""Query-string checks shared by the console's GET pages: every parameter a page takes is
validated by the page, and any other (unknown, or one given twice) is refused with a
sentence, so a URL never carries something silently ignored."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

from starlette.requests import Request

from hub.console.errors import BadRequest

__all__ = ["check_params"]


def check_params(request: Request, allowed: Collection[str]) -> None:
    """Refuse ``request`` if its query string has a parameter not in ``allowed`` or one
    given more than once.

    Raises:
        BadRequest: naming the parameters and what the page takes.
    """
    counts = Counter(name for name, _ in request.query_params.multi_items())
    unknown = sorted(name for name in counts if name not in allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) if allowed else "no parameters"
        named = ", ".join(name[:40] for name in unknown[:5])
        raise BadRequest(f"unknown parameter {named}: this page takes {takes}")
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise BadRequest(f"{', '.join(repeated)} given more than once: give each once")

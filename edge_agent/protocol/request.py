"""What a workload asks to do: the request the gate decides and the lineage records.

Shared by the policy engine (which decides it), the lineage entry format (which stores it)
and the socket wire format, so it lives in the shared core as plain fields.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Request"]


@dataclass(frozen=True, slots=True)
class Request:
    """What a workload asks to do.

    ``context`` holds sorted ``(key, value)`` pairs; ``selectors`` are kernel-derived
    identities such as ``uid:1001`` or ``exe:/opt/x``.
    """

    subject: str
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    selectors: tuple[str, ...] = ()

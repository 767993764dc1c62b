"""The receipt formats the hub issues, apart from the code that issues them: the
``edge-hub lineage receipt --format`` choices are built on every ``edge-hub`` start."""

from __future__ import annotations

__all__ = ["FORMATS"]

FORMATS = ("cose", "tlog-proof")
"""The receipt formats: the COSE transparent statement and the C2SP tlog-proof text."""

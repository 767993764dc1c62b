"""What the benchmarks read of another process from ``/proc``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["process_cpu_s"]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads; not its reaped
    children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime: fields 14 and 15 of proc(5), 11 and 12 after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

"""Durations as policies and command lines write them (``30s``, ``15m``, ``24h``, ``7d``).

Apart from the policy reader (:mod:`edge_agent.policy.source`, which imports PyYAML) so that a
command line parses its duration options without it.
"""

from __future__ import annotations

import re

__all__ = ["MAX_DURATION_SECONDS", "parse_duration"]

MAX_DURATION_SECONDS = 3650 * 86_400
"""Longest duration accepted (ten years)."""

_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> int:
    """Parse a duration such as ``30s``, ``15m``, ``24h`` or ``7d`` into seconds.

    One positive integer and one unit (s, m, h, d); no spaces, signs or fractions.

    Raises:
        ValueError: any other shape, zero, or more than ``MAX_DURATION_SECONDS``.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(
            f"duration {text!r} must be a whole number followed by s, m, h or d (e.g. '24h')"
        )
    digits = match.group(1).lstrip("0")
    # Past 9 significant digits any unit is over the limit; never convert a huge number.
    seconds = int(digits or "0") * _UNIT_SECONDS[match.group(2)] if len(digits) <= 9 else None
    if seconds == 0:
        raise ValueError(f"duration {text!r} must be longer than zero")
    if seconds is None or seconds > MAX_DURATION_SECONDS:
        raise ValueError(
            f"duration {text!r} is longer than the maximum of "
            f"{MAX_DURATION_SECONDS // 86_400}d ({MAX_DURATION_SECONDS} s)"
        )
    return seconds

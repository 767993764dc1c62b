"""Reading a firmware profile file on the device.

The profile format and its validation are shared with the hub
(``edge_agent.protocol.firmware_profile``); this module only reads the file, bounded.
"""

from __future__ import annotations

from pathlib import Path

from edge_agent.protocol.firmware_profile import MAX_PROFILE_BYTES, Profile, parse_profile
from edge_agent.support.cli import read_bounded

__all__ = ["load_profile"]


def load_profile(path: Path) -> Profile:
    """Read and validate the profile at ``path``.

    Raises:
        ConfigError: unreadable, too large, not TOML, or not a valid profile (the message
            names the field).
    """
    return parse_profile(read_bounded(path, MAX_PROFILE_BYTES, "the firmware profile"), str(path))

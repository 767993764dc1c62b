"""The firmware profile names a device may be registered with (``edge-hub device add``, the
console's register action): the profiles edgegov ships and those a hub directory adds for
device classes of its own (``HUB_DIR/firmware_profiles/NAME.toml``). A device is enrolled
with its profile's name (``edge-agent init --profile``) and bundles target profiles by name,
so a name no profile has (a typo) would register a device no bundle reaches as intended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from hub.hubdir.layout import HubDir

__all__ = ["PROFILE_DIR", "SHIPPED_PROFILES", "check_profile", "known_profiles"]

SHIPPED_PROFILES = ("generic-arm64", "generic-armhf", "generic-x86_64", "raspberry-pi-4")
"""The firmware profiles edgegov ships (``firmware_profiles/*.toml``, installed on devices
as ``/etc/edge-agent/firmware_profiles``)."""
PROFILE_DIR = "firmware_profiles"
"""Where a hub directory keeps the profiles of device classes of its own (``NAME.toml``)."""


def known_profiles(hub: HubDir) -> list[str]:
    """The profile names a device may be registered with: the shipped ones and those of
    ``HUB_DIR/firmware_profiles/*.toml``, sorted."""
    own = hub.path / PROFILE_DIR
    names = set(SHIPPED_PROFILES)
    if own.is_dir():
        names.update(p.stem for p in own.glob("*.toml") if p.is_file())
    return sorted(names)


def check_profile(hub: HubDir, profile: str) -> None:
    """Refuse a profile name no device can be enrolled with.

    Raises:
        ConfigError: ``profile`` is not a known profile (the message lists them).
    """
    known = known_profiles(hub)
    if profile not in known:
        raise ConfigError(
            f"unknown firmware profile {profile!r}: known profiles are {', '.join(known)} "
            f"(a device class of your own: put its NAME.toml in {hub.path / PROFILE_DIR})"
        )

"""Every Debian architecture the agent is packaged for has a firmware profile of its CPU.

A profile's ``architecture`` is the kernel's ``uname -m``; the .deb names the Debian
architecture. The two must line up (``x86_64`` is amd64, ``aarch64`` arm64, ``armv7l``
armhf), or a device installs a package for which no shipped profile lets the agent start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.attest.profile import load_profile
from tests.arm_emulation import TARGETS

PROFILES = Path(__file__).resolve().parent.parent / "firmware_profiles"
# Debian architecture -> `uname -m` (the packages: `make package [ARCH=arm64|armhf]`).
DEBIAN_TO_MACHINE = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l"}


@pytest.mark.parametrize("debian", sorted(DEBIAN_TO_MACHINE))
def test_each_packaged_architecture_has_a_shipped_profile(debian: str) -> None:
    machines = {load_profile(path).architecture for path in PROFILES.glob("*.toml")}
    assert DEBIAN_TO_MACHINE[debian] in machines


@pytest.mark.parametrize("debian", sorted(TARGETS))
def test_the_emulated_target_uses_the_profile_of_its_cpu(debian: str) -> None:
    _, machine, profile = TARGETS[debian]
    assert machine == DEBIAN_TO_MACHINE[debian]
    assert load_profile(PROFILES / f"{profile}.toml").architecture == machine

"""Helpers for attestation tests: a fixture device root, a small profile, expectations.

:func:`make_root` lays out the files a test profile measures under a temporary directory (a
fake agent binary and config, ``/etc/os-release`` copied from this machine or invented,
``/etc/machine-id``, ``/proc`` facts), so a test can tamper with them without touching the
system. :func:`expectations_for` builds the ``attestation`` map a bundle carries from a
measurement, as ``edge-hub attest expect`` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edge_agent.attest.measure import MeasurementSet
from edge_agent.protocol.expectations import expectations_value
from edge_agent.protocol.firmware_profile import Profile, parse_profile
from hub.cli.attest import build_expectations

PROFILE_TOML = """\
name = "{name}"
architecture = "x86_64"
reattest_interval_s = {interval}
heartbeat_interval_s = 1

[[measure]]
name = "agent-binary"
file = "/opt/edge-agent/edge-agent"

[[measure]]
name = "agent-config"
file = "/etc/edge-agent/agent.toml"

[[measure]]
name = "os-release"
file = "/etc/os-release"

[[measure]]
name = "kernel-release"
fact = "kernel_release"

[[measure]]
name = "machine-id"
fact = "machine_id"
scope = "device"
"""

MACHINE_ID = "0123456789abcdef0123456789abcdef"


def small_profile(interval: int = 1, name: str = "generic-x86_64") -> Profile:
    return parse_profile(PROFILE_TOML.format(name=name, interval=interval).encode(), "test")


def write_profile(path: Path, interval: int = 1, name: str = "generic-x86_64") -> Path:
    path.write_text(PROFILE_TOML.format(name=name, interval=interval))
    return path


def make_root(root: Path, machine_id: str = MACHINE_ID) -> Path:
    """A fixture device root holding every file the test profile (and the facts) read."""
    files = {
        "opt/edge-agent/edge-agent": b"\x7fELF fake agent binary\n" * 64,
        "etc/edge-agent/agent.toml": b"[sync]\nstatus_interval_s = 30\n",
        "etc/machine-id": f"{machine_id}\n".encode(),
        "proc/sys/kernel/osrelease": b"6.1.0-test-amd64\n",
        "proc/cmdline": b"BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n",
        "proc/device-tree/model": b"Raspberry Pi 4 Model B Rev 1.5\x00",
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os_release = root / "etc/os-release"
    if Path("/etc/os-release").is_file():
        shutil.copyfile("/etc/os-release", os_release)
    else:
        os_release.write_text('ID=debian\nVERSION_ID="12"\n')
    return root


def expectations_for(profile: Profile, measured: dict[str, MeasurementSet]) -> dict[str, object]:
    """The bundle ``attestation`` map accepting exactly these devices' measurements."""
    expectations = build_expectations(
        profile, [(device, m.digests) for device, m in measured.items()]
    )
    return expectations_value(expectations)

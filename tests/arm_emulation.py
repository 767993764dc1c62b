"""The packaged ARM agents and their Debian userlands, run on this x86 machine under qemu-user.

``make package ARCH=arm64`` (packaging/foreign-arch.sh) builds the .deb inside an arm64 Debian
userland cached in ``build/foreign/<arch>/rootfs``. The emulated tests use both:

- :func:`emulated_agent` unpacks the .deb as dpkg would and runs its agent through the
  kernel's binfmt_misc qemu handler, with the userland as the emulator's library root
  (``QEMU_LD_PREFIX``: the target's dynamic loader and glibc);
- :func:`userland_python` runs a Python script with the userland's own CPython and the build
  venv the package was frozen from (the same interpreter, cbor2, PyNaCl and OpenSSL the
  onedir carries, which has no interpreter of its own to run a script with), chrooted there.

Either skips, naming the command to run, when the package, the userland or the emulator is
missing. ``/proc/PID/exe`` of an emulated process is the emulator, so emulated tests name
their workloads by ``uid:`` only, never ``exe:``.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent import __version__

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 120
# Debian architecture -> (binfmt_misc handler, `uname -m` under it, firmware profile).
TARGETS = {
    "arm64": ("qemu-aarch64", "aarch64", "generic-arm64"),
    "armhf": ("qemu-arm", "armv7l", "generic-armhf"),
}
# Where packaging/foreign-arch.sh copies the sources and packaging/build.sh keeps its venv,
# inside the userland.
USERLAND_WORK = "/build/edgegov"
USERLAND_PYTHON = f"{USERLAND_WORK}/build/venv/bin/python"


@dataclass(frozen=True)
class EmulatedAgent:
    """The packaged agent of one foreign architecture, unpacked and runnable here."""

    arch: str
    machine: str
    profile: str
    binary: Path
    userland: Path

    def command(self, *args: str) -> list[str]:
        """The command line that runs the agent with ``args``, in a clean environment."""
        environment = ["env", "-i", "PATH=/nonexistent", f"QEMU_LD_PREFIX={self.userland}"]
        return [*environment, str(self.binary), *args]

    def run(self, cwd: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == expect, (self.arch, args, result.stdout, result.stderr)
        return result


def _userland(arch: str) -> Path:
    handler = TARGETS[arch][0]
    userland = ROOT / "build" / "foreign" / arch / "rootfs"
    if not (userland / "usr" / "bin").is_dir():
        pytest.skip(f"no {arch} userland: run `make package ARCH={arch}`")
    status = Path("/proc/sys/fs/binfmt_misc") / handler
    if not status.is_file() or "enabled" not in status.read_text().splitlines():
        pytest.skip(f"no enabled {handler} binfmt_misc handler: run `make package ARCH={arch}`")
    return userland


def emulated_agent(arch: str, unpack_to: Path) -> EmulatedAgent:
    """The .deb of ``arch`` unpacked into ``unpack_to``; skips when it cannot run here."""
    _, machine, profile = TARGETS[arch]
    deb = ROOT / "dist" / f"edge-agent_{__version__}_{arch}.deb"
    if not deb.is_file():
        pytest.skip(f"no {arch} package: run `make package ARCH={arch}`")
    userland = _userland(arch)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpack_to)], check=True)
    binary = unpack_to / "opt" / "edge-agent" / "edge-agent"
    return EmulatedAgent(arch, machine, profile, binary, userland)


def userland_python(
    arch: str, script: str, files: dict[str, bytes], *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with the ``arch`` userland's build venv, chrooted, from the package's
    source tree (so ``edge_agent`` is the one the package was built from). ``files`` are
    written into a scratch directory inside the userland, which ``args`` may name by
    ``{scratch}``; it is removed afterwards. Skips when the userland cannot run here."""
    userland = _userland(arch)
    if not (userland / USERLAND_PYTHON.lstrip("/")).exists():
        pytest.skip(f"no {arch} build venv: run `make package ARCH={arch}`")
    scratch = f"/tmp/edgegov-{uuid.uuid4().hex}"
    host_scratch = userland / scratch.lstrip("/")
    host_scratch.mkdir(parents=True)
    try:
        for name, data in files.items():
            (host_scratch / name).write_bytes(data)
        (host_scratch / "script.py").write_text(script)
        inner = ["env", "-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", f"PYTHONPATH={USERLAND_WORK}"]
        command = [USERLAND_PYTHON, f"{scratch}/script.py"]
        command += [a.replace("{scratch}", scratch) for a in args]
        return subprocess.run(
            ["chroot", str(userland), *inner, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        shutil.rmtree(host_scratch)

"""The systemd units: they verify clean, score 2.0 or lower, and keep the promised settings.

No systemd runs as PID 1 here, so ``systemd-analyze`` works offline: ``verify`` against a
scratch root holding a copy of this machine's units and a stub at the unit's ExecStart path,
``security --offline=yes`` on the unit file. What the units' seccomp settings do
(SystemCallFilter=, RestrictAddressFamilies=, MemoryDenyWriteExecute=) is tried for real with
``packaging/run-confined.py``, which loads the same kernel filters: here against a probe and
the hub's Python stack, in tests/test_packaging.py against the built agent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system_tools import require

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
CONFINE = ROOT / "packaging" / "run-confined.py"
EXAMPLE_POLICY = ROOT / "examples" / "policy.yaml"
HOST_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
MAX_EXPOSURE = 2.0
UNIT_NAMES = ["edge-agent.service", "edge-hub.service"]


def _settings(unit: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (keys may repeat)."""
    section, found = "", []
    for raw in (UNITS / unit).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def _service(unit: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for section, key, value in _settings(unit):
        if section == "Service":
            values.setdefault(key, []).append(value)
    return values


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    analyze = require("systemd-analyze", "systemd")
    return subprocess.run([analyze, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("unit", UNIT_NAMES)
def test_unit_verifies_without_a_single_warning(unit: str, tmp_path: Path) -> None:
    host_units = next(d for d in HOST_UNIT_DIRS if (d / "sysinit.target").exists())
    unit_dir = tmp_path / "usr/lib/systemd/system"
    shutil.copytree(host_units, unit_dir, symlinks=True)
    shutil.copy(UNITS / unit, unit_dir / unit)
    executable = Path(_service(unit)["ExecStart"][0].split()[0])
    stub = tmp_path / executable.relative_to("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)

    result = _analyze("verify", f"--root={tmp_path}", "--man=no", unit)
    assert (result.returncode, result.stderr) == (0, "")


def test_verify_in_a_scratch_root_does_report_a_broken_unit(tmp_path: Path) -> None:
    host_units = next(d for d in HOST_UNIT_DIRS if (d / "sysinit.target").exists())
    unit_dir = tmp_path / "usr/lib/systemd/system"
    shutil.copytree(host_units, unit_dir, symlinks=True)
    broken = (UNITS / "edge-agent.service").read_text().replace("NoNewPrivileges", "NoNewPriv")
    (unit_dir / "edge-agent.service").write_text(broken)

    result = _analyze("verify", f"--root={tmp_path}", "--man=no", "edge-agent.service")
    assert "Unknown key 'NoNewPriv'" in result.stderr
    assert "/opt/edge-agent/edge-agent is not executable" in result.stderr


@pytest.mark.parametrize("unit", UNIT_NAMES)
def test_unit_exposure_score_is_at_most_two(unit: str) -> None:
    result = _analyze("security", "--offline=yes", "--no-pager", str(UNITS / unit))
    assert result.returncode == 0, result.stderr
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout


def test_agent_unit_is_notify_with_watchdog_and_restarts_always() -> None:
    service = _service("edge-agent.service")
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["Restart"] == ["always"]
    assert service["WatchdogSec"] and service["WatchdogSec"] != ["0"]
    assert service["ExecStart"] == [
        "/opt/edge-agent/edge-agent run --state-dir /var/lib/edge-agent "
        "--config /etc/edge-agent/agent.toml"
    ]
    assert ("Unit", "StartLimitIntervalSec", "0") in _settings("edge-agent.service")


@pytest.mark.parametrize("unit", UNIT_NAMES)
def test_unit_hardening_the_issue_asks_for(unit: str) -> None:
    service = _service(unit)
    name = unit.removesuffix(".service")
    expected = {
        "User": [name],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "StateDirectory": [name],
        "CapabilityBoundingSet": [""],
        "AmbientCapabilities": [""],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "MemoryDenyWriteExecute": ["yes"],
        "SystemCallArchitectures": ["native"],
    }
    for key, value in expected.items():
        assert service.get(key) == value, key
    assert service["SystemCallFilter"][0] == "@system-service"


def test_agent_unit_owns_its_runtime_directory_for_the_socket() -> None:
    service = _service("edge-agent.service")
    assert service["RuntimeDirectory"] == ["edge-agent"]
    assert service["StateDirectoryMode"] == ["0700"]
    assert "PrivateUsers" not in service
    assert "ProtectProc" not in service


_PROBE = """
import mmap, os, socket
def outcome(call):
    try:
        call()
    except PermissionError:
        return "refused"
    except OSError as exc:
        return f"errno{exc.errno}"
    return "ok"
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)
print(
    outcome(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)),
    outcome(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC)),
    outcome(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)),
    outcome(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()),
    outcome(lambda: socket.socket(socket.AF_INET6).close()),
    outcome(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close()),
    outcome(lambda: os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0))),
    outcome(lambda: os.setgroups(os.getgroups())),
)
"""


@pytest.mark.parametrize("unit", UNIT_NAMES)
def test_confinement_refuses_what_the_unit_forbids_and_nothing_it_needs(unit: str) -> None:
    result = subprocess.run(
        [sys.executable, str(CONFINE), str(UNITS / unit), sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == [
        "ok",  # plain memory
        "ok",  # read-only code
        "refused",  # writable and executable: MemoryDenyWriteExecute=
        "ok",  # AF_UNIX
        "ok",  # AF_INET6
        "refused",  # AF_NETLINK: RestrictAddressFamilies=
        "refused",  # setpriority: ~@resources
        "refused",  # setgroups: ~@privileged
    ]


def test_hub_python_stack_works_confined_as_its_unit(tmp_path: Path) -> None:
    hub = [sys.executable, str(CONFINE), str(UNITS / "edge-hub.service")]
    hub += [sys.executable, "-m", "hub.cli.main"]
    keys, bundle = str(tmp_path / "keys"), str(tmp_path / "b.cbor")
    steps = [
        ["keys", "init", "--out", keys],
        ["bundle", "build", str(EXAMPLE_POLICY), "--keys", keys, "--version", "1", "--out", bundle],
        ["bundle", "inspect", bundle, "--root", f"{keys}/root.cbor"],
    ]
    for step in steps:
        result = subprocess.run(
            [*hub, *step], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, (step, result.stderr)

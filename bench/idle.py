"""Idle-memory and cold-start probe: ``edge-agent run`` with an unreachable broker.

The agent a user installs starts, tells systemd it is ready (``READY=1`` on
``$NOTIFY_SOCKET``) and then sits idle while it retries a broker it cannot reach. This probe
measures what such an agent costs a device, as systemd would see it:

- cold start: from just before ``exec`` of ``edge-agent run`` until its ``READY=1`` datagram
  arrives on a notify socket this probe binds (the agent is enrolled with a real signed
  trust root and the shipped ``generic-x86_64`` firmware profile, which it loads and
  measures at start; no bundle is installed, as on a freshly enrolled device);
- idle memory: ``VmRSS`` (with its ``RssAnon`` / ``RssFile`` split) and ``VmHWM`` from
  ``/proc/PID/status`` ``--settle`` seconds (default 3) after ``READY=1``.

The broker is ``127.0.0.1`` on a port nothing listens on, so every connection attempt is
refused at once and the agent stays in its reconnect loop. By default the development
venv's ``edge-agent`` runs (through setuptools' editable-install finder); ``--agent PATH``
measures another build of the same command line, for example the PyInstaller build in
``dist/edge-agent/edge-agent`` (``make package``), which is the figure users compare.

Each run is a fresh process on a fresh state directory; the table gives the median with
[min-max] over ``--repeat`` runs (default 5, ``--quick`` 2) and the load average, since the
machine may be shared.

Usage: python bench/idle.py [--quick] [--repeat N] [--settle S] [--agent PATH]
"""

# ruff: noqa: E402  (the path fix below must run before the project imports)
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tests.factory import HubSim

REPO = Path(__file__).resolve().parents[1]
DEFAULT_AGENT = Path(sys.executable).parent / "edge-agent"
PROFILE = "generic-x86_64"
UNREACHABLE_BROKER = "mqtt://127.0.0.1:9"
"""The discard port: nothing listens on it here, so every connection is refused at once."""
READY_TIMEOUT_S = 30.0
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


@dataclass(frozen=True, slots=True)
class Sample:
    ready_ms: float
    memory_kib: dict[str, int]


def enrol(agent: Path, state: Path, temp: Path) -> None:
    """A freshly enrolled device: a real signed root, no bundle, an unreachable broker."""
    root = temp / "root.cbor"
    root.write_bytes(HubSim().root_bytes())
    subprocess.run(
        [
            str(agent),
            "init",
            "--state-dir",
            str(state),
            "--device-id",
            "gw-idle",
            "--root",
            str(root),
            "--region",
            "eu-1",
            "--group",
            "line-a",
            "--profile",
            PROFILE,
            "--broker",
            UNREACHABLE_BROKER,
        ],
        check=True,
        capture_output=True,
    )


def device_root(agent: Path, temp: Path) -> Path:
    """What the shipped profile measures, as on a packaged gateway: the agent installed as
    /opt/edge-agent (a frozen ``agent``'s own directory, else ``dist/edge-agent``, else the
    development venv's launcher and the agent's sources), its agent.toml, the profile,
    /etc/os-release, /etc/machine-id and /proc. Returns that agent.toml, which points
    ``[attestation]`` at this root."""
    installed = agent.resolve().parent
    if not (installed / "_internal").is_dir():
        installed = REPO / "dist" / "edge-agent"
    root = temp / "device"
    profiles = root / "etc/edge-agent/firmware_profiles"
    profiles.mkdir(parents=True)
    (root / "opt").mkdir()
    if installed.is_dir():
        (root / "opt/edge-agent").symlink_to(installed.resolve())
    else:
        # No frozen build: the development venv's launcher and the agent's sources stand in
        # for the binary and its libraries (the same kind and about the same count of files).
        (root / "opt/edge-agent").mkdir()
        (root / "opt/edge-agent/edge-agent").symlink_to(agent.resolve())
        (root / "opt/edge-agent/_internal").symlink_to((REPO / "edge_agent").resolve())
    (root / "proc").symlink_to("/proc")
    shutil.copyfile(REPO / "firmware_profiles" / f"{PROFILE}.toml", profiles / f"{PROFILE}.toml")
    for name in ("os-release", "machine-id"):
        shutil.copyfile(Path("/etc") / name, root / "etc" / name)
    config = root / "etc/edge-agent/agent.toml"
    config.write_text(f'[attestation]\nprofile_dir = "{profiles}"\nmeasure_root = "{root}"\n')
    return config


def memory(pid: int) -> dict[str, int]:
    """The ``STATUS_FIELDS`` of ``/proc/PID/status``, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in STATUS_FIELDS:
            values[key] = int(rest.split()[0])
    return values


def wait_ready(notify: socket.socket, agent: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise SystemExit(f"edge-agent run exited with {agent.returncode} before READY=1")
        notify.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
        try:
            message = notify.recv(4096).decode()
        except TimeoutError:
            continue
        if any(line == "READY=1" for line in message.splitlines()):
            return
    raise SystemExit(f"edge-agent run sent no READY=1 within {READY_TIMEOUT_S:.0f} s")


def probe(agent: Path, settle: float) -> Sample:
    with tempfile.TemporaryDirectory(prefix="edgegov-idle-") as name:
        temp = Path(name)
        state = temp / "state"
        enrol(agent, state, temp)
        config = device_root(agent, temp)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(temp / "notify"))
            env = dict(os.environ, NOTIFY_SOCKET=str(temp / "notify"))
            command = [str(agent), "run", "--state-dir", str(state), "--socket", "agent.sock"]
            command += ["--config", str(config)]
            began = time.perf_counter()
            process = subprocess.Popen(
                command, cwd=temp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                wait_ready(notify, process)
                ready_ms = (time.perf_counter() - began) * 1e3
                time.sleep(settle)
                if process.poll() is not None:
                    raise SystemExit(f"edge-agent run exited with {process.returncode} when idle")
                return Sample(ready_ms, memory(process.pid))
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def spread(values: Sequence[float], fmt: str) -> str:
    return (
        f"{format(statistics.median(values), fmt)} "
        f"[{format(min(values), fmt)}-{format(max(values), fmt)}]"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 runs")
    parser.add_argument("--repeat", type=int, help="runs (default 5, quick 2)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle after READY=1")
    parser.add_argument("--agent", type=Path, default=DEFAULT_AGENT, help="edge-agent to run")
    args = parser.parse_args(argv)
    repeats = args.repeat or (2 if args.quick else 5)
    samples = [probe(args.agent, args.settle) for _ in range(repeats)]
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n### edge-agent run, broker unreachable ({args.agent})\n")
    print(f"median [min-max] over {repeats} run(s); load average {load}\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| exec to READY=1, ms | {spread([s.ready_ms for s in samples], '.0f')} |")
    for field in STATUS_FIELDS:
        mib = [s.memory_kib.get(field, 0) / 1024 for s in samples]
        when = "peak" if field == "VmHWM" else f"{args.settle:g} s after READY=1"
        print(f"| {field} MiB ({when}) | {spread(mib, '.1f')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

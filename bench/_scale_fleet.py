"""A fleet over two bridged site brokers: push-to-installed and revocation times, per-agent cost.

A central Mosquitto (the hub's broker) and two site Mosquittos on ports of 127.0.0.1, each
site bridged to the central one with the bridge settings and topic lines of
packaging/mosquitto/site.conf (MQTT 3.1.1 bridge mode, persistent session); plain TCP and
anonymous logins on loopback, where the shipped configs use TLS and passwords (the tests in
tests/test_bridged_sites.py run those in namespaces). ``edge-hub serve`` connects to the
central broker; half the agents (bench/fleet.py's simulated agents, in worker processes) to
each site broker, so every push and revocation crosses a bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench.fleet import (
    AgentWorker,
    HubProcess,
    _ask_all,
    _enrol,
    _pct,
    _push,
    _revoke,
    _stage_table,
)
from edge_agent.protocol.limits import MAX_PACKET_BYTES
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.support.mqtt import connect as mqtt_connect
from hub.hubdir.layout import HubDir
from tests.brokers import MOSQUITTO, free_port, require_mosquitto
from tests.hub_support import make_hub_dir

__all__ = ["FleetFigures", "bridged_fleet"]

SITE_CONF = Path(__file__).resolve().parents[1] / "packaging" / "mosquitto" / "site.conf"
SITES = ("site-a", "site-b")
WORKERS_PER_SITE = 2
"""Agent processes per site: a file descriptor budget (each agent holds its socket and its
SQLite files) as much as the cores."""
BRIDGE_WAIT_S = 30.0


@dataclass(frozen=True)
class FleetFigures:
    agents: int
    enrol_s: float
    connect_s: float
    rss_mib: float
    """The agent worker processes' resident memory, all of them."""
    broker_rss_mib: dict[str, float]
    """Each broker's resident memory with every agent connected."""
    push: list[float]
    revoke: list[float]
    stages: list[dict[str, float]]
    """Each revocation's stages (bench/fleet.py's ``--stages``)."""

    def report(self) -> str:
        push, revoke = self.push, self.revoke
        return "\n".join(
            [
                "| agents | push p50 s | push p99 s | push max s | revoke p50 ms | "
                "revoke p99 ms | revoke max ms |",
                "|---|---|---|---|---|---|---|",
                f"| {self.agents:,} | {statistics.median(push):.2f} | {_pct(push, 0.99):.2f} | "
                f"{max(push):.2f} | {statistics.median(revoke) * 1000:.0f} | "
                f"{_pct(revoke, 0.99) * 1000:.0f} | {max(revoke) * 1000:.0f} |",
                f"per agent: enrolment {self.enrol_s / self.agents * 1000:.1f} ms, start and "
                f"connect {self.connect_s / self.agents * 1000:.1f} ms, agent-process memory "
                f"{self.rss_mib * 1024 / self.agents:.0f} KiB",
                "broker resident memory, all agents connected: "
                + ", ".join(f"{name} {mib:.1f} MiB" for name, mib in self.broker_rss_mib.items())
                + f" ({self.agents // 2:,} agents per site broker)",
                "revocation stages, ms since the stage before, median [p99] (bench/fleet.py):",
                _stage_table([("bridged", self.agents, self.stages)]),
            ]
        )


def _bridge_lines() -> list[str]:
    """The shipped site config's bridge settings and topics, minus what names a place or a
    login (moved to loopback here)."""
    text = SITE_CONF.read_text().split("connection edgegov-central", 1)[1]
    keep = (
        "bridge_protocol_version",
        "try_private",
        "cleansession",
        "start_type",
        "restart_timeout",
        "bridge_max_packet_size",
        "notifications",
        "topic ",
    )
    return [line for line in text.splitlines() if line.startswith(keep)]


def _config(workdir: Path, port: int, bridge_to: int | None, name: str) -> Path:
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence false",
        f"max_packet_size {MAX_PACKET_BYTES}",
        "max_queued_messages 10000",
        "max_inflight_messages 20",
        f"log_dest file {workdir / (name + '.log')}",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    if bridge_to is not None:
        lines += [
            "connection edgegov-central",
            f"address 127.0.0.1:{bridge_to}",
            f"remote_clientid {name}",
            f"local_clientid edgegov-bridge-{name}",
            "keepalive_interval 30",
            *_bridge_lines(),
        ]
    path = workdir / f"{name}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"mosquitto on port {port} did not listen")


async def _bridge_up(port: int) -> None:
    """Wait for a site broker's bridge notification (state 1)."""
    settings = BrokerSettings("127.0.0.1", port)
    async with mqtt_connect(settings, client_id=f"bench-bridge-{port}") as connection:
        await connection.subscribe(["$SYS/broker/connection/+/state"])
        async with asyncio.timeout(BRIDGE_WAIT_S):
            async for message in connection.messages():
                if message.payload == b"1":
                    return


@contextlib.asynccontextmanager
async def _brokers(workdir: Path) -> AsyncIterator[tuple[str, list[str], dict[str, int]]]:
    """The central broker's URL, the site brokers' URLs, all running and bridged, and each
    broker's pid by name."""
    require_mosquitto()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        central = free_port()
        ports = {"central": (central, None)} | {site: (free_port(), central) for site in SITES}
        for name, (port, bridge_to) in ports.items():
            process = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(_config(workdir, port, bridge_to, name))],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(process)
            await _listening(port, process)
        for site in SITES:
            await _bridge_up(ports[site][0])
        yield (
            f"mqtt://127.0.0.1:{central}",
            [f"mqtt://127.0.0.1:{ports[s][0]}" for s in SITES],
            {name: p.pid for name, p in zip(ports, processes, strict=True)},
        )
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _rss_mib(pid: int | None) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def bridged_fleet(agents: int, revocations: int) -> FleetFigures:
    """Run ``agents`` agents over two bridged sites; push once, revoke ``revocations``
    devices spread over the fleet one at a time."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="edgegov-scale-fleet-") as tmp:
        work = Path(tmp)
        async with _brokers(work) as (central, sites, pids):
            setup = make_hub_dir(work / "hub", devices=())
            started = time.monotonic()
            device_ids = _enrol(work, setup.path, agents)
            enrol_s = time.monotonic() - started
            hub = HubProcess(setup.path, central)
            hub.start()
            shares = len(sites) * WORKERS_PER_SITE
            started = time.monotonic()
            workers = [
                AgentWorker(work, device_ids[index::shares], sites[index % len(sites)])
                for index in range(shares)
            ]
            try:
                await _ask_all(workers, ("connected",))
                connect_s = time.monotonic() - started
                rss = sum(_rss_mib(w.process.pid) for w in workers)
                broker_rss = {name: _rss_mib(pid) for name, pid in pids.items()}
                push = await _push(HubDir(setup.path), central, workers)
                await _ask_all(workers, ("acked",))
                step = max(1, agents // revocations)
                revoke, stages = await _revoke(
                    HubDir(setup.path), central, workers, device_ids[::step][:revocations]
                )
            finally:
                for worker in workers:
                    worker.close()
                hub.stop()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return FleetFigures(agents, enrol_s, connect_s, rss, broker_rss, push, revoke, stages)

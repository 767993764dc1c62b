"""Thin simulated agents over two bridged site brokers: push-to-installed and revocation at
fleet size (10,000), with what each real device adds measured beside it.

bench/fleet.py's agents are whole ``AgentDaemon``s (SQLite state, lineage, an aiomqtt
client): about 1 MB and 90 ms each to set up, so this 2-core machine holds ~1,000. A *thin*
agent here is what a device does on the wire and nothing else:

- its own MQTT 3.1.1 session to its site broker (raw asyncio, as bench/_scale_fanout.py's
  subscribers), client id its device id, clean session, its signed "offline" status as
  last will; subscribed at QoS 1 to exactly :func:`edge_agent.protocol.topics.agent_subscriptions`;
- its own Ed25519 device key, registered in the hub's registry (every device in one
  transaction) exactly as ``edge-hub device add`` registers one;
- on a bundle: the agent's own verification (``verify_bundle``: size, COSE signatures,
  threshold, schema, signer authorisation; then ``check_targeting`` and
  ``check_admission``), on its own bytes, every agent for itself; then its signed status
  naming the new version, retained at QoS 1, which the hub verifies and records;
- on a freshness token: ``verify_freshness``; on a revocation: ``verify_revocation`` (every
  agent verifies every revocation, as a real one must), and the revoked device publishes
  its status; a signed heartbeat status every ``HEARTBEAT_S`` as a real agent does.

What a thin agent does not do is timed on real ``LocalAgent``s in this process, on the same
bytes (:func:`real_install_costs`): compiling the policy, the state commit, the lineage
entry of the transition (bundle, revocation), and the device directory a real agent
verifies and keeps (thin agents receive it, unread). A real device's figure is the measured
one plus its own install cost: both are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import resource
import socket
import sqlite3
import statistics
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import cast

from bench._proc import process_cpu_s
from bench._scale_fanout import _packet, _text
from bench._scale_fleet import _brokers, _rss_mib
from bench.fleet import HubProcess, _now, _pct
from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.errors import EdgeGovError
from edge_agent.protocol import topics
from edge_agent.protocol.bundle import (
    DeviceIdentity,
    InstalledRef,
    check_admission,
    check_targeting,
    verify_bundle,
)
from edge_agent.protocol.freshness import verify_freshness
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.revocation import RevocationKind, verify_revocation
from edge_agent.protocol.root import TrustRoot, verify_trusted_root
from edge_agent.protocol.shipping import DeviceStatus, sign_status
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.trust.gate import GATE_OPEN, Reason
from hub.cli.fabric import prepare_push, prepare_revocation
from hub.hubdir.layout import HubDir
from hub.registry import DeviceRecord
from hub.registry.backends import open_registry
from hub.service.publish import publish_once
from tests.hub_support import make_bundle, make_hub_dir

__all__ = ["ThinFigures", "real_install_costs", "thin_fleet"]

REGION = "eu-1"
GROUPS = ("line-a",)
PROFILE = "generic-x86_64"
CONNECT_BATCH = 200
CONNECT_RETRIES_S = (0.2, 0.5, 1.0, 2.0, 4.0)
"""Waits before connecting again after a refused or reset connection, as an agent backs off
(a loaded broker resets some of a burst of connections)."""
HEARTBEAT_S = 30.0
"""A real agent's default status interval (``SyncConfig.status_interval_s``)."""
KEEPALIVE_S = 60
FRESHNESS_INTERVAL = "10s"
"""``edge-hub serve``'s default: every agent verifies one token per interval, which the
5 s of bench/fleet.py would double on the two cores the simulated fleet shares."""
POLL_S = 0.05
"""How often the bench reads the hub's registry for devices recorded as installed."""
TIMEOUT_S = 300.0
REAL_SAMPLES = 20
"""Real agents whose install path is timed, per object."""


def device_id(index: int) -> str:
    return f"thin-{index:05d}"


def device_key(index: int) -> PrivateKey:
    """Device ``index``'s key, derived so the bench and the worker holding it agree without
    passing 10,000 keys around (a real device generates its own at ``init``)."""
    return PrivateKey(hashlib.sha256(f"edgegov-bench-thin-{index}".encode()).digest())


def register(hub_dir: Path, count: int) -> None:
    """Register ``count`` thin devices in the hub's registry in one transaction."""
    with open_registry(hub_dir / "hub.db") as registry, registry.write_group():
        for index in range(count):
            registry.add_device(
                DeviceRecord(device_id(index), REGION, GROUPS, PROFILE, device_key(index).public)
            )


# --- the worker process ------------------------------------------------------------------


SO_TIMESTAMPNS = 35
"""Linux's socket option (``SO_TIMESTAMPNS_OLD``, the same number on x86-64 and arm64) that
has each read report when the kernel received the data: ``socket`` does not name it."""
TIMESTAMP_SPACE = socket.CMSG_SPACE(16)
READ_BYTES = 65536


class ThinAgent:
    """One device's MQTT session and its verification of what arrives (module docstring).

    It reads its socket itself (``recvmsg``) to learn when each read's data reached the
    device's socket: the kernel's receive time, before the worker's loop, busy with the
    other simulated agents of its process, got to it. A real device has its own CPU, so
    that time plus its own install is what it would see."""

    def __init__(self, index: int, root: TrustRoot, ready: asyncio.Future[None]) -> None:
        self.key = device_key(index)
        self.identity = DeviceIdentity(device_id(index), REGION, GROUPS, PROFILE)
        self.root, self.ready = root, ready
        self.status_topic = topics.device_topic(
            REGION, self.identity.device_id, topics.DeviceLeaf.STATUS
        )
        self.directory_topic = topics.directory_topic(REGION)
        self.buffer = bytearray()
        self.skip = 0
        self.packet_id = 0
        self.installed: InstalledRef | None = None
        self.expires_at: int | None = None
        self.gate = GATE_OPEN
        self.installed_at: float | None = None
        self.verified: dict[str, tuple[float, float]] = {}
        """Revocation topic -> when this agent verified it and when the read that brought it
        reached its socket (monotonic)."""
        self.refused = 0
        self.arrived = 0.0
        """When the data being handled reached the socket (monotonic)."""
        self.out = bytearray()

    def attach(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        """Start the session on the connected, non-blocking ``sock``."""
        self.loop, self.sock = loop, sock
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        loop.add_reader(sock.fileno(), self._readable)
        will = sign_status(self._status(online=False), self.key)
        flags = 0x02 | 0x04 | 0x08 | 0x20  # clean session, will at QoS 1, retained
        connect = _text("MQTT") + bytes([4, flags]) + KEEPALIVE_S.to_bytes(2, "big")
        connect += _text(self.identity.device_id) + _text(self.status_topic)
        connect += len(will).to_bytes(2, "big") + will
        self.write(_packet(0x10, connect))
        filters = topics.agent_subscriptions(REGION, self.identity.device_id, GROUPS)
        body = self._next_id() + b"".join(_text(f) + b"\x01" for f in filters)
        self.write(_packet(0x82, body))
        self.publish_status()

    def write(self, data: bytes) -> None:
        """Send ``data`` after whatever is still queued; what the socket does not take now
        goes when it is writable again; nothing once the session is lost."""
        if self.sock.fileno() < 0:
            return
        if not self.out:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._lost(exc)
                return
            data = data[sent:]
            if data:
                self.loop.add_writer(self.sock.fileno(), self._writable)
        self.out += data

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self.out[:sent]
        if not self.out:
            self.loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(READ_BYTES, TIMESTAMP_SPACE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        mono, real = time.monotonic(), time.time()
        self.arrived = mono
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", raw[:16])
                self.arrived = mono - max(0.0, real - (seconds + nanoseconds / 1e9))
        self.data_received(data)

    def _lost(self, exc: Exception | None) -> None:
        self.close()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.identity.device_id}: lost {exc}"))

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
            self.sock.close()

    def _next_id(self) -> bytes:
        self.packet_id = self.packet_id % 65535 + 1
        return self.packet_id.to_bytes(2, "big")

    def _status(self, *, online: bool) -> DeviceStatus:
        version = self.installed.version if self.installed else None
        return DeviceStatus(
            self.identity.device_id, _now(), online, version, self.expires_at, self.gate, 0, 0
        )

    def publish_status(self) -> None:
        """The signed status, retained at QoS 1, as ``AgentDaemon._publish_status`` sends it."""
        payload = sign_status(self._status(online=True), self.key)
        body = _text(self.status_topic) + self._next_id() + payload
        self.write(_packet(0x33, body))

    def ping(self) -> None:
        self.write(b"\xc0\x00")

    def data_received(self, data: bytes) -> None:
        if self.skip:
            if len(data) <= self.skip:
                self.skip -= len(data)
                return
            data, self.skip = data[self.skip :], 0
        buffer = self.buffer
        buffer += data
        position = 0
        while (header := _header(buffer, position)) is not None:
            kind, start, size = header
            end = start + size
            if end > len(buffer):
                if kind >> 4 == 3 and self._skip_directory(buffer, start, end):
                    position = len(buffer)
                break
            self._packet(kind, bytes(buffer[start:end]))
            position = end
        del buffer[:position]

    def _skip_directory(self, buffer: bytearray, start: int, end: int) -> bool:
        """Drop a device directory as it arrives (acknowledged, not buffered whole): at
        10,000 devices it is ~1 MB to every agent, which thin agents do not verify."""
        topic_end = start + 2 + int.from_bytes(buffer[start : start + 2], "big")
        if len(buffer) < topic_end + 2 or buffer[start + 2 : topic_end] != (
            self.directory_topic.encode()
        ):
            return False
        self.write(_packet(0x40, bytes(buffer[topic_end : topic_end + 2])))
        self.skip = end - len(buffer)
        return True

    def _packet(self, kind: int, body: bytes) -> None:
        if kind >> 4 == 9 and not self.ready.done():
            self.ready.set_result(None)
        if kind >> 4 != 3:
            return
        topic_end = 2 + int.from_bytes(body[:2], "big")
        topic = body[2:topic_end].decode()
        payload = body[topic_end:]
        if (kind >> 1) & 3:
            self.write(_packet(0x40, payload[:2]))
            payload = payload[2:]
        if payload:
            self.handle(topic, payload)

    def handle(self, topic: str, payload: bytes) -> None:
        """What the agent's verification does with one trust object; a refusal is counted."""
        kind = topic.split("/")[3]
        try:
            if kind == "bundle":
                self._bundle(payload)
            elif kind == "fresh":
                verify_freshness(payload, root=self.root, region=REGION, now=_now())
            elif kind == "revoke":
                self._revocation(topic, payload)
        except EdgeGovError:
            self.refused += 1

    def _bundle(self, payload: bytes) -> None:
        verified = verify_bundle(payload, root=self.root, region=REGION)
        check_targeting(verified, self.identity)
        verified = check_admission(verified, self.installed, _now())
        if verified.unchanged:
            return
        self.installed = InstalledRef(verified.version, verified.digest)
        self.expires_at = verified.expires_at
        self.installed_at = time.monotonic()
        self.publish_status()

    def _revocation(self, topic: str, payload: bytes) -> None:
        revocation = verify_revocation(payload, root=self.root, region=REGION)
        self.verified[topic] = (time.monotonic(), self.arrived)
        if revocation.kind is RevocationKind.DEVICE and (
            revocation.value == self.identity.device_id
        ):
            self.gate = str(Reason.REVOKED)
            self.publish_status()


def _header(buffer: bytearray, position: int) -> tuple[int, int, int] | None:
    """The packet at ``position``: its first byte, where its body starts, its body's size."""
    size, shift, index = 0, 0, position + 1
    while True:
        if index >= len(buffer):
            return None
        byte = buffer[index]
        size, shift, index = size | (byte & 0x7F) << shift, shift + 7, index + 1
        if not byte & 0x80:
            return buffer[position], index, size


WORKER_NICE = 19
"""The simulated fleet runs at the lowest priority: a real device computes on its own CPU,
so the simulation takes only what the brokers and the hub, the system under test, leave."""


def _worker_main(url: str, first: int, count: int, root: bytes, pipe: Pipe) -> None:
    os.nice(WORKER_NICE)
    asyncio.run(_worker(url, first, count, root, pipe))


async def _worker(url: str, first: int, count: int, root_bytes: bytes, pipe: Pipe) -> None:
    """Agents ``first`` .. ``first + count - 1`` on the broker at ``url``, answering the
    bench's commands over ``pipe``."""
    settings = BrokerSettings.from_url(url)
    root = verify_trusted_root(root_bytes, now=None)
    loop = asyncio.get_running_loop()
    agents: list[ThinAgent] = []

    async def one(index: int) -> None:
        for delay in CONNECT_RETRIES_S:
            ready: asyncio.Future[None] = loop.create_future()
            agent = ThinAgent(index, root, ready)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (settings.host, settings.port))
                agent.attach(loop, sock)
                await asyncio.wait_for(ready, 60)
            except OSError:
                sock.close()
                await asyncio.sleep(delay)
                continue
            agents.append(agent)
            return
        raise ConnectionError(f"{device_id(index)} could not connect to {url}")

    for start in range(first, first + count, CONNECT_BATCH):
        await asyncio.gather(
            *(one(i) for i in range(start, min(first + count, start + CONNECT_BATCH)))
        )
    beats = asyncio.create_task(_heartbeats(agents))
    pipe.send("ready")
    try:
        while (command := await loop.run_in_executor(None, pipe.recv))[0] != "close":
            pipe.send(await _answer(command, agents))
    finally:
        beats.cancel()
        for agent in agents:
            agent.close()


async def _heartbeats(agents: list[ThinAgent]) -> None:
    """Each agent's signed status every ``HEARTBEAT_S``, spread evenly; a ping alongside
    keeps the session alive as the agent's client does."""
    while True:
        for agent in agents:
            await asyncio.sleep(HEARTBEAT_S / len(agents))
            agent.publish_status()
            agent.ping()


async def _answer(command: tuple[str, ...], agents: list[ThinAgent]) -> object:
    kind = command[0]
    if kind == "installed":
        await _until(lambda: all(a.installed_at is not None for a in agents))
        return [a.installed_at for a in agents], sum(a.refused for a in agents)
    if kind == "revoked":
        topic = command[1]
        await _until(lambda: all(topic in a.verified for a in agents))
        return {a.identity.device_id: a.verified[topic] for a in agents}
    raise ValueError(f"unknown command {kind!r}")


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("thin agents did not all see it")
        await asyncio.sleep(0.01)


# --- the bench ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RealCosts:
    """Real ``LocalAgent`` install times, ms per install (one fresh agent each), and the
    thin agent's verification of the same bytes: what a real device adds is the difference."""

    bundle: list[float]
    bundle_thin: list[float]
    revocation: list[float]
    revocation_thin: list[float]
    directory: list[float]
    directory_bytes: int

    @staticmethod
    def _cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"

    def added(self, real: list[float], thin: list[float]) -> float:
        """The most a real device adds to one install, ms (slowest real minus fastest thin)."""
        return max(real) - min(thin)

    def report(self) -> str:
        return "\n".join(
            [
                "real agent install path, ms, median [min-max] over "
                f"{len(self.bundle)} fresh LocalAgents (this process, same bytes):",
                "| object | real install | thin agent's verification | real adds, max |",
                "|---|---|---|---|",
                f"| bundle | {self._cell(self.bundle)} | {self._cell(self.bundle_thin)} | "
                f"{self.added(self.bundle, self.bundle_thin):.2f} |",
                f"| revocation | {self._cell(self.revocation)} | "
                f"{self._cell(self.revocation_thin)} | "
                f"{self.added(self.revocation, self.revocation_thin):.2f} |",
                f"| device directory ({self.directory_bytes:,} bytes, at connect) | "
                f"{self._cell(self.directory)} | not read | {max(self.directory):.2f} |",
            ]
        )


@dataclass(frozen=True)
class ThinFigures:
    agents: int
    workers: int
    connect_s: float
    push_hub: list[float]
    """Push start to the hub's registry showing each device on the new version, s."""
    push_agent: list[float]
    """Push start to each agent's verified install, s."""
    revoke_target: list[float]
    """Each revocation's start to the revoked agent's verification, s."""
    revoke_arrival: list[float]
    """Each revocation's start to its reaching the revoked agent's socket (the kernel's
    receive time), s: the hub's and the brokers' part, without the simulation's queueing
    behind the other agents of the worker process (a real device has its own CPU)."""
    revoke_first: list[float]
    """Each revocation's start to the first agent of the fleet verifying it, s: the hub and
    the brokers' part with one verification, none of the simulation's queueing."""
    revoke_last: list[float]
    """Each revocation's start to the last agent of the fleet verifying it, s."""
    refused: int
    rss_mib: dict[str, float]
    cpu_s: dict[str, float]
    """CPU seconds during the push (push start to the hub recording the last device)."""
    push_window_s: float
    load: str
    real: RealCosts

    def report(self) -> str:
        hub, agent = self.push_hub, self.push_agent
        added_push = self.real.added(self.real.bundle, self.real.bundle_thin) / 1000
        added_revoke = self.real.added(self.real.revocation, self.real.revocation_thin) / 1000
        return "\n".join(
            [
                "| measured at | push p50 s | push p99 s | push max s | real device max s |",
                "|---|---|---|---|---|",
                f"| hub registry | {statistics.median(hub):.2f} | {_pct(hub, 0.99):.2f} | "
                f"{max(hub):.2f} | {max(hub) + added_push:.2f} |",
                f"| agent | {statistics.median(agent):.2f} | {_pct(agent, 0.99):.2f} | "
                f"{max(agent):.2f} | {max(agent) + added_push:.2f} |",
                "",
                "| revocation, to | p50 ms | p99 ms | max ms | real device p99 ms |",
                "|---|---|---|---|---|",
                self._revoke_row("the first agent", self.revoke_first, added_revoke),
                self._revoke_row("the revoked agent", self.revoke_target, added_revoke),
                self._revoke_row(
                    "the revoked agent's socket",
                    self.revoke_arrival,
                    max(self.real.revocation) / 1000,
                ),
                "(real device: the thin agent's figure plus the most a real install adds; from "
                "its socket, plus the slowest whole real install)",
                self._revoke_row("the last agent", self.revoke_last, added_revoke),
                f"objects refused by thin agents: {self.refused}; connect and subscribe "
                f"{self.connect_s:.1f} s ({self.workers} worker processes)",
                "resident memory, every agent connected: "
                + ", ".join(f"{name} {mib:.1f} MiB" for name, mib in self.rss_mib.items()),
                f"CPU s over the push's {self.push_window_s:.1f} s: "
                + ", ".join(f"{name} {s:.2f}" for name, s in self.cpu_s.items()),
                f"load average after the push: {self.load}",
                self.real.report(),
            ]
        )

    def _revoke_row(self, what: str, values: list[float], added: float) -> str:
        return (
            f"| {what} | {statistics.median(values) * 1000:.0f} | "
            f"{_pct(values, 0.99) * 1000:.0f} | {max(values) * 1000:.0f} | "
            f"{(_pct(values, 0.99) + added) * 1000:.0f} |"
        )

    def push_max_real_s(self) -> float:
        return max(self.push_hub) + self.real.added(self.real.bundle, self.real.bundle_thin) / 1000

    def revoke_p99_real_s(self) -> float:
        """The revoked device's p99 to deny as a device with its own CPU sees it: the
        revocation reaching its socket, then the slowest real install measured."""
        return _pct(self.revoke_arrival, 0.99) + max(self.real.revocation) / 1000


class _Workers:
    """The thin agents' worker processes, ``per_site`` on each site broker."""

    def __init__(self, sites: list[str], agents: int, per_site: int, root: bytes) -> None:
        context = multiprocessing.get_context("spawn")
        shares = len(sites) * per_site
        self.pipes: list[Pipe] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        first = 0
        for index in range(shares):
            count = agents // shares + (1 if index < agents % shares else 0)
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(sites[index % len(sites)], first, count, root, child),
                daemon=True,
            )
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)
            first += count

    async def started(self) -> None:
        """Wait until every worker has its agents connected and subscribed."""
        loop = asyncio.get_running_loop()
        for pipe in self.pipes:
            if await loop.run_in_executor(None, pipe.recv) != "ready":
                raise RuntimeError("a thin agent worker did not start")

    async def ask(self, *command: str) -> list[object]:
        loop = asyncio.get_running_loop()
        for pipe in self.pipes:
            pipe.send(command)
        replies = [await loop.run_in_executor(None, pipe.recv) for pipe in self.pipes]
        return replies

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("close",))
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


async def _hub_installed(db: Path, version: int, count: int) -> dict[str, float]:
    """When the hub's registry first showed each device on bundle ``version`` (monotonic),
    read every ``POLL_S`` until all ``count`` are."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + TIMEOUT_S
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        while len(seen) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the hub recorded {len(seen)} of {count} devices installed")
            rows = connection.execute(
                "SELECT device FROM status WHERE bundle_version = ?", (version,)
            ).fetchall()
            now = time.monotonic()
            for (device,) in rows:
                seen.setdefault(device, now)
            await asyncio.sleep(POLL_S)
    return seen


async def _statuses_recorded(db: Path, count: int) -> None:
    """Wait until the hub has recorded every agent's first status (the connect burst is over
    before the push starts)."""
    deadline = time.monotonic() + TIMEOUT_S
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        while connection.execute("SELECT count(*) FROM status").fetchone()[0] < count:
            if time.monotonic() > deadline:
                raise TimeoutError("the hub did not record every agent's first status")
            await asyncio.sleep(0.2)


async def thin_fleet(agents: int, revocations: int, per_site: int) -> ThinFigures:
    """Run ``agents`` thin agents over two bridged sites; push once, then revoke
    ``revocations`` devices spread over the fleet one at a time."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        with tempfile.TemporaryDirectory(prefix="edgegov-scale-thin-") as tmp:
            return await _run(Path(tmp), agents, revocations, per_site)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _run(work: Path, agents: int, revocations: int, per_site: int) -> ThinFigures:
    async with _brokers(work) as (central, sites, pids):
        setup = make_hub_dir(work / "hub", devices=())
        hub_dir = HubDir(setup.path)
        db = setup.path / "hub.db"
        register(setup.path, agents)
        hub = HubProcess(setup.path, central, freshness_interval=FRESHNESS_INTERVAL)
        hub.start()
        assert hub.process is not None
        started = time.monotonic()
        workers = _Workers(sites, agents, per_site, (hub_dir.keys / "root.cbor").read_bytes())
        try:
            await workers.started()
            await _statuses_recorded(db, agents)
            connect_s = time.monotonic() - started
            named = {"hub": hub.process.pid} | pids
            named |= {f"worker-{i}": p.pid or 0 for i, p in enumerate(workers.processes)}
            rss = {name: _rss_mib(pid) for name, pid in named.items()}
            before = {name: process_cpu_s(pid) for name, pid in named.items()}
            data = make_bundle(hub_dir.keys, 1)
            start = time.monotonic()
            _, publications = prepare_push(hub_dir, data, now=_now())
            await publish_once(BrokerSettings.from_url(central), publications)
            installed = asyncio.ensure_future(workers.ask("installed"))
            at_hub = await _hub_installed(db, 1, agents)
            window = time.monotonic() - start
            cpu = {name: process_cpu_s(pid) - before[name] for name, pid in named.items()}
            load = Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
            replies = cast(list[tuple[list[float], int]], await installed)
            push_agent = [t - start for times, _ in replies for t in times]
            refused = sum(n for _, n in replies)
            step = max(1, agents // revocations)
            targets = [device_id(i) for i in range(0, agents, step)][:revocations]
            revoke_target, revoke_arrival, revoke_first, revoke_last = [], [], [], []
            revoked_bytes: list[bytes] = []
            for target in targets:
                begin = time.monotonic()
                _, publications = prepare_revocation(
                    hub_dir,
                    (RevocationKind.DEVICE, target),
                    region=None,
                    reason="bench",
                    now=_now(),
                )
                await publish_once(BrokerSettings.from_url(central), publications)
                published = next(p for p in publications if "/revoke/" in p.topic)
                revoked_bytes.append(published.payload)
                seen: dict[str, tuple[float, float]] = {}
                for reply in await workers.ask("revoked", published.topic):
                    seen.update(reply)  # type: ignore[call-overload]
                verified = [at for at, _ in seen.values()]
                revoke_target.append(seen[target][0] - begin)
                revoke_arrival.append(seen[target][1] - begin)
                revoke_first.append(min(verified) - begin)
                revoke_last.append(max(verified) - begin)
        finally:
            workers.close()
            hub.stop()
        with open_registry(db) as registry:
            issued = registry.directory(REGION)
        assert issued is not None
        real = real_install_costs(work, hub_dir, data, revoked_bytes, issued.data)
    return ThinFigures(
        agents,
        len(workers.processes),
        connect_s,
        [at_hub[device_id(i)] - start for i in range(agents)],
        push_agent,
        revoke_target,
        revoke_arrival,
        revoke_first,
        revoke_last,
        refused,
        rss,
        cpu,
        window,
        load,
        real,
    )


def _fresh_agents(work: Path, hub_dir: HubDir, count: int) -> Iterator[LocalAgent]:
    """``count`` real agents of the thin agents' region and group, each in its own new
    state directory (default lineage settings: a real device's)."""
    root = (hub_dir.keys / "root.cbor").read_bytes()
    for index in range(count):
        path = work / "real" / f"real-{index:03d}"
        path.parent.mkdir(exist_ok=True)
        identity = DeviceIdentity(f"real-{index:03d}", REGION, GROUPS, PROFILE)
        init_state_dir(path, identity, root, _now())
        agent = LocalAgent.open(path)
        try:
            yield agent
        finally:
            agent.close()


def real_install_costs(
    work: Path, hub_dir: HubDir, bundle: bytes, revocations: list[bytes], directory: bytes
) -> RealCosts:
    """Time the real install path (``LocalAgent.install_bundle``, ``install_revocation``,
    ``install_directory``: verify, compile, commit, lineage) on fresh agents, against the
    thin agent's verification of the same bytes."""
    root = verify_trusted_root((hub_dir.keys / "root.cbor").read_bytes(), now=None)
    identity = DeviceIdentity("real-thin", REGION, GROUPS, PROFILE)
    times: dict[str, list[float]] = {}

    def timed(name: str, action: Callable[[], object]) -> None:
        began = time.perf_counter()
        action()
        times.setdefault(name, []).append((time.perf_counter() - began) * 1000)

    def thin_bundle() -> None:
        verified = verify_bundle(bundle, root=root, region=REGION)
        check_targeting(verified, identity)
        check_admission(verified, None, _now())

    for index, agent in enumerate(_fresh_agents(work, hub_dir, REAL_SAMPLES)):
        revocation = revocations[index % len(revocations)]
        timed("bundle", lambda: agent.install_bundle(bundle, _now()))  # noqa: B023
        timed("bundle_thin", thin_bundle)
        timed("revocation", lambda: agent.install_revocation(revocation, _now()))  # noqa: B023
        timed(
            "revocation_thin",
            lambda: verify_revocation(revocation, root=root, region=REGION),  # noqa: B023
        )
        timed("directory", lambda: agent.install_directory(directory, _now()))  # noqa: B023
    return RealCosts(
        times["bundle"],
        times["bundle_thin"],
        times["revocation"],
        times["revocation_thin"],
        times["directory"],
        len(directory),
    )

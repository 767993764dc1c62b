"""Fleet benchmark: push, revocation and lineage ingest with N agents, on Mosquitto and amqtt.

Each run starts a broker in its own process (Mosquitto, or amqtt as ``edge-hub serve``
embeds it), the hub as a separate ``edge-hub serve --broker`` process, and N real agents
(``AgentDaemon`` over ``LocalAgent``: SQLite state, verified installs, durable lineage)
shared out over ``WORKERS`` agent processes, one event loop each (as many as the machine
has cores; a fleet's devices work in parallel). Measured:

Agents record the moment a verified install swapped their trust state, so the figures are
install times, not the time a poll noticed them (the agents of one process still wait for
each other's verification and writes, which a fleet of real devices does in parallel).

- push: from the start of the hub's push operation (verify as a device would, record,
  publish the bundle and fresh tokens: what ``edge-hub bundle push`` does after Python has
  started) until each agent has verified and installed the bundle (p50 / p99 / max);
- revocation: from the start of the hub's revoke operation (sign, record, publish) until
  that device's gate denies (p50 / p99 over ``--revocations`` devices spread evenly over
  the fleet, one at a time, starting once the push's lineage is acknowledged). Every agent
  receives and verifies every revocation (it must see every kill epoch), so the revoked
  device waits for the agents its process handles before it. Each revocation is split in
  stages (``--stages`` prints them, the JSON has them): the hub's sign and record, its
  publish until the broker's PUBACK, the broker to the revoked agent's loop taking the
  message, verification, the gate denying, and the state commit returning; with how many
  agents of its process took the revocation before it;
- ingest: the agents stop, every agent decides ``--decisions`` times and signs the batches
  it would ship (device-side work, done by each device in parallel in a real fleet, so
  outside the clock); then one publisher sends every batch at once, resending as a device
  does what stays unacknowledged (``resent`` counts it), and the clock runs until the hub
  has verified, stored and acknowledged every entry (the signed acks are counted by a
  subscriber): the hub's verified entries per second (one hub process). The agents'
  own shipping and resending is covered by the tests; here they would only measure a
  thousand simulated devices sharing this process's core.

Usage: python bench/fleet.py [--agents 100,1000] [--brokers mosquitto,amqtt] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import ClassVar

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

import edge_agent.agent  # noqa: E402
from edge_agent.agent import LocalAgent, init_state_dir  # noqa: E402
from edge_agent.errors import EdgeGovError  # noqa: E402
from edge_agent.lineage.log import LineageConfig  # noqa: E402
from edge_agent.protocol import topics  # noqa: E402
from edge_agent.protocol.bundle import DeviceIdentity  # noqa: E402
from edge_agent.protocol.request import Request  # noqa: E402
from edge_agent.protocol.revocation import Revocation, RevocationKind  # noqa: E402
from edge_agent.protocol.shipping import LineageBatch, sign_batch, verify_ack  # noqa: E402
from edge_agent.support.mqtt import BrokerSettings, Incoming  # noqa: E402
from edge_agent.support.mqtt import Connection as MqttConnection  # noqa: E402
from edge_agent.support.mqtt import connect as mqtt_connect  # noqa: E402
from edge_agent.sync.config import SyncConfig  # noqa: E402
from edge_agent.sync.daemon import MAX_ACK_BACKOFF, AgentDaemon  # noqa: E402
from edge_agent.trust.gate import Reason  # noqa: E402
from edge_agent.trust.machine import Outcome, Refused, accept_revocation  # noqa: E402
from edge_agent.trust.state import TrustState  # noqa: E402
from hub.cli.fabric import prepare_push, prepare_revocation  # noqa: E402
from hub.hubdir.layout import HubDir  # noqa: E402
from hub.registry import DeviceRecord  # noqa: E402
from hub.registry.backends import open_registry  # noqa: E402
from hub.service.publish import publish_once  # noqa: E402
from tests.brokers import free_port, mosquitto_broker  # noqa: E402
from tests.hub_support import make_bundle, make_hub_dir  # noqa: E402

BIN = Path(sys.executable).parent
REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")
SYNC = SyncConfig(
    status_interval_s=60,
    ship_interval_s=0.5,
    ack_timeout_s=2,
    reconnect_initial_s=0.2,
    reconnect_max_s=2,
    keepalive_s=60,
)
LINEAGE = LineageConfig(synchronous="NORMAL")
"""The simulated agents share one disk; the hub's ingest, not their fsyncs, is measured."""
TIMEOUT_S = 300.0
WORKERS = 2
"""Agent processes (the machine's cores); the hub and the broker run in their own."""


def _now() -> int:
    return int(time.time())


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


AMQTT_BROKER = """
import asyncio, sys
from hub.service.broker import EmbeddedBroker
async def main():
    broker = EmbeddedBroker("127.0.0.1", int(sys.argv[1]))
    await broker.start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


class AmqttProcess:
    """The embedded amqtt broker in a process of its own, so the hub can restart apart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-c", AMQTT_BROKER, str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the amqtt broker did not start")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class HubProcess:
    """``edge-hub serve`` as a subprocess (own CPU), against ``broker`` or its embedded one."""

    def __init__(
        self, hub_dir: Path, broker: str | None, port: int = 0, freshness_interval: str = "5s"
    ) -> None:
        self.hub_dir, self.broker, self.port = hub_dir, broker, port
        self.freshness_interval = freshness_interval
        self.process: subprocess.Popen[str] | None = None
        self.url = broker or ""

    def start(self) -> None:
        args = [
            str(BIN / "edge-hub"),
            "serve",
            "--hub-dir",
            str(self.hub_dir),
            "--freshness-interval",
            self.freshness_interval,
            "--token-ttl",
            "60s",
            "--device-rate",
            "1000",
        ]
        args += ["--broker", self.broker] if self.broker else ["--port", str(self.port)]
        log = (self.hub_dir / "serve.log").open("a")
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.process.stdout is not None
        banner = self.process.stdout.readline()
        if "broker " not in banner:
            raise RuntimeError(f"edge-hub serve did not start; see {self.hub_dir / 'serve.log'}")
        self.url = banner.split("broker ", 1)[1].split(" ", 1)[0]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        self.process = None


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def run_one(kind: str, agents: int, decisions: int, revocations: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="edgegov-fleet-") as tmp:
        work = Path(tmp)
        async with _broker(kind, work) as (broker_url, hub):
            return await _measure(work, hub, broker_url, agents, decisions, revocations)


@contextlib.asynccontextmanager
async def _broker(kind: str, work: Path) -> AsyncIterator[tuple[str, HubProcess]]:
    setup = make_hub_dir(work / "hub", devices=())
    if kind == "mosquitto":
        async with mosquitto_broker() as handle:
            hub = HubProcess(setup.path, handle.url)
            try:
                yield handle.url, hub
            finally:
                hub.stop()
        return
    amqtt = AmqttProcess()
    hub = HubProcess(setup.path, amqtt.url)
    try:
        yield amqtt.url, hub
    finally:
        hub.stop()
        amqtt.stop()


async def _measure(
    work: Path, hub: HubProcess, url: str, count: int, decisions: int, revocations: int
) -> dict[str, object]:
    device_ids = _enrol(work, hub.hub_dir, count)
    hub.start()
    hub_dir = HubDir(hub.hub_dir)
    workers = [AgentWorker(work, device_ids[index::WORKERS], url) for index in range(WORKERS)]
    try:
        await _ask_all(workers, ("connected",))
        push = await _push(hub_dir, url, workers)
        await _ask_all(workers, ("acked",))
        step = max(1, count // revocations)
        revoke, stages = await _revoke(hub_dir, url, workers, device_ids[::step][:revocations])
        await _ask_all(workers, ("acked",))
        ingest = await _ingest(url, workers, decisions)
    finally:
        for worker in workers:
            worker.close()
    return {"push": push, "revoke": revoke, "stages": stages, "ingest": ingest}


def _enrol(work: Path, hub_dir: Path, count: int) -> list[str]:
    root = (hub_dir / "keys" / "root.cbor").read_bytes()
    device_ids = []
    with open_registry(hub_dir / "hub.db") as registry:
        for index in range(count):
            device_id = f"gw-{index:04d}"
            identity = DeviceIdentity(device_id, "eu-1", ("line-a",), "generic-x86_64")
            public = init_state_dir(work / device_id, identity, root, _now())
            registry.add_device(
                DeviceRecord(device_id, "eu-1", ("line-a",), "generic-x86_64", public)
            )
            device_ids.append(device_id)
    return device_ids


class AgentWorker:
    """A process running a share of the agents on its own event loop, driven over a pipe:
    a fleet's devices decide in parallel, and one loop for a thousand agents would make each
    revoked device wait behind all the others."""

    def __init__(
        self,
        work: Path,
        device_ids: list[str],
        url: str,
        main: Callable[..., None] | None = None,
        extra: tuple[object, ...] = (),
    ) -> None:
        """Start the process: ``main(work, device_ids, url, pipe, *extra)``, by default this
        benchmark's worker."""
        self.device_ids = device_ids
        self.pipe, child = multiprocessing.Pipe()
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=main or _worker_main,
            args=(str(work), device_ids, url, child, *extra),
            daemon=True,
        )
        self.process.start()

    async def ask(self, *command: object) -> object:
        self.pipe.send(command)
        reply = await asyncio.get_running_loop().run_in_executor(None, self.pipe.recv)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.pipe.send(("close",))
        self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.kill()


async def _ask_all(workers: list[AgentWorker], command: tuple[object, ...]) -> list[object]:
    return list(await asyncio.gather(*(w.ask(*command) for w in workers)))


async def _push(hub: HubDir, url: str, workers: list[AgentWorker]) -> list[float]:
    data = make_bundle(hub.keys, 1)
    start = time.monotonic()
    _, publications = prepare_push(hub, data, now=_now())
    await publish_once(BrokerSettings.from_url(url), publications)
    installed = await _ask_all(workers, ("installed",))
    return [at - start for times in installed for at in times]  # type: ignore[attr-defined]


STAGES = ("signed", "published", "received", "verified", "denied", "recorded")
"""The moments of one revocation, in order: the hub signed and recorded it, the broker
acknowledged its publish, the revoked agent's loop took it, verified it, its gate denied,
and its state commit returned (monotonic seconds: one clock for every process here)."""


async def _revoke(
    hub: HubDir, url: str, workers: list[AgentWorker], targets: list[str]
) -> tuple[list[float], list[dict[str, float]]]:
    """Revoke each of ``targets`` in turn: the latency of each (start to deny) and its
    stages (seconds since its start; ``ahead``: agents of its process that took the
    revocation before it)."""
    latencies, stages = [], []
    for device_id in targets:
        worker = next(w for w in workers if device_id in w.device_ids)
        start = time.monotonic()
        _, publications = prepare_revocation(
            hub, (RevocationKind.DEVICE, device_id), region=None, reason="bench", now=_now()
        )
        signed = time.monotonic()
        await publish_once(BrokerSettings.from_url(url), publications)
        published = time.monotonic()
        moments = await worker.ask("revoked", device_id)
        assert isinstance(moments, dict)
        moments.update(signed=signed, published=published)
        latencies.append(moments["denied"] - start)
        split = {stage: moments[stage] - start for stage in STAGES}
        stages.append({**split, "ahead": moments["ahead"]})
    return latencies, stages


async def _ingest(url: str, workers: list[AgentWorker], decisions: int) -> dict[str, float]:
    """Publish every signed batch at once, then resend as a device does: a device whose
    acknowledged size has not moved for its patience (``SYNC.ack_timeout_s``, doubling up
    to ``MAX_ACK_BACKOFF`` times while it stays silent) gets its unacknowledged batches
    again. The hub drops what arrives while its bounded incoming queue is full (aiomqtt's
    queue is never trusted with lineage: devices keep it until acknowledged), so a
    publisher that never resends can wait for ever for what the hub shed."""
    broker = BrokerSettings.from_url(url)
    batches: dict[str, list[tuple[str, int, bytes]]] = {}
    targets: dict[str, int] = {}
    root = None
    for share in await _ask_all(workers, ("batches", decisions)):
        share_batches, share_targets, root = share  # type: ignore[misc]
        for device, batch in share_batches:
            batches.setdefault(device, []).append(batch)
        targets.update(share_targets)
    backlog = len(targets) * decisions
    acked: dict[str, int] = dict.fromkeys(targets, -1)
    pending = set(targets)
    done = asyncio.Event()
    progress: dict[str, float] = {}

    async def count_acks(subscribed: asyncio.Event) -> None:
        async with mqtt_connect(broker, client_id="bench-ack-counter") as connection:
            await connection.subscribe([f"{topics.PREFIX}/eu-1/device/+/ack"])
            subscribed.set()
            async for message in connection.messages():
                device = message.topic.split("/")[4]
                if device in pending:
                    ack = verify_ack(message.payload, root=root, device=device)
                    if ack.acked > acked[device]:
                        acked[device] = ack.acked
                        progress[device] = time.monotonic()
                    if ack.acked >= targets[device]:
                        pending.discard(device)
                        if not pending:
                            done.set()

    async def send(publisher: MqttConnection, sends: list[tuple[str, int, bytes]]) -> None:
        for begin in range(0, len(sends), 64):
            await asyncio.gather(
                *(publisher.publish(t, p, qos=1) for t, _, p in sends[begin : begin + 64])
            )

    subscribed = asyncio.Event()
    counter = asyncio.create_task(count_acks(subscribed))
    resent = 0
    try:
        await asyncio.wait_for(subscribed.wait(), 30)
        async with mqtt_connect(broker, client_id="bench-publisher") as publisher:
            start = time.monotonic()
            await send(publisher, [b for device in targets for b in batches[device]])
            deadline = start + TIMEOUT_S
            patience = dict.fromkeys(targets, SYNC.ack_timeout_s)
            progress.update(dict.fromkeys(targets, time.monotonic()))
            while not done.is_set():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(pending)} devices' lineage still unacknowledged")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.5)
                now = time.monotonic()
                silent = [d for d in pending if now - progress[d] > patience[d]]
                again = [b for d in silent for b in batches[d] if b[1] > acked[d]]
                for device in silent:
                    progress[device] = now
                    patience[device] = min(
                        patience[device] * 2, SYNC.ack_timeout_s * MAX_ACK_BACKOFF
                    )
                resent += len(again)
                await send(publisher, again)
            elapsed = time.monotonic() - start
    finally:
        await _stop([counter])
    return {"entries": backlog, "seconds": elapsed, "rate": backlog / elapsed, "resent": resent}


class TimedAgent(LocalAgent):
    """A LocalAgent that notes when a verified install swapped in a new bundle or a new
    revocation, so the bench times the install itself rather than a poll that runs late;
    and, for a revocation that applies, when it was taken, verified and recorded."""

    installed_at: float | None = None
    revoked_at: float | None = None
    received_at: float | None = None
    verified_at: float | None = None
    recorded_at: float | None = None
    ahead: int = 0
    """Agents of this process that took the same revocation before this one did."""

    def install_revocation(self, data: bytes, wall: int) -> Revocation | None:
        revocation = super().install_revocation(data, wall)
        if revocation is not None:
            self.recorded_at = time.monotonic()
            self.verified_at = _verified[0]
        return revocation

    @property  # type: ignore[override]
    def state(self) -> TrustState:
        return self._timed_state

    @state.setter
    def state(self, value: TrustState) -> None:
        old = getattr(self, "_timed_state", None)
        self._timed_state = value
        if old is not None and value.bundle is not old.bundle:
            self.installed_at = time.monotonic()
        if old is not None and len(value.revocations) > len(old.revocations):
            self.revoked_at = time.monotonic()


class TimedDaemon(AgentDaemon):
    """An AgentDaemon that notes when its loop takes each revocation, and how many agents
    of this process took the same one before it (``taken``, shared by the process)."""

    taken: ClassVar[dict[str, int]] = {}

    def handle(self, message: Incoming) -> None:
        if "/revoke/" in message.topic:
            agent = _timed(self)
            agent.received_at = time.monotonic()
            agent.ahead = self.taken.get(message.topic, 0)
            self.taken[message.topic] = agent.ahead + 1
        super().handle(message)


_verified = [0.0]
"""When the trust machine last returned a revocation's verdict in this process."""


def _timed_accept_revocation(
    state: TrustState, data: bytes
) -> Outcome[Revocation | None] | Refused:
    """``accept_revocation`` noting when it returned (the agent's own calls it, in turn)."""
    outcome = accept_revocation(state, data)
    _verified[0] = time.monotonic()
    return outcome


def _timed(daemon: AgentDaemon) -> TimedAgent:
    assert isinstance(daemon.agent, TimedAgent)
    return daemon.agent


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _all_acked(daemons: list[AgentDaemon]) -> Callable[[], bool]:
    def acked() -> bool:
        return all(
            d.agent.lineage is not None and d.agent.lineage.acknowledged == d.agent.lineage.size
            for d in daemons
        )

    return acked


def _signed_batches(
    daemon: AgentDaemon, decisions: int
) -> list[tuple[str, tuple[str, int, bytes]]]:
    """Decide ``decisions`` times and sign the batches the agent would ship next: for each,
    the device and (topic, the log size it brings the hub to, signed batch)."""
    lineage = daemon.agent.lineage
    assert lineage is not None and lineage.store is not None
    for _ in range(decisions):
        daemon.agent.decide(REQUEST, _now())
    device = daemon.device
    topic = topics.device_topic(device.region, device.device_id, topics.DeviceLeaf.LINEAGE)
    batches, first = [], lineage.acknowledged
    while first < lineage.size:
        count = min(SYNC.batch_entries, lineage.size - first)
        entries = tuple(data for _, data, _ in lineage.store.iter_rows(first, limit=count))
        size = first + len(entries)
        batch = LineageBatch(
            device=device.device_id,
            first_seq=first,
            entries=entries,
            checkpoint=lineage.checkpoint_note(size, _now()),
        )
        signed = sign_batch(batch, daemon.agent.device_key)
        batches.append((device.device_id, (topic, size, signed)))
        first = size
    return batches


# --- the worker process -----------------------------------------------------------------


def _worker_main(work: str, device_ids: list[str], url: str, pipe: Connection) -> None:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    asyncio.run(_serve_worker(Path(work), device_ids, url, pipe))


async def serve_commands(
    pipe: Connection, handle: Callable[[tuple[object, ...]], Awaitable[object]]
) -> None:
    """Answer the driver's commands over ``pipe`` with ``handle`` until it says "close"; a
    command that fails is answered with the failure (the bench's own), not a dead worker."""
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command[0] == "close":
            return
        try:
            reply = await handle(command)
        except Exception as exc:  # the bench's own failure, reported to the driver
            reply = RuntimeError(f"worker: {command[0]}: {exc!r}")
        pipe.send(reply)


async def _serve_worker(work: Path, device_ids: list[str], url: str, pipe: Connection) -> None:
    edge_agent.agent.accept_revocation = _timed_accept_revocation  # type: ignore[attr-defined]
    broker = BrokerSettings.from_url(url)
    daemons: list[AgentDaemon] = [
        TimedDaemon(TimedAgent.open(work / device_id, lineage=LINEAGE), broker, SYNC)
        for device_id in device_ids
    ]
    tasks = [asyncio.create_task(d.run()) for d in daemons]
    by_id = {d.device.device_id: d for d in daemons}
    try:
        await serve_commands(pipe, lambda c: _worker_command(c, daemons, by_id, tasks))
    finally:
        await _stop(tasks)
        for daemon in daemons:
            daemon.agent.close()


async def _worker_command(
    command: tuple[object, ...],
    daemons: list[AgentDaemon],
    by_id: dict[str, AgentDaemon],
    tasks: list[asyncio.Task[None]],
) -> object:
    kind = command[0]
    if kind == "connected":
        await _until(lambda: all(d.connected.is_set() for d in daemons), "all connected")
        return True
    if kind == "installed":
        await _until(
            lambda: all(_timed(d).installed_at is not None for d in daemons),
            "every agent installed the bundle",
        )
        return [_timed(d).installed_at for d in daemons]
    if kind == "acked":
        await _until(_all_acked(daemons), "every lineage entry acknowledged")
        return True
    if kind == "revoked":
        daemon = by_id[str(command[1])]
        agent = _timed(daemon)
        await _until(lambda: agent.recorded_at is not None, "revoked")
        assert daemon.agent.decide(REQUEST, _now()).reason is Reason.REVOKED
        return {
            "received": agent.received_at,
            "verified": agent.verified_at,
            "denied": agent.revoked_at,
            "recorded": agent.recorded_at,
            "ahead": agent.ahead,
        }
    if kind == "batches":
        await _stop(tasks)
        decisions = int(command[1])  # type: ignore[call-overload]
        targets = {
            d.device.device_id: d.agent.lineage.size + decisions  # type: ignore[union-attr]
            for d in daemons
        }
        batches = [batch for d in daemons for batch in _signed_batches(d, decisions)]
        return batches, targets, daemons[0].agent.state.root
    raise ValueError(f"unknown command {kind!r}")


def _row(kind: str, count: int, result: dict[str, object]) -> str:
    push = result["push"]
    revoke = result["revoke"]
    ingest = result["ingest"]
    assert isinstance(push, list) and isinstance(revoke, list) and isinstance(ingest, dict)
    return (
        f"| {kind} | {count} | {statistics.median(push):.2f} | {_pct(push, 0.99):.2f} | "
        f"{max(push):.2f} | {statistics.median(revoke) * 1000:.0f} | "
        f"{_pct(revoke, 0.99) * 1000:.0f} | {ingest['entries']:.0f} | {ingest['rate']:,.0f} |"
    )


def _stage_table(rows: list[tuple[str, int, list[dict[str, float]]]]) -> str:
    """Each stage of the revocations as the time since the stage before it, ms, median
    [p99] over the revocations of a run; ``ahead`` is the median and largest count."""
    head = ["broker", "agents", *(f"{s} ms" for s in STAGES), "ahead"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, count, stages in rows:
        cells = [kind, str(count)]
        before = [0.0] * len(stages)
        for stage in STAGES:
            spans = [(s[stage] - b) * 1000 for s, b in zip(stages, before, strict=True)]
            before = [s[stage] for s in stages]
            cells.append(f"{statistics.median(spans):.1f} [{_pct(spans, 0.99):.1f}]")
        ahead = [s["ahead"] for s in stages]
        cells.append(f"{statistics.median(ahead):.0f} [{max(ahead):.0f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="100,1000")
    parser.add_argument("--brokers", default="mosquitto,amqtt")
    parser.add_argument("--decisions", type=int, default=0, help="per agent (default: 100k total)")
    parser.add_argument("--revocations", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="20 agents, 5 revocations")
    parser.add_argument(
        "--stages", action="store_true", help="also print each revocation stage's share"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    counts = [20] if args.quick else [int(n) for n in args.agents.split(",")]
    revocations = 5 if args.quick else args.revocations
    print(
        "| broker | agents | push p50 s | push p99 s | push max s | revoke p50 ms | "
        "revoke p99 ms | ingest entries | hub ingest entries/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for count in counts:
        decisions = args.decisions or max(20, 100_000 // count)
        for kind in args.brokers.split(","):
            try:
                result = asyncio.run(run_one(kind, count, decisions, min(revocations, count)))
            except (EdgeGovError, RuntimeError, TimeoutError) as exc:
                print(f"| {kind} | {count} | failed: {exc} |", flush=True)
                results.append({"broker": kind, "agents": count, "failed": str(exc)})
                continue
            results.append({"broker": kind, "agents": count, **result})
            print(_row(kind, count, result), flush=True)
    if args.stages:
        staged = [
            (str(r["broker"]), int(str(r["agents"])), r["stages"]) for r in results if "stages" in r
        ]
        print("\nRevocation stages, ms since the stage before, median [p99]:\n")
        print(_stage_table(staged))
    if args.json:
        print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

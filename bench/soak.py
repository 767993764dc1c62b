"""Soak: a fleet of agents deciding and shipping for minutes on end; memory over time,
entries shipped against entries stored, errors logged.

What a leak, a lost entry or a crash that only shows after hours looks like in ten minutes:
the broker (Mosquitto by default) and ``edge-hub serve --broker`` each run in a process of
their own, and N real agents (``AgentDaemon`` over ``LocalAgent``: SQLite state, durable
lineage, signed batches) share ``WORKERS`` agent processes, one event loop each. After a
bundle is pushed and installed everywhere, every agent decides once every
``--decide-every`` seconds and ships as it runs. Every ``--sample`` seconds the soak reads
the resident memory (``VmRSS``) and CPU time of the hub, the broker and each agent process.
At the end the agents stop deciding, shipping drains, and the soak compares what the agents
recorded with what the hub stored and acknowledged.

Reported per process: RSS at the start and end of the run and its **slope** after warm-up
(least squares over the samples after the first ``--warmup`` fraction of the run, in MB per
10 minutes); for the fleet: entries decided, acknowledged and stored, lost (decided but
not stored), and the error records and tracebacks each process logged.

With ``--check`` the exit status says whether the run met the soak's bar: every slope under
``MAX_SLOPE_MB_PER_10MIN``, nothing lost, no traceback, no error logged.

``--quick`` (20 agents for 15 s, deciding every second, sampled every 2 s) is a smoke
run of the same path for ``make bench-quick``; a slope over 15 s means nothing.

Usage: python bench/soak.py [--quick] [--agents 1000] [--minutes 10]
                            [--broker mosquitto|amqtt] [--decide-every 10] [--sample 10]
                            [--json FILE] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from bench.fleet import (  # noqa: E402
    LINEAGE,
    SYNC,
    AgentWorker,
    AmqttProcess,
    HubProcess,
    _enrol,
    _now,
    _stop,
    _until,
    serve_commands,
)
from edge_agent.agent import LocalAgent  # noqa: E402
from edge_agent.protocol.request import Request  # noqa: E402
from edge_agent.support.mqtt import BrokerSettings  # noqa: E402
from edge_agent.sync.daemon import AgentDaemon  # noqa: E402
from hub.cli.fabric import prepare_push  # noqa: E402
from hub.hubdir.layout import HubDir  # noqa: E402
from hub.service.publish import publish_once  # noqa: E402
from tests.brokers import mosquitto_broker  # noqa: E402
from tests.hub_support import make_bundle, make_hub_dir  # noqa: E402

WORKERS = 2
"""Agent processes (the machine's cores); the hub and the broker run in their own."""
MAX_SLOPE_MB_PER_10MIN = 1.0
"""The soak's bar for memory growth after warm-up: per process for the hub and the broker,
per agent for the agent processes (each carries hundreds of simulated devices)."""
DRAIN_TIMEOUT_S = 300.0
"""How long shipping may take to drain once the agents stop deciding."""
REQUESTS = (
    Request("svc:camera", "exec", "/opt/camera/bin/capture"),
    Request("svc:camera", "exec", "/bin/sh"),
    Request("svc:thermo", "net.connect", "tcp://10.0.0.5:502"),
)
"""Allowed, denied by a rule, and denied by default under the bench bundle."""
ACK_POLL_S = 0.05
"""How often a worker looks for newly acknowledged entries (the latency's resolution)."""
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Series:
    """One process's samples: seconds since the start, RSS in MB, CPU seconds used.

    ``agents`` is how many simulated agents the process carries (0 for the hub and the
    broker): a real device runs one agent per process, so an agent process's growth is also
    given per agent.
    """

    name: str
    pid: int
    agents: int = 0
    times: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def sample(self, at: float) -> None:
        rss, cpu = _read_proc(self.pid)
        if rss is None or cpu is None:
            return
        self.times.append(at)
        self.rss_mb.append(rss)
        self.cpu_s.append(cpu)

    def summary(self, warmup: float) -> dict[str, float | str | int]:
        if not self.times:
            return {"name": self.name, "samples": 0}
        start = self.times[-1] * warmup
        points = list(zip(self.times, self.rss_mb, strict=True))
        kept = [(t, r) for t, r in points if t >= start]
        last_half = [(t, r) for t, r in points if t >= self.times[-1] / 2]
        slope = _slope(kept) * 600
        summary: dict[str, float | str | int] = {
            "name": self.name,
            "samples": len(self.times),
            "rss_start_mb": round(self.rss_mb[0], 1),
            "rss_end_mb": round(self.rss_mb[-1], 1),
            "rss_max_mb": round(max(self.rss_mb), 1),
            "slope_mb_per_10min": round(slope, 3),
            "slope_last_half_mb_per_10min": round(_slope(last_half) * 600, 3),
            "cpu_percent": round(
                100 * (self.cpu_s[-1] - self.cpu_s[0]) / max(self.times[-1] - self.times[0], 1e-9),
                1,
            ),
            "rss_mb_every_minute": [
                round(r, 1) for t, r in points if int(t / 60) != int((t - self._step()) / 60)
            ],
        }
        if self.agents:
            summary["agents"] = self.agents
            summary["slope_per_agent_mb_per_10min"] = round(slope / self.agents, 4)
        return summary

    def _step(self) -> float:
        return self.times[1] - self.times[0] if len(self.times) > 1 else 60.0


def _read_proc(pid: int) -> tuple[float | None, float | None]:
    """Resident memory (MB) and user+system CPU seconds of ``pid``; ``None`` once it is gone."""
    try:
        statm = Path(f"/proc/{pid}/statm").read_text().split()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None, None
    fields = stat.rsplit(")", 1)[1].split()
    return int(statm[1]) * PAGE_KB / 1024, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``points`` (value per second); 0 with fewer than two."""
    if len(points) < 2:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


@dataclass(frozen=True)
class SoakConfig:
    agents: int
    minutes: float
    broker: str
    decide_every_s: float
    sample_s: float
    warmup: float


async def run_soak(config: SoakConfig) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="edgegov-soak-") as tmp:
        work = Path(tmp)
        async with _fleet_broker(config.broker, work) as (url, broker_pid, hub):
            return await _soak(config, work, url, broker_pid, hub)


@contextlib.asynccontextmanager
async def _fleet_broker(kind: str, work: Path) -> AsyncIterator[tuple[str, int, HubProcess]]:
    setup = make_hub_dir(work / "hub", devices=())
    if kind == "mosquitto":
        async with mosquitto_broker() as handle:
            hub = HubProcess(setup.path, handle.url)
            try:
                assert handle.pid is not None
                yield handle.url, handle.pid, hub
            finally:
                hub.stop()
        return
    amqtt = AmqttProcess()
    hub = HubProcess(setup.path, amqtt.url)
    try:
        yield amqtt.url, amqtt.process.pid, hub
    finally:
        hub.stop()
        amqtt.stop()


async def _soak(
    config: SoakConfig, work: Path, url: str, broker_pid: int, hub: HubProcess
) -> dict[str, object]:
    device_ids = _enrol(work, hub.hub_dir, config.agents)
    hub.start()
    assert hub.process is not None
    workers = [SoakWorker(work, device_ids[index::WORKERS], url, index) for index in range(WORKERS)]
    series = [Series("hub", hub.process.pid), Series("broker", broker_pid)]
    series += [Series(f"agents-{w.index}", w.process.pid, len(w.device_ids)) for w in workers]
    try:
        await _ask_all(workers, ("connected",))
        hub_dir = HubDir(hub.hub_dir)
        _, publications = prepare_push(hub_dir, make_bundle(hub_dir.keys, 1), now=_now())
        await publish_once(BrokerSettings.from_url(url), publications)
        await _ask_all(workers, ("installed",))
        await _ask_all(workers, ("decide", config.decide_every_s))
        await _sample(series, config.minutes * 60, config.sample_s)
        await _ask_all(workers, ("quiet",))
        drained = await _ask_all(workers, ("drained",))
        counts = await _ask_all(workers, ("counts",))
    finally:
        for worker in workers:
            worker.close()
        hub.stop()
    return _report(config, series, counts, drained, hub.hub_dir, work)


async def _sample(series: list[Series], seconds: float, every: float) -> None:
    start = time.monotonic()
    while True:
        at = time.monotonic() - start
        for one in series:
            one.sample(at)
        if at >= seconds:
            return
        await asyncio.sleep(min(every, max(seconds - at, 0.01)))


def _report(
    config: SoakConfig,
    series: list[Series],
    counts: list[object],
    drained: list[object],
    hub_dir: Path,
    work: Path,
) -> dict[str, object]:
    decided = sum(int(c["decided"]) for c in counts)  # type: ignore[index]
    entries = sum(int(c["entries"]) for c in counts)  # type: ignore[index]
    acked = sum(int(c["acked"]) for c in counts)  # type: ignore[index]
    agent_errors = sum(int(c["errors"]) for c in counts)  # type: ignore[index]
    agent_tracebacks = sum(int(c["tracebacks"]) for c in counts)  # type: ignore[index]
    stored = _hub_stored(hub_dir / "hub.db")
    hub_log = (hub_dir / "serve.log").read_text(errors="replace")
    hub_errors = sum(1 for line in hub_log.splitlines() if "level=error" in line)
    hub_tracebacks = hub_log.count("Traceback (most recent call last)")
    processes = [s.summary(config.warmup) for s in series]
    latencies = [x for c in counts for x in c["latencies"]]  # type: ignore[index]
    return {
        "config": asdict(config),
        "processes": processes,
        "decided": decided,
        "entries": entries,
        "acknowledged": acked,
        "stored": stored,
        "lost": max(entries - stored, 0),
        "drained": all(bool(d) for d in drained),
        "ack_latency_s": latency_summary(latencies),
        "denied_allowed": merge_counts(c["denied"] for c in counts),  # type: ignore[index]
        "errors": {"agents": agent_errors, "hub": hub_errors},
        "tracebacks": {"agents": agent_tracebacks, "hub": hub_tracebacks},
        "hub_db_mb": round(_size_mb(hub_dir, "hub.db"), 2),
        "agent_dirs_mb": round(sum(_size_mb(p, "") for p in work.glob("gw-*")), 1),
    }


def latency_summary(latencies: list[float]) -> dict[str, float | int]:
    """Median, 99th percentile and maximum of ``latencies`` (seconds), and their count."""
    if not latencies:
        return {"count": 0}
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "count": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p99": round(p99, 3),
        "max": round(ordered[-1], 3),
    }


def merge_counts(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in parts:
        for key, count in part.items():
            merged[key] = merged.get(key, 0) + count
    return merged


def _hub_stored(path: Path) -> int:
    """Entries the hub has stored, over every device's log."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT coalesce(sum(size), 0) FROM lineage_state").fetchone()
    return int(row[0])


def _size_mb(directory: Path, prefix: str) -> float:
    return sum(p.stat().st_size for p in directory.glob(f"{prefix}*") if p.is_file()) / 1e6


def missed(result: dict[str, object]) -> list[str]:
    """What the run missed of the soak's bar (empty: it met it)."""
    missed = []
    for process in result["processes"]:  # type: ignore[attr-defined]
        key = "slope_per_agent_mb_per_10min" if "agents" in process else "slope_mb_per_10min"
        slope = process.get(key, 0.0)
        if slope > MAX_SLOPE_MB_PER_10MIN:
            per = " per agent" if "agents" in process else ""
            missed.append(f"{process['name']} grew {slope} MB{per} per 10 min")
    if result["lost"]:
        missed.append(f"{result['lost']} entries decided but not stored at the hub")
    if result["denied_allowed"]:
        missed.append(f"allowed requests denied: {result['denied_allowed']}")
    if not result["drained"]:
        missed.append("shipping did not drain")
    for kind in ("errors", "tracebacks"):
        for where, count in result[kind].items():  # type: ignore[attr-defined]
            if count:
                missed.append(f"{count} {kind} logged by the {where}")
    return missed


# --- agent processes ---------------------------------------------------------------------


class SoakWorker(AgentWorker):
    """A process running a share of the agents on its own event loop, driven over a pipe,
    deciding as :class:`_Deciding` says."""

    def __init__(
        self,
        work: Path,
        device_ids: list[str],
        url: str,
        index: int,
        requests: tuple[Request, ...] = REQUESTS,
    ) -> None:
        super().__init__(work, device_ids, url, main=_worker_main, extra=(requests,))
        self.index = index


async def _ask_all(workers: list[SoakWorker], command: tuple[object, ...]) -> list[object]:
    return list(await asyncio.gather(*(w.ask(*command) for w in workers)))


class _Counter(logging.Handler):
    """Counts the error records, and those carrying a traceback, this process logs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors = 0
        self.tracebacks = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors += 1
        if record.exc_info:
            self.tracebacks += 1
        if len(self.first) < 5:
            self.first.append(f"{record.name}: {record.getMessage()}")


def _worker_main(
    work: str, device_ids: list[str], url: str, pipe: Connection, requests: tuple[Request, ...]
) -> None:
    counter = _Counter()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().addHandler(counter)
    asyncio.run(_serve_worker(Path(work), device_ids, url, pipe, counter, requests))


class _Deciding:
    """Every agent decides once per ``every`` seconds, spread evenly over the interval; notes
    how long each entry waited for the hub's acknowledgement and every deny of a request
    the bundle allows."""

    def __init__(self, daemons: list[AgentDaemon], requests: tuple[Request, ...]) -> None:
        self.daemons = daemons
        self.requests = requests
        self.decided = 0
        self.denied: dict[str, int] = {}
        self.latencies: list[float] = []
        self._pending: dict[str, collections.deque[tuple[int, float]]] = {
            d.device.device_id: collections.deque() for d in daemons
        }
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, every: float) -> None:
        self.latencies.clear()
        self.tasks = [
            asyncio.create_task(self._decide(every), name="soak-decide"),
            asyncio.create_task(self._watch_acks(), name="soak-acks"),
        ]

    async def stop(self) -> None:
        await _stop(self.tasks)
        self.tasks = []

    async def _decide(self, every: float) -> None:
        rng = random.Random(len(self.daemons))
        gap = every / max(len(self.daemons), 1)
        while True:
            for daemon in self.daemons:
                request = rng.choice(self.requests)
                decision = daemon.agent.decide(request, _now())
                self.decided += 1
                if request == REQUESTS[0] and not decision.allowed:
                    reason = str(decision.reason)
                    self.denied[reason] = self.denied.get(reason, 0) + 1
                if daemon.agent.last_seq is not None:
                    pending = self._pending[daemon.device.device_id]
                    pending.append((daemon.agent.last_seq, time.monotonic()))
                await asyncio.sleep(gap)

    async def _watch_acks(self) -> None:
        while True:
            now = time.monotonic()
            for daemon in self.daemons:
                pending = self._pending[daemon.device.device_id]
                acked = _lineage(daemon).acknowledged
                while pending and pending[0][0] < acked:
                    self.latencies.append(now - pending.popleft()[1])
            await asyncio.sleep(ACK_POLL_S)


async def _serve_worker(
    work: Path,
    device_ids: list[str],
    url: str,
    pipe: Connection,
    counter: _Counter,
    requests: tuple[Request, ...],
) -> None:
    broker = BrokerSettings.from_url(url)
    daemons = [
        AgentDaemon(LocalAgent.open(work / device_id, lineage=LINEAGE), broker, SYNC)
        for device_id in device_ids
    ]
    tasks = [asyncio.create_task(d.run()) for d in daemons]
    deciding = _Deciding(daemons, requests)
    try:
        await serve_commands(pipe, lambda c: _worker_command(c, daemons, deciding, counter))
    finally:
        await deciding.stop()
        await _stop(tasks)
        for daemon in daemons:
            daemon.agent.close()


async def _worker_command(
    command: tuple[object, ...], daemons: list[AgentDaemon], deciding: _Deciding, counter: _Counter
) -> object:
    kind = command[0]
    if kind == "connected":
        await _until(lambda: all(d.connected.is_set() for d in daemons), "all connected")
        return True
    if kind == "installed":
        await _until(
            lambda: all(d.agent.state.bundle is not None for d in daemons),
            "every agent installed the bundle",
        )
        return True
    if kind == "decide":
        deciding.start(float(command[1]))  # type: ignore[arg-type]
        return True
    if kind == "quiet":
        await deciding.stop()
        return True
    if kind == "drained":
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not all(_acked(d) for d in daemons):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True
    if kind == "counts":
        return {
            "decided": deciding.decided,
            "entries": sum(_lineage(d).size for d in daemons),
            "acked": sum(_lineage(d).acknowledged for d in daemons),
            "errors": counter.errors,
            "tracebacks": counter.tracebacks,
            "first_errors": counter.first,
            "denied": deciding.denied,
            "latencies": deciding.latencies,
        }
    raise ValueError(f"unknown command {kind!r}")


def _lineage(daemon: AgentDaemon):  # type: ignore[no-untyped-def]
    lineage = daemon.agent.lineage
    assert lineage is not None
    return lineage


def _acked(daemon: AgentDaemon) -> bool:
    lineage = _lineage(daemon)
    return bool(lineage.acknowledged == lineage.size)


def _print(result: dict[str, object]) -> None:
    print(
        "| process | RSS start MB | RSS end MB | RSS max MB | slope MB/10 min | "
        "last half | per agent | CPU % |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for p in result["processes"]:  # type: ignore[attr-defined]
        print(
            f"| {p['name']} | {p.get('rss_start_mb')} | {p.get('rss_end_mb')} | "
            f"{p.get('rss_max_mb')} | {p.get('slope_mb_per_10min')} | "
            f"{p.get('slope_last_half_mb_per_10min')} | "
            f"{p.get('slope_per_agent_mb_per_10min', '-')} | {p.get('cpu_percent')} |"
        )
    print(
        f"\ndecided {result['decided']}, entries {result['entries']}, acknowledged "
        f"{result['acknowledged']}, stored at the hub {result['stored']}, lost {result['lost']}; "
        f"errors {result['errors']}, tracebacks {result['tracebacks']}; "
        f"hub.db {result['hub_db_mb']} MB; ack latency {result['ack_latency_s']}; "
        f"allowed requests denied {result['denied_allowed']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 agents for 15 s")
    parser.add_argument("--agents", type=int, help="agents (default 1000, quick 20)")
    parser.add_argument("--minutes", type=float, help="run length (default 10, quick 0.25)")
    parser.add_argument("--broker", choices=("mosquitto", "amqtt"), default="mosquitto")
    parser.add_argument(
        "--decide-every", type=float, help="seconds, per agent (default 10, quick 1)"
    )
    parser.add_argument(
        "--sample", type=float, help="seconds between samples (default 10, quick 2)"
    )
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--check", action="store_true", help="exit 1 when the bar is missed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    quick = args.quick
    config = SoakConfig(
        args.agents or (20 if quick else 1000),
        args.minutes or (0.25 if quick else 10.0),
        args.broker,
        args.decide_every or (1.0 if quick else 10.0),
        args.sample or (2.0 if quick else 10.0),
        args.warmup,
    )
    result = asyncio.run(run_soak(config))
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    failures = missed(result)
    for line in failures:
        print(f"MISSED: {line}")
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Load and abuse: honest agents keep shipping while an unauthenticated client and a
compromised device flood the broker at the highest rate it takes from them.

The run has two phases of equal length on the same hub, broker and fleet. In the calm
phase only the honest agents work (each decides once a second and ships); in the abuse
phase two flooders join, each a process of its own publishing as fast as the broker takes
it (QoS 0, reconnecting at once when dropped):

- the **intruder**, an anonymous client with no key: oversized statuses for ever-new fake
  device ids, unsigned junk on a real device's lineage topic, retained garbage on trust
  topics the hub does not own (revocations and bundles for ghost devices and groups),
  replays of a real device's captured status and last will;
- the **compromised device**, registered and holding its own key: signed statuses as fast
  as it can sign them, replays of its first signed status and lineage batch.

Reported for the abuse phase against the calm one: the honest agents' ack latency (decision
made durable until the hub acknowledged it: p50 / p99 / max), every deny of a request the
bundle allows (the bundle has ``max_offline: 30s``, so freshness that stops also shows), the
hub's RSS (max) and CPU, and ``hub.db`` growth (the abuse phase's growth minus the calm
phase's). With ``--check`` the exit status says whether the targets were met:
honest p99 ack <= 2 s, hub RSS <= 200 MB, hub.db growth from the abuse <= 1 MB, no honest
device denied.

The embedded broker (``edge-hub serve`` without ``--broker``: hub and amqtt in one process,
so the hub's RSS includes the broker's) takes anonymous clients; ``--broker mosquitto``
runs an anonymous Mosquitto beside the hub.

``--quick`` (10 agents, 5 s phases) is a smoke run of the same path for ``make
bench-quick``; its figures say nothing about the targets.

Usage: python bench/abuse.py [--quick] [--agents 100] [--seconds 120]
                             [--broker embedded|mosquitto] [--json FILE] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from bench.fleet import HubProcess, _enrol, _now  # noqa: E402
from bench.soak import (  # noqa: E402
    REQUESTS,
    WORKERS,
    Series,
    SoakWorker,
    _ask_all,
    latency_summary,
    merge_counts,
)
from edge_agent.agent import init_state_dir  # noqa: E402
from edge_agent.device_key import load_device_key  # noqa: E402
from edge_agent.errors import EdgeGovError  # noqa: E402
from edge_agent.protocol import topics  # noqa: E402
from edge_agent.protocol.bundle import DeviceIdentity  # noqa: E402
from edge_agent.protocol.limits import MAX_PACKET_BYTES  # noqa: E402
from edge_agent.protocol.shipping import MAX_BATCH_BYTES, DeviceStatus, sign_status  # noqa: E402
from edge_agent.support.mqtt import BrokerSettings, connect  # noqa: E402
from hub.cli.fabric import prepare_push  # noqa: E402
from hub.hubdir.layout import HubDir  # noqa: E402
from hub.registry import DeviceRecord  # noqa: E402
from hub.registry.backends import open_registry  # noqa: E402
from hub.service.publish import publish_once  # noqa: E402
from tests.brokers import free_port, mosquitto_broker  # noqa: E402
from tests.hub_support import make_bundle, make_hub_dir  # noqa: E402

REGION = "eu-1"
EVIL = "gw-evil"
"""The compromised device: registered, its key in the attacker's hands."""
OVERSIZED_BYTES = (MAX_BATCH_BYTES + 512 * 1024, MAX_PACKET_BYTES + 1024 * 1024)
"""The intruder's oversized statuses: one the broker passes but the hub must refuse by size
(over the largest device message), one over the broker's own packet limit."""
_Message = tuple[str, bytes, bool]
"""A flooder's publish: topic, payload, retained."""
_Flood = Callable[[Path, str], Iterator[_Message]]
TARGETS = {"ack_p99_s": 2.0, "hub_rss_mb": 200.0, "hub_db_growth_mb": 1.0}


@dataclass(frozen=True)
class AbuseConfig:
    agents: int
    seconds: float
    broker: str


async def run_abuse(config: AbuseConfig) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="edgegov-abuse-") as tmp:
        work = Path(tmp)
        async with _hub(config.broker, work) as (hub, broker_pid):
            return await _abuse(config, work, hub, broker_pid)


@contextlib.asynccontextmanager
async def _hub(kind: str, work: Path) -> AsyncIterator[tuple[HubProcess, int | None]]:
    setup = make_hub_dir(work / "hub", devices=())
    if kind == "mosquitto":
        async with mosquitto_broker() as handle:
            hub = HubProcess(setup.path, handle.url)
            try:
                yield hub, handle.pid
            finally:
                hub.stop()
        return
    hub = HubProcess(setup.path, None, port=free_port())
    try:
        yield hub, None
    finally:
        hub.stop()


async def _abuse(
    config: AbuseConfig, work: Path, hub: HubProcess, broker_pid: int | None
) -> dict[str, object]:
    honest = _enrol(work, hub.hub_dir, config.agents)
    evil_dir = work / EVIL
    _enrol_compromised(evil_dir, hub.hub_dir)
    hub.start()
    assert hub.process is not None
    url = hub.url
    workers = [
        SoakWorker(work, honest[index::WORKERS], url, index, requests=REQUESTS[:1])
        for index in range(WORKERS)
    ]
    try:
        await _ask_all(workers, ("connected",))
        bundle = make_bundle(HubDir(hub.hub_dir).keys, 1, max_offline="30s")
        _, publications = prepare_push(HubDir(hub.hub_dir), bundle, now=_now())
        await publish_once(BrokerSettings.from_url(url), publications)
        await _ask_all(workers, ("installed",))
        calm = await _phase(config, workers, hub, broker_pid, flooders=None)
        abuse = await _phase(config, workers, hub, broker_pid, flooders=(url, evil_dir, honest[0]))
    finally:
        for worker in workers:
            worker.close()
        hub.stop()
    growth = abuse["hub_db_growth_mb"] - calm["hub_db_growth_mb"]  # type: ignore[operator]
    return {"config": asdict(config), "calm": calm, "abuse": abuse, "abuse_growth_mb": growth}


def _enrol_compromised(state_dir: Path, hub_dir: Path) -> None:
    """Enrol and register the device whose key the attacker holds."""
    root = (hub_dir / "keys" / "root.cbor").read_bytes()
    identity = DeviceIdentity(EVIL, REGION, ("line-a",), "generic-x86_64")
    public = init_state_dir(state_dir, identity, root, _now())
    with open_registry(hub_dir / "hub.db") as registry:
        registry.add_device(DeviceRecord(EVIL, REGION, ("line-a",), "generic-x86_64", public))


async def _phase(
    config: AbuseConfig,
    workers: list[SoakWorker],
    hub: HubProcess,
    broker_pid: int | None,
    flooders: tuple[str, Path, str] | None,
) -> dict[str, object]:
    assert hub.process is not None
    series = [Series("hub", hub.process.pid)]
    if broker_pid is not None:
        series.append(Series("broker", broker_pid))
    before = _db_mb(hub.hub_dir)
    processes = _start_flooders(*flooders, config.seconds) if flooders else []
    await _ask_all(workers, ("decide", 1.0))
    start = time.monotonic()
    while (at := time.monotonic() - start) < config.seconds:
        for one in series:
            one.sample(at)
        await asyncio.sleep(1.0)
    await _ask_all(workers, ("quiet",))
    sent = [_join(p) for p in processes]
    counts = await _ask_all(workers, ("counts",))
    latencies = [x for c in counts for x in c["latencies"]]  # type: ignore[index]
    return {
        "ack_latency_s": latency_summary(latencies),
        "denied_allowed": merge_counts(c["denied"] for c in counts),  # type: ignore[index]
        "agent_errors": sum(int(c["errors"]) for c in counts),  # type: ignore[index]
        "processes": [s.summary(0.0) for s in series],
        "hub_db_growth_mb": round(_db_mb(hub.hub_dir) - before, 3),
        "flooded": sent,
    }


def _db_mb(hub_dir: Path) -> float:
    """The pages ``hub.db`` holds, after folding the write-ahead log into it (the WAL file's
    own size says how busy the hub was, not what it keeps)."""
    with contextlib.closing(sqlite3.connect(hub_dir / "hub.db", timeout=30)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    return float((pages - free) * size) / 1e6


# --- the flooders ------------------------------------------------------------------------


def _start_flooders(
    url: str, evil_dir: Path, victim: str, seconds: float
) -> list[tuple[multiprocessing.Process, multiprocessing.Queue[dict[str, int]]]]:
    context = multiprocessing.get_context("spawn")
    started = []
    for role in ("intruder", "compromised"):
        queue: multiprocessing.Queue[dict[str, int]] = context.Queue()
        process = context.Process(
            target=_flooder_main,
            args=(role, url, str(evil_dir), victim, seconds, queue),
            daemon=True,
        )
        process.start()
        started.append((process, queue))
    return started


def _join(
    started: tuple[multiprocessing.Process, multiprocessing.Queue[dict[str, int]]],
) -> dict[str, int]:
    process, queue = started
    try:
        counts = queue.get(timeout=60)
    except Exception:  # the flooder died: say so instead of failing the whole run
        counts = {"died": 1}
    process.join(timeout=10)
    if process.is_alive():
        process.kill()
    return counts


def _flooder_main(
    role: str,
    url: str,
    evil_dir: str,
    victim: str,
    seconds: float,
    queue: multiprocessing.Queue[dict[str, int]],
) -> None:
    logging.basicConfig(level=logging.CRITICAL)
    flood = _intrude if role == "intruder" else _impersonate
    counts = {"published": 0, "dropped": 0}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_flood(flood, url, Path(evil_dir), victim, seconds, counts))
    queue.put(counts)


async def _flood(
    flood: _Flood, url: str, evil_dir: Path, victim: str, seconds: float, counts: dict[str, int]
) -> None:
    settings = BrokerSettings.from_url(url)
    deadline = time.monotonic() + seconds
    messages = flood(evil_dir, victim)
    while time.monotonic() < deadline:
        try:
            async with connect(settings, client_id=f"flood-{os.getpid()}") as connection:
                while time.monotonic() < deadline:
                    topic, payload, retain = next(messages)
                    await connection.publish(topic, payload, qos=0, retain=retain)
                    counts["published"] += 1
        except EdgeGovError:
            counts["dropped"] += 1
            await asyncio.sleep(0.01)


def _intrude(evil_dir: Path, victim: str) -> Iterator[_Message]:
    """What a client with no key sends: oversized, unsigned, retained garbage, replays."""
    victim_status = topics.device_topic(REGION, victim, topics.DeviceLeaf.STATUS)
    victim_lineage = topics.device_topic(REGION, victim, topics.DeviceLeaf.LINEAGE)
    oversized = [os.urandom(size) for size in OVERSIZED_BYTES]
    # A status the victim once signed, replayed: here signed with the attacker's own key,
    # which the hub must refuse for the victim's topic just the same.
    stale = sign_status(_status(victim, 1_000_000, online=False), load_device_key(evil_dir))
    n = 0
    while True:
        n += 1
        ghost = f"ghost-{n}"
        status = topics.device_topic(REGION, ghost, topics.DeviceLeaf.STATUS)
        yield status, oversized[n % len(oversized)], False
        yield victim_lineage, os.urandom(512), False
        yield f"{topics.PREFIX}/{REGION}/revoke/device/{ghost}", os.urandom(64), True
        yield f"{topics.PREFIX}/{REGION}/bundle/group/{ghost}", os.urandom(64), True
        yield victim_status, stale, True


def _impersonate(evil_dir: Path, victim: str) -> Iterator[_Message]:
    """What a device whose key was stolen sends: signed statuses as fast as it can sign
    them, and replays of its first status."""
    key = load_device_key(evil_dir)
    status_topic = topics.device_topic(REGION, EVIL, topics.DeviceLeaf.STATUS)
    first = sign_status(_status(EVIL, _now(), online=True), key)
    while True:
        yield status_topic, sign_status(_status(EVIL, _now(), online=True), key), True
        yield status_topic, first, True


def _status(device: str, at: int, *, online: bool) -> DeviceStatus:
    return DeviceStatus(
        device=device,
        time=at,
        online=online,
        bundle_version=1,
        expires_at=at + 3600,
        gate="open",
        lineage_size=0,
        acked=0,
    )


def missed(result: dict[str, object]) -> list[str]:
    """What the abuse phase missed of the targets (empty: all met)."""
    abuse = result["abuse"]
    assert isinstance(abuse, dict)
    out = []
    p99 = abuse["ack_latency_s"].get("p99")
    if p99 is None or p99 > TARGETS["ack_p99_s"]:
        out.append(f"honest ack p99 {p99} s > {TARGETS['ack_p99_s']} s")
    hub = next(p for p in abuse["processes"] if p["name"] == "hub")
    if hub.get("rss_max_mb", 0) > TARGETS["hub_rss_mb"]:
        out.append(f"hub RSS {hub['rss_max_mb']} MB > {TARGETS['hub_rss_mb']} MB")
    if result["abuse_growth_mb"] > TARGETS["hub_db_growth_mb"]:  # type: ignore[operator]
        out.append(f"hub.db grew {result['abuse_growth_mb']:.2f} MB from the abuse")
    if abuse["denied_allowed"]:
        out.append(f"honest devices denied: {abuse['denied_allowed']}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 agents, 5 s phases")
    parser.add_argument("--agents", type=int, help="honest agents (default 100, quick 10)")
    parser.add_argument("--seconds", type=float, help="length of each phase (default 120, quick 5)")
    parser.add_argument("--broker", choices=("embedded", "mosquitto"), default="embedded")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    agents = args.agents or (10 if args.quick else 100)
    seconds = args.seconds or (5.0 if args.quick else 120.0)
    result = asyncio.run(run_abuse(AbuseConfig(agents, seconds, args.broker)))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    failures = missed(result)
    for line in failures:
        print(f"MISSED: {line}")
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())

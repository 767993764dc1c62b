"""Broker fan-out over two bridged sites: how long one message published centrally takes to
reach every one of N plain MQTT subscribers (half on each site broker).

This is the part of a push or a revocation that a real fleet does not spread over its
devices' own CPUs: the central broker, the bridges and the site brokers deliver one message
to every device, while each device verifies and installs it on its own. The simulated agents
of bench/fleet.py cannot show it at 10,000 (each costs a 2-core machine ~1.6 MB and ~90 ms
to set up, and their verifications queue on two cores); a subscriber here is only an MQTT
connection (edge_agent.support.mqtt), subscribed as an agent is to its region's revocations,
one worker process per site noting each arrival. The arrival times include those processes'
own turn at each message, so they bound the brokers' part from above.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

from bench._scale_fleet import _brokers, _rss_mib
from bench.fleet import _pct
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.support.mqtt import connect as mqtt_connect

__all__ = ["FanoutFigures", "fanout"]

TOPIC = "edgegov/v1/eu-1/revoke/bench"
FILTER = "edgegov/v1/eu-1/revoke/#"
CONNECT_BATCH = 200


@dataclass(frozen=True)
class FanoutFigures:
    subscribers: int
    size: int
    latencies: list[list[float]]
    """Per message published: every subscriber's arrival, seconds after the publish."""

    def row(self) -> str:
        last = [max(m) for m in self.latencies]
        every = [x for m in self.latencies for x in m]
        return (
            f"| {self.subscribers:,} | {self.size:,} | {statistics.median(every) * 1000:.0f} | "
            f"{_pct(every, 0.99) * 1000:.0f} | {statistics.median(last) * 1000:.0f} "
            f"[{min(last) * 1000:.0f}-{max(last) * 1000:.0f}] |"
        )


def _subscriber_main(url: str, count: int, name: str, pipe: Pipe) -> None:
    asyncio.run(_subscribers(url, count, name, pipe))


async def _subscribers(url: str, count: int, name: str, pipe: Pipe) -> None:
    settings = BrokerSettings.from_url(url)
    arrivals: list[float] = []
    async with AsyncExitStack() as stack:

        async def one(index: int) -> None:
            connection = await stack.enter_async_context(
                mqtt_connect(settings, client_id=f"bench-{name}-{index}")
            )
            await connection.subscribe([FILTER])

            async def pump() -> None:
                async for _ in connection.messages():
                    arrivals.append(time.monotonic())

            tasks.append(asyncio.create_task(pump()))

        tasks: list[asyncio.Task[None]] = []
        for start in range(0, count, CONNECT_BATCH):
            await asyncio.gather(*(one(i) for i in range(start, min(count, start + CONNECT_BATCH))))
        loop = asyncio.get_running_loop()
        pipe.send("ready")
        while (command := await loop.run_in_executor(None, pipe.recv)) != "close":
            expected = int(command)
            while len(arrivals) < expected:
                await asyncio.sleep(0.001)
            pipe.send(list(arrivals))
            arrivals.clear()
        for task in tasks:
            task.cancel()


async def fanout(
    subscribers: int, sizes: list[int], messages: int
) -> tuple[list[FanoutFigures], dict[str, float]]:
    """Publish ``messages`` messages of each size centrally, one at a time, to
    ``subscribers`` subscribers over two bridged sites; with each broker's resident memory
    (MiB) once every subscriber is connected."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="edgegov-scale-fanout-") as tmp:
        async with _brokers(Path(tmp)) as (central, sites, pids):
            shares = [subscribers // 2, subscribers - subscribers // 2]
            pipes, processes = [], []
            for site, share, name in zip(sites, shares, ("a", "b"), strict=True):
                parent, child = context.Pipe()
                process = context.Process(
                    target=_subscriber_main, args=(site, share, name, child), daemon=True
                )
                process.start()
                pipes.append(parent)
                processes.append(process)
            try:
                loop = asyncio.get_running_loop()
                for pipe in pipes:
                    if await loop.run_in_executor(None, pipe.recv) != "ready":
                        raise RuntimeError("a subscriber process did not start")
                memory = {name: _rss_mib(pid) for name, pid in pids.items()}
                figures = [
                    await _publish_all(central, pipes, shares, size, messages) for size in sizes
                ]
                return figures, memory
            finally:
                for pipe in pipes:
                    pipe.send("close")
                for process in processes:
                    process.join(timeout=30)
                    if process.is_alive():
                        process.kill()


async def _publish_all(
    central: str, pipes: list[Pipe], shares: list[int], size: int, messages: int
) -> FanoutFigures:
    latencies = []
    loop = asyncio.get_running_loop()
    async with mqtt_connect(
        BrokerSettings.from_url(central), client_id=f"bench-pub-{os.getpid()}"
    ) as publisher:
        for _ in range(messages):
            sent = time.monotonic()
            await publisher.publish(TOPIC, os.urandom(size), qos=1)
            for pipe, share in zip(pipes, shares, strict=True):
                pipe.send(str(share))
            arrivals = [
                t
                for pipe in pipes
                for t in await loop.run_in_executor(None, pipe.recv)  # type: ignore[union-attr]
            ]
            latencies.append([t - sent for t in arrivals])
            await asyncio.sleep(0.5)
    return FanoutFigures(sum(shares), size, latencies)

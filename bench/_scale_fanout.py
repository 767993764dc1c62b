"""Broker fan-out over two bridged sites: how long one message published centrally takes to
reach every one of N plain MQTT subscribers (half on each site broker).

This is the part of a push or a revocation that a real fleet does not spread over its
devices' own CPUs: the central broker, the bridges and the site brokers deliver one message
to every device, while each device verifies and installs it on its own. The simulated agents
of bench/fleet.py cannot show it at 10,000 (each costs a 2-core machine ~1.6 MB and ~90 ms
to set up, and their verifications queue on two cores); a subscriber here is only an MQTT
connection (raw MQTT 3.1.1 on asyncio, :class:`_Subscriber`), subscribed as an agent is to
its region's revocations at QoS 1, one worker process per site noting each arrival. The
arrival times include those processes' own turn at each message, so they bound the brokers'
part from above.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
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


def _packet(kind: int, body: bytes) -> bytes:
    """An MQTT 3.1.1 packet: fixed header (remaining length as a varint), then ``body``."""
    length, size = b"", len(body)
    while True:
        digit, size = size % 128, size // 128
        length += bytes([digit | (0x80 if size else 0)])
        if not size:
            return bytes([kind]) + length + body


def _text(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


class _Subscriber(asyncio.Protocol):
    """The least an agent's connection does for a message: CONNECT (clean session),
    SUBSCRIBE at QoS 1, and for each PUBLISH note its arrival and answer PUBACK. Raw
    MQTT 3.1.1 on asyncio, so 5,000 of them in one process cost the measurement little
    (an aiomqtt client per subscriber took ~0.6 ms of this machine per message)."""

    def __init__(self, client_id: str, arrivals: list[float], subscribed: asyncio.Future[None]):
        self.client_id, self.arrivals, self.subscribed = client_id, arrivals, subscribed
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        connect = _text("MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big")
        transport.write(_packet(0x10, connect + _text(self.client_id)))
        transport.write(_packet(0x82, (1).to_bytes(2, "big") + _text(FILTER) + b"\x01"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (packet := self._next()) is not None:
            kind, body = packet
            if kind >> 4 == 3:
                self.arrivals.append(time.monotonic())
                if (kind >> 1) & 3:
                    topic_end = 2 + int.from_bytes(body[:2], "big")
                    self.transport.write(_packet(0x40, body[topic_end : topic_end + 2]))
            elif kind >> 4 == 9 and not self.subscribed.done():
                self.subscribed.set_result(None)

    def _next(self) -> tuple[int, bytes] | None:
        size, shift, index = 0, 0, 1
        while True:
            if index >= len(self.buffer):
                return None
            byte = self.buffer[index]
            size, shift, index = size | (byte & 0x7F) << shift, shift + 7, index + 1
            if not byte & 0x80:
                break
        if len(self.buffer) < index + size:
            return None
        packet = self.buffer[0], self.buffer[index : index + size]
        self.buffer = self.buffer[index + size :]
        return packet


async def _subscribers(url: str, count: int, name: str, pipe: Pipe) -> None:
    settings = BrokerSettings.from_url(url)
    arrivals: list[float] = []
    loop = asyncio.get_running_loop()

    async def one(index: int) -> None:
        subscribed: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            lambda: _Subscriber(f"bench-{name}-{index}", arrivals, subscribed),
            settings.host,
            settings.port,
        )
        await asyncio.wait_for(subscribed, 60)

    for start in range(0, count, CONNECT_BATCH):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + CONNECT_BATCH))))
    pipe.send("ready")
    while (command := await loop.run_in_executor(None, pipe.recv)) != "close":
        expected = int(command)
        while len(arrivals) < expected:
            await asyncio.sleep(0.001)
        pipe.send(list(arrivals))
        arrivals.clear()


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

"""Schedule takeover: how long after ``SIGKILL`` of the leading hub the standby publishes
freshness.

Two ``edge-hub serve`` processes on one registry (``--registry``: a ``hub.db`` or a
PostgreSQL URL) and one Mosquitto, at the default freshness interval unless told. The
leader (the holder of the schedule lease, docs/scale.md "One scheduler at a time") is killed
at a random moment of its interval; the clock runs from the kill until the next freshness
token for the pushed bundle's channel arrives at a subscriber. The killed hub is started
again (it stands by) and the next takeover kills the new leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from edge_agent.protocol import topics
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.support.mqtt import connect as mqtt_connect
from hub.cli.fabric import prepare_push
from hub.core.publications import parse_channel
from hub.hubdir.layout import HubDir
from tests.brokers import mosquitto_broker
from tests.hub_support import make_bundle, make_hub_dir

__all__ = ["takeover_times"]

FRESHNESS = topics.freshness_topic("eu-1", parse_channel("group/line-a"))
START_WAIT_S = 60.0


@dataclass
class _Serve:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def _last_schedule_line(self) -> str:
        """The newest status line about the schedule, without the ``edge-hub serve:``
        prefix."""
        line = next((line for line in reversed(self.lines) if "the schedule" in line), "")
        return line.removeprefix("edge-hub serve: ")

    def leads(self) -> bool:
        return self._last_schedule_line().startswith("leads the schedule")

    def stands_by(self) -> bool:
        return self._last_schedule_line().startswith("another hub leads the schedule")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def _read(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


def _start(hub: Path, registry: str, broker: str, interval_s: float) -> _Serve:
    process = subprocess.Popen(
        [
            sys.executable,
            *("-m", "hub.cli.main", "serve", "--hub-dir", str(hub), "--registry", registry),
            *("--broker", broker, "--freshness-interval", f"{interval_s:g}s"),
        ],
        stdout=subprocess.PIPE,
        stderr=(hub / "serve.log").open("a"),
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    serve = _Serve(process)
    assert process.stdout is not None
    threading.Thread(target=_read, args=(process.stdout, serve.lines), daemon=True).start()
    return serve


async def _until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + START_WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


def _after(arrivals: list[float], moment: float) -> Callable[[], bool]:
    return lambda: bool(arrivals) and arrivals[-1] > moment


@contextlib.asynccontextmanager
async def _arrivals(url: str) -> AsyncIterator[list[float]]:
    """The monotonic times freshness tokens arrive at, for the block."""
    times: list[float] = []
    async with mqtt_connect(BrokerSettings.from_url(url), client_id="bench-takeover") as conn:
        await conn.subscribe([FRESHNESS])

        async def pump() -> None:
            async for message in conn.messages():
                if message.payload:
                    times.append(time.monotonic())

        task = asyncio.create_task(pump())
        try:
            yield times
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def takeover_times(
    registry: str, work: Path, takeovers: int, interval_s: float
) -> list[float]:
    """Seconds from each leader's SIGKILL to the next freshness token, ``takeovers`` times,
    on the registry at ``registry`` (a ``hub.db`` path or a PostgreSQL URL)."""
    setup = make_hub_dir(work / "hub", devices=())
    prepare_push(HubDir(setup.path, registry), make_bundle(setup.keys, 1), now=int(time.time()))
    times: list[float] = []
    async with mosquitto_broker() as broker, _arrivals(broker.url) as arrivals:
        serves = [_start(setup.path, registry, broker.url, interval_s)]
        try:
            await _until(serves[0].leads, "the first hub leads")
            serves.append(_start(setup.path, registry, broker.url, interval_s))
            await _until(serves[1].stands_by, "the second hub stands by")
            for _ in range(takeovers):
                await _until(_after(arrivals, time.monotonic()), "a freshness round")
                await asyncio.sleep(random.uniform(0, interval_s))
                leader = next(s for s in serves if s.leads() and s.process.poll() is None)
                os.kill(leader.process.pid, signal.SIGKILL)
                killed = time.monotonic()
                leader.process.wait()
                serves.remove(leader)
                standby = serves[0]
                await _until(_after(arrivals, killed), "the standby's round")
                times.append(arrivals[-1] - killed)
                await _until(standby.leads, "the standby leads")
                serves.append(_start(setup.path, registry, broker.url, interval_s))
                await _until(serves[-1].stands_by, "the restarted hub stands by")
        finally:
            for serve in serves:
                serve.stop()
    return times

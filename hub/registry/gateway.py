"""The way to the registry from the hub's event loop: every operation runs off the loop.

The hub's loop holds its broker connection, its MQTT keep-alives, the console and every
timer (the service and the console each have a gateway, in front of their own registry
connection); a registry write that waits on an fsync, on a lock another ``edge-hub`` command
holds, or on a PostgreSQL server restarting must stall none of them. A
:class:`RegistryGateway` runs each operation (a whole transaction written as one function:
a burst of lineage batches in its write group, a round of signed publications, one
read) on a worker thread of its own and the loop awaits the result::

    stored = await context.db(store_burst, burst)

One worker, one operation at a time, in the order they were submitted: operations never
interleave, so what the service did in one order on the loop it still does in that order
(an ack only after the burst that stored its batch committed; a revocation's epoch
recorded before it is published), and what these functions share in memory (the burst's
outbox, the rejection counters, the devices known) is touched by one thread only. A
SQLite connection is used only from that thread once the service runs (it is opened with
``check_same_thread=False`` and never used by two threads at once). For PostgreSQL the
worker takes its connection from the backend's pool, which reconnects on its own
(docs/scale.md, "The event loop never waits on the database").

Why not aiosqlite (the project's async SQLite library)? It runs each statement, fetch and
commit on its connection's thread and hops back to the loop after each one; a registry
operation is many statements (``store_batch``: reads, inserts, a checkpoint, the commit),
so it would cross threads that many times, where this gateway crosses once per
operation, keeps one SQLite backend for the service and the CLIs, and serves both
backends. Measured (``bench/registry_gateway.py``, docs/scale.md): for the intake's shape,
32 batches in one transaction, one hop stored 2.9x the batches a second of aiosqlite
statement by statement (1299 against 453); for one ``store_batch`` on its own the fsync
dominates and both are alike (224 against 261, within the spread).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["RegistryGateway"]

P = ParamSpec("P")
T = TypeVar("T")


class RegistryGateway:
    """Runs registry operations, one at a time in submission order, on a worker thread
    named ``name``; awaited from the event loop (:meth:`__call__`)."""

    def __init__(self, name: str = "registry") -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def __call__(self, operation: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """What ``operation(*args, **kwargs)`` returns (or raises), run on the worker while
        the loop goes on. A caller cancelled while it runs stops waiting; the operation
        still finishes (a transaction is never cut in half): a burst stored that way is
        acknowledged when the device resends it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._worker, functools.partial(operation, *args, **kwargs)
        )

    def close(self) -> None:
        """Wait for the operation running, if any; afterwards nothing more is accepted (the
        registry can then be closed)."""
        self._worker.shutdown(wait=True, cancel_futures=True)

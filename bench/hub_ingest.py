"""Hub lineage ingest rate: verified entries per second, in one hub process, no broker.

What each row times, for batches of ``--batch`` entries (the agent's shipping unit) over a
log of ``--entries`` decisions signed by one simulated device:

- verify: :func:`hub.core.ingest.ingest_batch` alone (device signature on the batch, checkpoint
  note signature, strict decode and chain of every entry, tree recomputed and compared with
  the signed root), from the stored state the previous batch left;
- verify+store: the same plus :meth:`hub.registry.interface.Registry.store_batch` in the registry
  (SQLite WAL, ``synchronous=FULL``: one fsync per batch), i.e. what ``edge-hub serve`` does
  before it acknowledges (less the MQTT receive and the ack publish).

Each configuration runs ``--runs`` times on a fresh registry; the table gives the median
and the spread (min-max) in verified entries per second.

Usage: python bench/hub_ingest.py [--entries 50000] [--batch 512] [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.protocol.checkpoint import Checkpoint, origin_for, sign_checkpoint
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Entry, Kind, encode_entry, entry_hash
from edge_agent.protocol.merkle import Frontier
from edge_agent.protocol.request import Request
from edge_agent.protocol.shipping import LineageBatch, sign_batch
from hub.core.ingest import ingest_batch
from hub.registry import Registry
from hub.registry.backends import open_registry
from hub.registry.records import Accepted, DeviceLog

DEVICE = "gw-bench"


class _NoStore:
    def entries(self, start: int, stop: int) -> list[bytes]:
        return []

    def checkpoint_root(self, size: int) -> bytes | None:
        return None


def _log(count: int) -> list[bytes]:
    entries, prev = [], GENESIS_PREV
    for seq in range(count):
        data = encode_entry(
            Entry(
                seq=seq,
                time=1_800_000_000 + seq,
                prev=prev,
                kind=Kind.DECISION,
                allowed=seq % 5 != 0,
                reason="allowed" if seq % 5 else "policy_denied",
                rule="camera-exec",
                bundle_digest=bytes(32),
                bundle_version=7,
                request=Request("svc:camera", "exec", f"/opt/camera/bin/tool-{seq % 97}"),
            )
        )
        entries.append(data)
        prev = entry_hash(data)
    return entries


def _batches(entries: list[bytes], size: int, key: PrivateKey, device: str = DEVICE) -> list[bytes]:
    origin = origin_for(device, 1)
    frontier, batches = Frontier(), []
    for start in range(0, len(entries), size):
        chunk = entries[start : start + size]
        frontier, _ = frontier.extend(entry_hash(e) for e in chunk)
        note = sign_checkpoint(Checkpoint(origin, frontier.size, frontier.root()), key, origin)
        batches.append(sign_batch(LineageBatch(device, start, tuple(chunk), note), key))
    return batches


def _run(batches: list[bytes], key: PrivateKey, registry: Registry | None) -> tuple[float, int]:
    origin, log, stored = origin_for(DEVICE, 1), DeviceLog(), 0
    started = time.perf_counter()
    for data in batches:
        result = ingest_batch(
            data,
            device=DEVICE,
            key=key.public,
            origin=origin,
            log=log,
            stored=_NoStore() if registry is None else registry.stored_log(DEVICE),
        )
        assert isinstance(result, Accepted)
        if registry is not None:
            assert registry.store_batch(result, expected_size=log.size, received_at=0)
        log, stored = result.log, stored + len(result.entries)
    return time.perf_counter() - started, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10,000 entries, 3 runs")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.runs = 10_000, 3
    key = PrivateKey.generate()
    batches = _batches(_log(args.entries), args.batch, key)
    print(f"{args.entries} entries in batches of {args.batch}, {args.runs} runs each")
    print(f"{'':14} {'median':>12} {'min':>12} {'max':>12}  (verified entries/s)")
    for label, with_store in (("verify", False), ("verify+store", True)):
        rates = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                registry = open_registry(Path(tmp) / "hub.db") if with_store else None
                elapsed, count = _run(batches, key, registry)
                if registry is not None:
                    registry.close()
            rates.append(count / elapsed)
        print(
            f"{label:14} {statistics.median(rates):>12,.0f} {min(rates):>12,.0f} "
            f"{max(rates):>12,.0f}"
        )


if __name__ == "__main__":
    main()

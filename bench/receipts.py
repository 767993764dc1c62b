"""Receipts benchmark: size and cost of a decision receipt, at the device and at the hub, and
what cosigning costs the hub's ingest.

For a device log of each size in ``--sizes`` (1,000 and 1,000,000 entries; ``--quick``:
1,000 and 100,000), built with the store's batch append as ``bench/lineage.py`` does and
shipped to a hub registry exactly as the agent ships it (``LineageLog.unacknowledged``, the
signed note at the batch's end, 512 entries a batch; the hub verifies, cosigns and stores
each batch, ``hub.core.ingest`` + ``hub.core.witness`` + ``store_batch``), for random entries:

- **hub receipt**: ``hub.core.receipts.hub_receipt``, what ``edge-hub lineage receipt`` runs
  once the registry is open: the newest cosigned checkpoint covering the entry (its device
  signature and cosignature checked), the entry, the inclusion path from the registry's tree
  nodes (checked against the root), the COSE receipt signed by the witness key;
- **device receipt**: ``LineageLog.prove`` (the entry, its path, the newest signed checkpoint)
  and ``build_receipt`` signed by the device key: the library calls a device-side
  ``edge-agent log receipt`` makes;
- **`log prove`**: ``LineageLog.prove`` alone and ``verify_inclusion_proof``, the figures
  ``bench/lineage.py`` reports, measured here in the same run;
- **verify**: ``verify_receipt`` of the hub's receipt with the device key and the witness key
  (a library call), and ``edge-verify receipt`` as a process when the console script is
  installed (skipped otherwise);
- **size** of the hub's receipt (COSE, and as a C2SP tlog-proof) and of the device's.

**Cosigning cost**: the hub's ingest rate of one device log (``--ingest-entries``) in
batches of 16 and 512 entries, with and without the cosigning step, alternating runs on fresh
registries: verification alone, and verification plus ``store_batch`` (one SQLite commit per
batch, ``synchronous=FULL``); then the running service's intake (``HubService``, no broker:
envelope check, ingest, cosigning, burst transactions, signed acks) with 200 devices shipping
one batch of 100 entries each, as in the 1,000-agent fleet bench, with the hub's witness key
and without it (``HubKeys.witness = None``: the bench's switch; the service always cosigns
when it holds the key). Cosigning costs one Ed25519 signature and a note rewrite per batch,
so small batches show the largest share.

Every figure is the median (min-max) of ``--repeat`` repetitions (3); a repetition's time
figure is the median over its ``--count`` random entries. Run on a quiet machine; compare
ratios, not absolutes.

Usage: python bench/receipts.py [--quick] [--sizes N ...] [--count C] [--repeat R]
                                [--ingest-entries N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from bench.hub_ingest import _batches, _log  # noqa: E402
from bench.lineage import DEVICE, NOW, build_log, spread  # noqa: E402
from edge_agent.lineage.log import LineageLog  # noqa: E402
from edge_agent.protocol import topics  # noqa: E402
from edge_agent.protocol.checkpoint import origin_for  # noqa: E402
from edge_agent.protocol.keys import PrivateKey  # noqa: E402
from edge_agent.protocol.lineage_export import verify_inclusion_proof  # noqa: E402
from edge_agent.protocol.receipt import build_receipt, verify_receipt  # noqa: E402
from edge_agent.protocol.shipping import LineageBatch, sign_batch  # noqa: E402
from edge_agent.protocol.topics import DeviceLeaf  # noqa: E402
from edge_agent.support.mqtt import Incoming  # noqa: E402
from hub.core.ingest import ingest_batch  # noqa: E402
from hub.core.receipts import hub_receipt  # noqa: E402
from hub.core.witness import witness_accepted  # noqa: E402
from hub.registry import DeviceRecord, Registry  # noqa: E402
from hub.registry.backends import open_registry  # noqa: E402
from hub.registry.records import Accepted, DeviceLog  # noqa: E402
from hub.service.config import HubConfig  # noqa: E402
from hub.service.server import HubService  # noqa: E402
from tests.hub_support import make_hub_dir  # noqa: E402
from tests.witness_support import RecordingConnection  # noqa: E402

SHIP_BATCH = 512
INGEST_BATCHES = (16, 512)
TARGET_SIZE_BYTES = 2048
TARGET_HUB_MS = 5.0
TARGET_DEVICE_MS = 10.0
TARGET_VERIFY_MS = 1.0
TARGET_INGEST_DROP = 0.10
SERVICE_DEVICES = 200
SERVICE_ENTRIES = 100
"""The service intake row: devices shipping one batch of this many entries each, as in the
1,000-agent fleet bench (100,000 decisions over 1,000 agents)."""


@dataclass(frozen=True, slots=True)
class Logs:
    """One device log and the hub registry it was shipped to."""

    size: int
    device: LineageLog
    registry: Registry
    witness: PrivateKey


def ship(root: Path, size: int) -> Logs:
    """A device log of ``size`` entries, shipped batch by batch to a new registry whose hub
    verifies, cosigns and stores each batch."""
    device, _ = build_log(root, size)
    assert device.key is not None
    witness = PrivateKey.generate()
    registry = open_registry(Path(tempfile.mkdtemp(dir=root)) / "hub.db")
    registry.add_device(DeviceRecord(DEVICE, "eu-1", (), "generic", device.key.public))
    origin, log = origin_for(DEVICE, 1), DeviceLog()
    while log.size < size:
        chunk = device.unacknowledged(SHIP_BATCH)
        end = chunk[-1][0] + 1
        batch = LineageBatch(
            DEVICE, chunk[0][0], tuple(e for _, e in chunk), device.checkpoint_note(end, NOW)
        )
        accepted = ingest_batch(
            sign_batch(batch, device.key),
            device=DEVICE,
            key=device.key.public,
            origin=origin,
            log=log,
            stored=registry.stored_log(DEVICE),
        )
        assert isinstance(accepted, Accepted)
        accepted = witness_accepted(accepted, witness, now=NOW)
        assert registry.store_batch(accepted, expected_size=log.size, received_at=NOW)
        device.acknowledge(accepted.acked)
        log = accepted.log
    return Logs(size, device, registry, witness)


def timed(call: Callable[[], object]) -> float:
    """Milliseconds one call takes."""
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


@dataclass
class Figures:
    """Per repetition: the median of each timing over the random entries, and sizes."""

    ms: dict[str, list[float]]
    bytes: dict[str, list[int]]


def hub_cose(logs: Logs, seq: int) -> bytes:
    """The hub's COSE receipt of entry ``seq`` (``edge-hub lineage receipt``, registry open)."""
    witness = logs.witness
    return hub_receipt(
        logs.registry, DEVICE, seq, witness=witness, witnesses=(witness.public,), now=NOW
    )[0]


def device_cose(logs: Logs, seq: int) -> bytes:
    """The device's COSE receipt of entry ``seq``: ``LineageLog.prove``, then signed."""
    assert logs.device.key is not None
    proof = logs.device.prove(seq, NOW)
    return build_receipt(
        entry=proof.entry,
        seq=seq,
        tree_size=proof.tree_size,
        path=proof.proof,
        note=proof.checkpoint,
        signer=logs.device.key,
        now=NOW,
    )


def measure(logs: Logs, count: int, repeat: int, scratch: Path) -> Figures:
    device_key, witness = logs.device.key, logs.witness
    assert device_key is not None
    rng = random.Random(17)
    ms: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    witnesses = (witness.public,)
    for _ in range(repeat):
        rows: dict[str, list[float]] = {}
        for seq in [rng.randrange(logs.size) for _ in range(count)]:
            receipt = hub_cose(logs, seq)
            proof = logs.device.prove(seq, NOW)
            samples = {
                "hub receipt": timed(lambda: hub_cose(logs, seq)),  # noqa: B023
                "device receipt": timed(lambda: device_cose(logs, seq)),  # noqa: B023
                "log prove": timed(lambda: logs.device.prove(seq, NOW)),  # noqa: B023
                "log prove: verify": timed(
                    lambda: verify_inclusion_proof(proof, device_key.public, logs.device.origin)  # noqa: B023
                ),
                "verify_receipt": timed(
                    lambda: verify_receipt(
                        receipt,  # noqa: B023
                        device_key=device_key.public,
                        witness_keys=witnesses,
                    )
                ),
            }
            for name, value in samples.items():
                rows.setdefault(name, []).append(value)
        for name, values in rows.items():
            ms.setdefault(name, []).append(statistics.median(values))
        seq = rng.randrange(logs.size)
        tlog = hub_receipt(
            logs.registry,
            DEVICE,
            seq,
            witness=witness,
            witnesses=witnesses,
            now=NOW,
            fmt="tlog-proof",
        )[0]
        for name, data in (
            ("hub receipt (COSE)", hub_cose(logs, seq)),
            ("hub receipt (tlog-proof)", tlog),
            ("device receipt (COSE, no cosignature)", device_cose(logs, seq)),
        ):
            sizes.setdefault(name, []).append(len(data))
    process = process_verify(logs, scratch, repeat)
    if process is not None:
        ms["edge-verify (process)"] = process
    return Figures(ms, sizes)


def process_verify(logs: Logs, scratch: Path, repeat: int) -> list[float] | None:
    """Milliseconds ``edge-verify receipt`` takes as a process; ``None`` when not installed."""
    script = Path(sys.executable).parent / "edge-verify"
    found = str(script) if script.exists() else shutil.which("edge-verify")
    if found is None:
        return None
    assert logs.device.key is not None
    receipt, device_pem, witness_pem = (scratch / n for n in ("r.receipt", "dev.pub", "hub.pub"))
    receipt.write_bytes(hub_cose(logs, logs.size // 2))
    device_pem.write_text(logs.device.key.public.to_pem())
    witness_pem.write_text(logs.witness.public.to_pem())
    command = [found, "receipt", str(receipt), "--device-key", str(device_pem)]
    command += ["--witness-key", str(witness_pem)]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False)
        times.append((time.perf_counter() - started) * 1000)
        if done.returncode != 0:
            print(f"edge-verify refused the hub's receipt: {done.stderr.decode()[:200]}")
            return None
    return times


def ingest_rates(entries: int, batch: int, repeat: int, root: Path) -> dict[str, list[float]]:
    """Entries per second through the hub's ingest, with and without cosigning, verify only
    and verify+store, alternating the variants within each repetition."""
    key, witness = PrivateKey.generate(), PrivateKey.generate()
    batches = _batches(_log(entries), batch, key)
    rates: dict[str, list[float]] = {}
    for _ in range(repeat):
        for store in (False, True):
            for cosign in (False, True):
                registry = (
                    open_registry(Path(tempfile.mkdtemp(dir=root)) / "hub.db") if store else None
                )
                elapsed = run_ingest(batches, key, registry, witness if cosign else None)
                if registry is not None:
                    registry.close()
                label = f"{'verify+store' if store else 'verify'}{', cosigned' if cosign else ''}"
                rates.setdefault(label, []).append(entries / elapsed)
    return rates


def run_ingest(
    batches: Sequence[bytes], key: PrivateKey, registry: Registry | None, witness: PrivateKey | None
) -> float:
    """Seconds to ingest ``batches`` (and store them when given a registry); each accepted
    batch is cosigned when given a ``witness`` key, as ``edge-hub serve`` does."""
    origin, log = origin_for(DEVICE, 1), DeviceLog()
    stored = _Empty() if registry is None else registry.stored_log(DEVICE)
    started = time.perf_counter()
    for data in batches:
        result = ingest_batch(
            data, device=DEVICE, key=key.public, origin=origin, log=log, stored=stored
        )
        assert isinstance(result, Accepted)
        if witness is not None:
            result = witness_accepted(result, witness, now=NOW)
        if registry is not None:
            assert registry.store_batch(result, expected_size=log.size, received_at=NOW)
        log = result.log
    return time.perf_counter() - started


class _Empty:
    def entries(self, start: int, stop: int) -> list[bytes]:
        return []

    def checkpoint_root(self, size: int) -> bytes | None:
        return None


def service_rates(devices: int, entries: int, repeat: int, root: Path) -> dict[str, list[float]]:
    """Entries per second through a started hub service's intake (envelope check, ingest,
    cosigning, burst transactions, signed acks; no broker), ``devices`` devices shipping one
    batch of ``entries`` each, with the hub's witness key and without it (the injectable:
    ``HubKeys.witness = None``), alternating within each repetition."""
    # The hub warns once per start that it holds no witness key: expected here.
    logging.getLogger("hub.service.lineage").setLevel(logging.ERROR)
    rates: dict[str, list[float]] = {}
    for rep in range(repeat):
        for cosign in (False, True):
            ids = [(f"gw-{i:04d}", "line-a") for i in range(devices)]
            setup = make_hub_dir(root / f"service-{rep}-{cosign}", ids)
            messages = []
            for device_id, sim in setup.devices.items():
                sim.add(entries)
                topic = topics.device_topic("eu-1", device_id, DeviceLeaf.LINEAGE)
                messages.append(Incoming(topic, sim.batch(0, entries), False))
            service = HubService(HubConfig(hub_dir=setup.path, write_serve_file=False))
            keys = service.hub_dir.load_keys()
            with open_registry(setup.path / "hub.db") as registry:
                service._start(registry, keys if cosign else replace(keys, witness=None))
                connection = RecordingConnection(messages)
                started = time.perf_counter()
                asyncio.run(service._started.intake.consume(connection))  # type: ignore[arg-type]
                elapsed = time.perf_counter() - started
            assert len(connection.published) == devices, "every batch is acknowledged"
            label = "service intake, cosigned" if cosign else "service intake"
            rates.setdefault(label, []).append(devices * entries / elapsed)
    return rates


def print_figures(figures: dict[int, Figures], count: int, repeat: int) -> dict[str, bool]:
    sizes = sorted(figures)
    print("## Receipts: time to produce and verify, size\n")
    print(
        f"{repeat} repetitions of {count} random entries each; ms: median (min-max) over the "
        "repetitions of each repetition's median. Hub and device receipts are COSE (RFC 9942).\n"
    )
    print("| figure | " + " | ".join(f"{n:,} entries" for n in sizes) + " | target |")
    print("|---|" + "---:|" * len(sizes) + "---|")
    targets = {
        "hub receipt": f"<= {TARGET_HUB_MS:g} ms",
        "device receipt": f"<= {TARGET_DEVICE_MS:g} ms",
        "verify_receipt": f"<= {TARGET_VERIFY_MS:g} ms",
        "hub receipt (COSE)": f"<= {TARGET_SIZE_BYTES:,} B at 1M",
    }
    for name in figures[sizes[0]].ms:
        cells = [spread(figures[n].ms[name], 3) if name in figures[n].ms else "-" for n in sizes]
        print(f"| {name}, ms | " + " | ".join(cells) + f" | {targets.get(name, 'report')} |")
    for name in figures[sizes[0]].bytes:
        cells = [spread([float(v) for v in figures[n].bytes[name]]) for n in sizes]
        print(f"| {name}, bytes | " + " | ".join(cells) + f" | {targets.get(name, 'report')} |")
    if "edge-verify (process)" not in figures[sizes[0]].ms:
        print("\n`edge-verify` is not installed here: its process figure is skipped.")
    print()
    big = figures[sizes[-1]]
    return {
        f"hub receipt <= {TARGET_HUB_MS:g} ms": statistics.median(big.ms["hub receipt"])
        <= TARGET_HUB_MS,
        f"device receipt <= {TARGET_DEVICE_MS:g} ms": statistics.median(big.ms["device receipt"])
        <= TARGET_DEVICE_MS,
        f"verify_receipt <= {TARGET_VERIFY_MS:g} ms": statistics.median(big.ms["verify_receipt"])
        <= TARGET_VERIFY_MS,
        f"receipt <= {TARGET_SIZE_BYTES:,} bytes": max(big.bytes["hub receipt (COSE)"])
        <= TARGET_SIZE_BYTES,
    }


def print_ingest(entries: int, repeat: int, root: Path) -> dict[str, bool]:
    print(f"## Hub ingest with and without cosigning ({entries:,} entries, one device)\n")
    print(
        f"{repeat} repetitions, the four variants alternating in each; verified entries/s, "
        "median (min-max); drop = 1 - cosigned / plain, of the medians.\n"
    )
    print("| batch | step | plain entries/s | cosigned entries/s | drop |")
    print("|---:|---|---:|---:|---:|")
    held = {}
    for batch in INGEST_BATCHES:
        rates = ingest_rates(entries, batch, repeat, root)
        for step in ("verify", "verify+store"):
            plain, cosigned = rates[step], rates[f"{step}, cosigned"]
            drop = 1 - statistics.median(cosigned) / statistics.median(plain)
            print(f"| {batch} | {step} | {spread(plain)} | {spread(cosigned)} | {drop:.1%} |")
            if step == "verify+store":
                held[f"cosigning drops verify+store by <= 10% (batches of {batch})"] = (
                    drop <= TARGET_INGEST_DROP
                )
    rates = service_rates(SERVICE_DEVICES, SERVICE_ENTRIES, repeat, root)
    plain, cosigned = rates["service intake"], rates["service intake, cosigned"]
    drop = 1 - statistics.median(cosigned) / statistics.median(plain)
    print(
        f"| {SERVICE_ENTRIES} | service intake ({SERVICE_DEVICES} devices) | {spread(plain)} | "
        f"{spread(cosigned)} | {drop:.1%} |"
    )
    held["cosigning drops the service's intake by <= 10%"] = drop <= TARGET_INGEST_DROP
    print()
    return held


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="logs of 1,000 and 100,000")
    parser.add_argument("--sizes", type=int, nargs="+", help="log sizes")
    parser.add_argument("--count", type=int, help="random entries per repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions")
    parser.add_argument("--ingest-entries", type=int, help="entries of the ingest comparison")
    parser.add_argument("--dir", type=Path, help="where to put logs (default: a temp dir)")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([1_000, 100_000] if args.quick else [1_000, 1_000_000])
    count = args.count or (100 if args.quick else 300)
    ingest_entries = args.ingest_entries or (10_240 if args.quick else 51_200)
    results: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="receipts-bench-") as scratch:
        root = Path(scratch)
        print("# Receipts benchmark\n")
        print(
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
        )
        figures = {}
        for size in sizes:
            started = time.perf_counter()
            logs = ship(root, size)
            elapsed = time.perf_counter() - started
            print(f"log of {size:,} entries built and shipped in {elapsed:.1f} s")
            figures[size] = measure(logs, count, args.repeat, root)
            logs.registry.close()
            logs.device.close(NOW)
        print()
        results |= print_figures(figures, count, args.repeat)
        results |= print_ingest(ingest_entries, args.repeat, root)
    print("## Targets\n")
    for name, held in results.items():
        print(f"- {name}: {'met' if held else 'MISSED'}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Console at fleet scale: server time of the dashboard, the lineage search, a device page and
a proof check, on a registry of ``--devices`` devices and ``--entries`` shipped entries.

The registry is generated directly (no broker, no ingest): every device gets a key, a group
(one of ten), a signed status, and a log of ``entries / devices`` decision entries whose
verdict, reason, rule, subject, action, resource and bundle version vary, spread over the
last 30 days. The entries, their search rows (:mod:`hub.registry.sqlite.lineage_search`),
tree nodes, checkpoint notes (signed by the device, cosigned by the hub's witness key) and
log state are written with ``executemany`` in large transactions, from a few dozen logs
encoded once (entries carry no device id, so devices share them). The hub directory lives in
a temporary directory, deleted afterwards; or, with ``--hub DIR``, in ``DIR``, kept: a later
run with the same ``--hub`` reuses it (generating takes minutes at full size, so the runs of
an A/B comparison can share one registry).

What each row times, over the console app (Starlette TestClient, logged in as a viewer;
the time of a whole request in-process, so a little more than the handler's):

- **dashboard**: ``GET /`` (cbase's page);
- **search, 3 filters, page 1 / page 1,000**: ``GET /lineage?group=..&verdict=allow&since=..``
  (50 hits a page), and the same with the cursor of page 999 (walked beforehand);
- **device page**: ``GET /devices/{id}``;
- **proof check**: :func:`hub.console.proof.check_proof` of a hub receipt (COSE) of a random
  entry: the server-side work of ``POST /proof`` (each of ``--requests`` receipts checked
  :data:`PROOF_ROUNDS` times); and the same as the thread's CPU time
  (:func:`time.thread_time`), which leaves out the time the thread waited for a CPU: on a
  loaded machine a sub-millisecond call's p99 is mostly that wait;
- **`edge-hub lineage show`**: the same search done the only way the CLI can: ``lineage
  show`` of every device of the group (each re-verifies its whole log), filtered afterwards;
  in-process (``hub.cli.fleet.lineage_view``), and one device as a process for scale.

Each request figure is p50 / p99 over ``--requests`` requests, reported as the median
(min-max) of ``--runs`` runs. No figure is asserted: compare with the targets of issue 18
(dashboard <= 100 ms p99, search <= 200 ms p99, device page <= 50 ms, proof <= 5 ms).

Usage: python bench/console.py [--devices 10000] [--entries 10000000] [--runs 3]
                               [--requests 200] [--quick] [--dir DIR] [--hub DIR]
                               [--no-show]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from starlette.testclient import TestClient  # noqa: E402

from edge_agent.protocol.checkpoint import Checkpoint, origin_for, sign_checkpoint  # noqa: E402
from edge_agent.protocol.cosignature import cosign_note  # noqa: E402
from edge_agent.protocol.keys import PrivateKey  # noqa: E402
from edge_agent.protocol.lineage_entries import (  # noqa: E402
    GENESIS_PREV,
    Entry,
    Kind,
    encode_entry,
    entry_hash,
)
from edge_agent.protocol.merkle import Frontier  # noqa: E402
from edge_agent.protocol.request import Request  # noqa: E402
from edge_agent.protocol.shipping import DeviceStatus, sign_status  # noqa: E402
from hub.cli.fleet import lineage_view  # noqa: E402
from hub.cli.operations import init_keys  # noqa: E402
from hub.console.app import create_app  # noqa: E402
from hub.console.context import ConsoleContext  # noqa: E402
from hub.console.lineage import witness_keys  # noqa: E402
from hub.console.lineage_query import Search, search_url  # noqa: E402
from hub.console.proof import check_proof  # noqa: E402
from hub.core.receipts import hub_receipt  # noqa: E402
from hub.hubdir.layout import HubDir  # noqa: E402
from hub.registry import Registry  # noqa: E402
from hub.registry.lineage_records import LineageQuery  # noqa: E402
from hub.registry.records import STORED_NODE_LEVEL  # noqa: E402
from hub.registry.sqlite.lineage_search import SEARCH_INSERT  # noqa: E402
from tests.console_support import add_token, login  # noqa: E402

NOW = 1_800_000_000
DAYS = 30
GROUPS = 10
VERSIONS = (5, 6, 7, 8, 9)
OFFSETS = 8
"""Time offsets of the shared logs: devices with different offsets interleave in time."""
BATCHES = 2
"""Shipped batches per device log: each ends in a cosigned checkpoint."""
SUBJECTS = (*(f"svc:app-{i}" for i in range(12)), "user:ops", "user:root")
ACTIONS = ("exec", "read", "write", "connect")
REASONS_DENY = ("policy_denied", "no_rule", "bundle_expired", "attestation_stale")
PAGE_ROWS = 50
DEEP_PAGE = 1000
SEARCH_GROUP = "group-3"
PROOF_ROUNDS = 10
"""Each receipt is checked this many times: a check takes under a millisecond, so its p99
needs more samples than a page's to mean anything."""


@dataclass(frozen=True)
class SharedLog:
    """One encoded log that several devices ship: its entries, search rows (without the
    device), stored tree nodes and the roots at the batch ends."""

    entries: list[bytes]
    rows: list[tuple[object, ...]]
    nodes: list[tuple[int, int, bytes]]
    ends: list[tuple[int, bytes]]
    frontier: Frontier
    last_hash: bytes


def _entry(seq: int, time_: int, version: int, prev: bytes) -> Entry:
    allowed = seq % 5 != 0
    reason = "allowed" if allowed else REASONS_DENY[(seq // 5) % len(REASONS_DENY)]
    request = Request(
        SUBJECTS[seq % len(SUBJECTS)],
        ACTIONS[seq % len(ACTIONS)],
        f"/opt/app-{seq % 50}/bin/tool-{seq % 7}",
        selectors=(f"uid:{1000 + seq % 20}",),
    )
    return Entry(
        seq=seq,
        time=time_,
        prev=prev,
        kind=Kind.DECISION,
        allowed=allowed,
        reason=reason,
        rule=f"rule-{seq % 40}" if allowed else None,
        bundle_digest=bytes([version]) * 32,
        bundle_version=version,
        request=request,
    )


def shared_log(size: int, offset: int, version: int) -> SharedLog:
    """A log of ``size`` entries spread over the last :data:`DAYS` days from ``offset``."""
    step = DAYS * 86400 // size
    start = NOW - DAYS * 86400 + offset * step // OFFSETS
    entries, rows, nodes, ends = [], [], [], []
    frontier, prev = Frontier(), GENESIS_PREV
    batch_ends = {size * (b + 1) // BATCHES for b in range(BATCHES)}
    for seq in range(size):
        entry = _entry(seq, start + seq * step, version, prev)
        data = encode_entry(entry)
        prev = entry_hash(data)
        frontier, closed = frontier.append(prev)
        nodes += [(n.level, n.index, n.hash) for n in closed if n.level >= STORED_NODE_LEVEL]
        entries.append(data)
        request = entry.request
        assert request is not None
        rows.append(
            (
                entry.time,
                seq,
                str(entry.kind),
                int(entry.allowed),
                entry.reason,
                entry.rule,
                request.subject,
                request.action,
                request.resource,
                version,
            )
        )
        if seq + 1 in batch_ends:
            ends.append((seq + 1, frontier.root()))
    return SharedLog(entries, rows, nodes, ends, frontier, prev)


def generate(hub_path: Path, devices: int, entries: int) -> list[str]:
    """Create the hub directory and fill its registry; return the device ids."""
    started = time.perf_counter()
    hub_path.mkdir(parents=True)
    init_keys(hub_path / "keys", root_keys=1, root_threshold=1, now=NOW - 86400, ttl=86400 * 365)
    hub = HubDir(hub_path)
    witness = hub.load_keys().witness
    assert witness is not None
    hub.open_registry().close()
    per_device = entries // devices
    logs = {(o, v): shared_log(per_device, o, v) for o in range(OFFSETS) for v in VERSIONS}
    print(f"  {len(logs)} shared logs of {per_device} entries encoded", flush=True)
    ids = [f"gw-{i:05d}" for i in range(devices)]
    keys = {device: PrivateKey.generate() for device in ids}
    db = sqlite3.connect(hub_path / "hub.db", isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -1000000")
    db.execute("BEGIN")
    for i, device in enumerate(ids):
        log = logs[(i % OFFSETS, VERSIONS[(i // OFFSETS) % len(VERSIONS)])]
        _insert_device(db, device, keys[device], f"group-{i % GROUPS}", log, witness)
        if i % 200 == 199:
            db.execute("COMMIT")
            db.execute("BEGIN")
    db.execute("COMMIT")
    db.close()
    with hub.open_registry() as registry, registry.write_group():
        for i, device in enumerate(ids):
            status = DeviceStatus(device, NOW - i % 120, True, 7, NOW + 3600, "open", 0, 0)
            registry.record_status(status, sign_status(status, keys[device]), NOW - i % 120)
    print(
        f"  generated {devices:,} devices, {per_device * devices:,} entries in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return ids


def _insert_device(
    db: sqlite3.Connection,
    device: str,
    key: PrivateKey,
    group: str,
    log: SharedLog,
    witness: PrivateKey,
) -> None:
    db.execute(
        "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)",
        (device, "eu-1", json.dumps([group]), "generic-x86_64", key.public.raw, 1, NOW - 86400),
    )
    db.executemany(
        "INSERT INTO lineage_entries VALUES (?, ?, ?)",
        [(device, seq, data) for seq, data in enumerate(log.entries)],
    )
    db.executemany(SEARCH_INSERT, [(r[0], device, *r[1:]) for r in log.rows])
    db.executemany(
        "INSERT INTO lineage_nodes VALUES (?, ?, ?, ?)",
        [(device, level, index, h) for level, index, h in log.nodes],
    )
    origin = origin_for(device, 1)
    note = ""
    for size, root in log.ends:
        note = cosign_note(
            sign_checkpoint(Checkpoint(origin, size, root), key, origin), witness, time=NOW
        )
        db.execute(
            "INSERT INTO lineage_checkpoints VALUES (?, ?, ?, ?, ?)",
            (device, size, root, note, NOW),
        )
    db.execute(
        "INSERT INTO lineage_state VALUES (?, ?, ?, ?, ?, ?)",
        (device, log.frontier.size, b"".join(log.frontier.hashes), log.last_hash, note, NOW),
    )


def _percentiles(samples: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _timed(call: Callable[[], object], count: int) -> tuple[float, float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return _percentiles(samples)


def _get(client: TestClient, url: str) -> Callable[[], object]:
    def call() -> object:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
        return response

    return call


def _search() -> Search:
    since = NOW - DAYS * 86400 + DAYS * 86400 // 10
    return Search(LineageQuery(group=SEARCH_GROUP, allowed=True, since=since))


def _deep_page_url(registry: Registry, deep: int) -> str:
    """The URL of page ``deep`` of the search (its cursor walked page by page)."""
    search, after = _search(), None
    for _ in range(deep - 1):
        page = registry.search_lineage(search.query, after=after, limit=PAGE_ROWS)
        assert page.next is not None, "fewer hits than pages: generate more entries"
        after = page.next
    return search_url("/lineage", Search(search.query, after=after))


def _lineage_show(registry: Registry, ids: Sequence[str]) -> tuple[float, int]:
    """Seconds to run the search through ``lineage show`` of every device of the group."""
    query, hits = _search().query, 0
    started = time.perf_counter()
    for device in ids[int(SEARCH_GROUP.split("-")[1]) :: GROUPS]:
        view = lineage_view(registry, device, registry.lineage_state(device).size)
        hits += sum(1 for e in view.entries if e.allowed and e.time >= (query.since or 0))
    return time.perf_counter() - started, hits


def _lineage_show_process(hub_path: Path, device: str, per_device: int) -> float | None:
    command = shutil.which("edge-hub") or str(Path(sys.executable).parent / "edge-hub")
    if not os.path.exists(command):
        return None
    started = time.perf_counter()
    subprocess.run(
        [
            command,
            "lineage",
            "show",
            device,
            "--limit",
            str(per_device),
            "--json",
            "--hub-dir",
            str(hub_path),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


@dataclass
class Run:
    """One run's figures: p50 and p99 in ms per request kind, and the ``lineage show``
    comparison (seconds, hits; one device as a process, when ``edge-hub`` is installed)."""

    requests: dict[str, tuple[float, float]]
    show: tuple[float, int] = (0.0, 0)
    show_process: float | None = None


def measure(hub_path: Path, ids: Sequence[str], requests: int, deep: int, show: bool) -> Run:
    """One run of every measurement (the ``lineage show`` comparison when ``show``)."""
    hub = HubDir(hub_path)
    figures: dict[str, tuple[float, float]] = {}
    with hub.open_registry() as registry:
        context = ConsoleContext(
            registry=registry,
            hub_dir=hub,
            keys=hub.load_keys,
            clock=lambda: NOW,
            hosts=frozenset({"testserver"}),
        )
        client = TestClient(create_app(context), follow_redirects=False)
        login(client, add_token(registry, f"bench-{time.monotonic_ns()}", "viewer"))
        figures["dashboard"] = _timed(_get(client, "/"), max(requests // 4, 20))
        first = search_url("/lineage", _search())
        figures["search page 1"] = _timed(_get(client, first), requests)
        figures["search page N"] = _timed(_get(client, _deep_page_url(registry, deep)), requests)
        pick = random.Random(7)
        device_urls = [f"/devices/{pick.choice(ids)}" for _ in range(requests)]
        samples = []
        for url in device_urls:
            started = time.perf_counter()
            _get(client, url)()
            samples.append((time.perf_counter() - started) * 1000)
        figures["device page"] = _percentiles(samples)
        keys = hub.load_keys()
        assert keys.witness is not None
        per_device = registry.lineage_state(ids[0]).size
        receipts = [
            hub_receipt(
                registry,
                pick.choice(ids),
                pick.randrange(per_device),
                witness=keys.witness,
                witnesses=witness_keys(keys.root),
                now=NOW,
            )[0]
            for _ in range(requests)
        ]
        samples, cpu = [], []
        for _ in range(PROOF_ROUNDS):
            for data in receipts:
                started, started_cpu = time.perf_counter(), time.thread_time()
                assert check_proof(data, registry, keys.root).verified
                samples.append((time.perf_counter() - started) * 1000)
                cpu.append((time.thread_time() - started_cpu) * 1000)
        figures["proof check"] = _percentiles(samples)
        figures["proof check, CPU"] = _percentiles(cpu)
        if not show:
            return Run(figures)
        shown = _lineage_show(registry, ids)
    return Run(figures, shown, _lineage_show_process(hub_path, ids[0], per_device))


def _spread(values: Sequence[float], unit: str = "ms") -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f}) {unit}"


def _bench(hub_path: Path, args: argparse.Namespace) -> list[Run]:
    """Generate the registry at ``hub_path`` (or reuse the one there) and measure it."""
    if (hub_path / "hub.db").exists():
        ids = _device_ids(hub_path)
        args.devices = len(ids)
        print(f"  reusing {hub_path}: {len(ids):,} devices (its size, not --devices/--entries)")
    else:
        ids = generate(hub_path, args.devices, args.entries)
    size = sum(f.stat().st_size for f in hub_path.glob("hub.db*"))
    print(f"  registry {size / 2**30:.2f} GiB")
    return [
        measure(hub_path, ids, args.requests, args.deep_page, not args.no_show)
        for _ in range(args.runs)
    ]


def _device_ids(hub_path: Path) -> list[str]:
    """The ids of a generated registry's devices, in generation order (``gw-00000``...)."""
    db = sqlite3.connect(f"file:{hub_path / 'hub.db'}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT id FROM devices ORDER BY id")]
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="1,000 devices, 1,000,000 entries")
    parser.add_argument("--deep-page", type=int, default=DEEP_PAGE, help="the far page timed")
    parser.add_argument("--dir", type=Path, help="where the temporary hub directory goes")
    parser.add_argument(
        "--hub",
        type=Path,
        help="a hub directory to keep: generated there when missing, else reused as it is",
    )
    parser.add_argument(
        "--no-show", action="store_true", help="skip the `edge-hub lineage show` comparison"
    )
    args = parser.parse_args()
    if args.quick:
        args.devices, args.entries = 1_000, 1_000_000
    print(
        f"console bench: {args.devices:,} devices, {args.entries:,} entries, {args.runs} runs "
        f"of {args.requests} requests"
    )
    if args.hub is not None:
        runs = _bench(args.hub, args)
    else:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="console-bench-") as tmp:
            runs = _bench(Path(tmp) / "hub", args)
    print(f"{'':36} {'p50':>26} {'p99':>26}")
    for name in (
        "dashboard",
        "search page 1",
        "search page N",
        "device page",
        "proof check",
        "proof check, CPU",
    ):
        p50s = [run.requests[name][0] for run in runs]
        p99s = [run.requests[name][1] for run in runs]
        label = name.replace(" N", f" {args.deep_page:,}")
        print(f"{label:36} {_spread(p50s):>26} {_spread(p99s):>26}")
    if args.no_show:
        return
    seconds = [run.show[0] for run in runs]
    print(
        f"{'same search via lineage show':36} {_spread(seconds, 's'):>26}  "
        f"({args.devices // GROUPS:,} devices re-verified, {runs[0].show[1]:,} hits)"
    )
    process = [run.show_process for run in runs if run.show_process is not None]
    if process:
        print(f"{'edge-hub lineage show, 1 device':36} {_spread(process, 's'):>26}  (a process)")


if __name__ == "__main__":
    main()

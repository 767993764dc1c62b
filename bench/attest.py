"""Attestation benchmark: measuring a device, the gate's attestation check, the hub's verifier.

1. **Measurement** of ``firmware_profiles/generic-x86_64.toml`` against a device root built in
   a temporary directory: the packaged agent from ``dist/edge-agent`` when it has been built
   (``make package``; about 30 MB in 75 files), else a synthetic one of the same size, the
   shipped ``agent.toml``, and this machine's ``/etc/os-release``, ``/etc/machine-id`` and
   kernel release. *Cold* is a fresh provider (every byte hashed; the OS page cache is warm,
   so this is CPU cost, not disk); *cached* is the same provider again (unchanged files are
   recognised by ``(dev, inode, size, mtime, ctime)`` and cost one ``stat`` each).
2. **Decision path.** ``trust.gate.decide`` on one state, with a bundle that requires no
   attestation and with one that does (local verdict and hub result present), plus the
   attestation check alone: it reads two values in the state, opens no file, so its cost
   does not grow with the profile.
3. **Hub verification rate.** ``hub.service.verifier.Verifier.verify`` on pre-signed evidence for
   pre-issued nonces, one registry (SQLite WAL, ``synchronous=FULL``) as ``edge-hub serve``
   uses: Ed25519 check, spending the nonce, judging 6 measurements, signing the result and
   recording the outcome, each evidence its own transactions. Also the same without the
   registry writes (envelope check, judgement and result signature only).

Each figure is the median over the runs, with the spread (min to max, or p10 to p90).

Usage: python bench/attest.py [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.attest.measure import FileFactProvider
from edge_agent.attest.profile import load_profile
from edge_agent.policy.bundle import compile_for_device
from edge_agent.protocol.attestation import (
    AttestationResult,
    Challenge,
    Evidence,
    LineageHead,
    Verdict,
    sign_evidence,
    sign_result,
)
from edge_agent.protocol.expectations import expectations_value
from edge_agent.protocol.firmware_profile import Profile
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.trust.gate import attestation_failure, decide
from edge_agent.trust.state import (
    LocalVerdict,
    TrustState,
    with_attestation_result,
    with_bundle,
    with_local_verdict,
)
from hub.cli.attest import build_expectations
from hub.core.attestation_judging import judge_attestation, read_evidence, recorded_bundle_view
from hub.registry import DeviceRecord, PublishedBundle, Registry
from hub.registry.backends import open_registry
from hub.service.verifier import Verifier
from tests.factory import DEVICE, NOW, HubSim

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "firmware_profiles" / "generic-x86_64.toml"
REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")


def _spread(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[0], ordered[-1]


def _device_root(root: Path) -> str:
    """Lay out what generic-x86_64 measures under ``root``; say where the agent came from."""
    agent = root / "opt/edge-agent"
    built = REPO / "dist/edge-agent"
    if (built / "edge-agent").is_file():
        shutil.copytree(built, agent, symlinks=True)
        source = "dist/edge-agent (PyInstaller build)"
    else:
        (agent / "_internal").mkdir(parents=True)
        (agent / "edge-agent").write_bytes(os.urandom(4 * 1024 * 1024))
        for index in range(74):
            (agent / "_internal" / f"lib{index}.so").write_bytes(os.urandom(350 * 1024))
        source = "synthetic (30 MB in 75 files; run 'make package' for the real one)"
    config = root / "etc/edge-agent/agent.toml"
    config.parent.mkdir(parents=True)
    shutil.copyfile(REPO / "packaging/deb/agent.toml", config)
    shutil.copyfile("/etc/os-release", root / "etc/os-release")
    machine_id = Path("/etc/machine-id").read_text().strip() or "0" * 32
    (root / "etc/machine-id").write_text(machine_id + "\n")
    osrelease = root / "proc/sys/kernel/osrelease"
    osrelease.parent.mkdir(parents=True)
    osrelease.write_text(Path("/proc/sys/kernel/osrelease").read_text())
    return source


def bench_measurement(runs: int) -> None:
    profile = load_profile(PROFILE)
    with tempfile.TemporaryDirectory(prefix="edgegov-attest-bench-") as tmp:
        root = Path(tmp)
        source = _device_root(root)
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        files = sum(1 for f in root.rglob("*") if f.is_file())
        cold, cached = [], []
        for _ in range(runs):
            provider = FileFactProvider(profile, root)
            started = time.perf_counter()
            first = provider.measure()
            cold.append(time.perf_counter() - started)
            assert not first.errors, first.errors
            started = time.perf_counter()
            again = provider.measure()
            cached.append(time.perf_counter() - started)
            assert again == first
    print(
        f"1. one full measurement of {profile.name}: {len(profile.measure)} items, {files} files,"
    )
    print(f"   {size / 1e6:.1f} MB; agent from {source}")
    for label, values in (("cold (every byte hashed)", cold), ("cached (stat only)", cached)):
        median, low, high = _spread(values)
        print(
            f"   {label:<26} median {median * 1e3:8.2f} ms   "
            f"(min {low * 1e3:.2f}, max {high * 1e3:.2f})"
        )
    print(f"   cold throughput: {size / statistics.median(cold) / 1e6:.0f} MB/s of SHA-256")


def _gate_states() -> tuple[TrustState, TrustState]:
    sim = HubSim()
    root = sim.root()
    digest = hashlib.sha256(b"measured").digest()
    expectations = {"profiles": {"generic-x86_64": {"measurements": {"os-release": [digest]}}}}
    plain = with_bundle(
        TrustState(DEVICE, root),
        compile_for_device(sim.bundle(1), root=root, device=DEVICE, installed=None, now=None),
    )
    required = compile_for_device(
        sim.bundle(1, attestation=expectations), root=root, device=DEVICE, installed=None, now=None
    )
    attested = with_bundle(TrustState(DEVICE, root), required)
    attested = with_local_verdict(
        attested, LocalVerdict(True, digest, required.digest, NOW, NOW + 600, "ok")
    )
    attested = with_attestation_result(
        attested,
        AttestationResult("gw-001", b"n" * 32, Verdict.PASS, digest, NOW, NOW + 900, "ok"),
    )
    return plain, attested


def _per_call(fn: Callable[[], object], calls: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - started) / calls


def bench_gate(runs: int, calls: int) -> None:
    """The three rows are timed in turn within each run, so drift in the machine's load
    hits them alike; the difference is taken per run."""
    plain, attested = _gate_states()
    assert decide(plain, REQUEST, NOW).allowed and decide(attested, REQUEST, NOW).allowed
    rows = {
        "decide, no attestation required": lambda: decide(plain, REQUEST, NOW),
        "decide, attestation required": lambda: decide(attested, REQUEST, NOW),
        "attestation check alone": lambda: attestation_failure(attested, NOW),
    }
    times: dict[str, list[float]] = {label: [] for label in rows}
    extra = []
    for _ in range(runs):
        for label, fn in rows.items():
            times[label].append(_per_call(fn, calls))
        extra.append(
            times["decide, attestation required"][-1] - times["decide, no attestation required"][-1]
        )
    print(f"2. decision path ({calls} calls per run, {runs} runs; no file I/O in the gate)")
    for label, values in times.items():
        median, low, high = _spread(values)
        print(
            f"   {label:<34} median {median / 1e3:7.2f} µs   "
            f"(min {low / 1e3:.2f}, max {high / 1e3:.2f})"
        )
    median, low, high = _spread(extra)
    print(
        f"   {'attestation adds per decision':<34} median {median / 1e3:+7.2f} µs   "
        f"(min {low / 1e3:+.2f}, max {high / 1e3:+.2f}, per-run differences)"
    )


def _hub_fixture(tmp: Path, count: int) -> tuple[Verifier, DeviceRecord, list[bytes], Registry]:
    sim = HubSim()
    profile: Profile = load_profile(PROFILE)
    measured = {m.name: hashlib.sha256(m.name.encode()).digest() for m in profile.measure}
    expectations = expectations_value(build_expectations(profile, [("gw-001", measured)]))
    bundle = sim.bundle(1, attestation=expectations)
    digest = hashlib.sha256(bundle).digest()
    registry = open_registry(tmp / "hub.db")
    key = PrivateKey.generate()
    device = DeviceRecord("gw-001", "eu-1", ("line-a",), "generic-x86_64", key.public)
    registry.add_device(device)
    registry.record_bundle(
        bundle=PublishedBundle("eu-1", "group/line-a", 1, digest, bundle, NOW + 86400, None, NOW),
        issued_at=NOW,
        target={},
        channels=["group/line-a"],
    )
    root = sim.root()
    verifier = Verifier(registry, sim.online_keys[Role.VERIFIER][0], root=lambda: root)
    payloads = []
    for index in range(count):
        nonce = hashlib.sha256(b"%d" % index + os.urandom(8)).digest()
        registry.record_challenge(Challenge("gw-001", nonce, NOW, NOW + 3600))
        evidence = Evidence("gw-001", nonce, NOW, digest, measured, LineageHead(0, b"\0" * 32))
        payloads.append(sign_evidence(evidence, key))
    return verifier, device, payloads, registry


def bench_hub(runs: int, count: int) -> None:
    full, pure = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="edgegov-verifier-bench-") as tmp:
            verifier, device, payloads, registry = _hub_fixture(Path(tmp), count)
            data = registry.bundle_data(registry.current_bundles()[0].digest)
            assert data is not None
            view = recorded_bundle_view(data, root=verifier.root())
            started = time.perf_counter()
            for payload in payloads:
                evidence = read_evidence(payload, device)
                result = judge_attestation(
                    evidence,
                    device,
                    nonce_problem=None,
                    bundle=view,
                    hub_root=None,
                    tpm_ak=None,
                    now=NOW,
                    ttl_s=1,
                )
                sign_result(result, key=verifier.key)
            pure.append(count / (time.perf_counter() - started))
            started = time.perf_counter()
            for payload in payloads:
                evidence = read_evidence(payload, device)
                assert verifier.verify(device, evidence, now=NOW, ttl_s=900).result.passed
            full.append(count / (time.perf_counter() - started))
            registry.close()
    print(f"3. hub evidence verification ({count} evidence per run, {runs} runs)")
    for label, values in (
        ("with registry (spend nonce, record)", full),
        ("verify + judge + sign only", pure),
    ):
        median, low, high = _spread(values)
        print(f"   {label:<36} median {median:8.0f} evidence/s   (min {low:.0f}, max {high:.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and calls")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 9)
    print(
        f"edgegov attestation benchmark: Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPU(s)"
    )
    bench_measurement(runs)
    bench_gate(runs, 20_000 if args.quick else 100_000)
    bench_hub(runs, 200 if args.quick else 1000)


if __name__ == "__main__":
    main()

"""Decisions and their digests do not depend on the CPU: amd64 and emulated ARM agree byte
for byte.

One bundle and a few thousand deterministic requests (subjects, actions, resources, contexts
and decision times spread from before issue to after expiry) are decided by the pure core
twice: natively by this checkout, and under qemu-user by the ARM userland's CPython with the
build venv the package was frozen from (its cbor2, PyNaCl and OpenSSL are the ARM builds the
package carries; tests/arm_emulation.py). Every decision's allowed flag, reason, rule and
SHA-256 decision digest must be identical. Marked ``emulated``: only ``make test-arm`` runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.arm_emulation import ROOT, TARGETS, userland_python
from tests.factory import DAY, DEVICE, NOW, HubSim

pytestmark = [pytest.mark.slow, pytest.mark.emulated]

REQUESTS = 3000
EMULATED_TIMEOUT_S = 900
ISSUED_AT, EXPIRES_AT = NOW - 60, NOW + DAY
# Decision times from before the bundle's issue to after its expiry, so time-dependent
# reasons are digested too.
SPAN_S = DAY + 2 * 3600
DRIVER = """
import json, platform, sys
from edge_agent.policy.bundle import compile_for_device
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.request import Request
from edge_agent.protocol.root import verify_trusted_root
from edge_agent.trust.gate import decide
from edge_agent.trust.state import TrustState, with_bundle

root_file, bundle_file, device_id, region, group, profile = sys.argv[1:7]
now, start, span, count = (int(a) for a in sys.argv[7:11])
device = DeviceIdentity(device_id=device_id, region=region, groups=(group,), profile=profile)
root = verify_trusted_root(open(root_file, "rb").read(), now=now)
bundle = compile_for_device(
    open(bundle_file, "rb").read(), root=root, device=device, installed=None, now=now
)
state = with_bundle(TrustState(device=device, root=root), bundle)
subjects = ("svc:camera", "svc:thermo", "svc:other", "uid:1001", "exe:/opt/camera/bin/capture")
actions = ("exec", "read", "write", "net.connect")
resources = (
    "/opt/camera/bin/capture", "/data/a/b", "/data/sensors/x", "/bin/sh", "/usr/bin/zsh",
    "/opt/camera/bin/sub/dir", "tcp://10.0.0.5:502", "/d\\u00e9j\\u00e0/\\u2603",
)
zones = ((), (("zone", "plant-a"),), (("zone", "office"),), (("zone", "plant-b"), ("x", "y")))
out = []
for i in range(count):
    request = Request(
        subjects[i % 5], actions[i // 5 % 4], resources[i // 20 % 8], zones[i // 160 % 4]
    )
    decision = decide(state, request, start + (i * 7919) % span)
    out.append([decision.allowed, str(decision.reason), decision.rule_id, decision.digest.hex()])
print(json.dumps({"machine": platform.machine(), "decisions": out}))
"""


def _arguments(root: str, bundle: str) -> list[str]:
    device = [DEVICE.device_id, DEVICE.region, DEVICE.groups[0], DEVICE.profile]
    return [root, bundle, *device, str(NOW), str(ISSUED_AT - 3600), str(SPAN_S), str(REQUESTS)]


@pytest.mark.parametrize("arch", sorted(TARGETS))
def test_arm_and_amd64_give_byte_identical_decision_digests(arch: str, tmp_path: Path) -> None:
    sim = HubSim()
    root, bundle = sim.root_bytes(), sim.bundle(1, issued_at=ISSUED_AT, expires_at=EXPIRES_AT)
    files = {"root.cbor": root, "bundle.cbor": bundle}
    emulated = userland_python(
        arch,
        DRIVER,
        files,
        *_arguments("{scratch}/root.cbor", "{scratch}/bundle.cbor"),
        timeout=EMULATED_TIMEOUT_S,
    )
    assert emulated.returncode == 0, emulated.stderr
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    native = subprocess.run(
        [
            sys.executable,
            "-c",
            DRIVER,
            *_arguments(str(tmp_path / "root.cbor"), str(tmp_path / "bundle.cbor")),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    ours, theirs = json.loads(native.stdout), json.loads(emulated.stdout)
    assert (ours["machine"], theirs["machine"]) == (os.uname().machine, TARGETS[arch][1])
    assert len(ours["decisions"]) == REQUESTS
    assert theirs["decisions"] == ours["decisions"]
    reasons = {row[1] for row in ours["decisions"]}
    assert {
        "allowed",
        "policy_denied",
        "no_matching_rule",
        "bundle_expired",
        "clock_untrusted",
    } <= reasons

"""Decisions and their digests do not depend on the process: hash seeds, dict order, locale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.factory import HubSim

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys
from edge_agent.protocol.request import Request
from edge_agent.protocol.root import verify_trusted_root
from edge_agent.trust.gate import decide
from edge_agent.trust.state import TrustState, with_bundle
from tests.factory import DEVICE, NOW
from edge_agent.policy.bundle import compile_for_device

root = verify_trusted_root(open(sys.argv[1], "rb").read(), now=NOW)
bundle = compile_for_device(open(sys.argv[2], "rb").read(), root=root, device=DEVICE,
                       installed=None, now=NOW)
state = with_bundle(TrustState(device=DEVICE, root=root), bundle)
out = []
for i in range(300):
    subject = ("svc:camera", "svc:thermo", "svc:other")[i % 3]
    action = ("exec", "read", "write")[i % 3 // 1 % 3]
    resource = ("/opt/camera/bin/capture", "/data/a/b", "/bin/sh", "/usr/bin/zsh")[i % 4]
    context = (("zone", ("plant-a", "office")[i % 2]),) if i % 5 else ()
    d = decide(state, Request(subject, action, resource, context), NOW + i)
    out.append([d.allowed, str(d.reason), d.rule_id, d.digest.hex()])
print(json.dumps(out))
"""


def test_three_processes_with_different_hash_seeds_agree(tmp_path: Path) -> None:
    sim = HubSim()
    (tmp_path / "root.cbor").write_bytes(sim.root_bytes())
    (tmp_path / "bundle.cbor").write_bytes(sim.bundle(1))
    outputs = []
    for seed, locale in (("0", "C"), ("1", "C.UTF-8"), ("4242", "POSIX")):
        env = {**os.environ, "PYTHONHASHSEED": seed, "LC_ALL": locale, "TZ": "Pacific/Chatham"}
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(tmp_path / "root.cbor"),
                str(tmp_path / "bundle.cbor"),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env=env,
        )
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1] == outputs[2]
    reasons = {row[1] for row in outputs[0]}
    assert {"allowed", "policy_denied", "no_matching_rule"} <= reasons

"""``make demo``: the offline story end to end, with the real command-line tools.

A hub operator makes keys and signs a policy; three gateways enrol and install it; decisions
are allowed and denied; a tampered bundle is refused; a short-TTL bundle expires into deny.
Every step runs ``edge-hub`` / ``edge-agent`` as a user would, in a temporary directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BIN = Path(sys.executable).parent
DEVICES = (("gw-001", "line-a"), ("gw-002", "line-a"), ("gw-003", "line-b"))


def run(*args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, check=False
    )
    if expect is not None and result.returncode != expect:
        sys.stderr.write(f"demo: {' '.join(args)} exited {result.returncode}\n")
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(1)
    return result


def build_bundle(
    keys: Path, version: int, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Sign examples/policy.yaml as bundle ``version`` with ``edge-hub bundle build``."""
    return run(
        "edge-hub",
        "bundle",
        "build",
        str(EXAMPLES / "policy.yaml"),
        "--keys",
        str(keys),
        "--version",
        str(version),
        "--out",
        str(out),
        *extra,
    )


def step(text: str) -> None:
    print(f"\n== {text}")


def show(result: subprocess.CompletedProcess[str]) -> None:
    for line in (result.stdout + result.stderr).strip().splitlines():
        print(f"   {line}")


def decide(state: Path, subject: str, action: str, resource: str, *context: str) -> str:
    args = [
        "edge-agent",
        "decide",
        "--state-dir",
        str(state),
        "--subject",
        subject,
        "--action",
        action,
        "--resource",
        resource,
        "--json",
    ]
    for item in context:
        args += ["--context", item]
    out = json.loads(run(*args, expect=None).stdout)
    verdict = out["decision"].upper()
    print(
        f"   {verdict:<5} {subject} {action} {resource}  -> {out['reason']}"
        f" (rule {out['rule'] or '-'})"
    )
    return str(out["reason"])


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="edgegov-demo-"))
    try:
        return story(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def story(work: Path) -> int:
    keys = work / "keys"
    step("hub: create root keys (2-of-3) and one key per online role")
    show(run("edge-hub", "keys", "init", "--out", str(keys)))

    step("hub: compile and sign examples/policy.yaml as bundle version 1")
    bundle = work / "bundle-v1.cbor"
    show(build_bundle(keys, 1, bundle))

    step("devices: enrol three gateways with the pinned trust root")
    states = {}
    for device, group in DEVICES:
        state = work / device
        run(
            "edge-agent",
            "init",
            "--state-dir",
            str(state),
            "--device-id",
            device,
            "--root",
            str(keys / "root.cbor"),
            "--region",
            "eu-1",
            "--group",
            group,
            "--profile",
            "generic-x86_64",
        )
        states[device] = state
        print(f"   {device} enrolled (group {group})")

    step("devices: install the bundle (gw-003 is on line-b: it must refuse)")
    for device, state in states.items():
        result = run(
            "edge-agent", "bundle", "install", str(bundle), "--state-dir", str(state), expect=None
        )
        print(f"   {device}: " + (result.stdout or result.stderr).strip())

    gw1 = states["gw-001"]
    step("gw-001 decides, locally, with no network")
    decide(gw1, "svc:camera", "exec", "/opt/camera/bin/capture")
    decide(gw1, "svc:thermo", "read", "/data/sensors/t1", "zone=plant-a")
    decide(gw1, "svc:thermo", "read", "/data/sensors/t1", "zone=office")
    decide(gw1, "svc:camera", "exec", "/usr/bin/bash")
    decide(states["gw-003"], "svc:camera", "exec", "/opt/camera/bin/capture")

    step("an attacker flips one byte of a newer bundle: every device refuses it")
    v2 = work / "bundle-v2.cbor"
    build_bundle(keys, 2, v2)
    data = bytearray(v2.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = work / "tampered.cbor"
    tampered.write_bytes(bytes(data))
    result = run(
        "edge-agent", "bundle", "install", str(tampered), "--state-dir", str(gw1), expect=1
    )
    print("   gw-001: " + result.stderr.strip())
    decide(gw1, "svc:camera", "exec", "/opt/camera/bin/capture")

    step("hub: push a 3-second bundle (version 3); then the hub goes away")
    short = work / "bundle-v3.cbor"
    build_bundle(keys, 3, short, "--ttl", "3s")
    show(run("edge-agent", "bundle", "install", str(short), "--state-dir", str(gw1)))
    decide(gw1, "svc:camera", "exec", "/opt/camera/bin/capture")
    print("   ... waiting 4 s for the TTL to pass")
    time.sleep(4)
    reason = decide(gw1, "svc:camera", "exec", "/opt/camera/bin/capture")

    step("gw-001 status")
    show(run("edge-agent", "status", "--state-dir", str(gw1)))
    if reason != "bundle_expired":
        print("demo: expected the expired bundle to deny", file=sys.stderr)
        return 1
    print("\ndemo finished: allowed, denied, tampering refused, expiry denied.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make demo``: the whole system on the embedded broker, as separate processes.

A hub (``edge-hub serve`` with its embedded amqtt broker) and three gateways
(``edge-agent run``), each in its own process and temporary directory: a bundle is pushed
and installed everywhere, decisions are allowed and denied, a forged bundle published
straight to the broker is refused by every agent, one device is revoked and denies within
a second, lineage is shipped and verified at the hub, and with the hub stopped a short-TTL
bundle expires into deny. Every step runs the real command-line tools a user would.

``make demo CONSOLE=1`` (``python -m hub.demo --console 127.0.0.1:8080``) then starts the
hub again with the governance console, pushes a fresh bundle to the agents still running,
prints the console's URL and an operator token, and stays up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edge_agent.client import decide
from edge_agent.protocol import topics
from edge_agent.protocol.bundle import BundleTarget, bundle_payload, sign_bundle
from edge_agent.protocol.keys import PrivateKey
from edge_agent.support.mqtt import BrokerSettings, connect

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BIN = Path(sys.executable).parent
DEVICES = (("gw-001", "line-a"), ("gw-002", "line-a"), ("gw-003", "line-a"))
WAIT_S = 20.0
AGENT_TOML = "[sync]\nreconnect_max_s = 2\n"
"""The demo's agents retry a lost broker at least every 2 s (60 s by default): the demo
stops its hub and brings it back, and the fleet must be back within :data:`WAIT_S`
whatever the backoff had grown to meanwhile."""
CAMERA = ("svc:camera", "exec", "/opt/camera/bin/capture")


class DemoFailed(Exception):
    """A step did not do what the story says."""


def run(*args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, check=False
    )
    if expect is not None and result.returncode != expect:
        raise DemoFailed(
            f"{' '.join(args)} exited {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise DemoFailed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


class Demo:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.hub_dir = work / "hub"
        self.keys = self.hub_dir / "keys"
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.broker = ""

    # --- processes ----------------------------------------------------------------------

    def spawn(self, name: str, *args: str) -> subprocess.Popen[str]:
        log = (self.work / f"{name}.log").open("w")
        process = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]],
            stdout=subprocess.PIPE if name == "hub" else log,
            stderr=log,
            text=True,
        )
        self.processes[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    # --- what a user types ----------------------------------------------------------------

    def start_hub(self, console: str | None = None) -> str | None:
        """Start ``edge-hub serve`` (with the console on ``console``); return the console's
        URL when it has one."""
        extra = ("--console", console) if console else ()
        hub = self.spawn(
            "hub",
            "edge-hub",
            "serve",
            "--hub-dir",
            str(self.hub_dir),
            "--port",
            self.port or "0",
            "--freshness-interval",
            "1s",
            "--token-ttl",
            "5s",
            *extra,
        )
        assert hub.stdout is not None
        banner = hub.stdout.readline().strip()
        if not banner:
            raise DemoFailed(f"edge-hub serve did not start; see {self.work / 'hub.log'}")
        self.broker = banner.split("broker ", 1)[1].split(" ", 1)[0]
        say(banner)
        if not console:
            return None
        line = hub.stdout.readline().strip()
        if not line.startswith("edge-hub serve: console "):
            raise DemoFailed(f"the console did not start; see {self.work / 'hub.log'}")
        return line.rsplit(" ", 1)[1]

    @property
    def port(self) -> str:
        return self.broker.rsplit(":", 1)[1] if self.broker else ""

    def build(self, version: int, *extra: str) -> Path:
        out = self.work / f"bundle-v{version}.cbor"
        run(
            "edge-hub",
            "bundle",
            "build",
            str(EXAMPLES / "policy.yaml"),
            "--keys",
            str(self.keys),
            "--version",
            str(version),
            "--out",
            str(out),
            *extra,
        )
        return out

    def fleet(self) -> dict[str, dict[str, object]]:
        out = run("edge-hub", "fleet", "--json", "--hub-dir", str(self.hub_dir)).stdout
        return {d["device"]: d for d in json.loads(out)["devices"]}

    def decide(self, device: str, subject: str, action: str, resource: str) -> str:
        out = self._decision(device, subject, action, resource)
        say(
            f"{device}: {out['decision'].upper():<5} {subject} {action} {resource} -> "
            f"{out['reason']} (rule {out['rule'] or '-'})"
        )
        return str(out["reason"])

    def reason(self, device: str) -> str:
        """The reason ``device`` gives for the camera request now, without printing it."""
        return str(self._decision(device, *CAMERA)["reason"])

    def _decision(self, device: str, subject: str, action: str, resource: str) -> dict[str, str]:
        result = run(
            "edge-agent",
            "decide",
            "--state-dir",
            str(self.work / device),
            "--subject",
            subject,
            "--action",
            action,
            "--resource",
            resource,
            "--json",
            expect=None,
        )
        decision: dict[str, str] = json.loads(result.stdout)
        return decision

    def installed(self, version: int) -> bool:
        rows = self.fleet()
        return all(rows.get(d, {}).get("bundle_version") == version for d, _ in DEVICES)


def story(demo: Demo) -> None:
    step("hub: root keys (2-of-3) and one key per online role; start the hub service")
    run("edge-hub", "keys", "init", "--out", str(demo.keys))
    demo.start_hub()

    step("three gateways enrol with the pinned root, register with the hub, start their agents")
    for device, group in DEVICES:
        state = demo.work / device
        run(
            "edge-agent",
            "init",
            "--state-dir",
            str(state),
            "--device-id",
            device,
            "--root",
            str(demo.keys / "root.cbor"),
            "--region",
            "eu-1",
            "--group",
            group,
            "--profile",
            "generic-x86_64",
            "--broker",
            demo.broker,
        )
        pem = demo.work / f"{device}.pub"
        pem.write_text(run("edge-agent", "pubkey", "--state-dir", str(state)).stdout)
        run(
            "edge-hub",
            "device",
            "add",
            device,
            "--pubkey",
            str(pem),
            "--region",
            "eu-1",
            "--group",
            group,
            "--profile",
            "generic-x86_64",
            "--hub-dir",
            str(demo.hub_dir),
        )
        config = state / "agent.toml"
        config.write_text(AGENT_TOML)
        demo.spawn(
            device,
            "edge-agent",
            "run",
            "--state-dir",
            str(state),
            "--config",
            str(config),
            "--socket",
            str(state / "agent.sock"),
        )
        say(f"{device} enrolled (group {group}) and running")

    step("hub: sign examples/policy.yaml as bundle v1 and push it")
    for line in run(
        "edge-hub", "bundle", "push", str(demo.build(1)), "--hub-dir", str(demo.hub_dir)
    ).stdout.splitlines():
        say(line)
    took = wait_until(lambda: demo.installed(1), "every agent to install v1")
    say(f"all three gateways report bundle v1 installed ({took:.1f} s)")

    step("decisions are local: no network at decision time")
    demo.decide("gw-001", *CAMERA)
    demo.decide("gw-001", "svc:camera", "exec", "/usr/bin/bash")
    demo.decide("gw-003", "svc:unknown", "exec", "/opt/camera/bin/capture")
    answer = decide(
        action="exec",
        resource="/opt/camera/bin/capture",
        path=demo.work / "gw-001" / "agent.sock",
    )
    say(
        f"gw-001 socket: {'ALLOW' if answer.allowed else 'DENY '} for the calling process as "
        f"the kernel names it ({answer.subject}, {', '.join(answer.selectors[:2])}) -> "
        f"{answer.reason}"
    )

    step("an attacker with broker access publishes a forged v99 straight to the bundle topic")
    asyncio.run(publish_forged(demo.broker))
    time.sleep(1.0)
    versions = {d: row["bundle_version"] for d, row in demo.fleet().items()}
    say(f"installed versions after the forgery: {versions}")
    if set(versions.values()) != {1}:
        raise DemoFailed("an agent installed the forged bundle")
    for device, _ in DEVICES:
        log = (
            run(
                "edge-agent",
                "log",
                "show",
                "--state-dir",
                str(demo.work / device),
                "--kind",
                "bundle_rejected",
                "--limit",
                "1",
            )
            .stdout.strip()
            .splitlines()
        )
        say(f"{device} refused it and logged: {log[-1].strip() if log else '?'}")
    demo.decide("gw-002", *CAMERA)

    step("hub: kill switch for gw-002 (reported stolen)")
    start = time.monotonic()
    for line in run(
        "edge-hub",
        "revoke",
        "--device",
        "gw-002",
        "--reason",
        "reported stolen",
        "--hub-dir",
        str(demo.hub_dir),
    ).stdout.splitlines():
        say(line)
    wait_until(lambda: demo.reason("gw-002") == "revoked", "gw-002 to deny")
    say(f"gw-002 denies everything {time.monotonic() - start:.2f} s after the revoke command")
    demo.decide("gw-002", *CAMERA)
    demo.decide("gw-001", *CAMERA)

    step("lineage: every decision is shipped, verified and acknowledged by the hub")
    wait_until(
        lambda: all(
            r["lineage_acked"] == r["lineage_device"] and r["lineage_acked"]
            for r in demo.fleet().values()
        ),
        "lineage acknowledged",
    )
    for line in run(
        "edge-hub", "lineage", "show", "gw-001", "--limit", "4", "--hub-dir", str(demo.hub_dir)
    ).stdout.splitlines():
        say(line)

    step("hub: push v2 with a 6-second TTL (gw-002 recovered: lift its revocation), hub away")
    for line in run(
        "edge-hub",
        "bundle",
        "push",
        str(demo.build(2, "--ttl", "6s")),
        "--lift-revocations",
        "--hub-dir",
        str(demo.hub_dir),
    ).stdout.splitlines():
        say(line)
    wait_until(lambda: demo.installed(2), "every agent to install v2")
    demo.decide("gw-001", *CAMERA)
    show_fleet(demo)
    demo.stop("hub")
    say("hub stopped (and with it the embedded broker); agents keep deciding offline")
    demo.decide("gw-003", *CAMERA)
    wait_until(lambda: demo.reason("gw-001") == "bundle_expired", "v2 to expire", 10)
    demo.decide("gw-001", *CAMERA)
    demo.decide("gw-003", *CAMERA)


async def publish_forged(url: str) -> None:
    intruder = PrivateKey.generate()
    now = int(time.time())
    target = BundleTarget(region="eu-1", groups=("line-a",), profiles=("generic-x86_64",))
    payload = bundle_payload(
        version=99,
        issued_at=now,
        expires_at=now + 86400,
        target=target,
        policy={
            "format": 1,
            "groups": {},
            "workloads": {},
            "rules": [
                {
                    "id": "allow-all",
                    "effect": "allow",
                    "subjects": ["*"],
                    "actions": ["*"],
                    "resources": ["**"],
                }
            ],
        },
        attestation=None,
        max_offline=None,
    )
    forged = sign_bundle(payload, region="eu-1", signers=[intruder])
    channel = topics.Channel(topics.ChannelKind.GROUP, "line-a")
    async with connect(BrokerSettings.from_url(url), client_id="attacker") as connection:
        await connection.publish(topics.bundle_topic("eu-1", channel), forged, retain=True)


def serve_console(demo: Demo, listen: str) -> None:
    """Bring the hub back with the console, heal the fleet with a fresh bundle, print how to
    log in, and wait for Ctrl-C."""
    step(f"the governance console: edge-hub serve --console {listen}")
    url = demo.start_hub(console=listen)
    run(
        "edge-hub",
        "bundle",
        "push",
        str(demo.build(3)),
        "--lift-revocations",
        "--hub-dir",
        str(demo.hub_dir),
    )
    wait_until(lambda: demo.installed(3), "every agent to install v3")
    token = run(
        "edge-hub",
        "console",
        "token",
        "add",
        "demo-operator",
        "--role",
        "operator",
        "--hub-dir",
        str(demo.hub_dir),
    ).stdout.splitlines()[-1]
    say("bundle v3 pushed; the agents are back to open")
    print(
        f"\nconsole: {url}\ntoken:   {token}\n(operator role; Ctrl-C stops the hub, the agents "
        "and the demo)",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        while demo.processes["hub"].poll() is None:
            time.sleep(0.5)


def show_fleet(demo: Demo) -> None:
    for line in run("edge-hub", "fleet", "--hub-dir", str(demo.hub_dir)).stdout.splitlines():
        say(line)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="edgegov-demo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.demo", description=__doc__)
    parser.add_argument(
        "--console",
        metavar="HOST:PORT",
        help="after the story, serve the governance console there until Ctrl-C",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    with workdir() as work:
        demo = Demo(work)
        try:
            story(demo)
            if args.console:
                serve_console(demo, args.console)
        except DemoFailed as exc:
            print(f"\ndemo FAILED: {exc}", file=sys.stderr)
            for log in sorted(work.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-2000:]}", file=sys.stderr)
            return 1
        finally:
            demo.stop_all()
        step("final fleet table, read offline from the hub registry (last reported status)")
        show_fleet(demo)
    print(
        f"\ndemo finished in {time.monotonic() - started:.0f} s: pushed, allowed, denied, "
        "forgery refused, device revoked, lineage verified, expiry denied."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

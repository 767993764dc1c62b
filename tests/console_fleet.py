"""A live demo fleet with the console, for the browser tests: the real command-line tools as
separate processes (``make demo``'s :class:`hub.demo.Demo`).

``edge-hub serve --console 127.0.0.1:0`` with its embedded broker, three gateways running
``edge-agent run`` on it, bundle v1 (examples/policy.yaml) pushed and installed everywhere,
a few decisions made and shipped (one with a resource string that is an XSS payload), and an
operator console token. Everything binds 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hub.demo import CAMERA, DEVICES, Demo, DemoFailed, run, wait_until

__all__ = ["XSS", "ConsoleFleet", "console_fleet"]

XSS = '<img src=x id=xss-{where} onerror="alert(1)"><svg onload="alert(2)">'
"""A payload that, were it markup, would add an ``#xss-...`` element, run script and fetch
``/x``; ``{where}`` names where it was put in. No ``/``: it can be a path segment."""
START_S = 30.0


@dataclass
class ConsoleFleet:
    """The running fleet: its demo (processes, hub directory), console URL and tokens."""

    demo: Demo
    url: str
    operator_token: str
    viewer_token: str

    def decide(self, device: str, resource: str) -> str:
        """A camera-exec decision on ``device`` for ``resource``; its reason."""
        return self.demo._decision(device, CAMERA[0], CAMERA[1], resource)["reason"]

    def acked(self, device: str) -> int:
        row = self.demo.fleet()[device]
        acked = row["lineage_acked"]
        return acked if isinstance(acked, int) and acked == row["lineage_device"] else -1


def _token(demo: Demo, name: str, role: str) -> str:
    out = run(
        "edge-hub", "console", "token", "add", name, "--role", role, "--hub-dir", str(demo.hub_dir)
    ).stdout
    return out.strip().splitlines()[-1]


def _start_hub(demo: Demo) -> str:
    """Start ``edge-hub serve`` with the console on a free loopback port; its URL."""
    hub = demo.spawn(
        "hub",
        "edge-hub",
        "serve",
        "--hub-dir",
        str(demo.hub_dir),
        "--port",
        "0",
        "--console",
        "127.0.0.1:0",
        "--freshness-interval",
        "1s",
        "--token-ttl",
        "5s",
    )
    assert hub.stdout is not None
    lines = [hub.stdout.readline().strip() for _ in range(2)]
    if not lines[0].startswith("edge-hub serve: broker") or "console" not in lines[1]:
        raise DemoFailed(f"edge-hub serve did not start: {lines}; see {demo.work / 'hub.log'}")
    demo.broker = lines[0].split("broker ", 1)[1].split(" ", 1)[0]
    return lines[1].rsplit(" ", 1)[1]


def _enrol(demo: Demo, device: str, group: str) -> None:
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
    demo.spawn(
        device,
        "edge-agent",
        "run",
        "--state-dir",
        str(state),
        "--socket",
        str(state / "agent.sock"),
    )


@contextlib.contextmanager
def console_fleet() -> Iterator[ConsoleFleet]:
    """The fleet, running until the block ends (every process stopped, files removed).

    Raises:
        DemoFailed: a step did not happen (with the processes' logs).
    """
    work = Path(tempfile.mkdtemp(prefix="edgegov-console-"))
    demo = Demo(work)
    try:
        run("edge-hub", "keys", "init", "--out", str(demo.keys))
        url = _start_hub(demo)
        for device, group in DEVICES:
            _enrol(demo, device, group)
        run("edge-hub", "bundle", "push", str(demo.build(1)), "--hub-dir", str(demo.hub_dir))
        wait_until(lambda: demo.installed(1), "every agent to install v1", START_S)
        fleet = ConsoleFleet(
            demo, url, _token(demo, "alice", "operator"), _token(demo, "victor", "viewer")
        )
        fleet.decide("gw-001", CAMERA[2])
        fleet.decide("gw-001", XSS.format(where="resource"))
        wait_until(lambda: fleet.acked("gw-001") >= 2, "gw-001's decisions shipped", START_S)
        yield fleet
    except DemoFailed as exc:
        logs = "".join(
            f"--- {log.name}\n{log.read_text()[-2000:]}" for log in sorted(work.glob("*.log"))
        )
        raise DemoFailed(f"{exc}\n{logs}") from exc
    finally:
        demo.stop_all()
        shutil.rmtree(work, ignore_errors=True)

"""What the socket tests share: an enrolled state directory with a real signed bundle, and
``edge-agent serve`` run as a real process on a socket in a directory other uids can reach.

Bundles are signed by :class:`tests.factory.HubSim` and dated from the real wall clock,
because the server reads the clock itself (no option can move the agent's "now").
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.policy.compiler import policy_payload
from edge_agent.protocol.request import Request
from edge_agent.socket.config import SocketConfig
from edge_agent.socket.server import BatchDecider, Decider, DecisionServer
from edge_agent.trust.gate import Decision, Reason
from tests.factory import DAY, DEVICE, HubSim

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
NOBODY = 65534


def enrolled_state(
    state_dir: Path,
    rules: Sequence[Mapping[str, object]],
    workloads: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Initialise ``state_dir`` and install a bundle holding ``rules``, valid now."""
    sim = HubSim()
    wall = int(time.time())
    root = sim.root_bytes(issued_at=wall - DAY, expires_at=wall + 365 * DAY)
    init_state_dir(state_dir, DEVICE, root, wall)
    policy = policy_payload(groups={}, workloads=workloads or {}, rules=rules)
    bundle = sim.bundle(1, policy=policy, issued_at=wall - 60, expires_at=wall + DAY)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(bundle, wall)
    return state_dir


class Echo:
    """Allows everything except action ``deny``; the message echoes the resource."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def decide(self, request: Request, wall: int) -> Decision:
        with self.lock:
            self.calls += 1
        allowed = request.action != "deny"
        reason = Reason.ALLOWED if allowed else Reason.POLICY_DENIED
        return Decision(allowed, reason, request.resource, "echo", 1, bytes(32), request, wall)


@contextmanager
def public_dir() -> Iterator[Path]:
    """A directory under /tmp that every uid can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="edgegov-sock-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def connectable(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@contextmanager
def serving(state_dir: Path, sock: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``edge-agent serve`` until the block ends (SIGTERM, then wait)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "serve",
            "--state-dir",
            str(state_dir),
            "--socket",
            str(sock),
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not connectable(sock):
            if process.poll() is not None:
                raise AssertionError(f"serve exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError("serve did not start listening")
            time.sleep(0.02)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def embedded(decider: Decider | BatchDecider, config: SocketConfig) -> Iterator[DecisionServer]:
    """Run a :class:`DecisionServer` on its own event loop in a thread until the block ends
    (so blocking clients and subprocesses can talk to it from the test)."""
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        holder["stop"], holder["loop"] = stop, asyncio.get_running_loop()
        try:
            async with DecisionServer(decider, config) as server:
                holder["server"] = server
                ready.set()
                await stop.wait()
        except BaseException as exc:
            holder["error"] = exc
            ready.set()
            raise

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="embedded-agent")
    thread.start()
    ready.wait(START_TIMEOUT_S)
    if "error" in holder:
        thread.join()
        raise AssertionError(f"the server did not start: {holder['error']!r}")
    try:
        server = holder["server"]
        assert isinstance(server, DecisionServer)
        yield server
    finally:
        loop, stop = holder["loop"], holder["stop"]
        assert isinstance(loop, asyncio.AbstractEventLoop) and isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(START_TIMEOUT_S)


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def run_as(uid: int, gid: int, work: object) -> bytes:
    """Run ``work()`` (returning bytes) in a forked child with ``uid``/``gid``; its result.

    A fork rather than a new interpreter: the interpreter lives under /root, which other
    uids cannot read. The test process must have no other threads when this is called.
    """
    assert callable(work)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            data = work()
            with os.fdopen(write_end, "wb") as out:
                out.write(data)
        except BaseException as exc:
            try:
                os.write(write_end, f"ERROR {type(exc).__name__}: {exc}".encode())
            finally:
                code = 1
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as source:
        data = source.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data.decode(errors="replace")
    return data

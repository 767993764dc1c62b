"""Hosts for multi-host tests: one Linux network namespace per host, veth links between them.

:func:`host_network` yields a :class:`HostNetwork`; ``network.host("central")`` creates a
namespace (loopback up) named for this run, ``network.link(a, b)`` joins two hosts with a
veth pair on a /24 of its own (``10.200.N.1`` on ``a``, ``10.200.N.2`` on ``b``), and
``host.spawn(argv)`` runs a process inside a namespace (``ip netns exec``). Addresses exist
only inside the run's namespaces: nothing is added to the machine's own network. Teardown
runs whatever the test did: every spawned process is stopped by its pid (SIGTERM, then
SIGKILL), then every namespace is deleted, which destroys its veth ends.

Namespaces need root and iproute2's ``ip``: without them a test is skipped on a developer's
machine and fails under CI (the :mod:`tests.system_tools` convention).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.system_tools import under_ci

__all__ = ["Host", "HostNetwork", "Link", "host_network", "require_netns"]

IP = shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/ip"
STOP_GRACE_S = 10.0
SUBNET = "10.200"


def require_netns() -> None:
    """Skip the calling test (fail it under CI) unless this process can create namespaces."""
    reason = ""
    if not Path(IP).exists():
        reason = "iproute2's ip is not installed (apt-get install iproute2)"
    elif os.geteuid() != 0:
        reason = "network namespaces need root (run the test as root)"
    else:
        probe = f"edgegov-probe-{os.getpid()}-{secrets.token_hex(3)}"
        made = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
        subprocess.run([IP, "netns", "del", probe], capture_output=True)
        if made.returncode != 0:
            reason = f"cannot create a network namespace here: {made.stderr.strip()}"
    if not reason:
        return
    if under_ci():
        pytest.fail(f"{reason}; under CI the multi-host tests must run", pytrace=False)
    pytest.skip(reason)


def _ip(*args: str) -> None:
    done = subprocess.run([IP, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


@dataclass
class Host:
    """One namespace: the processes spawned in it are stopped at teardown."""

    name: str
    netns: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return [IP, "netns", "exec", self.netns, *argv]

    def run(self, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` here to its end; its output captured as text."""
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout)

    def spawn(
        self, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` here, its stdout and stderr appended to ``log``. ``ip netns exec``
        execs the command, so the pid is the command's own."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.command(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if env is None else dict(env),
            )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], *, kill: bool = False) -> int:
        """Stop ``process`` by its pid (SIGTERM, SIGKILL after a grace); its exit code."""
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        if process in self.processes:
            self.processes.remove(process)
        return process.returncode

    def stop_all(self) -> None:
        for process in reversed(list(self.processes)):
            self.stop(process)


@dataclass(frozen=True)
class Link:
    """A veth pair: ``a_address`` on ``a``'s ``a_device``, ``b_address`` on ``b``'s."""

    a: Host
    b: Host
    a_device: str
    b_device: str
    a_address: str
    b_address: str

    def down(self) -> None:
        """Cut the link (``a``'s end down: both ends lose carrier)."""
        _ip("-n", self.a.netns, "link", "set", "dev", self.a_device, "down")

    def up(self) -> None:
        """Heal it: the addresses and their routes come back with the carrier."""
        _ip("-n", self.a.netns, "link", "set", "dev", self.a_device, "up")


class HostNetwork:
    """The hosts and links of one test, all named with this run's tag."""

    def __init__(self) -> None:
        self.tag = f"edgegov-{os.getpid()}-{secrets.token_hex(3)}"
        self.hosts: dict[str, Host] = {}
        self.links: list[Link] = []

    def host(self, name: str) -> Host:
        """A new namespace for ``name``, its loopback up."""
        host = Host(name, f"{self.tag}-{name}")
        _ip("netns", "add", host.netns)
        self.hosts[name] = host
        _ip("-n", host.netns, "link", "set", "dev", "lo", "up")
        return host

    def link(self, a: Host, b: Host) -> Link:
        """A veth pair between ``a`` and ``b``, each end named for the other host."""
        index = len(self.links) + 1
        subnet = f"{SUBNET}.{index}"
        a_device, b_device = f"to-{b.name}"[:15], f"to-{a.name}"[:15]
        _ip(
            *("-n", a.netns, "link", "add", a_device, "type", "veth"),
            *("peer", "name", b_device, "netns", b.netns),
        )
        link = Link(a, b, a_device, b_device, f"{subnet}.1", f"{subnet}.2")
        self.links.append(link)
        for host, device, address in ((a, a_device, link.a_address), (b, b_device, link.b_address)):
            _ip("-n", host.netns, "addr", "add", f"{address}/24", "dev", device)
            _ip("-n", host.netns, "link", "set", "dev", device, "up")
        return link

    def close(self) -> None:
        """Stop every process, then delete every namespace (and so every veth end)."""
        for host in reversed(list(self.hosts.values())):
            host.stop_all()
        for host in self.hosts.values():
            subprocess.run([IP, "netns", "del", host.netns], capture_output=True)
        self.hosts.clear()


@contextlib.contextmanager
def host_network() -> Iterator[HostNetwork]:
    """A :class:`HostNetwork`, torn down however the test ends (skipped where namespaces
    cannot be made, failed under CI)."""
    require_netns()
    network = HostNetwork()
    try:
        yield network
    finally:
        network.close()

"""Bridged site brokers, for real: Mosquitto on the shipped ``packaging/mosquitto/`` configs,
one network namespace per host (:mod:`tests.netns_support`).

Host ``central`` runs the central broker (``central.conf``, ``edgegov-central.acl``) and
``edge-hub serve``; hosts ``site-a`` and ``site-b`` each run a site broker (``site.conf``)
bridged to the central one over TLS, and two real ``edge-agent run`` processes connected only
to their site broker. The shipped configs run with only their places moved (files into the
test's directory, the central address to the link's) and the bridge's keepalive and
reconnect delays shortened so a cut is noticed in seconds.

What flows which way: a bundle pushed at the hub and a revocation reach both sites; lineage
and status go up, every entry stored once; with site-a's link cut, its agents keep deciding
from their bundle, fail closed at ``max_offline``, and when the link heals the bridge
reconnects, the site broker holds the bundle pushed meanwhile retained (and no longer holds
a retained message cleared centrally meanwhile), and the agents open again and ship their
backlog.

Under ``EDGEGOV_TEST_REGISTRY=postgresql`` the hub and the test use the suite's PostgreSQL
database through its unix socket (a file, reachable from the central host's namespace, where
the root namespace's loopback is not), else ``hub.db`` in the hub directory.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.client import Client, DecisionResult, SocketError
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol import topics
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.roles import Role
from edge_agent.protocol.topics import Channel, ChannelKind
from hub.cli.mosquitto_acl import render_acl
from hub.cli.operations import build_bundle, init_keys
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root
from hub.registry import DeviceRecord
from hub.registry.backends import open_registry
from tests.brokers import MOSQUITTO, MOSQUITTO_PASSWD, require_mosquitto
from tests.hub_support import suite_registry
from tests.netns_support import Host, HostNetwork, Link, host_network
from tests.postgres_support import PostgresServer
from tests.tls_certs import ThrowawayCA

PACKAGING = Path(__file__).resolve().parents[1] / "packaging" / "mosquitto"
PYTHON = sys.executable
REGION = "eu-1"
GROUP = "line-a"
SITES = {"site-a": ("gw-a1", "gw-a2"), "site-b": ("gw-b1", "gw-b2")}
PASSWORD = "test-secret"
MAX_OFFLINE_S = 4
WAIT_S = 40.0
POLICY = """\
target: {{region: eu-1, groups: [line-a], profiles: [generic-x86_64]}}
ttl: 24h
max_offline: {max_offline}s
rules:
  - id: plc
    effect: allow
    subjects: ["*"]
    actions: [net.connect]
    resources: ["tcp://plc:502"]
"""
AGENT_CONFIG = """\
[broker]
url = "mqtts://{address}:8883"
password_file = "{password_file}"
ca_file = "{ca_file}"

[sync]
status_interval_s = 2
ship_interval_s = 0.1
ack_timeout_s = 1
reconnect_initial_s = 0.1
reconnect_max_s = 0.5
"""
WITHDRAWN = topics.shadow_topic(REGION, Channel(ChannelKind.DEVICE, "gw-zz"))
"""A retained topic the bridge carries that neither the hub nor the agents use: a retained
message cleared centrally while a site is cut off must be cleared there too after the heal
(as a withdrawn shadow bundle would be)."""
TUNED = {
    "keepalive_interval 30": "keepalive_interval 5",
    "restart_timeout 2 30": "restart_timeout 1 2",
}
"""Bridge timings shortened for the test: a cut noticed within 1.5 keepalives, a reconnect
tried every 1-2 s."""

pytestmark = pytest.mark.timeout(240)


def _wait(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _moved(config: str, moved: dict[str, str]) -> str:
    """``config`` with each line in ``moved`` replaced; a line to move that is not there
    fails the test (the shipped file changed under it)."""
    lines = config.splitlines()
    missing = set(moved) - set(lines)
    assert not missing, f"shipped config lines the test moves are gone: {sorted(missing)}"
    return "\n".join(moved.get(line, line) for line in lines) + "\n"


def _password_file(path: Path, users: list[str]) -> Path:
    for index, user in enumerate(users):
        flags = ["-c"] if index == 0 else []
        subprocess.run([MOSQUITTO_PASSWD, *flags, "-b", str(path), user, PASSWORD], check=True)
    return path


def _log_lines(workdir: Path) -> list[str]:
    return [
        "user root",
        f"log_dest file {workdir / 'mosquitto.log'}",
        *(f"log_type {kind}" for kind in ("error", "warning", "notice", "information")),
    ]


def _tls_lines(ca: ThrowawayCA, name: str, addresses: list[str]) -> dict[str, str]:
    cert, key = ca.issue(name, server=True, addresses=addresses)
    return {
        "certfile /etc/mosquitto/certs/broker.crt": f"certfile {cert}",
        "keyfile /etc/mosquitto/certs/broker.key": f"keyfile {key}",
        "cafile /etc/mosquitto/ca/devices-ca.crt": f"cafile {ca.ca_file}",
    }


def central_config(workdir: Path, ca: ThrowawayCA, addresses: list[str]) -> str:
    """``central.conf`` with its files in ``workdir`` and its TLS certificate valid for
    ``addresses`` (the central host's link addresses)."""
    workdir.mkdir(parents=True, exist_ok=True)
    users = ["hub", "hub-2", *SITES]
    moved = {
        **_tls_lines(ca, "central", addresses),
        "password_file /etc/mosquitto/edgegov.passwd": (
            f"password_file {_password_file(workdir / 'passwd', users)}"
        ),
        "acl_file /etc/mosquitto/conf.d/edgegov-central.acl": (
            f"acl_file {PACKAGING / 'edgegov-central.acl'}"
        ),
        "persistence_location /var/lib/mosquitto/": f"persistence_location {workdir}/",
    }
    text = _moved((PACKAGING / "central.conf").read_text(), moved)
    return text + "\n".join(_log_lines(workdir)) + "\n"


def site_config(
    workdir: Path, ca: ThrowawayCA, site: str, address: str, central_address: str
) -> str:
    """``site.conf`` for ``site`` (its own login and client ids), listening on ``address``,
    bridged to ``central_address``; its device ACL as ``edge-hub device acl`` writes it."""
    workdir.mkdir(parents=True, exist_ok=True)
    devices = SITES[site]
    acl = workdir / "edgegov.acl"
    acl.write_text(render_acl([_record(d) for d in devices]))
    moved = {
        **_tls_lines(ca, site, [address]),
        "password_file /etc/mosquitto/edgegov.passwd": (
            f"password_file {_password_file(workdir / 'passwd', ['hub', *devices])}"
        ),
        "acl_file /etc/mosquitto/conf.d/edgegov.acl": f"acl_file {acl}",
        "persistence_location /var/lib/mosquitto/": f"persistence_location {workdir}/",
        "address central.example.net:8883": f"address {central_address}:8883",
        "bridge_cafile /etc/mosquitto/ca/central-ca.crt": f"bridge_cafile {ca.ca_file}",
        "remote_username site-a": f"remote_username {site}",
        "remote_password CHANGE-ME": f"remote_password {PASSWORD}",
        "remote_clientid site-a": f"remote_clientid {site}",
        "local_clientid edgegov-bridge-site-a": f"local_clientid edgegov-bridge-{site}",
        **TUNED,
    }
    text = _moved((PACKAGING / "site.conf").read_text(), moved)
    return text + "\n".join(_log_lines(workdir)) + "\n"


def _record(device_id: str, key: PublicKey | None = None) -> DeviceRecord:
    public = PrivateKey.generate().public if key is None else key
    return DeviceRecord(device_id, REGION, (GROUP,), "generic-x86_64", public)


@dataclass
class Agent:
    device_id: str
    site: str
    state: Path
    config: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.state / "agent.sock"

    def decide(self) -> DecisionResult:
        with Client(path=str(self.socket), timeout=5) as client:
            return client.decide(action="net.connect", resource="tcp://plc:502")

    def reason(self) -> str:
        try:
            return str(self.decide().reason)
        except SocketError as exc:  # the agent not up yet: ask again
            return f"unavailable: {exc}"


@dataclass
class Fabric:
    """The running topology: hosts, the cut-able link of each site, agents, the hub dir and
    the hub's registry (a path or a URL)."""

    network: HostNetwork
    links: dict[str, Link]
    agents: dict[str, Agent]
    hub_dir: Path
    registry: str
    workdir: Path
    ca: ThrowawayCA

    @property
    def central(self) -> Host:
        return self.network.hosts["central"]

    def hub_cli(self, *args: str) -> None:
        broker = f"mqtt://hub-2:{PASSWORD}@127.0.0.1:1883"
        argv = [PYTHON, "-m", "hub.cli.main", *args, "--hub-dir", str(self.hub_dir)]
        done = self.central.run([*argv, "--registry", self.registry, "--broker", broker])
        assert done.returncode == 0, done.stdout + done.stderr

    def push(self, version: int) -> bytes:
        path = self.workdir / f"bundle-v{version}.cbor"
        path.write_bytes(_bundle(self.hub_dir, version))
        self.hub_cli("bundle", "push", str(path))
        return path.read_bytes()

    def fleet(self) -> dict[str, tuple[int, int | None]]:
        """Each device's lineage entries stored at the hub, and the size its status says."""
        with open_registry(self.registry) as registry:
            return {
                row.device_id: (row.lineage_size, row.device_lineage_size)
                for row in registry.fleet()
            }

    def retained(self, site: str, topic: str) -> str:
        """What ``site``'s broker holds retained on ``topic``, as hex ("" for nothing)."""
        host, link = self.network.hosts[site], self.links[site]
        url = f"mqtts://hub:{PASSWORD}@{link.b_address}:8883"
        argv = [PYTHON, "-m", "tests.retained_probe", "read", url, str(self.ca.ca_file), topic]
        done = host.run(argv)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def hold_centrally(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` retained on the central broker (empty: clear it)."""
        url = f"mqtt://hub-2:{PASSWORD}@127.0.0.1:1883"
        argv = [PYTHON, "-m", "tests.retained_probe", "write", url, "", topic, payload.hex()]
        done = self.central.run(argv)
        assert done.returncode == 0, done.stderr


def _bundle(hub_dir: Path, version: int) -> bytes:
    keys = hub_dir / "keys"
    root = load_root(keys / ROOT_FILE)
    source = load_policy_source(POLICY.format(max_offline=MAX_OFFLINE_S))
    data, _ = build_bundle(
        source,
        root=root,
        signers=load_role_keys(keys, Role.POLICY, root),
        version=version,
        ttl=None,
        now=int(time.time()),
    )
    return data


def _enrol(fabric_dir: Path, registry: str, root: bytes, ca: ThrowawayCA) -> dict[str, Agent]:
    agents = {}
    password_file = fabric_dir / "device-password"
    password_file.write_text(PASSWORD)
    for index, (site, devices) in enumerate(SITES.items(), start=1):
        for device_id in devices:
            state = fabric_dir / device_id
            identity = DeviceIdentity(device_id, REGION, (GROUP,), "generic-x86_64")
            public = init_state_dir(state, identity, root, int(time.time()))
            with open_registry(registry) as hub_registry:
                hub_registry.add_device(_record(device_id, public))
            config = fabric_dir / f"{device_id}.toml"
            config.write_text(
                AGENT_CONFIG.format(
                    address=f"10.200.{index}.2", password_file=password_file, ca_file=ca.ca_file
                )
            )
            agents[device_id] = Agent(device_id, site, state, config)
    return agents


def _start_broker(host: Host, workdir: Path, config: str) -> None:
    path = workdir / "mosquitto.conf"
    path.write_text(config)
    process = host.spawn([str(MOSQUITTO), "-c", str(path)], workdir / "stdout.log")
    log = workdir / "mosquitto.log"
    _wait(
        lambda: process.poll() is None and log.exists() and " running" in log.read_text(),
        f"mosquitto on {host.name} (see {log})",
    )


def _start_agent(fabric: Fabric, agent: Agent) -> None:
    host = fabric.network.hosts[agent.site]
    argv = [PYTHON, "-m", "edge_agent.cli", "run", "--state-dir", str(agent.state)]
    argv += ["--socket", str(agent.socket), "--config", str(agent.config)]
    agent.process = host.spawn(argv, fabric.workdir / f"{agent.device_id}.log")


def _bridge_connected(fabric: Fabric, site: str, since: int) -> bool:
    """Whether the central broker logged ``site``'s bridge connecting after line ``since``."""
    lines = (fabric.workdir / "central" / "mosquitto.log").read_text().splitlines()[since:]
    connected = ("New bridge connected", "New client connected")
    return any(
        line.split(" from ")[0].endswith(connected) and f" as {site} (" in line for line in lines
    )


def _central_log_size(fabric: Fabric) -> int:
    return len((fabric.workdir / "central" / "mosquitto.log").read_text().splitlines())


def _hub_registry(request: pytest.FixtureRequest, hub_dir: Path) -> str:
    """The suite's PostgreSQL database by its unix socket, or ``hub.db`` in ``hub_dir``."""
    url = suite_registry()
    if url is None:
        return str(hub_dir / "hub.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.socket_url(url.rsplit("/", 1)[1])


@pytest.fixture
def fabric(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fabric]:
    require_mosquitto()
    with host_network() as network:
        central = network.host("central")
        links = {site: network.link(central, network.host(site)) for site in SITES}
        ca = ThrowawayCA(tmp_path / "pki")
        hub_dir = tmp_path / "hub"
        hub_dir.mkdir()
        root = init_keys(
            hub_dir / "keys", root_keys=3, root_threshold=2, now=int(time.time()), ttl=86400
        )
        registry = _hub_registry(request, hub_dir)
        agents = _enrol(tmp_path, registry, root.raw, ca)
        fabric = Fabric(network, links, agents, hub_dir, registry, tmp_path, ca)
        central_dir = tmp_path / "central"
        _start_broker(
            central,
            central_dir,
            central_config(central_dir, ca, [link.a_address for link in links.values()]),
        )
        hub_argv = [PYTHON, "-m", "hub.cli.main", "serve", "--hub-dir", str(hub_dir)]
        hub_argv += ["--registry", registry]
        hub_argv += ["--broker", f"mqtt://hub:{PASSWORD}@127.0.0.1:1883", "--shared", "on"]
        hub_argv += ["--freshness-interval", "1s", "--token-ttl", "3s", "--log-level", "info"]
        central.spawn(hub_argv, tmp_path / "hub.log")
        for site, link in links.items():
            site_dir = tmp_path / site
            config = site_config(site_dir, ca, site, link.b_address, link.a_address)
            _start_broker(network.hosts[site], site_dir, config)
        for agent in agents.values():
            _start_agent(fabric, agent)
        yield fabric


def _stop_agents(fabric: Fabric) -> None:
    for agent in fabric.agents.values():
        assert agent.process is not None
        code = fabric.network.hosts[agent.site].stop(agent.process)
        assert code == 0, (fabric.workdir / f"{agent.device_id}.log").read_text()[-3000:]


def _allowed_on(agent: Agent, version: int) -> bool:
    try:
        answer = agent.decide()
    except SocketError:
        return False
    return answer.allowed and answer.bundle_version == version


def _answers(agent: Agent) -> bool:
    return not agent.reason().startswith("unavailable")


def _denies_with(agent: Agent, reason: str) -> bool:
    return agent.reason() == reason


def _decide_many(agent: Agent, count: int) -> None:
    with Client(path=str(agent.socket), timeout=5) as client:
        for _ in range(count):
            client.decide(action="net.connect", resource="tcp://plc:502")


def _lineage_caught_up(fabric: Fabric, devices: list[str]) -> bool:
    fleet = fabric.fleet()
    return all(
        fleet[d][1] is not None and fleet[d][0] == fleet[d][1] and fleet[d][0] > 0 for d in devices
    )


def _lineage_sizes(fabric: Fabric) -> dict[str, tuple[int, int]]:
    """Each stopped agent's lineage size and acknowledged watermark, read from its state."""
    sizes = {}
    for agent in fabric.agents.values():
        local = LocalAgent.open(agent.state)
        try:
            assert local.lineage is not None
            sizes[agent.device_id] = (local.lineage.size, local.lineage.acknowledged)
        finally:
            local.close()
    return sizes


def _check_every_entry_stored_once(fabric: Fabric) -> None:
    """Stop the agents, start them again until the hub holds every entry they had, stop
    them: the hub then holds each device's log exactly (no gap, nothing twice) up to what it
    stored, which is at least everything the devices had written and no more than they
    hold, and nothing is acknowledged that is not stored."""
    _stop_agents(fabric)
    written = {device: size for device, (size, _) in _lineage_sizes(fabric).items()}
    for agent in fabric.agents.values():
        _start_agent(fabric, agent)
    for agent in fabric.agents.values():
        _wait(partial(_answers, agent), f"{agent.device_id} up")
    _wait(
        lambda: all(fabric.fleet()[d][0] >= size for d, size in written.items()),
        "every entry written before the agents stopped at the hub",
    )
    _stop_agents(fabric)
    with open_registry(fabric.registry) as registry:
        for device_id, (size, acked) in _lineage_sizes(fabric).items():
            seqs = [entry.seq for entry in registry.iter_entries(device_id)]
            assert seqs == list(range(len(seqs))), f"{device_id}: a gap or an entry twice"
            assert written[device_id] <= len(seqs) <= size, f"{device_id}: {len(seqs)} stored"
            assert acked <= len(seqs), f"{device_id}: acknowledged {acked}, stored {len(seqs)}"


def _run_cut(fabric: Fabric, cut_s: float) -> None:
    agents = fabric.agents
    link = fabric.links["site-a"]
    fabric.hold_centrally(WITHDRAWN, b"withdrawn during the cut")
    _wait(lambda: fabric.retained("site-a", WITHDRAWN) != "", "a shadow bundle on site-a")
    before = _central_log_size(fabric)
    link.down()
    cut_at = time.monotonic()
    assert agents["gw-a1"].decide().allowed, "a cut site stopped deciding from its bundle"
    _decide_many(agents["gw-a1"], 30)
    v2 = fabric.push(2)
    fabric.hold_centrally(WITHDRAWN, b"")
    _wait(lambda: _allowed_on(agents["gw-b1"], 2), "bundle v2 on site-b during the cut")
    assert agents["gw-a1"].decide().bundle_version == 1
    _wait(
        lambda: agents["gw-a1"].reason() == "freshness_expired",
        "site-a failing closed at max_offline",
        MAX_OFFLINE_S + 10,
    )
    _decide_many(agents["gw-a1"], 20)
    time.sleep(max(0.0, cut_s - (time.monotonic() - cut_at)))
    link.up()
    _wait(lambda: _bridge_connected(fabric, "site-a", before), "site-a's bridge reconnecting")
    _wait(lambda: _allowed_on(agents["gw-a1"], 2), "site-a open again on bundle v2")
    bundle_topic = topics.bundle_topic(REGION, Channel(ChannelKind.GROUP, GROUP))
    assert fabric.retained("site-a", bundle_topic) == v2.hex()
    assert fabric.retained("site-b", bundle_topic) == v2.hex()
    _wait(lambda: fabric.retained("site-a", WITHDRAWN) == "", "the withdrawal on site-a")
    _wait(lambda: _lineage_caught_up(fabric, list(agents)), "site-a's backlog at the hub")


def test_bundles_and_revocations_flow_down_lineage_up_and_a_cut_site_fails_closed_then_heals(
    fabric: Fabric,
) -> None:
    agents = fabric.agents
    _wait(lambda: all(_bridge_connected(fabric, s, 0) for s in SITES), "both site bridges")
    fabric.push(1)
    for agent in agents.values():
        _wait(partial(_allowed_on, agent, 1), f"bundle v1 on {agent.device_id}")
    for agent in agents.values():
        _decide_many(agent, 40)
    _wait(lambda: _lineage_caught_up(fabric, list(agents)), "every device's lineage at the hub")
    _run_cut(fabric, cut_s=10)
    fabric.hub_cli("revoke", "--device", "gw-a2", "--reason", "stolen")
    fabric.hub_cli("revoke", "--device", "gw-b2", "--reason", "stolen")
    for device_id in ("gw-a2", "gw-b2"):
        _wait(partial(_denies_with, agents[device_id], "revoked"), f"{device_id} revoked")
    assert agents["gw-a1"].decide().allowed and agents["gw-b1"].decide().allowed
    _wait(lambda: _lineage_caught_up(fabric, list(agents)), "the revoked devices' lineage")
    _check_every_entry_stored_once(fabric)


@pytest.mark.slow
def test_a_site_cut_for_a_minute_fails_closed_and_catches_up(fabric: Fabric) -> None:
    agents = fabric.agents
    _wait(lambda: all(_bridge_connected(fabric, s, 0) for s in SITES), "both site bridges")
    fabric.push(1)
    for agent in agents.values():
        _wait(partial(_allowed_on, agent, 1), f"bundle v1 on {agent.device_id}")
    _run_cut(fabric, cut_s=60)
    _check_every_entry_stored_once(fabric)

"""Faults of a multi-host deployment, for real: one network namespace per host
(:mod:`tests.netns_support`), Debian's PostgreSQL and Mosquitto, real ``edge-hub serve`` and
``edge-agent run`` processes.

Hosts: ``pg`` runs PostgreSQL (:func:`tests.postgres_support.start_postgres`, listening on
its links to the hubs); ``central`` the central broker (the shipped ``central.conf``);
``hub-a`` and ``hub-b`` one ``edge-hub serve --shared on`` each, both on that one PostgreSQL
registry and connected to the central broker over TLS; ``site-a`` and ``site-b`` a site
broker each (``site.conf``, bridged to the central one) and two agents connected only to it.
The brokers' configurations are those of :mod:`tests.test_bridged_sites`, which also covers
the third fault of the deployment guide, a site's bridge cut (its devices decide from their
bundle, fail closed at ``max_offline`` and catch up when it heals).

What each test shows, with counts (every device's stored log is its entries ``0..n-1``,
each once, ``n`` at least what the device had written and no more than it holds):

- both hubs ingest (the shared subscription spreads each device's lineage over them) into
  the one registry;
- SIGKILL one hub: the other keeps ingesting (the agents re-send what the dead hub did not
  acknowledge) and publishing freshness, so no agent fails closed;
- PostgreSQL stopped and started again: the agents keep deciding meanwhile, the hubs
  reconnect, shipping resumes; stopped for longer than ``max_offline`` (a slow test), no
  hub can lead the schedule, so no freshness comes and the agents fail closed, until it is
  back.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psycopg
import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.roles import Role
from hub.cli.operations import build_bundle, init_keys
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root
from hub.hubdir.layout import HubDir
from hub.registry.backends import open_registry
from hub.service.governance import prepare_push
from tests.brokers import require_mosquitto
from tests.netns_support import Host, HostNetwork, Link, host_network
from tests.postgres_support import PostgresServer, remove_folder, start_postgres
from tests.test_bridged_sites import (
    AGENT_CONFIG,
    GROUP,
    PASSWORD,
    POLICY,
    PYTHON,
    REGION,
    SITES,
    Agent,
    _allowed_on,
    _answers,
    _decide_many,
    _denies_with,
    _record,
    _start_broker,
    _wait,
    central_config,
    site_config,
)
from tests.tls_certs import ThrowawayCA

HUBS = {"hub-a": "hub", "hub-b": "hub-2"}
"""Each hub host and its login on the central broker (the client id there)."""
DATABASE = "registry"
TOKEN_TTL_S = 3
MAX_OFFLINE_S = 8
"""The bundle's ``max_offline``: longer than a freshness interval (1 s) plus the schedule
lease's handover (:attr:`hub.service.lease.LeaseTiming.handover_s`, under 3 s at that
interval) plus the time a restarted PostgreSQL takes to answer, so that neither fault may
fail an agent closed; a longer outage would, as it should."""
PG_DOWN_S = 3.0
"""How long PostgreSQL is down: longer than a freshness token lives, no hub can claim the
schedule lease meanwhile, so no token arrives."""
LEADS = "edge-hub serve: leads the schedule"
NOT_LEADING = tuple(
    f"edge-hub serve: {line}"
    for line in (
        "another hub leads the schedule",
        "registry unreachable",
        "without the broker",
        "released the schedule lease",
    )
)
"""The status lines of ``edge-hub serve`` saying it gained the schedule lease, or does not
hold it (:mod:`hub.service.lease`)."""
STORED = re.compile(r"lineage of (\S+): stored (\d+)\.\.(\d+)")

pytestmark = pytest.mark.timeout(240)


@dataclass
class HubProcess:
    host: Host
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = self.host.spawn(self.argv, self.log)

    def stored(self) -> dict[str, list[tuple[int, int]]]:
        """The batches this hub's log says it stored: each device's ``(first, last)`` seqs."""
        batches: dict[str, list[tuple[int, int]]] = {}
        for match in STORED.finditer(self.log.read_text(errors="replace")):
            device, first, last = match.group(1), int(match.group(2)), int(match.group(3))
            batches.setdefault(device, []).append((first, last))
        return batches


@dataclass
class Deployment:
    """The running hosts: the database, the hubs, the agents."""

    network: HostNetwork
    postgres: PostgresServer
    hubs: dict[str, HubProcess]
    agents: dict[str, Agent]
    workdir: Path

    @property
    def registry_url(self) -> str:
        return self.postgres.socket_url(DATABASE)

    def fleet(self) -> dict[str, tuple[int, int | None]]:
        """Each device's lineage entries stored, and the size its status says."""
        with open_registry(self.registry_url) as registry:
            return {
                row.device_id: (row.lineage_size, row.device_lineage_size)
                for row in registry.fleet()
            }

    def caught_up(self) -> bool:
        fleet = self.fleet()
        return all(
            fleet[d][1] is not None and fleet[d][0] == fleet[d][1] and fleet[d][0] > 0
            for d in self.agents
        )

    def start_agent(self, agent: Agent) -> None:
        host = self.network.hosts[agent.site]
        argv = [PYTHON, "-m", "edge_agent.cli", "run", "--state-dir", str(agent.state)]
        argv += ["--socket", str(agent.socket), "--config", str(agent.config)]
        agent.process = host.spawn(argv, self.workdir / f"{agent.device_id}.log")

    def stop_agents(self) -> None:
        for agent in self.agents.values():
            assert agent.process is not None
            code = self.network.hosts[agent.site].stop(agent.process)
            log = (self.workdir / f"{agent.device_id}.log").read_text()[-3000:]
            assert code == 0, log

    def written(self) -> dict[str, tuple[int, int]]:
        """Each stopped agent's lineage size and acknowledged watermark, from its state."""
        sizes = {}
        for agent in self.agents.values():
            local = LocalAgent.open(agent.state)
            try:
                assert local.lineage is not None
                sizes[agent.device_id] = (local.lineage.size, local.lineage.acknowledged)
            finally:
                local.close()
        return sizes


def _enrol(
    workdir: Path, registry_url: str, root: bytes, ca: ThrowawayCA, site_links: dict[str, Link]
) -> dict[str, Agent]:
    agents = {}
    password_file = workdir / "device-password"
    password_file.write_text(PASSWORD)
    with open_registry(registry_url) as registry:
        for site, devices in SITES.items():
            for device_id in devices:
                state = workdir / device_id
                identity = DeviceIdentity(device_id, REGION, (GROUP,), "generic-x86_64")
                public = init_state_dir(state, identity, root, int(time.time()))
                registry.add_device(_record(device_id, public))
                config = workdir / f"{device_id}.toml"
                config.write_text(
                    AGENT_CONFIG.format(
                        address=site_links[site].b_address,
                        password_file=password_file,
                        ca_file=ca.ca_file,
                    )
                )
                agents[device_id] = Agent(device_id, site, state, config)
    return agents


def _bundle(keys: Path, version: int) -> bytes:
    root = load_root(keys / ROOT_FILE)
    data, _ = build_bundle(
        load_policy_source(POLICY.format(max_offline=MAX_OFFLINE_S)),
        root=root,
        signers=load_role_keys(keys, Role.POLICY, root),
        version=version,
        ttl=None,
        now=int(time.time()),
    )
    return data


def _record_bundle(keys: Path, registry_url: str, version: int) -> None:
    """Record bundle ``version`` in the registry as ``edge-hub bundle push`` does; the hubs
    publish it (their retained snapshot) when they connect."""
    hub_keys = HubDir(keys.parent).load_keys(keys)
    with open_registry(registry_url) as registry:
        prepare_push(
            registry,
            hub_keys,
            _bundle(keys, version),
            now=int(time.time()),
            token_ttl_s=TOKEN_TTL_S,
        )


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    require_mosquitto()
    with host_network() as network:
        central = network.host("central")
        site_links = {site: network.link(central, network.host(site)) for site in SITES}
        hub_hosts = {name: network.host(name) for name in HUBS}
        to_central = {name: network.link(central, host) for name, host in hub_hosts.items()}
        pg = network.host("pg")
        to_pg = {name: network.link(pg, host) for name, host in hub_hosts.items()}
        pg_dir = Path(tempfile.mkdtemp(prefix="edgegov-pg-"))
        listen = tuple(link.a_address for link in to_pg.values())
        try:
            postgres = start_postgres(pg_dir, listen, tuple(pg.command(())))
            try:
                with psycopg.connect(postgres.socket_url(), autocommit=True) as db:
                    db.execute(f"CREATE DATABASE {DATABASE}")
                yield _deploy(network, postgres, tmp_path, site_links, to_central, to_pg)
            finally:
                for host in network.hosts.values():
                    host.stop_all()
                postgres.stop()
        finally:
            remove_folder(pg_dir)


def _deploy(
    network: HostNetwork,
    postgres: PostgresServer,
    workdir: Path,
    site_links: dict[str, Link],
    to_central: dict[str, Link],
    to_pg: dict[str, Link],
) -> Deployment:
    registry_url = postgres.socket_url(DATABASE)
    ca = ThrowawayCA(workdir / "pki")
    keys = workdir / "hub" / "keys"
    keys.parent.mkdir()
    root = init_keys(keys, root_keys=3, root_threshold=2, now=int(time.time()), ttl=86400)
    agents = _enrol(workdir, registry_url, root.raw, ca, site_links)
    _record_bundle(keys, registry_url, 1)
    central = network.hosts["central"]
    central_dir = workdir / "central"
    addresses = [link.a_address for link in (*site_links.values(), *to_central.values())]
    _start_broker(central, central_dir, central_config(central_dir, ca, addresses))
    hubs = {}
    for name, login in HUBS.items():
        hub_dir = workdir / name
        hub_dir.mkdir()
        broker = f"mqtts://{login}:{PASSWORD}@{to_central[name].a_address}:8883"
        argv = [PYTHON, "-m", "hub.cli.main", "serve", "--hub-dir", str(hub_dir)]
        argv += ["--keys", str(keys), "--broker", broker, "--ca-file", str(ca.ca_file)]
        argv += ["--shared", "on", "--freshness-interval", "1s", "--token-ttl", f"{TOKEN_TTL_S}s"]
        url = f"postgresql://postgres@{to_pg[name].a_address}:{postgres.port}/{DATABASE}"
        argv += ["--log-level", "debug", "--registry", url]
        hubs[name] = HubProcess(network.hosts[name], argv, workdir / f"{name}.log")
        hubs[name].start()
    for site, link in site_links.items():
        site_dir = workdir / site
        config = site_config(site_dir, ca, site, link.b_address, link.a_address)
        _start_broker(network.hosts[site], site_dir, config)
    deployment = Deployment(network, postgres, hubs, agents, workdir)
    for agent in agents.values():
        deployment.start_agent(agent)
    for agent in agents.values():
        _wait(partial(_allowed_on, agent, 1), f"bundle v1 on {agent.device_id}")
    return deployment


def _check_every_entry_stored_once(deployment: Deployment) -> None:
    """Stop the agents, start them again until the registry holds every entry they had,
    stop them: each device's stored log is then ``0..n-1`` (no gap, nothing twice), ``n``
    at least what it had written and no more than it holds, and nothing is acknowledged
    that is not stored."""
    deployment.stop_agents()
    written = {device: size for device, (size, _) in deployment.written().items()}
    for agent in deployment.agents.values():
        deployment.start_agent(agent)
    for agent in deployment.agents.values():
        _wait(partial(_answers, agent), f"{agent.device_id} up")
    _wait(
        lambda: all(deployment.fleet()[d][0] >= size for d, size in written.items()),
        "every entry written before the agents stopped in the registry",
    )
    deployment.stop_agents()
    with open_registry(deployment.registry_url) as registry:
        for device_id, (size, acked) in deployment.written().items():
            seqs = [entry.seq for entry in registry.iter_entries(device_id)]
            assert seqs == list(range(len(seqs))), f"{device_id}: a gap or an entry twice"
            assert written[device_id] <= len(seqs) <= size, f"{device_id}: {len(seqs)} stored"
            assert acked <= len(seqs), f"{device_id}: acknowledged {acked}, stored {len(seqs)}"


def _stored_by(deployment: Deployment) -> dict[str, int]:
    """How many entries each hub's log says it stored; the batches of all hubs together
    must not overlap (a batch stored twice would)."""
    counts = {}
    seen: dict[str, set[int]] = {}
    for name, hub in deployment.hubs.items():
        counts[name] = 0
        for device, batches in hub.stored().items():
            for first, last in batches:
                seqs = set(range(first, last + 1))
                overlap = seen.setdefault(device, set()) & seqs
                assert not overlap, f"{device}: {sorted(overlap)} stored twice ({name})"
                seen[device] |= seqs
                counts[name] += len(seqs)
    return counts


def test_both_hubs_ingest_into_one_registry_each_entry_once(deployment: Deployment) -> None:
    for agent in deployment.agents.values():
        _decide_many(agent, 60)
    _wait(deployment.caught_up, "every device's lineage in the registry")
    by_hub = _stored_by(deployment)
    assert all(by_hub.values()), f"a hub stored nothing: {by_hub}"
    assert sum(by_hub.values()) == sum(size for size, _ in deployment.fleet().values())
    _check_every_entry_stored_once(deployment)


def _leading(deployment: Deployment) -> list[str]:
    """The running hubs whose last status line about the schedule lease says they lead it."""
    leading = []
    for name, hub in deployment.hubs.items():
        if hub.process is None or hub.process.poll() is not None:
            continue
        said = [
            line
            for line in hub.log.read_text(errors="replace").splitlines()
            if line.startswith((LEADS, *NOT_LEADING))
        ]
        if said and said[-1].startswith(LEADS):
            leading.append(name)
    return leading


def _all_allowed_for(deployment: Deployment, seconds: float) -> dict[str, int]:
    """Every agent allows (on bundle v1) each time it is asked for ``seconds``: none fails
    closed meanwhile. How many decisions each made (each adds an entry to its lineage)."""
    made = dict.fromkeys(deployment.agents, 0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for agent in deployment.agents.values():
            answer = agent.decide()
            assert answer.allowed, f"{agent.device_id} denied: {answer.reason}"
            made[agent.device_id] += 1
        time.sleep(0.2)
    return made


def _stored_at_least(deployment: Deployment, floor: dict[str, int]) -> bool:
    fleet = deployment.fleet()
    return all(fleet[device][0] >= count for device, count in floor.items())


def test_a_killed_hub_leaves_the_other_ingesting_and_publishing(deployment: Deployment) -> None:
    for agent in deployment.agents.values():
        _decide_many(agent, 30)
    _wait(deployment.caught_up, "every device's lineage in the registry")
    _wait(lambda: len(_leading(deployment)) == 1, "one hub leading the schedule")
    (killed,) = _leading(deployment)
    survivor = next(name for name in deployment.hubs if name != killed)
    before = _stored_by(deployment)
    hub = deployment.hubs[killed]
    assert hub.process is not None
    hub.host.stop(hub.process, kill=True)
    for agent in deployment.agents.values():
        _decide_many(agent, 30)
    _all_allowed_for(deployment, MAX_OFFLINE_S + 1)
    assert _leading(deployment) == [survivor], f"{survivor} did not take the schedule over"
    _wait(deployment.caught_up, f"every device's lineage in the registry through {survivor}")
    after = _stored_by(deployment)
    assert after[survivor] > before[survivor], f"{survivor} stored nothing after the kill"
    assert after[killed] == before[killed]
    _check_every_entry_stored_once(deployment)


def test_postgres_restarted_the_agents_keep_deciding_and_shipping_resumes(
    deployment: Deployment,
) -> None:
    for agent in deployment.agents.values():
        _decide_many(agent, 30)
    _wait(deployment.caught_up, "every device's lineage in the registry")
    stored = {device: size for device, (size, _) in deployment.fleet().items()}
    deployment.postgres.pg_ctl("-m", "fast", "-w", "stop")
    made = _all_allowed_for(deployment, PG_DOWN_S)
    deployment.postgres.start()
    _wait(
        partial(_stored_at_least, deployment, {d: stored[d] + made[d] for d in made}),
        "the decisions made while PostgreSQL was down in the registry",
    )
    _wait(deployment.caught_up, "every device's lineage in the registry")
    _all_allowed_for(deployment, MAX_OFFLINE_S + 1)
    for name, hub in deployment.hubs.items():
        assert hub.process is not None and hub.process.poll() is None, f"{name} exited"
    _check_every_entry_stored_once(deployment)


@pytest.mark.slow
def test_postgres_down_past_max_offline_fails_agents_closed_until_it_is_back(
    deployment: Deployment,
) -> None:
    for agent in deployment.agents.values():
        _decide_many(agent, 30)
    _wait(deployment.caught_up, "every device's lineage in the registry")
    deployment.postgres.pg_ctl("-m", "fast", "-w", "stop")
    for agent in deployment.agents.values():
        _wait(
            partial(_denies_with, agent, "freshness_expired"),
            f"{agent.device_id} failing closed at max_offline",
            MAX_OFFLINE_S + 10,
        )
        _decide_many(agent, 20)
    deployment.postgres.start()
    for agent in deployment.agents.values():
        _wait(partial(_allowed_on, agent, 1), f"{agent.device_id} open again")
    _wait(deployment.caught_up, "every device's lineage in the registry")
    _check_every_entry_stored_once(deployment)

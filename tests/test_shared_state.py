"""Several processes, one state: ``edge-agent run`` and the commands run beside it.

Two :class:`LocalAgent` instances open one state directory, as the running agent and a CLI
process do. Each row has the CLI change the state (signed with real keys), then the running
agent act on the state it held before, and names the reason the running agent's next
decision must give; a new process must agree. The outbox rows stop a change between its
state write and its lineage write, as a kill -9 would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import STATE_CHECK_INTERVAL_S, LocalAgent, init_state_dir
from edge_agent.errors import BundleError
from edge_agent.policy.compiler import policy_payload
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.store import StaleStateError, StateStore
from edge_agent.support.mqtt import BrokerSettings, Incoming
from edge_agent.sync.config import SyncConfig
from edge_agent.sync.daemon import AgentDaemon
from edge_agent.trust.clock import TimeFloor
from tests.factory import DAY, DEVICE, NOW, HubSim

CAMERA = Request("svc:camera", "exec", "/opt/camera/bin/capture")
DECADE = 10 * 365 * DAY


class Monotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


@dataclass
class Device:
    sim: HubSim
    state_dir: Path
    running: LocalAgent
    clock: Monotonic
    bundle: bytes

    def cli(self, action: Callable[[LocalAgent], object]) -> None:
        """Run ``action`` in a LocalAgent of its own, as an ``edge-agent`` command does."""
        with LocalAgent.open(self.state_dir) as agent:
            action(agent)

    def running_decides(self, wall: int = NOW) -> str:
        """The running agent's next decision, a check interval after the last one."""
        self.clock.advance(STATE_CHECK_INTERVAL_S)
        return str(self.running.decide(CAMERA, wall).reason)

    def new_process_decides(self, wall: int = NOW) -> str:
        with LocalAgent.open(self.state_dir) as agent:
            return str(agent.decide(CAMERA, wall).reason)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    sim = HubSim()
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, DEVICE, sim.root_bytes(), NOW)
    bundle = sim.bundle(1)
    with LocalAgent.open(state_dir) as cli:
        cli.install_bundle(bundle, NOW)
    clock = Monotonic()
    running = LocalAgent.open(state_dir, monotonic=clock)
    try:
        yield Device(sim, state_dir, running, clock, bundle)
    finally:
        running.close()


def _rotate(sim: HubSim, role: Role) -> bytes:
    """Root version 2 with a new key for ``role``."""
    if role is Role.POLICY:
        sim.policy_keys = [PrivateKey.generate()]
    else:
        sim.online_keys = {**sim.online_keys, role: [PrivateKey.generate()]}
    return sim.root_bytes(version=2, issued_at=NOW - 30)


def _nothing(device: Device) -> None:
    return None


def _cli_rotates_policy(device: Device) -> None:
    root = _rotate(device.sim, Role.POLICY)
    device.cli(lambda agent: agent.install_root(root, NOW))


def _cli_installs_v2(device: Device) -> None:
    bundle = device.sim.bundle(2, policy=policy_payload(groups={}, workloads={}, rules=[]))
    device.cli(lambda agent: agent.install_bundle(bundle, NOW))


def _cli_revokes_this_device(device: Device) -> None:
    revocation = device.sim.revocation(1)
    device.cli(lambda agent: agent.install_revocation(revocation, NOW))


def _running_poisoned_then_cli_rotates_freshness(device: Device) -> None:
    token = device.sim.freshness(device.bundle, hub_time=NOW + DECADE)
    device.running.install_freshness(token, NOW)
    assert device.running_decides() == "clock_untrusted"
    root = _rotate(device.sim, Role.FRESHNESS)
    device.cli(lambda agent: agent.install_root(root, NOW))


def _running_records_a_revocation(device: Device) -> None:
    other = device.sim.revocation(1, "device", "gw-999")
    device.running.install_revocation(other, NOW)


def _running_gets_the_root_again(device: Device) -> None:
    root = device.sim.root_bytes(version=2, issued_at=NOW - 30)
    assert device.running.install_root(root, NOW).version == 2


def _running_installs_v2_signed_by_the_old_policy_key(device: Device) -> None:
    old = device.sim.policy_keys
    root = _rotate(device.sim, Role.POLICY)
    device.cli(lambda agent: agent.install_root(root, NOW))
    forged = device.sim.bundle(2, signers=old)
    with pytest.raises(BundleError) as refused:
        device.running.install_bundle(forged, NOW)
    assert refused.value.code == "bundle_signature"


@dataclass(frozen=True)
class Shared:
    name: str
    cli: Callable[[Device], None]
    running: Callable[[Device], None]
    reason: str


SHARED = [
    Shared("cli rotates the policy key", _cli_rotates_policy, _nothing, "bundle_untrusted"),
    Shared("cli installs a bundle", _cli_installs_v2, _nothing, "no_matching_rule"),
    Shared("cli records a revocation", _cli_revokes_this_device, _nothing, "revoked"),
    Shared(
        "running agent with a poisoned floor writes after the cli's recovery root",
        _running_poisoned_then_cli_rotates_freshness,
        _running_records_a_revocation,
        "allowed",
    ),
    Shared(
        "root installed by the cli is delivered again to the running agent",
        _cli_rotates_policy,
        _running_gets_the_root_again,
        "bundle_untrusted",
    ),
    Shared(
        "running agent offered a bundle signed by the key the cli rotated away",
        _nothing,
        _running_installs_v2_signed_by_the_old_policy_key,
        "bundle_untrusted",
    ),
]


@pytest.mark.parametrize("case", SHARED, ids=[c.name for c in SHARED])
def test_running_agent_decides_with_what_another_process_committed(
    device: Device, case: Shared
) -> None:
    assert device.running_decides() == "allowed"

    case.cli(device)
    case.running(device)

    assert device.running_decides() == case.reason
    assert device.new_process_decides() == case.reason


def test_recovered_floor_stays_recovered_after_the_stale_process_writes(device: Device) -> None:
    _running_poisoned_then_cli_rotates_freshness(device)
    _running_records_a_revocation(device)

    store = StateStore.open(device.state_dir)
    try:
        floor = store.load().floor
    finally:
        store.close()
    assert floor.mark(Role.FRESHNESS) == 0
    assert floor.signed < NOW


def test_a_change_committed_between_the_check_and_the_write_is_verified_again(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    _running_poisoned_then_cli_rotates_freshness(device)
    monkeypatch.setattr(device.running.store, "changed", lambda generation: False)

    _running_records_a_revocation(device)

    assert device.running.state.floor.mark(Role.FRESHNESS) == 0
    assert device.new_process_decides() == "allowed"


def test_a_write_from_a_stale_generation_changes_nothing(device: Device) -> None:
    store = StateStore.open(device.state_dir)
    try:
        stored = store.load()
        with pytest.raises(StaleStateError):
            store.record_floor(TimeFloor(NOW + DECADE), generation=stored.generation - 1)
        assert store.load() == stored
    finally:
        store.close()


def test_running_agent_checks_for_changes_at_most_once_per_interval(device: Device) -> None:
    assert device.running_decides() == "allowed"
    _cli_rotates_policy(device)

    assert str(device.running.decide(CAMERA, NOW).reason) == "allowed"
    assert device.running_decides() == "bundle_untrusted"


def test_a_root_the_cli_installed_arrives_over_mqtt_as_a_no_op(device: Device) -> None:
    daemon = AgentDaemon(
        device.running, BrokerSettings("127.0.0.1", 1), SyncConfig(), wall=lambda: NOW
    )
    root = _rotate(device.sim, Role.POLICY)
    device.cli(lambda agent: agent.install_root(root, NOW))

    daemon.handle(Incoming("edgegov/v1/eu-1/root/2", root, retain=True))

    assert device.running.state.root.version == 2
    assert not daemon._rejected
    assert device.running_decides() == "bundle_untrusted"


# --- the outbox -----------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs in the process."""


def _installed_entries(state_dir: Path) -> list[int | None]:
    with LocalAgent.open(state_dir, record_lineage_breaks=False) as agent:
        assert agent.lineage is not None and agent.lineage.store is not None
        entries = [decode_entry(data) for _, data, _ in agent.lineage.store.iter_rows()]
    return [e.bundle_version for e in entries if e.kind is Kind.BUNDLE_INSTALLED]


def _killed_after_the_state_write(
    monkeypatch: pytest.MonkeyPatch, state_dir: Path, bundle: bytes
) -> None:
    original = StateStore.install_bundle

    def write_then_die(store: StateStore, **fields: object) -> object:
        original(store, **fields)  # type: ignore[arg-type]
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(StateStore, "install_bundle", write_then_die)
        agent = LocalAgent.open(state_dir)
        with pytest.raises(Killed):
            agent.install_bundle(bundle, NOW)
        agent.close()


def test_a_transition_cut_off_before_the_lineage_is_logged_once_on_the_next_open(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    device.running.close()
    _killed_after_the_state_write(monkeypatch, device.state_dir, device.sim.bundle(2))

    with LocalAgent.open(device.state_dir) as reopened:
        assert reopened.state.bundle is not None and reopened.state.bundle.version == 2
    with LocalAgent.open(device.state_dir) as again:
        assert again.store.pending_transitions() == ()

    assert _installed_entries(device.state_dir) == [1, 2]


def test_the_running_agent_logs_a_transition_another_process_left_before_deciding(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    _killed_after_the_state_write(monkeypatch, device.state_dir, device.sim.bundle(2))

    assert device.running_decides() == "allowed"

    assert _installed_entries(device.state_dir) == [1, 2]


def test_a_transition_whose_process_still_holds_the_lock_is_left_to_it(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    _killed_after_the_state_write(monkeypatch, device.state_dir, device.sim.bundle(2))
    writer = StateStore.open(device.state_dir)
    try:
        with writer.transition_lock():
            device.running_decides()
            assert len(device.running.store.pending_transitions()) == 1
        device.running_decides()
    finally:
        writer.close()

    assert device.running.store.pending_transitions() == ()
    assert _installed_entries(device.state_dir) == [1, 2]

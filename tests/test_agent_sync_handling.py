"""What the agent daemon does with each incoming MQTT message, without a broker.

Every subscribed topic gets forged, rolled-back, foreign and garbage payloads: each is
refused, logged as a rejection in the lineage, and leaves the agent deciding as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.errors import StateError
from edge_agent.protocol import topics
from edge_agent.protocol.bundle import BundleTarget
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.support.mqtt import BrokerSettings, Incoming
from edge_agent.sync.cli import STOP_GRACE_S, STOP_RETRY_S, Stop, status_line
from edge_agent.sync.config import SyncConfig
from edge_agent.sync.daemon import AgentDaemon, _message_digest
from edge_agent.trust.gate import Reason
from tests.factory import DAY, DEVICE, NOW, HubSim

REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")
BASE = "edgegov/v1/eu-1"
BUNDLE_TOPIC = f"{BASE}/bundle/group/line-a"
FRESH_TOPIC = f"{BASE}/fresh/group/line-a"
REVOKE_TOPIC = f"{BASE}/revoke/device/gw-001"
ACK_TOPIC = f"{BASE}/device/gw-001/ack"


@pytest.fixture
def hub() -> HubSim:
    return HubSim()


@pytest.fixture
def daemon(tmp_path: Path, hub: HubSim) -> Iterator[AgentDaemon]:
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, DEVICE, hub.root_bytes(), NOW)
    agent = LocalAgent.open(state_dir)
    try:
        yield AgentDaemon(agent, BrokerSettings("127.0.0.1", 1), SyncConfig(), wall=lambda: NOW)
    finally:
        agent.close()


def _send(daemon: AgentDaemon, topic: str, payload: bytes) -> None:
    daemon.handle(Incoming(topic, payload, retain=True))


def _kinds(daemon: AgentDaemon) -> list[str]:
    lineage = daemon.agent.lineage
    assert lineage is not None and lineage.store is not None
    return [str(decode_entry(data).kind) for _, data, _ in lineage.store.iter_rows()]


def test_retained_bundle_installs_and_decisions_follow(daemon: AgentDaemon, hub: HubSim) -> None:
    _send(daemon, BUNDLE_TOPIC, hub.bundle())
    assert daemon.agent.decide(REQUEST, NOW).allowed
    assert daemon.changed.is_set()


def test_a_retained_payload_delivered_again_is_not_verified_again(
    daemon: AgentDaemon, hub: HubSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    installs: list[bytes] = []
    install = daemon.agent.install_bundle

    def counting_install(data: bytes, wall: int) -> object:
        installs.append(data)
        return install(data, wall)

    monkeypatch.setattr(daemon.agent, "install_bundle", counting_install)
    first, second = hub.bundle(1), hub.bundle(2)
    for payload in (first, first, second, second, first):
        _send(daemon, BUNDLE_TOPIC, payload)
    assert installs == [first, second, first]
    assert daemon.agent.state.bundle is not None and daemon.agent.state.bundle.version == 2


def test_status_reports_the_lineage_fault_every_decision_denies_with(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    _send(daemon, BUNDLE_TOPIC, hub.bundle())
    assert daemon._status(online=True).gate == "open"
    lineage = daemon.agent.lineage
    assert lineage is not None
    lineage.fault = "lineage.db is damaged"
    assert daemon.agent.decide(REQUEST, NOW).reason is Reason.LINEAGE_UNAVAILABLE
    assert daemon._status(online=True).gate == "lineage_unavailable"
    assert "gate CLOSED: lineage_unavailable" in status_line(daemon.agent, NOW)


def _bad_payloads(hub: HubSim) -> list[tuple[str, str, bytes]]:
    intruder = PrivateKey.generate()
    foreign = BundleTarget(region="eu-1", groups=("line-z",), profiles=("generic-x86_64",))
    return [
        ("bundle signed by an unknown key", BUNDLE_TOPIC, hub.bundle(2, signers=[intruder])),
        ("bundle rolled back to v1", BUNDLE_TOPIC, hub.bundle(1, issued_at=NOW - 30)),
        ("bundle for another group", BUNDLE_TOPIC, hub.bundle(3, target=foreign)),
        ("bundle expired", BUNDLE_TOPIC, hub.bundle(4, expires_at=NOW - 1, issued_at=NOW - DAY)),
        ("garbage on bundle", BUNDLE_TOPIC, b"\x00garbage"),
        ("revocation on bundle", BUNDLE_TOPIC, hub.revocation(1)),
        ("garbage on fresh", FRESH_TOPIC, b"\xff" * 64),
        ("bundle on fresh", FRESH_TOPIC, hub.bundle(5)),
        (
            "token signed by revoke key",
            FRESH_TOPIC,
            hub.freshness(hub.bundle(), key=hub.online_keys[Role.REVOKE][0]),
        ),
        ("garbage on revoke", REVOKE_TOPIC, b"\xd8\x62garbage"),
        ("revocation by policy key", REVOKE_TOPIC, hub.revocation(1, signers=hub.policy_keys)),
        ("freshness on revoke", REVOKE_TOPIC, hub.freshness(hub.bundle())),
        ("garbage on root", f"{BASE}/root/2", b"garbage"),
        (
            "root v2 signed by an intruder",
            f"{BASE}/root/2",
            HubSim(root_keys=[intruder] * 3).root_bytes(version=2),
        ),
        ("garbage ack", ACK_TOPIC, b"\xd2\x84"),
        ("empty payload", BUNDLE_TOPIC, b""),
        ("oversized", BUNDLE_TOPIC, b"\x00" * (9 * 1024 * 1024)),
    ]


def test_bad_payloads_on_every_topic_are_refused_and_change_nothing(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    _send(daemon, BUNDLE_TOPIC, hub.bundle(1, issued_at=NOW - 60))
    before = daemon.agent.state
    for label, topic, payload in _bad_payloads(hub):
        _send(daemon, topic, payload)
        assert daemon.agent.state is before, label
        assert daemon.agent.decide(REQUEST, NOW).allowed, label
    kinds = _kinds(daemon)
    assert kinds.count("bundle_rejected") >= 5
    assert str(Kind.REVOCATION_REJECTED) in kinds
    assert str(Kind.FRESHNESS_REJECTED) in kinds


def test_a_retained_bad_payload_is_logged_once(daemon: AgentDaemon, hub: HubSim) -> None:
    _send(daemon, BUNDLE_TOPIC, hub.bundle())
    bad = hub.bundle(2, signers=[PrivateKey.generate()])
    for _ in range(5):
        _send(daemon, BUNDLE_TOPIC, bad)
    assert _kinds(daemon).count("bundle_rejected") == 1


def test_hundreds_of_retained_bad_objects_are_logged_once_each_across_reconnects(
    daemon: AgentDaemon,
) -> None:
    ghosts = [f"{BASE}/revoke/device/ghost-{n}" for n in range(300)]
    for _ in range(3):  # the broker sends every retained object again on each reconnect
        for topic in ghosts:
            _send(daemon, topic, b"\xd8\x62garbage")
    assert _kinds(daemon).count(str(Kind.REVOCATION_REJECTED)) == len(ghosts)


def test_revocation_for_this_device_denies_and_neighbours_do_not(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    _send(daemon, BUNDLE_TOPIC, hub.bundle())
    _send(daemon, f"{BASE}/revoke/device/gw-002", hub.revocation(1, "device", "gw-002"))
    assert daemon.agent.decide(REQUEST, NOW).allowed
    _send(daemon, REVOKE_TOPIC, hub.revocation(2))
    decision = daemon.agent.decide(REQUEST, NOW)
    assert decision.reason is Reason.REVOKED
    assert str(Kind.REVOCATION_APPLIED) in _kinds(daemon)


def test_revocation_survives_a_restart(tmp_path: Path, daemon: AgentDaemon, hub: HubSim) -> None:
    _send(daemon, BUNDLE_TOPIC, hub.bundle())
    _send(daemon, REVOKE_TOPIC, hub.revocation(1))
    daemon.agent.close()
    with LocalAgent.open(tmp_path / "state") as reopened:
        assert reopened.decide(REQUEST, NOW).reason is Reason.REVOKED


def test_freshness_survives_a_restart(tmp_path: Path, daemon: AgentDaemon, hub: HubSim) -> None:
    bundle = hub.bundle(issued_at=NOW - 600, max_offline=300)
    _send(daemon, BUNDLE_TOPIC, bundle)
    assert daemon.agent.decide(REQUEST, NOW).reason is Reason.FRESHNESS_EXPIRED
    _send(daemon, FRESH_TOPIC, hub.freshness(bundle, hub_time=NOW))
    assert daemon.agent.decide(REQUEST, NOW).allowed
    daemon.agent.close()
    with LocalAgent.open(tmp_path / "state") as reopened:
        assert reopened.decide(REQUEST, NOW + 299).allowed
        assert reopened.decide(REQUEST, NOW + 300).reason is Reason.FRESHNESS_EXPIRED


def test_roots_arriving_out_of_order_are_installed_in_version_order(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    _send(daemon, f"{BASE}/root/3", hub.root_bytes(version=3))
    assert daemon.agent.state.root.version == 1
    _send(daemon, f"{BASE}/root/2", hub.root_bytes(version=2))
    assert daemon.agent.state.root.version == 3


def test_a_buffered_forged_root_is_refused_under_its_own_topic(
    daemon: AgentDaemon, hub: HubSim, caplog: pytest.LogCaptureFixture
) -> None:
    forged = HubSim(root_keys=[PrivateKey.generate()] * 3).root_bytes(version=3)
    genuine = hub.root_bytes(version=2)
    _send(daemon, f"{BASE}/root/3", forged)
    with caplog.at_level("WARNING", logger="edge_agent.sync.daemon"):
        _send(daemon, f"{BASE}/root/2", genuine)
    assert daemon.agent.state.root.version == 2
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and f"{BASE}/root/3" in refusals[0], refusals
    assert _message_digest(f"{BASE}/root/2", genuine) not in daemon._rejected
    assert _message_digest(f"{BASE}/root/3", forged) in daemon._rejected


def test_topic_names_refuse_wildcards_and_separators() -> None:
    for bad in ("a/b", "+", "#", "", "x" * 65, "a b", "_"):
        with pytest.raises(ValueError):
            topics.check_topic_name(bad, "device id")
    assert topics.device_topic("eu-1", "gw-001", topics.DeviceLeaf.LINEAGE) == (
        "edgegov/v1/eu-1/device/gw-001/lineage"
    )
    assert all(t.count("/") <= 6 for t in topics.agent_subscriptions("eu-1", "gw-1", ["g"]))


def test_clock_going_below_the_floor_and_back_is_logged_once_each(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    _send(daemon, BUNDLE_TOPIC, hub.bundle())
    floor = daemon.agent.state.floor.seconds
    agent = daemon.agent
    assert agent.observe_clock(floor + 10)
    assert not agent.observe_clock(floor - 100)
    assert not agent.observe_clock(floor - 99)
    assert agent.observe_clock(floor + 11)
    kinds = _kinds(daemon)
    assert kinds.count(str(Kind.CLOCK_UNTRUSTED)) == 1
    assert kinds.count(str(Kind.CLOCK_RESTORED)) == 1


def test_a_flood_of_unverifiable_future_roots_cannot_block_the_next_one(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    for version in range(3, 40):
        _send(daemon, f"{BASE}/root/{version}", b"junk-" + bytes([version]))
    _send(daemon, f"{BASE}/root/2", hub.root_bytes(version=2))
    assert daemon.agent.state.root.version == 2


def _locked(**_: object) -> None:
    raise StateError("database is locked")


def test_a_revocation_denies_once_verified_even_if_its_write_then_fails_and_is_not_acknowledged(
    tmp_path: Path, daemon: AgentDaemon, hub: HubSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    _send(daemon, BUNDLE_TOPIC, hub.bundle())
    monkeypatch.setattr(daemon.agent.store, "record_revocation", _locked)
    _send(daemon, REVOKE_TOPIC, hub.revocation(1))
    assert daemon.agent.decide(REQUEST, NOW).reason is Reason.REVOKED
    assert REVOKE_TOPIC not in daemon._applied
    assert str(Kind.REVOCATION_APPLIED) not in _kinds(daemon)
    with LocalAgent.open(tmp_path / "state") as stored:
        assert stored.decide(REQUEST, NOW).allowed


def test_a_revocation_that_could_not_be_recorded_is_recorded_when_redelivered(
    tmp_path: Path, daemon: AgentDaemon, hub: HubSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    _send(daemon, BUNDLE_TOPIC, hub.bundle())
    revocation = hub.revocation(1)
    monkeypatch.setattr(daemon.agent.store, "record_revocation", _locked)
    _send(daemon, REVOKE_TOPIC, revocation)
    monkeypatch.undo()
    _send(daemon, REVOKE_TOPIC, revocation)
    assert daemon.agent.decide(REQUEST, NOW).reason is Reason.REVOKED
    assert REVOKE_TOPIC in daemon._applied
    assert _kinds(daemon).count(str(Kind.REVOCATION_APPLIED)) == 1
    daemon.agent.close()
    with LocalAgent.open(tmp_path / "state") as reopened:
        assert reopened.decide(REQUEST, NOW).reason is Reason.REVOKED


def test_the_gate_denies_before_the_revocation_write_commits(
    daemon: AgentDaemon, hub: HubSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    _send(daemon, BUNDLE_TOPIC, hub.bundle())
    record = daemon.agent.store.record_revocation
    during_write = []

    def observed(**keywords: object) -> object:
        during_write.append(daemon.agent.decide(REQUEST, NOW).reason)
        return record(**keywords)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon.agent.store, "record_revocation", observed)
    _send(daemon, REVOKE_TOPIC, hub.revocation(1))
    assert during_write == [Reason.REVOKED]
    assert REVOKE_TOPIC in daemon._applied


def test_an_unrecorded_revocation_stays_in_force_when_another_process_changes_the_state(
    tmp_path: Path, daemon: AgentDaemon, hub: HubSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = hub.bundle()
    _send(daemon, BUNDLE_TOPIC, bundle)
    monkeypatch.setattr(daemon.agent.store, "record_revocation", _locked)
    _send(daemon, REVOKE_TOPIC, hub.revocation(1))
    with LocalAgent.open(tmp_path / "state") as other:
        other.install_freshness(hub.freshness(bundle, hub_time=NOW), NOW)
    assert daemon.agent.refresh()
    assert daemon.agent.decide(REQUEST, NOW).reason is Reason.REVOKED


def test_a_kill_epoch_past_the_counter_bound_is_refused_as_a_bad_token_not_a_crash(
    daemon: AgentDaemon, hub: HubSim, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = hub.bundle()
    _send(daemon, BUNDLE_TOPIC, bundle)
    before = daemon.agent.state

    _send(daemon, f"{BASE}/fresh/all/_", hub.freshness(bundle, kill_epoch=2**63, channel="all/_"))

    assert daemon.agent.state is before
    assert _kinds(daemon)[-1] == str(Kind.FRESHNESS_REJECTED)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_an_announced_kill_epoch_survives_a_restart(
    tmp_path: Path, daemon: AgentDaemon, hub: HubSim
) -> None:
    bundle = hub.bundle()
    _send(daemon, BUNDLE_TOPIC, bundle)
    newer = hub.bundle(2)
    _send(daemon, f"{BASE}/fresh/all/_", hub.freshness(newer, kill_epoch=4, channel="all/_"))
    assert daemon.agent.decide(REQUEST, NOW).reason is Reason.REVOKED
    daemon.agent.close()
    with LocalAgent.open(tmp_path / "state") as reopened:
        assert reopened.decide(REQUEST, NOW).reason is Reason.REVOKED


@dataclass(frozen=True, slots=True)
class _HurriedSync(SyncConfig):
    """Sync timings below what agent.toml may set (ack_timeout_s >= 0.5 s), so a test of
    the back-off takes milliseconds: built unchecked."""

    def __post_init__(self) -> None:
        """No bounds check (the values are deliberately below them)."""


@pytest.mark.asyncio
async def test_an_unacknowledged_batch_is_resent_ever_more_slowly(
    tmp_path: Path, hub: HubSim
) -> None:
    state_dir = tmp_path / "shipper"
    init_state_dir(state_dir, DEVICE, hub.root_bytes(), NOW)
    agent = LocalAgent.open(state_dir)
    agent.decide(REQUEST, NOW)
    config = _HurriedSync(ack_timeout_s=0.02, ship_interval_s=0.01)
    daemon = AgentDaemon(agent, BrokerSettings("127.0.0.1", 1), config, wall=lambda: NOW)
    sends: list[float] = []

    class SilentHub:
        async def publish(self, topic: str, payload: bytes, **options: object) -> None:
            sends.append(time.monotonic())

    try:
        shipper = asyncio.create_task(daemon._ship(SilentHub()))  # type: ignore[arg-type]
        await asyncio.sleep(1.0)
        shipper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await shipper
    finally:
        agent.close()
    gaps = [later - earlier for earlier, later in itertools.pairwise(sends)]
    # Every 20 ms without backoff (about 50 sends); doubling to 8 x 20 ms gives about 9.
    assert 3 <= len(sends) <= 12
    assert gaps[-1] >= 0.15


@pytest.mark.parametrize("second_signal", [False, True], ids=["one signal", "two signals"])
def test_a_stop_ends_a_child_task_that_lost_its_cancellation(second_signal: bool) -> None:
    """A task group whose parent is being cancelled forwards no further cancellation to its
    children: a child that swallowed the first one (SIGTERM as the broker went away: the
    connection loop reconnects) kept the agent up through every SIGTERM after it. Past the
    stop's grace, or at a second signal, every task still running is cancelled."""
    swallowed = asyncio.Event()

    async def loses_one_cancellation() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.Event().wait()

    async def main() -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(loses_one_cancellation())

    def run_until_done(task: asyncio.Task[None], timeout: float) -> None:
        """Run the loop until ``task`` is done or ``timeout`` passes, waiting on a plain
        future: the stop cancels every task, and a waiting task would be one of them."""
        done = loop.create_future()
        task.add_done_callback(lambda _: done.done() or done.set_result(None))
        loop.call_later(timeout, lambda: done.done() or done.set_result(None))
        loop.run_until_complete(done)

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(main())
        stop = Stop(task)  # called as the signal handler is: outside any task
        loop.call_soon(stop)
        loop.run_until_complete(swallowed.wait())
        run_until_done(task, 3 * STOP_RETRY_S)
        assert not task.done(), "the child lost its cancellation yet the agent stopped"
        if second_signal:
            stop()
        run_until_done(task, STOP_GRACE_S + 20)
        assert task.cancelled()
    finally:
        loop.close()

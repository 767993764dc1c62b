"""Trust-model holes (issue 14): expired roots, recovery from a compromised online key, the
freshness pin, delegation narrowed while running, a clock set back inside the skew window.

Each table row builds a state from objects signed with real keys and names the reason code
the gate must give (or the refusal code an install must raise); the agent tests drive the
same paths through a state directory, as ``edge-agent`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.errors import BundleError
from edge_agent.policy.bundle import compile_for_device
from edge_agent.protocol.freshness import verify_freshness
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.request import Request
from edge_agent.protocol.revocation import verify_revocation
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import (
    KeyScope,
    sign_root,
    verify_root_update,
    verify_trusted_root,
)
from edge_agent.trust.clock import SIGNED_TIME_SKEW_S
from edge_agent.trust.gate import Reason, decide
from edge_agent.trust.state import (
    TrustState,
    check_admissible,
    passed_deadline,
    with_bundle,
    with_freshness,
    with_revocation,
    with_root,
)
from tests.factory import DAY, DEVICE, NOW, HubSim

CAMERA = Request("svc:camera", "exec", "/opt/camera/bin/capture")
HOUR = 3600
DECADE = 10 * 365 * DAY


def _root(sim: HubSim, version: int, **kwargs: int) -> bytes:
    """Root ``version`` as ``sim`` holds its keys now, signed by its (unchanged) root keys."""
    return sign_root(sim.root_payload(version, **kwargs), sim.root_keys)  # type: ignore[arg-type]


def _rotate(sim: HubSim, role: Role) -> None:
    """Give ``role`` a new key in ``sim`` (what ``edge-hub root rotate --role`` does)."""
    if role is Role.POLICY:
        sim.policy_keys = [PrivateKey.generate()]
    else:
        sim.online_keys = {**sim.online_keys, role: [PrivateKey.generate()]}


def _base(sim: HubSim, **bundle: int) -> TrustState:
    root = sim.root()
    verified = compile_for_device(
        sim.bundle(1, **bundle), root=root, device=DEVICE, installed=None, now=None
    )
    return with_bundle(TrustState(DEVICE, root), verified)


def _next_root(state: TrustState, data: bytes) -> TrustState:
    return with_root(state, verify_root_update(state.root, data, now=None))


def _token(sim: HubSim, state: TrustState, bundle: bytes, **kwargs: int) -> TrustState:
    data = sim.freshness(bundle, **kwargs)
    now = kwargs.get("hub_time", NOW)
    return with_freshness(state, verify_freshness(data, root=state.root, region="eu-1", now=now))


def _revoked(sim: HubSim, state: TrustState, epoch: int, value: str) -> TrustState:
    data = sim.revocation(epoch, "device", value)
    return with_revocation(state, verify_revocation(data, root=state.root, region="eu-1"))


# --- the gate, row by row -----------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    build: Callable[[HubSim], tuple[TrustState, int]]
    """The state and the wall clock the gate decides at."""
    reason: Reason


def _expired_final_root(sim: HubSim) -> tuple[TrustState, int]:
    root = verify_trusted_root(sim.root_bytes(issued_at=NOW - 60, expires_at=NOW + HOUR), now=NOW)
    bundle = compile_for_device(
        sim.bundle(1, expires_at=NOW + 30 * DAY), root=root, device=DEVICE, installed=None, now=NOW
    )
    return with_bundle(TrustState(DEVICE, root), bundle), NOW + 3 * HOUR


def _expired_intermediate(sim: HubSim, *, with_v3: bool) -> tuple[TrustState, int]:
    state = _next_root(_base(sim), _root(sim, 2, issued_at=NOW - DAY, expires_at=NOW - HOUR))
    if with_v3:
        state = _next_root(state, _root(sim, 3))
    return state, NOW


def _poisoned_by_freshness(sim: HubSim, *, rotate: bool) -> tuple[TrustState, int]:
    state = _base(sim)
    bundle = sim.bundle(1)
    state = _token(sim, state, bundle, hub_time=NOW + DECADE, kill_epoch=2**40)
    if rotate:
        _rotate(sim, Role.FRESHNESS)
        state = _next_root(state, _root(sim, 2))
    return state, NOW


def _policy_rotated(sim: HubSim, *, rotate: Role | None) -> tuple[TrustState, int]:
    state = _base(sim)
    if rotate is not None:
        _rotate(sim, rotate)
    return _next_root(state, _root(sim, 2)), NOW


def _policy_narrowed(sim: HubSim) -> tuple[TrustState, int]:
    state = _base(sim)
    sim.scopes = {sim.policy_keys[0].public.key_id: KeyScope(groups=frozenset({"line-b"}))}
    return _next_root(state, _root(sim, 2)), NOW


def _withheld_after_revoke_poisoning(
    sim: HubSim, *, rotate: Role | None, reissued: bool = False
) -> tuple[TrustState, int]:
    """A compromised revoke key signs the largest epoch (for another device); then the hub
    announces kill epoch 5, whose revocation the broker withholds."""
    state = _revoked(sim, _base(sim), MAX_COUNTER, "gw-999")
    if rotate is not None:
        _rotate(sim, rotate)
        state = _next_root(state, _root(sim, 2))
    if reissued:
        state = _revoked(sim, state, 6, "gw-999")
    return _token(sim, state, sim.bundle(1), kill_epoch=5), NOW


def _revoke_key_added(sim: HubSim) -> tuple[TrustState, int]:
    """A revoke-role rotation that keeps the old key (adds one) keeps what it signed."""
    state = _revoked(sim, _base(sim), 1, DEVICE.device_id)
    sim.online_keys = {
        **sim.online_keys,
        Role.REVOKE: [*sim.online_keys[Role.REVOKE], PrivateKey.generate()],
    }
    return _next_root(state, _root(sim, 2)), NOW


def _expired_then_set_back(sim: HubSim, back: int) -> tuple[TrustState, int]:
    state = _base(sim, issued_at=NOW, expires_at=NOW + 12)
    state = passed_deadline(state, NOW + 14)
    return state, NOW + 14 - back


SCENARIOS = [
    Scenario("root expired, bundle still valid", _expired_final_root, Reason.ROOT_EXPIRED),
    Scenario(
        "expired v2 installed, no newer root yet",
        lambda s: _expired_intermediate(s, with_v3=False),
        Reason.ROOT_EXPIRED,
    ),
    Scenario(
        "expired v2 then unexpired v3",
        lambda s: _expired_intermediate(s, with_v3=True),
        Reason.ALLOWED,
    ),
    Scenario(
        "floor poisoned by a compromised freshness key",
        lambda s: _poisoned_by_freshness(s, rotate=False),
        Reason.CLOCK_UNTRUSTED,
    ),
    Scenario(
        "freshness key rotated after the poisoning",
        lambda s: _poisoned_by_freshness(s, rotate=True),
        Reason.ALLOWED,
    ),
    Scenario(
        "policy key rotated under the running bundle",
        lambda s: _policy_rotated(s, rotate=Role.POLICY),
        Reason.BUNDLE_UNTRUSTED,
    ),
    Scenario(
        "policy key narrowed away from the bundle's groups",
        _policy_narrowed,
        Reason.BUNDLE_UNTRUSTED,
    ),
    Scenario(
        "root rotation that leaves the policy role alone",
        lambda s: _policy_rotated(s, rotate=Role.VERIFIER),
        Reason.ALLOWED,
    ),
    Scenario(
        "a compromised revoke key's huge epoch hides a withheld revocation",
        lambda s: _withheld_after_revoke_poisoning(s, rotate=None),
        Reason.ALLOWED,
    ),
    Scenario(
        "revoke key rotated, then a withheld revocation announced",
        lambda s: _withheld_after_revoke_poisoning(s, rotate=Role.REVOKE),
        Reason.REVOKED,
    ),
    Scenario(
        "revoke key rotated, the hub's revocations re-issued under the new key",
        lambda s: _withheld_after_revoke_poisoning(s, rotate=Role.REVOKE, reissued=True),
        Reason.ALLOWED,
    ),
    Scenario(
        "another role rotated: the huge epoch still hides it",
        lambda s: _withheld_after_revoke_poisoning(s, rotate=Role.VERIFIER),
        Reason.ALLOWED,
    ),
    Scenario(
        "a revoke key added: the kept key's revocation still denies",
        _revoke_key_added,
        Reason.REVOKED,
    ),
    Scenario(
        "clock set back 8 s after the bundle was seen expired",
        lambda s: _expired_then_set_back(s, 8),
        Reason.BUNDLE_EXPIRED,
    ),
    Scenario(
        "clock set back past the signed floor",
        lambda s: _expired_then_set_back(s, SIGNED_TIME_SKEW_S + 60),
        Reason.CLOCK_UNTRUSTED,
    ),
]


@pytest.mark.parametrize("case", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_gate_after_trust_event(case: Scenario) -> None:
    state, wall = case.build(HubSim())
    decision = decide(state, CAMERA, wall)
    assert decision.reason is case.reason, decision.message


# --- what an install refuses, row by row ----------------------------------------------------


@dataclass(frozen=True)
class Offer:
    name: str
    pin_version: int | None
    """The bundle version the newest freshness token names (None: no token)."""
    version: int
    code: str | None
    issued_at: int = NOW - 60
    same_bytes_as_pin: bool = False


OFFERS = [
    Offer("a replayed v4 while a token names v5", 5, 4, "bundle_superseded"),
    Offer("another v5 than the token names", 5, 5, "bundle_superseded"),
    Offer("the v5 the token names", 5, 5, None, same_bytes_as_pin=True),
    Offer("a v6 newer than the token names", 5, 6, None),
    Offer("v4 with no token", None, 4, None),
    Offer("issued in 2100", None, 4, "bundle_future", issued_at=4_102_444_800),
    Offer("issued at the largest time", None, 4, "bundle_future", issued_at=MAX_COUNTER - DAY),
    Offer("issued just inside the skew", None, 4, None, issued_at=NOW + SIGNED_TIME_SKEW_S),
    Offer("issued just past the skew", None, 4, "bundle_future", issued_at=NOW + 301),
]


@pytest.mark.parametrize("case", OFFERS, ids=[o.name for o in OFFERS])
def test_bundle_offer_against_pin_and_trusted_time(case: Offer) -> None:
    sim = HubSim()
    state = _base(sim)
    pinned = sim.bundle(5, issued_at=NOW - 30)
    if case.pin_version is not None:
        state = _token(sim, state, sim.bundle(case.pin_version, issued_at=NOW - 30))
    offered = (
        pinned
        if case.same_bytes_as_pin
        else sim.bundle(case.version, issued_at=case.issued_at, expires_at=case.issued_at + DAY)
    )
    bundle = compile_for_device(offered, root=state.root, device=DEVICE, installed=None, now=NOW)
    if case.code is None:
        check_admissible(state, bundle, NOW)
        return
    with pytest.raises(BundleError) as refused:
        check_admissible(state, bundle, NOW)
    assert refused.value.code == case.code, refused.value


@dataclass(frozen=True)
class ChannelToken:
    name: str
    channel: str
    code: str | None
    """What offering v4 gives after a token on ``channel`` named v5 (None: installable)."""


CHANNEL_TOKENS = [
    ChannelToken("this device's group", "group/line-a", "bundle_superseded"),
    ChannelToken("this device's own channel", f"device/{DEVICE.device_id}", "bundle_superseded"),
    ChannelToken("the whole region", "all/_", "bundle_superseded"),
    ChannelToken("another group", "group/line-b", None),
    ChannelToken("another device", "device/gw-999", None),
    ChannelToken("a channel that is no channel", "line-a", None),
]


@pytest.mark.parametrize("case", CHANNEL_TOKENS, ids=[c.name for c in CHANNEL_TOKENS])
def test_a_token_pins_a_bundle_only_on_a_channel_the_device_listens_on(
    case: ChannelToken,
) -> None:
    sim = HubSim()
    state = _token(sim, _base(sim), sim.bundle(5), channel=case.channel, kill_epoch=3)
    assert (state.floor.signed, state.announced_epoch) == (NOW - SIGNED_TIME_SKEW_S, 3)
    offered = compile_for_device(
        sim.bundle(4), root=state.root, device=DEVICE, installed=None, now=NOW
    )
    if case.code is None:
        check_admissible(state, offered, NOW)
        return
    with pytest.raises(BundleError) as refused:
        check_admissible(state, offered, NOW)
    assert refused.value.code == case.code, refused.value


@dataclass(frozen=True)
class AfterPolicyCompromise:
    name: str
    rotate: bool
    version: int
    code: str | None
    pin_version: int | None = None
    """A token the hub signed before the rotation named this version current."""
    by_old_key: bool = False


AFTER_POLICY_COMPROMISE = [
    AfterPolicyCompromise(
        "not rotated: v2 below the installed 2^53-1", False, 2, "bundle_rollback"
    ),
    AfterPolicyCompromise("rotated: a new-key v2", True, 2, None),
    AfterPolicyCompromise("rotated: a new-key 2^53-1", True, MAX_COUNTER, None),
    AfterPolicyCompromise("rotated: an old-key v2", True, 2, "bundle_signature", by_old_key=True),
    AfterPolicyCompromise(
        "rotated: a new-key v4 below the pinned v5", True, 4, "bundle_superseded", pin_version=5
    ),
    AfterPolicyCompromise("rotated: a new-key v6 above the pinned v5", True, 6, None, 5),
]


@pytest.mark.parametrize(
    "case", AFTER_POLICY_COMPROMISE, ids=[c.name for c in AFTER_POLICY_COMPROMISE]
)
def test_a_bundle_after_a_compromised_policy_key_signed_the_largest_version(
    case: AfterPolicyCompromise,
) -> None:
    """Only a still-trusted installed bundle bounds the next version: the rotated-away key's
    versions are void with it, and the freshness pin (another role) still bounds replays."""
    sim = HubSim()
    state = _base(sim)
    if case.pin_version is not None:
        state = _token(sim, state, sim.bundle(case.pin_version))
    evil = sim.bundle(MAX_COUNTER, issued_at=NOW - 30)
    state = with_bundle(
        state, compile_for_device(evil, root=state.root, device=DEVICE, installed=None, now=NOW)
    )
    old_keys = sim.policy_keys
    if case.rotate:
        _rotate(sim, Role.POLICY)
        state = _next_root(state, _root(sim, 2))
    offered = sim.bundle(case.version, signers=old_keys if case.by_old_key else None)

    def install() -> TrustState:
        bundle = compile_for_device(
            offered, root=state.root, device=DEVICE, installed=state.installed, now=NOW
        )
        check_admissible(state, bundle, NOW)
        return with_bundle(state, bundle)

    if case.code is None:
        assert decide(install(), CAMERA, NOW).allowed
        return
    with pytest.raises(BundleError) as refused:
        install()
    assert refused.value.code == case.code, refused.value


def test_rotating_the_freshness_key_drops_its_pin_and_announced_epoch() -> None:
    sim = HubSim()
    state = _token(sim, _base(sim), sim.bundle(2**40), kill_epoch=2**40)
    assert decide(state, CAMERA, NOW).reason is Reason.REVOKED
    _rotate(sim, Role.FRESHNESS)
    rotated = _next_root(state, _root(sim, 2))
    assert (rotated.pin, rotated.announced_epoch) == (None, 0)
    assert decide(rotated, CAMERA, NOW).allowed


def test_observed_floor_holds_only_signed_deadlines() -> None:
    state = _base(HubSim(), issued_at=NOW, expires_at=NOW + 12)
    assert passed_deadline(state, NOW + 11) is state
    far_ahead = passed_deadline(state, NOW + DECADE)
    assert far_ahead.floor.observed == NOW + 12
    assert far_ahead.floor.signed == state.floor.signed


# --- through the agent's state directory -----------------------------------------------------


def _enrolled(tmp_path: Path, sim: HubSim, **root: int) -> Path:
    init_state_dir(tmp_path, DEVICE, sim.root_bytes(**root), NOW)
    return tmp_path


def test_agent_installs_an_expired_intermediate_root_then_the_next(tmp_path: Path) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim)
    v2 = _root(sim, 2, issued_at=NOW - DAY, expires_at=NOW - HOUR)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        assert agent.install_root(v2, NOW).version == 2
        assert agent.decide(CAMERA, NOW).reason is Reason.ROOT_EXPIRED
    with LocalAgent.open(state_dir) as agent:
        assert agent.decide(CAMERA, NOW).reason is Reason.ROOT_EXPIRED
        assert agent.install_root(_root(sim, 3), NOW).version == 3
    with LocalAgent.open(state_dir) as agent:
        assert agent.decide(CAMERA, NOW).allowed


def test_agent_denies_once_its_final_root_expires(tmp_path: Path) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim, issued_at=NOW - 60, expires_at=NOW + HOUR)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1, expires_at=NOW + 30 * DAY), NOW)
    with LocalAgent.open(state_dir) as agent:
        assert agent.decide(CAMERA, NOW + 3 * HOUR).reason is Reason.ROOT_EXPIRED


def test_agent_recovers_from_a_poisoned_floor_by_rotating_the_freshness_key(
    tmp_path: Path,
) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim)
    bundle = sim.bundle(1)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(bundle, NOW)
        agent.install_freshness(sim.freshness(bundle, hub_time=NOW + DECADE), NOW)
        assert agent.decide(CAMERA, NOW).reason is Reason.CLOCK_UNTRUSTED
        _rotate(sim, Role.FRESHNESS)
        agent.install_root(_root(sim, 2, issued_at=NOW - 60, expires_at=NOW + DAY), NOW)
        assert agent.decide(CAMERA, NOW).allowed
    with LocalAgent.open(state_dir) as agent:
        assert agent.decide(CAMERA, NOW).allowed


def test_agent_refuses_a_bundle_from_the_far_future(tmp_path: Path) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        future = sim.bundle(2, issued_at=4_102_444_800, expires_at=4_102_444_800 + DAY)
        with pytest.raises(BundleError) as refused:
            agent.install_bundle(future, NOW)
        assert refused.value.code == "bundle_future"
        assert agent.decide(CAMERA, NOW).allowed


def test_agent_keeps_the_pin_across_a_restart(tmp_path: Path) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim)
    v4 = sim.bundle(4)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(3), NOW)
        agent.install_freshness(sim.freshness(sim.bundle(5)), NOW)
    with LocalAgent.open(state_dir) as agent, pytest.raises(BundleError) as refused:
        agent.install_bundle(v4, NOW)
    assert refused.value.code == "bundle_superseded"


def test_running_agent_closes_the_gate_when_a_root_rotates_the_policy_key(
    tmp_path: Path,
) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim)
    with LocalAgent.open(state_dir) as running:
        running.install_bundle(sim.bundle(1), NOW)
        _rotate(sim, Role.POLICY)
        running.install_root(_root(sim, 2), NOW)
        in_process = running.decide(CAMERA, NOW)
    with LocalAgent.open(state_dir) as fresh:
        reopened = fresh.decide(CAMERA, NOW)
        assert fresh.install_bundle(sim.bundle(2), NOW).bundle.version == 2
        assert fresh.decide(CAMERA, NOW).allowed
    assert (in_process.reason, reopened.reason) == (Reason.BUNDLE_UNTRUSTED,) * 2
    assert in_process.message == reopened.message


def test_rotating_the_revoke_key_voids_what_it_signed(tmp_path: Path) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        agent.install_revocation(sim.revocation(1), NOW)
        assert agent.decide(CAMERA, NOW).reason is Reason.REVOKED
        _rotate(sim, Role.REVOKE)
        agent.install_root(_root(sim, 2), NOW)
        assert agent.decide(CAMERA, NOW).allowed
    with LocalAgent.open(state_dir) as agent:
        assert agent.state.fault is None
        assert agent.decide(CAMERA, NOW).allowed


def test_agent_detects_a_withheld_revocation_again_after_a_revoke_key_rotation(
    tmp_path: Path,
) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim)
    bundle = sim.bundle(1)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(bundle, NOW)
        agent.install_revocation(sim.revocation(MAX_COUNTER, "bundle", "1"), NOW)
        agent.install_revocation(sim.revocation(MAX_COUNTER - 1, "device", "gw-999"), NOW)
        _rotate(sim, Role.REVOKE)
        agent.install_root(_root(sim, 2), NOW)
        agent.install_freshness(sim.freshness(bundle, kill_epoch=5), NOW)
        in_process = agent.decide(CAMERA, NOW)
    with LocalAgent.open(state_dir) as agent:
        assert agent.state.seen_epoch == 0
        reopened = agent.decide(CAMERA, NOW)
        agent.install_revocation(sim.revocation(6, "device", "gw-999"), NOW)
        assert agent.decide(CAMERA, NOW).allowed
    assert (in_process.reason, reopened.reason) == (Reason.REVOKED,) * 2
    assert "announced revocation epoch 5" in reopened.message


def test_agent_installs_any_new_key_bundle_after_a_policy_key_signed_the_largest_version(
    tmp_path: Path,
) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(MAX_COUNTER), NOW)
        _rotate(sim, Role.POLICY)
        agent.install_root(_root(sim, 2), NOW)
        assert agent.decide(CAMERA, NOW).reason is Reason.BUNDLE_UNTRUSTED
    with LocalAgent.open(state_dir) as agent:
        assert agent.install_bundle(sim.bundle(2), NOW).bundle.version == 2
        assert agent.decide(CAMERA, NOW).allowed
        with pytest.raises(BundleError) as refused:
            agent.install_bundle(sim.bundle(1), NOW)
    assert refused.value.code == "bundle_rollback"


def test_agent_keeps_no_pin_from_another_channel_across_a_restart(tmp_path: Path) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        agent.install_freshness(sim.freshness(sim.bundle(100), channel="group/line-b"), NOW)
    with LocalAgent.open(state_dir) as agent:
        assert agent.state.pin is None
        assert agent.install_bundle(sim.bundle(2), NOW).bundle.version == 2


def test_agent_never_lets_an_expired_bundle_come_back(tmp_path: Path) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1, issued_at=NOW, expires_at=NOW + 12), NOW)
        assert agent.decide(CAMERA, NOW + 14).reason is Reason.BUNDLE_EXPIRED
    with LocalAgent.open(state_dir) as agent:
        set_back = agent.decide(CAMERA, NOW + 6)
        far_back = agent.decide(CAMERA, NOW - DAY)
    assert (set_back.reason, set_back.time) == (Reason.BUNDLE_EXPIRED, NOW + 12)
    assert far_back.reason is Reason.CLOCK_UNTRUSTED


def test_installing_the_new_bundle_after_a_policy_rotation_logs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = HubSim()
    state_dir = _enrolled(tmp_path, sim)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        _rotate(sim, Role.POLICY)
        agent.install_root(_root(sim, 2), NOW)
    caplog.clear()
    with caplog.at_level("DEBUG"), LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(2), NOW)
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "WARNING")] == []

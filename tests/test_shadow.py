"""Shadow bundles on the agent: verified and refused exactly as real bundles, never deciding,
their divergences logged right after each decision; cleared, dropped and not persisted.

Each test runs two agents on the same root and active bundle: ``agent`` is given the shadow,
``twin`` is not (and is given the same bytes as a real bundle where a refusal is compared).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import edge_agent.agent as agent_module
from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.errors import BundleError
from edge_agent.fanotify.handoff import LineageHandoff
from edge_agent.lineage.decisions import divergence_entry
from edge_agent.policy.bundle import compile_for_device
from edge_agent.policy.compiler import compile_policy, policy_payload
from edge_agent.policy.engine import evaluate
from edge_agent.protocol.bundle import BundleTarget
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import (
    Entry,
    Kind,
    ShadowOutcome,
    decode_entry,
    encode_entry,
    parse_shadow_detail,
    shadow_detail,
)
from edge_agent.protocol.request import Parent, Request
from edge_agent.support.mqtt import BrokerSettings, Incoming
from edge_agent.sync.config import SyncConfig
from edge_agent.sync.daemon import AgentDaemon
from edge_agent.trust.gate import Decision, Reason
from edge_agent.trust.shadow import HeldShadow, shadow_outcome
from tests.factory import DAY, DEVICE, NOW, TARGET, HubSim

TOPIC = "edgegov/v1/eu-1/shadow/device/gw-001"
ACTIVE = 2
"""The active bundle's version on both agents."""

SHADOW_POLICY = policy_payload(
    groups={"sensors": ["svc:camera", "svc:thermo"]},
    workloads={"svc:camera": ["exe:/opt/camera/bin/capture", "uid:1001"]},
    rules=[
        {
            "id": "no-camera-reset",
            "effect": "deny",
            "subjects": ["*"],
            "actions": ["exec"],
            "resources": ["/opt/camera/bin/reset"],
        },
        {
            "id": "camera-exec-v2",
            "effect": "allow",
            "subjects": ["svc:camera", "group:sensors"],
            "actions": ["exec"],
            "resources": ["/opt/camera/bin/*"],
        },
        {
            "id": "zone-read",
            "effect": "allow",
            "subjects": ["group:sensors"],
            "actions": ["read"],
            "resources": ["/data/**"],
            "when": {"context": {"zone": ["plant-a", "plant-b"]}},
        },
        {
            "id": "python-ok",
            "effect": "allow",
            "subjects": ["svc:x"],
            "actions": ["exec"],
            "resources": ["/usr/bin/python3"],
        },
    ],
)
"""The candidate: against SAMPLE_POLICY it flips allow -> deny (camera reset), deny -> allow
(python), changes the deciding rule (camera capture), changes the reason (the shell, denied
by no-shells before, by default now) and agrees on zone reads."""

RESET = Request("svc:camera", "exec", "/opt/camera/bin/reset")
CAPTURE = Request("svc:camera", "exec", "/opt/camera/bin/capture")
PYTHON = Request("svc:x", "exec", "/usr/bin/python3")
SHELL = Request("svc:x", "exec", "/bin/sh")
ZONE_READ = Request("svc:camera", "read", "/data/a", (("zone", "plant-a"),))
REQUESTS = (RESET, CAPTURE, PYTHON, SHELL, ZONE_READ)

EXPECTED = {
    RESET: ShadowOutcome(3, b"", False, "policy_denied", "no-camera-reset"),
    CAPTURE: ShadowOutcome(3, b"", True, "allowed", "camera-exec-v2"),
    PYTHON: ShadowOutcome(3, b"", True, "allowed", "python-ok"),
    SHELL: ShadowOutcome(3, b"", False, "no_matching_rule", None),
}
"""What the shadow decides where it diverges (its digest filled in by the test)."""


@dataclass
class Pair:
    hub: HubSim
    agent: LocalAgent
    twin: LocalAgent


def _open(tmp_path: Path, name: str, hub: HubSim, active: bytes) -> LocalAgent:
    state_dir = tmp_path / name
    init_state_dir(state_dir, DEVICE, hub.root_bytes(), NOW - DAY)
    agent = LocalAgent.open(state_dir)
    agent.install_bundle(active, NOW)
    return agent


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    hub = HubSim(policy_keys=[PrivateKey.generate() for _ in range(2)], policy_threshold=2)
    active = hub.bundle(ACTIVE)
    agent, twin = _open(tmp_path, "agent", hub, active), _open(tmp_path, "twin", hub, active)
    try:
        yield Pair(hub, agent, twin)
    finally:
        agent.close()
        twin.close()


def _entries(agent: LocalAgent) -> list[Entry]:
    lineage = agent.lineage
    assert lineage is not None and lineage.store is not None
    return [decode_entry(data) for _, data, _ in lineage.store.iter_rows()]


def _decide_all(agent: LocalAgent, wall: int = NOW + 10) -> list[Decision]:
    return [agent.decide(request, wall) for request in REQUESTS]


# --- refused exactly like a real bundle ----------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    name: str
    code: str
    make: str


REFUSALS = [
    Refusal("forged signatures", "bundle_signature", "forged"),
    Refusal("below the threshold", "bundle_threshold", "one_signer"),
    Refusal("signed for another region", "bundle_signature", "other_region"),
    Refusal("expired", "bundle_expired", "expired"),
    Refusal("for another group", "bundle_target", "other_group"),
    Refusal("for another device", "bundle_target", "other_device"),
    Refusal("older than the active bundle", "bundle_rollback", "rollback"),
    Refusal("the active version with other bytes", "bundle_conflict", "conflict"),
    Refusal("issued far ahead", "bundle_future", "future"),
    Refusal("not a bundle", "bundle_format", "garbage"),
]


def _refused_bytes(hub: HubSim, make: str) -> bytes:
    strangers = [PrivateKey.generate() for _ in range(2)]
    match make:
        case "forged":
            return hub.bundle(3, signers=strangers)
        case "one_signer":
            return hub.bundle(3, signers=hub.policy_keys[:1])
        case "other_region":
            return hub.bundle(3, target=BundleTarget(region="us-1"), region="us-1")
        case "expired":
            return hub.bundle(3, issued_at=NOW - 2 * DAY, expires_at=NOW - 1)
        case "other_group":
            return hub.bundle(3, target=replace(TARGET, groups=("line-b",)))
        case "other_device":
            return hub.bundle(3, target=replace(TARGET, devices=("gw-002",)))
        case "rollback":
            return hub.bundle(1)
        case "conflict":
            return hub.bundle(ACTIVE, policy=SHADOW_POLICY)
        case "future":
            return hub.bundle(3, issued_at=NOW + 3600, expires_at=NOW + DAY)
    return b"\xd8\x62not a bundle"


@pytest.mark.parametrize("row", REFUSALS, ids=lambda r: r.name)
def test_a_shadow_is_refused_exactly_as_the_same_bytes_as_a_real_bundle(
    pair: Pair, row: Refusal
) -> None:
    data = _refused_bytes(pair.hub, row.make)
    with pytest.raises(BundleError) as as_shadow:
        pair.agent.install_shadow(TOPIC, data, NOW)
    with pytest.raises(BundleError) as as_bundle:
        pair.twin.install_bundle(data, NOW)
    assert as_shadow.value.code == as_bundle.value.code == row.code
    assert str(as_shadow.value) == str(as_bundle.value)
    rejected = _entries(pair.agent)[-1]
    real = _entries(pair.twin)[-1]
    assert (rejected.kind, real.kind) == (Kind.SHADOW_REJECTED, Kind.BUNDLE_REJECTED)
    assert (rejected.allowed, rejected.reason, rejected.detail) == (
        real.allowed,
        real.reason,
        real.detail,
    )
    assert pair.agent.shadow is None


@pytest.mark.parametrize("row", REFUSALS, ids=lambda r: r.name)
def test_a_refused_shadow_never_decides_and_drops_the_one_held_from_its_topic(
    pair: Pair, row: Refusal
) -> None:
    pair.agent.install_shadow(TOPIC, pair.hub.bundle(3, policy=SHADOW_POLICY), NOW)
    with pytest.raises(BundleError):
        pair.agent.install_shadow(TOPIC, _refused_bytes(pair.hub, row.make), NOW)
    before = len(_entries(pair.agent))
    assert _decide_all(pair.agent) == _decide_all(pair.twin)
    kinds = [e.kind for e in _entries(pair.agent)[before:]]
    assert pair.agent.shadow is None and kinds == [Kind.DECISION] * len(REQUESTS)


# --- an accepted shadow: compared, never deciding ------------------------------------------


def test_decisions_are_byte_identical_with_and_without_a_shadow(pair: Pair) -> None:
    shadow = pair.agent.install_shadow(TOPIC, pair.hub.bundle(3, policy=SHADOW_POLICY), NOW)
    assert shadow is not None and pair.agent.shadow is shadow
    with_shadow, without = _decide_all(pair.agent), _decide_all(pair.twin)
    assert with_shadow == without
    assert [d.digest for d in with_shadow] == [d.digest for d in without]
    assert [d.bundle_version for d in with_shadow] == [ACTIVE] * len(REQUESTS)


def test_each_divergence_is_logged_right_after_its_decision_and_agreement_is_not(
    pair: Pair,
) -> None:
    shadow = pair.agent.install_shadow(TOPIC, pair.hub.bundle(3, policy=SHADOW_POLICY), NOW)
    assert shadow is not None
    start = len(_entries(pair.agent))
    decisions = _decide_all(pair.agent)
    logged = _entries(pair.agent)[start:]
    expected: list[tuple[Kind, Request]] = []
    for request in REQUESTS:
        expected.append((Kind.DECISION, request))
        if request in EXPECTED:
            expected.append((Kind.SHADOW_DIVERGENCE, request))
    assert [(e.kind, e.request) for e in logged] == expected
    divergences = [
        (logged[i - 1], e) for i, e in enumerate(logged) if e.kind is Kind.SHADOW_DIVERGENCE
    ]
    by_request = dict(zip(REQUESTS, decisions, strict=True))
    for decided, divergence in divergences:
        assert divergence.request is not None
        decision = by_request[divergence.request]
        assert divergence.seq == decided.seq + 1 and divergence.time == decision.time
        assert (divergence.allowed, divergence.reason, divergence.rule) == (
            decision.allowed,
            str(decision.reason),
            decision.rule_id,
        )
        assert (divergence.bundle_version, divergence.bundle_digest) == (
            ACTIVE,
            decision.bundle_digest,
        )
        assert parse_shadow_detail(divergence.detail) == replace(
            EXPECTED[divergence.request], digest=shadow.digest
        )


def test_the_kinds_of_divergence_are_verdict_flips_both_ways_a_rule_and_a_reason_change(
    pair: Pair,
) -> None:
    pair.agent.install_shadow(TOPIC, pair.hub.bundle(3, policy=SHADOW_POLICY), NOW)
    decisions = dict(zip(REQUESTS, _decide_all(pair.agent), strict=True))
    assert (decisions[RESET].allowed, EXPECTED[RESET].allowed) == (True, False)
    assert (decisions[PYTHON].allowed, EXPECTED[PYTHON].allowed) == (False, True)
    assert decisions[CAPTURE].allowed and decisions[CAPTURE].rule_id == "camera-exec"
    assert (decisions[SHELL].reason, EXPECTED[SHELL].reason) == (
        Reason.POLICY_DENIED,
        "no_matching_rule",
    )


def test_decisions_the_socket_judges_then_records_together_log_each_divergence_right_after(
    pair: Pair,
) -> None:
    pair.agent.install_shadow(TOPIC, pair.hub.bundle(3, policy=SHADOW_POLICY), NOW)
    start = len(_entries(pair.agent))
    judged = [pair.agent.judge(r, NOW + 10) for r in (RESET, ZONE_READ, PYTHON)]
    decided = pair.agent.record(judged)
    assert decided == [pair.twin.decide(r, NOW + 10) for r in (RESET, ZONE_READ, PYTHON)]
    kinds = [e.kind for e in _entries(pair.agent)[start:]]
    assert kinds == [
        Kind.DECISION,
        Kind.SHADOW_DIVERGENCE,
        Kind.DECISION,
        Kind.DECISION,
        Kind.SHADOW_DIVERGENCE,
    ]


def test_exec_decisions_handed_to_the_lineage_log_each_divergence_right_after(
    pair: Pair,
) -> None:
    """The exec enforcer's hand-off (edge_agent.fanotify.handoff) writes its decisions with
    the agent's divergences, as the socket does: a rollout's shadow counts execs too."""
    pair.agent.install_shadow(TOPIC, pair.hub.bundle(3, policy=SHADOW_POLICY), NOW)
    start = len(_entries(pair.agent))
    decided = [pair.agent.judge(r, NOW + 10) for r in (RESET, ZONE_READ, PYTHON)]

    async def hand_over() -> int:
        handoff = LineageHandoff(16)
        handoff.attach()
        writer = asyncio.create_task(
            handoff.run(lambda: pair.agent.lineage, pair.agent.shadow_entry)
        )
        for decision in decided:
            assert handoff.offer(decision)
        handoff.wake()
        left = await handoff.flush(10)
        writer.cancel()
        return left

    assert asyncio.run(hand_over()) == 0
    logged = _entries(pair.agent)[start:]
    assert [(e.kind, e.request) for e in logged] == [
        (Kind.DECISION, RESET),
        (Kind.SHADOW_DIVERGENCE, RESET),
        (Kind.DECISION, ZONE_READ),
        (Kind.DECISION, PYTHON),
        (Kind.SHADOW_DIVERGENCE, PYTHON),
    ]
    assert parse_shadow_detail(logged[1].detail).allowed is EXPECTED[RESET].allowed


def test_a_decision_the_gate_denied_is_not_compared() -> None:
    denied = Decision(False, Reason.REVOKED, "revoked", None, 2, bytes(32), RESET, NOW)
    hub = HubSim()
    shadow = HeldShadow(
        compile_for_device(
            hub.bundle(3, policy=SHADOW_POLICY),
            root=hub.root(),
            device=DEVICE,
            installed=None,
            now=NOW,
        )
    )
    assert shadow_outcome(denied, shadow) is None
    allowed = replace(denied, allowed=True, reason=Reason.ALLOWED, rule_id="camera-exec")
    assert shadow_outcome(allowed, shadow) is not None


def test_a_divergence_of_a_decision_citing_a_parent_leaves_the_parent_on_the_decision() -> None:
    request = replace(RESET, parent=Parent(None, None, "parent refused: no directory"))
    decision = Decision(True, Reason.ALLOWED, "ok", "camera-exec", 2, bytes(32), request, NOW)
    outcome = ShadowOutcome(3, bytes(range(32)), False, "policy_denied", "no-camera-reset")
    entry = divergence_entry(decision, outcome)
    assert entry.request == RESET
    assert decode_entry(encode_entry(entry)) == entry


def test_the_shadow_detail_round_trips_and_refuses_what_is_not_one() -> None:
    outcome = ShadowOutcome(7, bytes(range(32)), True, "allowed", None)
    text = shadow_detail(outcome)
    assert text == (
        f"shadow_version=7 shadow_digest={bytes(range(32)).hex()} shadow_allowed=true "
        "shadow_reason=allowed shadow_rule="
    )
    assert parse_shadow_detail(text) == outcome
    for bad in ("", text + " ", text.replace("true", "yes"), text.replace("=7", "=07")):
        with pytest.raises(ValueError):
            parse_shadow_detail(bad)
    with pytest.raises(ValueError):
        shadow_detail(replace(outcome, digest=b"short"))


# --- cleared, dropped, not persisted --------------------------------------------------------


def _divergences(agent: LocalAgent, wall: int = NOW + 10) -> int:
    start = len(_entries(agent))
    _decide_all(agent, wall)
    return sum(e.kind is Kind.SHADOW_DIVERGENCE for e in _entries(agent)[start:])


def test_an_empty_retained_message_on_the_shadow_topic_clears_it(pair: Pair) -> None:
    daemon = AgentDaemon(pair.agent, BrokerSettings("127.0.0.1", 1), SyncConfig(), wall=lambda: NOW)
    data = pair.hub.bundle(3, policy=SHADOW_POLICY)
    daemon.handle(Incoming(TOPIC, data, retain=True))
    assert pair.agent.shadow is not None and _divergences(pair.agent) == len(EXPECTED)
    daemon.handle(Incoming(TOPIC, b"", retain=True))
    assert pair.agent.shadow is None and _divergences(pair.agent) == 0
    daemon.handle(Incoming(TOPIC, data, retain=True))
    assert pair.agent.shadow is not None


def test_a_shadow_is_dropped_at_its_expiry(pair: Pair) -> None:
    data = pair.hub.bundle(3, policy=SHADOW_POLICY, expires_at=NOW + 100)
    pair.agent.install_shadow(TOPIC, data, NOW)
    assert _divergences(pair.agent, NOW + 99) == len(EXPECTED)
    assert _divergences(pair.agent, NOW + 100) == 0
    assert pair.agent.shadow is None


def test_a_shadow_is_dropped_when_the_active_bundle_becomes_it(pair: Pair) -> None:
    data = pair.hub.bundle(3, policy=SHADOW_POLICY)
    pair.agent.install_shadow(TOPIC, data, NOW)
    pair.agent.install_bundle(data, NOW)
    assert _divergences(pair.agent) == 0 and pair.agent.shadow is None
    assert pair.agent.install_shadow(TOPIC, data, NOW) is None


def test_a_shadow_is_not_persisted_across_a_restart(pair: Pair) -> None:
    pair.agent.install_shadow(TOPIC, pair.hub.bundle(3, policy=SHADOW_POLICY), NOW)
    state_dir = pair.agent.store.path.parent
    pair.agent.close()
    pair.agent = LocalAgent.open(state_dir)
    assert pair.agent.shadow is None and _divergences(pair.agent) == 0
    assert sorted(p.name for p in state_dir.iterdir() if "shadow" in p.name) == []


def test_a_shadow_no_longer_verifying_after_a_root_rotation_is_dropped(pair: Pair) -> None:
    pair.agent.install_shadow(TOPIC, pair.hub.bundle(3, policy=SHADOW_POLICY), NOW)
    rotated = pair.hub.root_bytes(version=2, policy_keys=[PrivateKey.generate() for _ in range(2)])
    pair.agent.install_root(rotated, NOW)
    assert _divergences(pair.agent) == 0 and pair.agent.shadow is None


def test_the_shadow_of_the_highest_version_held_is_evaluated(pair: Pair) -> None:
    group_topic = "edgegov/v1/eu-1/shadow/group/line-a"
    pair.agent.install_shadow(TOPIC, pair.hub.bundle(4, policy=SHADOW_POLICY), NOW)
    pair.agent.install_shadow(group_topic, pair.hub.bundle(3), NOW)
    held = pair.agent.shadow
    assert held is not None and held.version == 4
    pair.agent.clear_shadow(TOPIC)
    held = pair.agent.shadow
    assert held is not None and held.version == 3 and _divergences(pair.agent) == 0


WINDOWED = policy_payload(
    groups={},
    workloads={},
    rules=[
        {
            "id": "day-exec",
            "effect": "allow",
            "subjects": ["svc:camera"],
            "actions": ["exec"],
            "resources": ["/opt/camera/bin/*"],
            "when": {"time_utc": "06:00-22:00"},
        }
    ],
)


def _held(hub: HubSim, policy: dict[str, object]) -> HeldShadow:
    data = hub.bundle(3, policy=policy)
    return HeldShadow(
        compile_for_device(data, root=hub.root(), device=DEVICE, installed=None, now=NOW)
    )


@pytest.mark.parametrize("minute", [5 * 60 + 59, 6 * 60, 21 * 60 + 59, 22 * 60, 0])
def test_a_cached_shadow_outcome_follows_time_windows_as_the_engine_does(minute: int) -> None:
    shadow = _held(HubSim(), WINDOWED)
    day = NOW - NOW % DAY
    for at in (day + 12 * 3600, day + minute * 60, day + minute * 60 + 30):
        assert shadow.match(CAPTURE, at) == evaluate(compile_policy(WINDOWED), CAPTURE, at)


def test_a_request_citing_a_parent_is_never_served_from_the_cache() -> None:
    shadow = _held(HubSim(), WINDOWED)
    cited = replace(CAPTURE, parent=Parent(None, None, "parent refused: none held"))
    shadow.match(cited, NOW)
    shadow.match(CAPTURE, NOW)
    # NOW is 08:00 UTC: span 1, between the window's edges 06:00 and 22:00.
    assert list(shadow._cache) == [(CAPTURE, 1)]


def test_a_state_reloaded_after_another_process_changed_it_keeps_the_shadow_unverified_again(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair.agent.install_shadow(TOPIC, pair.hub.bundle(3, policy=SHADOW_POLICY), NOW)
    with LocalAgent.open(pair.agent.store.path.parent) as other:
        other.install_revocation(pair.hub.revocation(1, value="gw-999"), NOW)
    root_before = pair.agent.state.root
    assert pair.agent.refresh() and pair.agent.state.root is not root_before
    verified: list[bytes] = []
    accept = agent_module.accept_shadow

    def counting(*args: object) -> object:
        verified.append(b"")
        return accept(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(agent_module, "accept_shadow", counting)
    assert _divergences(pair.agent) == len(EXPECTED) and verified == []


@pytest.mark.parametrize(
    "topic",
    [
        "edgegov/v1/eu-1/shadow/device/gw-002",
        "edgegov/v1/us-1/shadow/all/_",
        "edgegov/v1/eu-1/shadow/group/line-z",
        "edgegov/v1/eu-1/shadow/device/gw-001/extra",
    ],
)
def test_a_shadow_on_a_topic_the_device_does_not_listen_on_is_never_held(
    pair: Pair, topic: str
) -> None:
    daemon = AgentDaemon(pair.agent, BrokerSettings("127.0.0.1", 1), SyncConfig(), wall=lambda: NOW)
    daemon.handle(Incoming(topic, pair.hub.bundle(3, policy=SHADOW_POLICY), retain=True))
    assert pair.agent.shadow is None and _divergences(pair.agent) == 0
    daemon.handle(Incoming(TOPIC, pair.hub.bundle(3, policy=SHADOW_POLICY), retain=True))
    assert pair.agent.shadow is not None


def test_a_shadow_a_revocation_voids_is_dropped_and_never_compared(tmp_path: Path) -> None:
    keys = [PrivateKey.generate() for _ in range(3)]
    hub = HubSim(policy_keys=keys, policy_threshold=2)
    agent = _open(tmp_path, "agent", hub, hub.bundle(ACTIVE, signers=keys[:2]))
    try:
        shadow = hub.bundle(3, policy=SHADOW_POLICY, signers=keys[1:])
        agent.install_shadow(TOPIC, shadow, NOW)
        assert _divergences(agent) == len(EXPECTED)
        agent.install_revocation(hub.revocation(1, "key", keys[2].public.key_id.hex()), NOW)
        assert _divergences(agent) == 0 and agent.shadow is None
        assert {d.reason for d in _decide_all(agent)} != {Reason.REVOKED}
    finally:
        agent.close()


def test_a_shadow_is_dropped_as_soon_as_the_active_bundle_reaches_its_version(pair: Pair) -> None:
    pair.agent.install_shadow(TOPIC, pair.hub.bundle(3, policy=SHADOW_POLICY), NOW)
    pair.agent.install_bundle(pair.hub.bundle(3), NOW)
    assert pair.agent.shadow is None and _divergences(pair.agent) == 0

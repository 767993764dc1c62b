"""``log replay`` for every gate reason: no false divergence from state a bundle does not hold.

Replay re-decides each logged request under the bundle it names. A decision whose outcome
came from something else (the root in force, a bundle distrusted after a rotation, the
clock, freshness, revocation, attestation) cannot be re-derived from the bundle alone and is
skipped; every other decision must come out the same. Each row drives a real agent through
a state directory, decides before and after the event, and replays the whole log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.attest.measure import FileFactProvider
from edge_agent.errors import BundleError
from edge_agent.lineage.replay import replay
from edge_agent.lineage.store import LINEAGE_DB, LineageStore
from edge_agent.protocol.attestation import (
    AttestationResult,
    Challenge,
    Verdict,
    sign_challenge,
    sign_result,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import sign_root
from edge_agent.trust.gate import Reason
from tests.attest_support import expectations_for, make_root, small_profile
from tests.factory import DAY, DEVICE, NOW, HubSim

CAMERA = Request("svc:camera", "exec", "/opt/camera/bin/capture")
SHELL = Request("svc:x", "exec", "/bin/sh")
HOUR = 3600
DECADE = 10 * 365 * DAY


def _root(sim: HubSim, version: int, **kwargs: int) -> bytes:
    return sign_root(sim.root_payload(version, **kwargs), sim.root_keys)  # type: ignore[arg-type]


def _decide_both(agent: LocalAgent, at: int) -> None:
    agent.decide(CAMERA, at)
    agent.decide(SHELL, at)


def _root_expired_then_renewed(sim: HubSim, agent: LocalAgent, tmp_path: Path) -> None:
    agent.install_bundle(sim.bundle(1), NOW)
    _decide_both(agent, NOW)
    agent.install_root(_root(sim, 2, issued_at=NOW - DAY, expires_at=NOW - HOUR), NOW)
    _decide_both(agent, NOW + 1)
    agent.install_root(_root(sim, 3), NOW + 2)
    _decide_both(agent, NOW + 3)


def _root_expired_and_still_newest(sim: HubSim, agent: LocalAgent, tmp_path: Path) -> None:
    agent.install_bundle(sim.bundle(1), NOW)
    _decide_both(agent, NOW)
    agent.install_root(_root(sim, 2, issued_at=NOW - DAY, expires_at=NOW - HOUR), NOW)
    _decide_both(agent, NOW + 1)


def _bundle_untrusted_then_replaced(sim: HubSim, agent: LocalAgent, tmp_path: Path) -> None:
    agent.install_bundle(sim.bundle(1), NOW)
    _decide_both(agent, NOW)
    sim.policy_keys = [PrivateKey.generate()]
    agent.install_root(_root(sim, 2), NOW)
    _decide_both(agent, NOW + 1)
    agent.install_bundle(sim.bundle(2), NOW + 2)
    _decide_both(agent, NOW + 3)


def _freshness_expired(sim: HubSim, agent: LocalAgent, tmp_path: Path) -> None:
    bundle = sim.bundle(1, max_offline=HOUR)
    agent.install_bundle(bundle, NOW)
    _decide_both(agent, NOW)
    _decide_both(agent, NOW + 2 * HOUR)
    agent.install_freshness(sim.freshness(bundle, hub_time=NOW + 2 * HOUR), NOW + 2 * HOUR)
    _decide_both(agent, NOW + 2 * HOUR + 1)


def _clock_untrusted(sim: HubSim, agent: LocalAgent, tmp_path: Path) -> None:
    bundle = sim.bundle(1)
    agent.install_bundle(bundle, NOW)
    _decide_both(agent, NOW)
    agent.install_freshness(sim.freshness(bundle, hub_time=NOW + DECADE), NOW)
    _decide_both(agent, NOW + 1)


def _bundle_expired(sim: HubSim, agent: LocalAgent, tmp_path: Path) -> None:
    agent.install_bundle(sim.bundle(1, issued_at=NOW, expires_at=NOW + HOUR), NOW)
    _decide_both(agent, NOW)
    _decide_both(agent, NOW + 2 * HOUR)


def _revoked(sim: HubSim, agent: LocalAgent, tmp_path: Path) -> None:
    agent.install_bundle(sim.bundle(1), NOW)
    _decide_both(agent, NOW)
    agent.install_revocation(sim.revocation(1), NOW + 1)
    _decide_both(agent, NOW + 2)


def _bundles_refused_future_and_superseded(sim: HubSim, agent: LocalAgent, tmp_path: Path) -> None:
    agent.install_bundle(sim.bundle(1), NOW)
    _decide_both(agent, NOW)
    with pytest.raises(BundleError, match="ahead"):
        agent.install_bundle(sim.bundle(2, issued_at=NOW + DAY, expires_at=NOW + 2 * DAY), NOW)
    agent.install_freshness(sim.freshness(sim.bundle(4)), NOW)
    with pytest.raises(BundleError, match="older than version 4"):
        agent.install_bundle(sim.bundle(3), NOW + 1)
    _decide_both(agent, NOW + 2)


def _attestation_failed_passed_then_stale(sim: HubSim, agent: LocalAgent, tmp_path: Path) -> None:
    profile = small_profile()
    provider = FileFactProvider(profile, make_root(tmp_path / "root"))
    expectations = expectations_for(profile, {"gw-001": provider.measure()})
    agent.install_bundle(sim.bundle(1, attestation=expectations), NOW)
    _decide_both(agent, NOW)
    agent.record_measurement(provider.measure(), NOW, 1)
    verifier = sim.online_keys[Role.VERIFIER][0]
    nonce = bytes(32)
    challenge = sign_challenge(Challenge("gw-001", nonce, NOW, NOW + 60), key=verifier)
    agent.evidence.answer(agent.evidence.check(challenge, NOW), NOW)
    assert agent.measurement is not None
    result = AttestationResult(
        "gw-001", nonce, Verdict.PASS, agent.measurement.digest, NOW, NOW + 300, "ok"
    )
    agent.install_attestation_result(sign_result(result, key=verifier), NOW)
    _decide_both(agent, NOW + 1)
    _decide_both(agent, NOW + HOUR)


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[HubSim, LocalAgent, Path], None]
    reasons: frozenset[Reason]
    """The reasons the scenario's decisions must include (so the row tests what it says)."""
    skipped: int
    """How many decisions replay must skip (decided by something other than the bundle)."""


SCENARIOS = [
    Scenario(
        "root expired, then a newer root",
        _root_expired_then_renewed,
        frozenset({Reason.ROOT_EXPIRED, Reason.ALLOWED}),
        2,
    ),
    Scenario(
        "an expired root is still the newest",
        _root_expired_and_still_newest,
        frozenset({Reason.ROOT_EXPIRED, Reason.ALLOWED}),
        2,
    ),
    Scenario(
        "bundle untrusted after a policy rotation, then replaced",
        _bundle_untrusted_then_replaced,
        frozenset({Reason.BUNDLE_UNTRUSTED, Reason.ALLOWED}),
        2,
    ),
    Scenario(
        "freshness expired, then a token",
        _freshness_expired,
        frozenset({Reason.FRESHNESS_EXPIRED, Reason.ALLOWED}),
        2,
    ),
    Scenario(
        "clock untrusted by a poisoned floor",
        _clock_untrusted,
        frozenset({Reason.CLOCK_UNTRUSTED, Reason.ALLOWED}),
        2,
    ),
    Scenario(
        "bundle expired (replayable from the bundle)",
        _bundle_expired,
        frozenset({Reason.BUNDLE_EXPIRED, Reason.ALLOWED}),
        0,
    ),
    Scenario("revoked", _revoked, frozenset({Reason.REVOKED, Reason.ALLOWED}), 2),
    Scenario(
        "attestation required: failed, passed, then stale",
        _attestation_failed_passed_then_stale,
        frozenset(
            {
                Reason.ATTESTATION_FAILED,
                Reason.ATTESTATION_STALE,
                Reason.ALLOWED,
                Reason.POLICY_DENIED,
            }
        ),
        4,
    ),
    Scenario(
        "bundles refused as future and superseded",
        _bundles_refused_future_and_superseded,
        frozenset({Reason.ALLOWED, Reason.POLICY_DENIED}),
        0,
    ),
]


@pytest.mark.parametrize("case", SCENARIOS, ids=lambda c: c.name)
def test_replay_finds_no_false_divergence(tmp_path: Path, case: Scenario) -> None:
    sim = HubSim()
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(state_dir) as agent:
        case.run(sim, agent, tmp_path)
    store = LineageStore.open(state_dir / LINEAGE_DB)
    try:
        decisions = [
            decode_entry(data) for _, data, _ in store.iter_rows(0, "kind = 'decision'", [])
        ]
        assert {e.kind for e in decisions} == {Kind.DECISION}
        assert case.reasons <= {Reason(e.reason) for e in decisions}
        report = replay(state_dir, store, None)
    finally:
        store.close()
    assert report.divergences == ()
    assert (report.replayed, report.skipped) == (len(decisions) - case.skipped, case.skipped)

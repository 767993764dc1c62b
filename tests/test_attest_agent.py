"""The agent's side of attestation, without a broker: measure, answer, install, refuse.

A fixture device root stands in for the system; the hub is :class:`HubSim` with its
verifier key. Every refused result leaves the state as it was and is logged in the lineage.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.attest.measure import FileFactProvider, MeasurementSet
from edge_agent.attest.persist import ATTESTATION_FILE
from edge_agent.protocol.attestation import (
    AttestationError,
    AttestationResult,
    Challenge,
    Verdict,
    sign_challenge,
    sign_result,
    verify_evidence,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.sync.config import SyncConfig
from edge_agent.sync.daemon import AgentDaemon
from edge_agent.trust.gate import Reason
from edge_agent.trust.machine import AttestationWrite, Outcome, Transition
from tests.attest_support import expectations_for, make_root, small_profile
from tests.factory import DEVICE, NOW, HubSim

REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")
INTERVAL = 1
TTL = 300


@dataclass
class Device:
    hub: HubSim
    agent: LocalAgent
    provider: FileFactProvider
    root: Path
    state_dir: Path
    nonces: int = 0

    def measure(self, wall: int = NOW) -> None:
        self.agent.record_measurement(self.provider.measure(), wall, INTERVAL)

    def challenge(self, device: str = "gw-001", at: int = NOW) -> tuple[bytes, bytes]:
        self.nonces += 1
        nonce = hashlib.sha256(b"nonce %d" % self.nonces).digest()
        challenge = Challenge(device, nonce, at, at + 60)
        return nonce, sign_challenge(challenge, key=self.hub.online_keys[Role.VERIFIER][0])

    def answer(self, at: int = NOW) -> bytes:
        """Answer a fresh challenge with signed evidence; its nonce."""
        nonce, data = self.challenge(at=at)
        evidence = self.agent.evidence.answer(self.agent.evidence.check(data, at), at)
        verified = verify_evidence(evidence, device="gw-001", key=self.agent.device_key.public)
        assert verified.nonce == nonce and verified.measurements == self.provider.measure().digests
        return nonce

    def result(
        self,
        nonce: bytes,
        *,
        device: str = "gw-001",
        verdict: Verdict = Verdict.PASS,
        measured: bytes | None = None,
        issued_at: int = NOW,
        key: PrivateKey | None = None,
    ) -> bytes:
        return sign_result(
            AttestationResult(
                device,
                nonce,
                verdict,
                measured or _digest(self),
                issued_at,
                issued_at + TTL,
                "ok" if verdict is Verdict.PASS else "os-release: not an expected value",
            ),
            key=key or self.hub.online_keys[Role.VERIFIER][0],
        )

    def kinds(self) -> list[tuple[str, bool, str]]:
        lineage = self.agent.lineage
        assert lineage is not None and lineage.store is not None
        entries = [decode_entry(data) for _, data, _ in lineage.store.iter_rows()]
        return [(str(e.kind), e.allowed, e.reason) for e in entries if e.kind is not Kind.DECISION]


def _digest(device: Device) -> bytes:
    assert device.agent.measurement is not None
    return device.agent.measurement.digest


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    hub = HubSim()
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, DEVICE, hub.root_bytes(), NOW)
    root = make_root(tmp_path / "root")
    profile = small_profile(INTERVAL)
    provider = FileFactProvider(profile, root)
    expectations = expectations_for(profile, {"gw-001": provider.measure()})
    agent = LocalAgent.open(state_dir)
    agent.install_bundle(hub.bundle(1, attestation=expectations), NOW)
    try:
        yield Device(hub, agent, provider, root, state_dir)
    finally:
        agent.close()


def _decide(device: Device, at: int = NOW) -> Reason:
    return device.agent.decide(REQUEST, at).reason


def test_a_measured_device_with_a_passing_result_allows(device: Device) -> None:
    assert _decide(device) is Reason.ATTESTATION_FAILED
    device.measure()
    assert _decide(device) is Reason.ATTESTATION_FAILED
    nonce = device.answer()
    device.agent.install_attestation_result(device.result(nonce), NOW)
    assert device.agent.observe_attestation(NOW)
    assert _decide(device) is Reason.ALLOWED
    assert ("attestation_passed", True, "attestation_passed") in device.kinds()


def test_tampering_with_a_measured_file_denies_and_voids_the_result(device: Device) -> None:
    device.measure()
    nonce = device.answer()
    device.agent.install_attestation_result(device.result(nonce), NOW)
    device.agent.observe_attestation(NOW)
    config = device.root / "etc/edge-agent/agent.toml"
    original = config.read_bytes()
    config.write_bytes(original.replace(b"30", b"99"))
    device.measure(NOW + 1)
    assert device.agent.observe_attestation(NOW + 1)
    assert _decide(device, NOW + 1) is Reason.ATTESTATION_FAILED
    assert device.agent.state.attestation_result is None
    assert ("attestation_failed", True, "attestation_failed") in device.kinds()
    config.write_bytes(original)
    device.measure(NOW + 2)
    assert _decide(device, NOW + 2) is Reason.ATTESTATION_FAILED
    nonce = device.answer(NOW + 2)
    device.agent.install_attestation_result(device.result(nonce, issued_at=NOW + 2), NOW + 2)
    assert _decide(device, NOW + 2) is Reason.ALLOWED


def test_the_local_verdict_goes_stale_when_nothing_re_measures(device: Device) -> None:
    device.measure()
    nonce = device.answer()
    device.agent.install_attestation_result(device.result(nonce), NOW)
    assert _decide(device, NOW + 2 * INTERVAL + 4) is Reason.ALLOWED
    assert _decide(device, NOW + 2 * INTERVAL + 5) is Reason.ATTESTATION_STALE


def test_an_unanswered_result_expires_to_stale(device: Device) -> None:
    device.measure()
    nonce = device.answer()
    device.agent.install_attestation_result(device.result(nonce), NOW)
    device.measure(NOW + TTL)
    assert _decide(device, NOW + TTL) is Reason.ATTESTATION_STALE
    assert device.agent.observe_attestation(NOW + TTL)
    assert ("attestation_stale", True, "attestation_stale") in device.kinds()


REPLAYS = {
    "a nonce never answered": lambda d, n: d.result(hashlib.sha256(b"other").digest()),
    "another device": lambda d, n: d.result(n, device="gw-002"),
    "a key that is not the hub's verifier": lambda d, n: d.result(n, key=PrivateKey.generate()),
    "the hub's freshness key": lambda d, n: d.result(n, key=d.hub.online_keys[Role.FRESHNESS][0]),
    "another measured state": lambda d, n: d.result(n, measured=b"\x01" * 32),
    "an expired result": lambda d, n: d.result(n, issued_at=NOW - TTL),
}


@pytest.mark.parametrize("case", sorted(REPLAYS))
def test_results_that_do_not_answer_this_device_are_refused(device: Device, case: str) -> None:
    device.measure()
    nonce = device.answer()
    before = device.agent.state
    with pytest.raises(AttestationError):
        device.agent.install_attestation_result(REPLAYS[case](device, nonce), NOW)
    assert device.agent.state is before
    assert ("attestation_failed", False, "attestation_rejected") in device.kinds()
    device.agent.install_attestation_result(device.result(nonce), NOW)
    assert _decide(device) is Reason.ALLOWED


def test_a_result_for_an_old_nonce_is_refused(device: Device) -> None:
    device.measure()
    nonce = device.answer()
    device.agent.install_attestation_result(device.result(nonce), NOW)
    replay = device.result(nonce, issued_at=NOW + 1)
    with pytest.raises(AttestationError, match="did not answer or already used"):
        device.agent.install_attestation_result(replay, NOW + 1)


def test_a_forged_or_foreign_challenge_gets_no_evidence(device: Device) -> None:
    device.measure()
    _, foreign = device.challenge(device="gw-002")
    with pytest.raises(AttestationError):
        device.agent.evidence.check(foreign, NOW)
    forged = sign_challenge(
        Challenge("gw-001", b"f" * 32, NOW, NOW + 60), key=PrivateKey.generate()
    )
    with pytest.raises(AttestationError):
        device.agent.evidence.check(forged, NOW)
    _, expired = device.challenge(at=NOW - 120)
    with pytest.raises(AttestationError, match="expired"):
        device.agent.evidence.check(expired, NOW)


def test_the_result_and_verdict_survive_a_restart_and_damage_only_denies(device: Device) -> None:
    device.measure()
    nonce = device.answer()
    device.agent.install_attestation_result(device.result(nonce), NOW)
    device.agent.close()
    with LocalAgent.open(device.state_dir) as reopened:
        assert reopened.decide(REQUEST, NOW).reason is Reason.ALLOWED
    (device.state_dir / ATTESTATION_FILE).write_bytes(b"\xa1damaged")
    with LocalAgent.open(device.state_dir) as reopened:
        assert reopened.decide(REQUEST, NOW).reason is Reason.ATTESTATION_FAILED
    device.agent = LocalAgent.open(device.state_dir)


def test_a_new_bundle_is_judged_at_once_against_the_held_measurement(device: Device) -> None:
    device.measure()
    nonce = device.answer()
    device.agent.install_attestation_result(device.result(nonce), NOW)
    strict = {"profiles": {"generic-x86_64": {"measurements": {"os-release": [b"\x00" * 32]}}}}
    device.agent.install_bundle(device.hub.bundle(2, attestation=strict), NOW)
    decision = device.agent.decide(REQUEST, NOW)
    assert decision.reason is Reason.ATTESTATION_FAILED and "os-release" in decision.message


def test_a_transition_that_comes_with_an_attestation_write_is_logged(device: Device) -> None:
    transition = Transition(Kind.ATTESTATION_PASSED, True, "attestation_passed", "by the write")
    outcome = Outcome(None, device.agent.state, AttestationWrite(None), transition)
    device.agent._take(outcome, NOW)
    assert ("attestation_passed", True, "attestation_passed") in device.kinds()


@pytest.mark.asyncio
async def test_a_slow_measurement_begun_before_a_change_never_replaces_a_fresher_one(
    device: Device,
) -> None:
    """The periodic re-measurement and a challenge's measure-afresh run on threads: one
    begun before a file changed must not record its stale digests over those measured
    after the change, which the next answer would send as a pass."""
    clean = device.provider.measure()
    config = device.root / "etc/edge-agent/agent.toml"
    config.write_bytes(config.read_bytes().replace(b"30", b"99"))
    tampered = device.provider.measure()
    release = threading.Event()

    class SlowFirstAttestor:
        interval_s = INTERVAL
        calls = 0

        def measure(self) -> MeasurementSet:
            self.calls += 1
            if self.calls == 1:
                release.wait(10)
                return clean
            return tampered

    daemon = AgentDaemon(
        device.agent, BrokerSettings("127.0.0.1", 1), SyncConfig(), wall=lambda: NOW
    )
    attestor = SlowFirstAttestor()
    periodic = asyncio.create_task(daemon._measure(attestor))  # type: ignore[arg-type]
    while attestor.calls == 0:
        await asyncio.sleep(0.01)
    answering = asyncio.create_task(daemon._measure(attestor))  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    release.set()
    await asyncio.gather(periodic, answering)
    assert device.agent.measurement is not None
    assert device.agent.measurement.digest == tampered.digest != clean.digest

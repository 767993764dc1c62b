"""Answering the hub's challenges, without an agent: verify, sign evidence, remember nonces.

:class:`EvidenceResponder` reads an in-memory :class:`EvidenceSource` (a trust state signed
with real keys, a measurement, a lineage head); no SQLite, broker or clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest

from edge_agent.attest.measure import Measurement, MeasurementSet
from edge_agent.attest.responder import MAX_ANSWERED_NONCES, EvidenceResponder, LineageTip
from edge_agent.errors import LineageError
from edge_agent.protocol.attestation import (
    AttestationError,
    Challenge,
    LineageHead,
    sign_challenge,
    verify_evidence,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.merkle import EMPTY_ROOT
from edge_agent.protocol.roles import Role
from edge_agent.trust.state import TrustState
from tests.factory import DEVICE, NOW, HubSim

MEASURED = MeasurementSet(
    "p", (Measurement("os-release", "file", "/etc/os-release", "os", b"\x07" * 32),)
)
TREE_ROOT = b"\x05" * 32


@dataclass
class Lineage:
    size: int = 3
    broken: bool = False

    def root_at(self, size: int) -> bytes:
        if self.broken:
            raise LineageError("the lineage file is damaged")
        return TREE_ROOT


@dataclass
class Source:
    """The agent as the responder reads it."""

    state: TrustState
    measurement: MeasurementSet | None = MEASURED
    lineage: LineageTip | None = field(default_factory=Lineage)
    device_key: PrivateKey = field(default_factory=PrivateKey.generate)

    def earliest_now(self, wall: int) -> int:
        return wall


@pytest.fixture
def sim() -> HubSim:
    return HubSim()


@pytest.fixture
def source(sim: HubSim) -> Source:
    return Source(TrustState(DEVICE, sim.root()))


def _challenge(sim: HubSim, number: int, device: str = DEVICE.device_id) -> bytes:
    nonce = hashlib.sha256(b"nonce %d" % number).digest()
    challenge = Challenge(device, nonce, NOW, NOW + 60)
    return sign_challenge(challenge, key=sim.online_keys[Role.VERIFIER][0])


def test_evidence_carries_the_measurement_and_lineage_head_and_remembers_the_nonce(
    sim: HubSim, source: Source
) -> None:
    responder = EvidenceResponder(source)
    challenge = responder.check(_challenge(sim, 1), NOW)
    assert not responder.answered(challenge.nonce)

    evidence = verify_evidence(
        responder.answer(challenge, NOW),
        device=DEVICE.device_id,
        key=source.device_key.public,
    )

    assert evidence.nonce == challenge.nonce and evidence.time == NOW
    assert evidence.measurements == MEASURED.digests
    assert evidence.lineage == LineageHead(3, TREE_ROOT)
    assert responder.answered(challenge.nonce)
    assert dict(responder.sent) == {challenge.nonce: MEASURED.digest}


def test_only_the_newest_answered_nonces_are_remembered(sim: HubSim, source: Source) -> None:
    responder = EvidenceResponder(source)
    nonces = []
    for number in range(MAX_ANSWERED_NONCES + 1):
        challenge = responder.check(_challenge(sim, number), NOW)
        responder.answer(challenge, NOW)
        nonces.append(challenge.nonce)

    assert not responder.answered(nonces[0])
    assert list(responder.sent) == nonces[1:]


def test_a_settled_nonce_is_answered_no_longer(sim: HubSim, source: Source) -> None:
    responder = EvidenceResponder(source)
    challenge = responder.check(_challenge(sim, 1), NOW)
    responder.answer(challenge, NOW)

    responder.settle(challenge.nonce)

    assert not responder.answered(challenge.nonce) and dict(responder.sent) == {}


def test_an_agent_that_has_not_measured_answers_nothing(sim: HubSim, source: Source) -> None:
    source.measurement = None
    responder = EvidenceResponder(source)
    challenge = responder.check(_challenge(sim, 1), NOW)

    with pytest.raises(AttestationError, match="measures nothing"):
        responder.answer(challenge, NOW)
    assert not responder.answered(challenge.nonce)


@pytest.mark.parametrize("lineage", [None, Lineage(broken=True)], ids=["closed", "unreadable"])
def test_evidence_without_a_readable_lineage_names_the_empty_head(
    sim: HubSim, source: Source, lineage: Lineage | None
) -> None:
    source.lineage = lineage
    responder = EvidenceResponder(source)
    challenge = responder.check(_challenge(sim, 1), NOW)

    evidence = verify_evidence(
        responder.answer(challenge, NOW), device=DEVICE.device_id, key=source.device_key.public
    )

    assert evidence.lineage == LineageHead(0, EMPTY_ROOT)


def test_a_challenge_for_another_device_is_refused(sim: HubSim, source: Source) -> None:
    responder = EvidenceResponder(source)
    with pytest.raises(AttestationError):
        responder.check(_challenge(sim, 1, device="gw-002"), NOW)

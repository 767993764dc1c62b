"""The gate's attestation check, as a table: what the state holds -> the reason code.

Pure: states are built by hand, ``now`` is given, nothing is measured or read.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from edge_agent.policy.bundle import compile_for_device
from edge_agent.protocol.attestation import AttestationResult, Verdict
from edge_agent.protocol.request import Request
from edge_agent.trust.gate import Reason, attestation_failure, check_report, decide
from edge_agent.trust.state import (
    LocalVerdict,
    TrustState,
    with_attestation_result,
    with_bundle,
    with_local_verdict,
)
from tests.factory import DEVICE, NOW, HubSim

CAMERA = Request("svc:camera", "exec", "/opt/camera/bin/capture")
DIGEST = hashlib.sha256(b"measured state").digest()
OTHER = hashlib.sha256(b"another state").digest()
EXPECT = {"profiles": {"generic-x86_64": {"measurements": {"os-release": [DIGEST]}}}}


def _bundle_state(attestation: dict[str, object] | None = EXPECT) -> TrustState:
    sim = HubSim()
    root = sim.root()
    bundle = compile_for_device(
        sim.bundle(1, attestation=attestation), root=root, device=DEVICE, installed=None, now=None
    )
    return with_bundle(TrustState(device=DEVICE, root=root), bundle)


def _local(state: TrustState, *, passed: bool = True, digest: bytes = DIGEST) -> LocalVerdict:
    assert state.bundle is not None
    return LocalVerdict(passed, digest, state.bundle.digest, NOW - 5, NOW + 60, "detail")


def _result(verdict: Verdict = Verdict.PASS, measured: bytes = DIGEST) -> AttestationResult:
    return AttestationResult("gw-001", b"n" * 32, verdict, measured, NOW - 10, NOW + 100, "ok")


def _attested(state: TrustState) -> TrustState:
    return with_attestation_result(with_local_verdict(state, _local(state)), _result())


def test_a_passing_measurement_and_an_unexpired_hub_result_allow() -> None:
    state = _attested(_bundle_state())
    assert attestation_failure(state, NOW) is None
    assert decide(state, CAMERA, NOW).allowed


def test_a_bundle_without_expectations_needs_no_attestation() -> None:
    state = _bundle_state(None)
    assert decide(state, CAMERA, NOW).allowed


CASES = [
    ("not measured", lambda s: s, Reason.ATTESTATION_FAILED, "not been measured"),
    (
        "measured against another bundle",
        lambda s: with_local_verdict(s, replace(_local(s), bundle_digest=b"x" * 32)),
        Reason.ATTESTATION_FAILED,
        "not checked against bundle",
    ),
    (
        "local mismatch",
        lambda s: with_local_verdict(s, _local(s, passed=False)),
        Reason.ATTESTATION_FAILED,
        "does not match",
    ),
    (
        "local verdict too old",
        lambda s: with_attestation_result(
            with_local_verdict(s, replace(_local(s), valid_until=NOW)), _result()
        ),
        Reason.ATTESTATION_STALE,
        "local measurement is",
    ),
    (
        "no hub result",
        lambda s: with_local_verdict(s, _local(s)),
        Reason.ATTESTATION_FAILED,
        "no attestation result",
    ),
    (
        "hub failed the device",
        lambda s: with_attestation_result(with_local_verdict(s, _local(s)), _result(Verdict.FAIL)),
        Reason.ATTESTATION_FAILED,
        "verifier failed",
    ),
    (
        "hub result for another measured state",
        lambda s: with_attestation_result(
            with_local_verdict(s, _local(s)), _result(measured=OTHER)
        ),
        Reason.ATTESTATION_STALE,
        "changed since",
    ),
    (
        "hub result expired",
        lambda s: with_attestation_result(
            with_local_verdict(s, _local(s)), replace(_result(), expires_at=NOW)
        ),
        Reason.ATTESTATION_STALE,
        "expired 0 s ago",
    ),
]


@pytest.mark.parametrize(
    ("build", "reason", "words"),
    [pytest.param(b, r, w, id=i) for i, b, r, w in CASES],
)
def test_attestation_state_table(build: object, reason: Reason, words: str) -> None:
    assert callable(build)
    state = build(_bundle_state())
    decision = decide(state, CAMERA, NOW)
    assert (decision.allowed, decision.reason) == (False, reason)
    assert words in decision.message
    attestation = next(c for c in check_report(state, NOW) if c.name == "attestation")
    assert (attestation.passed, attestation.reason) == (False, reason)


def test_a_failed_measurement_voids_the_hub_result_until_a_new_one() -> None:
    state = _attested(_bundle_state())
    failed = with_local_verdict(state, _local(state, passed=False))
    assert failed.attestation_result is None
    restored = with_local_verdict(failed, _local(failed))
    assert decide(restored, CAMERA, NOW).reason is Reason.ATTESTATION_FAILED
    assert decide(with_attestation_result(restored, _result()), CAMERA, NOW).allowed


def test_a_result_is_signed_time_for_the_floor() -> None:
    state = _bundle_state()
    later = replace(_result(), issued_at=NOW + 1000, expires_at=NOW + 2000)
    assert with_attestation_result(state, later).floor.seconds > state.floor.seconds


def test_the_decision_stays_deterministic_with_attestation() -> None:
    state = _attested(_bundle_state())
    assert decide(state, CAMERA, NOW).digest == decide(state, CAMERA, NOW).digest

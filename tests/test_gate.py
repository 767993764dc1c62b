"""The fail-closed gate: each reason code, with the clock injected (the core reads none)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge_agent.policy.bundle import compile_for_device
from edge_agent.protocol.request import Request
from edge_agent.protocol.revocation import Revocation, RevocationKind
from edge_agent.trust.clock import SIGNED_TIME_SKEW_S, TimeFloor
from edge_agent.trust.gate import (
    GATE_OPEN,
    LastDecision,
    Reason,
    check_report,
    decide,
    gate_state,
    lineage_unavailable,
)
from edge_agent.trust.state import TrustState, with_bundle, with_revocation
from tests.factory import DAY, DEVICE, NOW, HubSim

CAMERA = Request("svc:camera", "exec", "/opt/camera/bin/capture")
SHELL = Request("svc:camera", "exec", "/bin/sh")
UNKNOWN = Request("svc:other", "exec", "/opt/other")


def _state(**bundle_kwargs: object) -> TrustState:
    sim = HubSim()
    root = sim.root()
    state = TrustState(device=DEVICE, root=root)
    bundle = compile_for_device(
        sim.bundle(1, **bundle_kwargs), root=root, device=DEVICE, installed=None, now=None
    )
    return with_bundle(state, bundle)


def test_no_bundle_denies() -> None:
    state = TrustState(device=DEVICE, root=HubSim().root())
    decision = decide(state, CAMERA, NOW)
    assert (decision.allowed, decision.reason) == (False, Reason.NO_BUNDLE)


def test_policy_allow_deny_and_default() -> None:
    state = _state()
    assert decide(state, CAMERA, NOW).reason == Reason.ALLOWED
    assert decide(state, CAMERA, NOW).rule_id == "camera-exec"
    denied = decide(state, SHELL, NOW)
    assert (denied.allowed, denied.reason, denied.rule_id) == (
        False,
        Reason.POLICY_DENIED,
        "no-shells",
    )
    assert decide(state, UNKNOWN, NOW).reason == Reason.NO_MATCHING_RULE


def test_expired_bundle_denies_from_the_expiry_second() -> None:
    state = _state(expires_at=NOW + 10)
    assert decide(state, CAMERA, NOW + 9).allowed
    decision = decide(state, CAMERA, NOW + 10)
    assert (decision.allowed, decision.reason) == (False, Reason.BUNDLE_EXPIRED)


def test_max_offline_denies_before_the_ttl() -> None:
    state = _state(max_offline=3600)
    assert decide(state, CAMERA, NOW).allowed
    assert decide(state, CAMERA, NOW - 60 + 3600).reason == Reason.FRESHNESS_EXPIRED


@pytest.mark.parametrize("back", [SIGNED_TIME_SKEW_S + 1, DAY, NOW])
def test_clock_set_back_past_the_floor_denies(back: int) -> None:
    state = _state()
    issued_at = NOW - 60
    assert state.floor.signed == issued_at - SIGNED_TIME_SKEW_S
    decision = decide(state, CAMERA, issued_at - back)
    assert (decision.allowed, decision.reason) == (False, Reason.CLOCK_UNTRUSTED)


def test_clock_floor_never_goes_down() -> None:
    state = replace(_state(), floor=TimeFloor(NOW + 100))
    assert decide(state, CAMERA, NOW).reason == Reason.CLOCK_UNTRUSTED
    assert decide(state, CAMERA, NOW + 100).allowed


def test_attestation_expectations_without_a_verdict_deny() -> None:
    expected = {"measurements": {"kernel": [bytes(32)]}}
    state = _state(attestation={"profiles": {"generic-x86_64": expected}})
    assert decide(state, CAMERA, NOW).reason == Reason.ATTESTATION_FAILED


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (RevocationKind.DEVICE, "gw-001"),
        (RevocationKind.GROUP, "line-a"),
        (RevocationKind.REGION, "eu-1"),
        (RevocationKind.BUNDLE, "1"),
    ],
)
def test_revocation_covering_this_device_denies(kind: RevocationKind, value: str) -> None:
    state = with_revocation(_state(), Revocation(1, NOW, kind, value, "stolen"))
    decision = decide(state, CAMERA, NOW)
    assert (decision.allowed, decision.reason) == (False, Reason.REVOKED)
    assert "stolen" in decision.message


def test_revocation_of_another_device_does_not_deny() -> None:
    state = with_revocation(_state(), Revocation(1, NOW, RevocationKind.DEVICE, "gw-2", ""))
    assert decide(state, CAMERA, NOW).allowed


def test_newer_bundle_lifts_a_scope_revocation() -> None:
    sim = HubSim()
    root = sim.root()
    revoked = with_revocation(
        TrustState(device=DEVICE, root=root),
        Revocation(1, NOW - 3600, RevocationKind.DEVICE, "gw-001", ""),
    )
    bundle = compile_for_device(sim.bundle(2), root=root, device=DEVICE, installed=None, now=NOW)
    assert decide(with_bundle(revoked, bundle), CAMERA, NOW).allowed


def test_fault_denies_with_internal_error() -> None:
    state = replace(_state(), fault="the installed bundle failed verification")
    assert decide(state, CAMERA, NOW).reason == Reason.INTERNAL_ERROR


def test_unexpected_exception_denies_with_internal_error() -> None:
    state = replace(_state(), bundle=object())  # type: ignore[arg-type]
    decision = decide(state, CAMERA, NOW)
    assert (decision.allowed, decision.reason) == (False, Reason.INTERNAL_ERROR)


def test_lineage_unavailable_turns_an_allow_into_a_deny() -> None:
    decision = lineage_unavailable(decide(_state(), CAMERA, NOW), "disk full")
    assert (decision.allowed, decision.reason) == (False, Reason.LINEAGE_UNAVAILABLE)


def test_check_report_names_every_failing_check() -> None:
    state = _state(expires_at=NOW + 10)
    report = {c.name: c.passed for c in check_report(state, NOW + 20)}
    assert report == {
        "state": True,
        "clock": True,
        "root": True,
        "bundle": True,
        "expiry": False,
        "attestation": True,
        "revocation": True,
    }


def test_same_inputs_give_the_same_decision_digest() -> None:
    state = _state()
    assert decide(state, CAMERA, NOW).digest == decide(state, CAMERA, NOW).digest
    assert decide(state, CAMERA, NOW).digest != decide(state, CAMERA, NOW + 1).digest


def test_the_gate_state_is_open_only_when_every_check_passes_and_the_lineage_is_usable() -> None:
    assert gate_state(check_report(_state(), NOW), None) == GATE_OPEN
    expired = check_report(_state(expires_at=NOW + 10), NOW + 10)
    assert gate_state(expired, None) is Reason.BUNDLE_EXPIRED
    assert (
        gate_state(check_report(_state(), NOW), "the lineage is not open")
        is Reason.LINEAGE_UNAVAILABLE
    )
    assert gate_state(expired, "file deleted") is Reason.LINEAGE_UNAVAILABLE


def test_the_last_decision_is_given_again_only_for_the_very_same_state_request_and_time() -> None:
    state = _state()
    revoked = with_revocation(state, Revocation(1, NOW, RevocationKind.DEVICE, "gw-001", "stolen"))
    equal_state = replace(state)
    remembered = LastDecision()
    first = remembered.decide(state, CAMERA, NOW)
    assert remembered.decide(state, replace(CAMERA), NOW) is first
    # Anything else is decided afresh, and equals what decide() gives.
    for asked_state, request, now in [
        (revoked, CAMERA, NOW),
        (equal_state, CAMERA, NOW),
        (state, SHELL, NOW),
        (state, replace(CAMERA, selectors=("uid:0",)), NOW),
        (state, replace(CAMERA, context=(("k", "v"),)), NOW),
        (state, CAMERA, NOW + 1),
        (state, CAMERA, NOW),
    ]:
        decision = remembered.decide(asked_state, request, now)
        assert decision == decide(asked_state, request, now)
        assert (asked_state, request, now) == (state, CAMERA, NOW) or decision is not first
    assert remembered.decide(revoked, CAMERA, NOW).reason == Reason.REVOKED

"""The agent's trust machine, as tables: (trust state, object bytes, now) -> outcome.

Pure: every object is signed with real keys (``tests.factory.HubSim``), ``now`` is a
parameter, and nothing touches SQLite, a broker, a file or a clock. Each row names what
the shell must do with the outcome: the write, the lineage transition, the signed time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from edge_agent.protocol.attestation import AttestationResult, Verdict, sign_result
from edge_agent.protocol.expectations import measured_digest
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import Kind
from edge_agent.protocol.revocation import verify_revocation
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import sign_root
from edge_agent.trust import machine
from edge_agent.trust.clock import SIGNED_TIME_SKEW_S, TimeFloor, advance_floor
from edge_agent.trust.gate import Reason
from edge_agent.trust.state import (
    RevocationEffect,
    TrustState,
    revocation_effect,
    with_revocation,
)
from tests.factory import DAY, DEVICE, NOW, HubSim

NONCE = b"n" * 32
MEASURED = hashlib.sha256(b"measured state").digest()


def _fresh(sim: HubSim) -> TrustState:
    return TrustState(DEVICE, sim.root())


def _installed(sim: HubSim, version: int = 1, **bundle: object) -> TrustState:
    """A state with bundle ``version`` installed through the machine itself."""
    outcome = machine.accept_bundle(_fresh(sim), sim.bundle(version, **bundle), NOW)
    assert isinstance(outcome, machine.Outcome)
    return outcome.state


def _accepted(outcome: machine.Outcome[object] | machine.Refused) -> machine.Outcome[object]:
    assert isinstance(outcome, machine.Outcome), outcome
    return outcome


def _refused(outcome: machine.Outcome[object] | machine.Refused) -> machine.Refused:
    assert isinstance(outcome, machine.Refused), outcome
    return outcome


# --- bundles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleCase:
    name: str
    state: Callable[[HubSim], TrustState]
    data: Callable[[HubSim], bytes]
    now: int = NOW
    installs: int | None = None
    """The version it installs (``None``: no change, or refused)."""
    code: str = ""
    """The refusal code (empty: accepted)."""


BUNDLE_CASES = [
    BundleCase("a first bundle", _fresh, lambda s: s.bundle(1), installs=1),
    BundleCase("a newer bundle", _installed, lambda s: s.bundle(2), installs=2),
    BundleCase("the installed bytes again", _installed, lambda s: s.bundle(1)),
    BundleCase(
        "an older bundle", lambda s: _installed(s, 2), lambda s: s.bundle(1), code="bundle_rollback"
    ),
    BundleCase(
        "an expired bundle",
        _fresh,
        lambda s: s.bundle(1, expires_at=NOW + 10),
        now=NOW + 10,
        code="bundle_expired",
    ),
    BundleCase(
        "signed by a key the root does not name",
        _fresh,
        lambda s: s.bundle(1, signers=[PrivateKey.generate()]),
        code="bundle_signature",
    ),
    BundleCase(
        "issued too far ahead of trusted time",
        _fresh,
        lambda s: s.bundle(1, issued_at=NOW + SIGNED_TIME_SKEW_S + 1, expires_at=NOW + DAY),
        code="bundle_future",
    ),
]


@pytest.mark.parametrize("case", BUNDLE_CASES, ids=lambda c: c.name)
def test_a_bundle_is_installed_kept_or_refused_as_the_table_says(case: BundleCase) -> None:
    sim = HubSim()
    state, data = case.state(sim), case.data(sim)
    outcome = machine.accept_bundle(state, data, case.now)
    if case.code:
        refused = _refused(outcome)
        assert refused.error.code == case.code
        assert (refused.transition.kind, refused.transition.applied) == (
            Kind.BUNDLE_REJECTED,
            False,
        )
        assert refused.transition.reason == case.code
        return
    accepted = _accepted(outcome)
    if case.installs is None:
        assert accepted.state is state
        assert (accepted.write, accepted.transition, accepted.signed) == (None, None, None)
        return
    bundle = accepted.state.bundle
    assert bundle is not None and bundle.version == case.installs
    assert accepted.write == machine.BundleWrite(
        data, bundle.digest, bundle.version, accepted.state.floor
    )
    assert accepted.transition is not None
    assert (accepted.transition.kind, accepted.transition.bundle_version) == (
        Kind.BUNDLE_INSTALLED,
        case.installs,
    )
    assert accepted.signed == machine.SignedTime(bundle.issued_at, Role.POLICY)
    assert accepted.state.floor.mark(Role.POLICY) == bundle.issued_at - SIGNED_TIME_SKEW_S


def test_a_bundle_older_than_the_freshness_pin_is_refused_as_superseded() -> None:
    sim = HubSim()
    pinned = _accepted(machine.accept_freshness(_installed(sim), sim.freshness(sim.bundle(3)), NOW))
    refused = _refused(machine.accept_bundle(pinned.state, sim.bundle(2), NOW))
    assert refused.error.code == "bundle_superseded"


# --- roots ---------------------------------------------------------------------------------

NEW_ROOT_KEYS = [PrivateKey.generate() for _ in range(3)]


@dataclass(frozen=True)
class Stored:
    """The raw state as a store would hand it back (``trust.restore.StoredTrust``)."""

    identity: object = DEVICE
    roots: tuple[bytes, ...] = ()
    active_bundle: bytes | None = None
    active_version: int = 0
    floor: TimeFloor = field(default_factory=TimeFloor)
    revocations: tuple[bytes, ...] = ()
    revocation_epochs: tuple[int, ...] = ()
    seen_epoch: int = 0
    announced_epoch: int = 0
    freshness: bytes | None = None
    pin: bytes | None = None


def _root_v2(sim: HubSim, signers: list[PrivateKey] | None = None) -> bytes:
    payload = sim.root_payload(2, root_keys=NEW_ROOT_KEYS)
    return sign_root(payload, sim.root_keys[:2] + NEW_ROOT_KEYS[:2] if signers is None else signers)


@dataclass(frozen=True)
class RootCase:
    name: str
    data: Callable[[HubSim], bytes]
    rotates: bool = False
    code: str = ""


ROOT_CASES = [
    RootCase("the next root, signed by both thresholds", _root_v2, rotates=True),
    RootCase("the installed root again", lambda s: s.root_bytes()),
    RootCase(
        "signed by the old keys only", lambda s: _root_v2(s, s.root_keys), code="root_rejected"
    ),
    RootCase(
        "skipping a version",
        lambda s: sign_root(s.root_payload(3), s.root_keys),
        code="root_gap",
    ),
]


@pytest.mark.parametrize("case", ROOT_CASES, ids=lambda c: c.name)
def test_a_root_is_rotated_kept_or_refused_as_the_table_says(case: RootCase) -> None:
    sim = HubSim()
    state = _fresh(sim)
    outcome = machine.accept_root(state, case.data(sim), Stored())
    if case.code:
        refused = _refused(outcome)
        assert (refused.error.code, refused.transition.kind) == (case.code, Kind.ROOT_REJECTED)
        return
    accepted = _accepted(outcome)
    if not case.rotates:
        assert accepted.state is state and accepted.write is None
        return
    assert accepted.state.root.version == 2
    assert isinstance(accepted.write, machine.RootWrite)
    assert accepted.write.version == 2 and accepted.write.rotated == frozenset({Role.ROOT})
    assert accepted.transition is not None and accepted.transition.kind is Kind.ROOT_ROTATED
    assert accepted.signed == machine.SignedTime(accepted.state.root.issued_at, Role.ROOT)


def test_rotating_the_revoke_key_voids_what_it_signed_in_the_store() -> None:
    sim = HubSim()
    state = _installed(sim)
    old_key = sim.revocation(1, "device", "gw-999")
    revoked = _accepted(machine.accept_revocation(state, old_key)).state
    sim.online_keys = {**sim.online_keys, Role.REVOKE: [PrivateKey.generate()]}
    new_root = sign_root(sim.root_payload(2), sim.root_keys)
    stored = Stored(revocations=(old_key,), revocation_epochs=(1,))
    write = _accepted(machine.accept_root(revoked, new_root, stored)).write
    assert isinstance(write, machine.RootWrite)
    assert write.rotated == frozenset({Role.REVOKE})
    assert (write.void_revocations, write.seen_epoch, write.announced_epoch) == ((1,), 0, None)


def test_a_root_chain_is_checked_whole_before_anything_changes() -> None:
    sim = HubSim()
    state = _fresh(sim)
    chain = _accepted(machine.accept_root_chain(state, [_root_v2(sim)]))
    assert [r.version for r in chain.value] == [2]
    assert chain.state is state and chain.write is None
    gap = _refused(
        machine.accept_root_chain(state, [sign_root(sim.root_payload(3), sim.root_keys)])
    )
    assert (gap.error.code, gap.transition.kind) == ("root_gap", Kind.ROOT_REJECTED)


# --- revocations ---------------------------------------------------------------------------


def _with(sim: HubSim, *earlier: bytes) -> TrustState:
    state = _installed(sim)
    for data in earlier:
        state = _accepted(machine.accept_revocation(state, data)).state
    return state


@dataclass(frozen=True)
class RevocationCase:
    name: str
    state: Callable[[HubSim], TrustState]
    data: Callable[[HubSim], bytes]
    effect: RevocationEffect


REVOCATION_CASES = [
    RevocationCase("this device", _with, lambda s: s.revocation(1), RevocationEffect.APPLIES),
    RevocationCase(
        "this device's group",
        _with,
        lambda s: s.revocation(1, "group", "line-a"),
        RevocationEffect.APPLIES,
    ),
    RevocationCase(
        "a key (whatever the device)",
        _with,
        lambda s: s.revocation(1, "key", "ab" * 32),
        RevocationEffect.APPLIES,
    ),
    RevocationCase(
        "another device",
        _with,
        lambda s: s.revocation(1, "device", "gw-999"),
        RevocationEffect.NEW_EPOCH,
    ),
    RevocationCase(
        "lifted by the installed bundle (issued before it)",
        _with,
        lambda s: s.revocation(1, issued_at=NOW - 3600),
        RevocationEffect.NEW_EPOCH,
    ),
    RevocationCase(
        "the epoch already applied, delivered again",
        lambda s: _with(s, s.revocation(1)),
        lambda s: s.revocation(1),
        RevocationEffect.KNOWN,
    ),
    RevocationCase(
        "a lower epoch for another device after a higher one",
        lambda s: _with(s, s.revocation(5, "device", "gw-999")),
        lambda s: s.revocation(4, "device", "gw-998"),
        RevocationEffect.KNOWN,
    ),
    RevocationCase(
        "a lower epoch for this device, not seen before (out of order)",
        lambda s: _with(s, s.revocation(5, "device", "gw-999")),
        lambda s: s.revocation(4),
        RevocationEffect.APPLIES,
    ),
]


@pytest.mark.parametrize("case", REVOCATION_CASES, ids=lambda c: c.name)
def test_what_a_revocation_does_is_decided_once(case: RevocationCase) -> None:
    sim = HubSim()
    state, data = case.state(sim), case.data(sim)
    revocation = verify_revocation(data, root=state.root, region="eu-1")
    assert revocation_effect(state, revocation) is case.effect
    accepted = _accepted(machine.accept_revocation(state, data))
    if case.effect is RevocationEffect.KNOWN:
        assert accepted.state is state and with_revocation(state, revocation) is state
        assert (accepted.value, accepted.write, accepted.transition) == (None, None, None)
        return
    assert accepted.state == with_revocation(state, revocation)
    assert accepted.state.seen_epoch == max(state.seen_epoch, revocation.epoch)
    assert accepted.signed == machine.SignedTime(revocation.issued_at, Role.REVOKE)
    applies = case.effect is RevocationEffect.APPLIES
    assert accepted.write == machine.RevocationWrite(
        data, revocation.epoch, applies, accepted.state.seen_epoch, accepted.state.floor
    )
    if applies:
        assert accepted.value == revocation
        assert accepted.state.revocations == (*state.revocations, revocation)
        assert accepted.transition is not None
        assert (accepted.transition.kind, accepted.transition.reason) == (
            Kind.REVOCATION_APPLIED,
            "revoked",
        )
    else:
        assert (accepted.value, accepted.transition) == (None, None)
        assert accepted.state.revocations == state.revocations


def test_a_revocation_not_signed_by_the_revoke_role_is_refused_and_logged() -> None:
    sim = HubSim()
    forged = sim.revocation(1, signers=[PrivateKey.generate()])
    refused = _refused(machine.accept_revocation(_installed(sim), forged))
    assert refused.error.code == "revocation_rejected"
    assert (refused.transition.kind, refused.transition.applied) == (
        Kind.REVOCATION_REJECTED,
        False,
    )


# --- freshness tokens ----------------------------------------------------------------------


def test_a_token_pinning_the_installed_bundle_is_persisted_as_freshness_and_pin() -> None:
    sim = HubSim()
    state = _installed(sim)
    data = sim.freshness(sim.bundle(1), kill_epoch=3)
    accepted = _accepted(machine.accept_freshness(state, data, NOW))
    assert accepted.write == machine.FreshnessWrite(data, accepted.state.floor, 3, data)
    assert accepted.signed == machine.SignedTime(NOW, Role.FRESHNESS)
    assert accepted.transition is None
    again = _accepted(machine.accept_freshness(accepted.state, data, NOW))
    assert again.write is None


def test_a_token_for_another_channel_only_raises_the_floor() -> None:
    sim = HubSim()
    state = _installed(sim)
    data = sim.freshness(sim.bundle(7), channel="group/line-b")
    accepted = _accepted(machine.accept_freshness(state, data, NOW))
    assert accepted.write == machine.FreshnessWrite(None, accepted.state.floor, 0, None)
    assert accepted.state.pin is None and accepted.state.fresh_time is None


def test_an_expired_token_is_refused_and_logged() -> None:
    sim = HubSim()
    data = sim.freshness(sim.bundle(1), hub_time=NOW - 120, ttl=60)
    refused = _refused(machine.accept_freshness(_installed(sim), data, NOW))
    assert (refused.transition.kind, refused.transition.applied) == (
        Kind.FRESHNESS_REJECTED,
        False,
    )


# --- attestation results -------------------------------------------------------------------


def _result(sim: HubSim, *, measured: bytes = MEASURED, expires_at: int = NOW + 100) -> bytes:
    result = AttestationResult("gw-001", NONCE, Verdict.PASS, measured, NOW - 10, expires_at, "ok")
    return sign_result(result, key=sim.online_keys[Role.VERIFIER][0])


@dataclass(frozen=True)
class ResultCase:
    name: str
    data: Callable[[HubSim], bytes]
    answered: dict[bytes, bytes]
    accepted: bool


RESULT_CASES = [
    ResultCase("for a nonce answered with that state", _result, {NONCE: MEASURED}, True),
    ResultCase("for a nonce not answered", _result, {}, False),
    ResultCase("attesting another state", _result, {NONCE: b"x" * 32}, False),
    ResultCase("expired", lambda s: _result(s, expires_at=NOW), {NONCE: MEASURED}, False),
    ResultCase(
        "signed by a key the root does not name",
        lambda s: sign_result(
            AttestationResult("gw-001", NONCE, Verdict.PASS, MEASURED, NOW, NOW + 9, "ok"),
            key=PrivateKey.generate(),
        ),
        {NONCE: MEASURED},
        False,
    ),
]


@pytest.mark.parametrize("case", RESULT_CASES, ids=lambda c: c.name)
def test_an_attestation_result_is_kept_only_for_what_this_agent_answered(
    case: ResultCase,
) -> None:
    sim = HubSim()
    state = _installed(sim)
    outcome = machine.accept_attestation_result(state, case.data(sim), NOW, case.answered)
    if not case.accepted:
        refused = _refused(outcome)
        assert (refused.transition.kind, refused.transition.applied) == (
            Kind.ATTESTATION_FAILED,
            False,
        )
        return
    accepted = _accepted(outcome)
    assert accepted.state.attestation_result == accepted.value
    assert accepted.write == machine.AttestationWrite(accepted.state.floor)
    assert accepted.signed == machine.SignedTime(NOW - 10, Role.VERIFIER)
    held = _accepted(machine.accept_attestation_result(accepted.state, case.data(sim), NOW, {}))
    assert held.state is accepted.state and held.write is None


# --- local measurements -------------------------------------------------------------------

ATTESTED = {"profiles": {"generic-x86_64": {"measurements": {"os-release": [MEASURED]}}}}


@dataclass(frozen=True)
class Measured:
    """A local measurement, as the shell's ``MeasurementSet`` presents it to the verdict."""

    digests: dict[str, bytes]
    errors: tuple[str, ...] = ()

    @property
    def items(self) -> tuple[str, ...]:
        return tuple(self.digests)

    @property
    def digest(self) -> bytes:
        return measured_digest(self.digests)


def test_a_measurement_becomes_the_local_verdict_and_a_failing_one_voids_the_hub_result() -> None:
    sim = HubSim()
    state = _installed(sim, attestation=ATTESTED)
    held = _accepted(machine.accept_attestation_result(state, _result(sim), NOW, {NONCE: MEASURED}))
    passing = machine.accept_measurement(held.state, Measured({"os-release": MEASURED}), NOW, 60)
    assert passing.value.passed and passing.state.local_attestation == passing.value
    assert passing.state.attestation_result is held.value
    assert (passing.write, passing.transition) == (machine.AttestationWrite(None), None)
    failing = machine.accept_measurement(held.state, Measured({"os-release": bytes(32)}), NOW, 60)
    assert not failing.value.passed and failing.state.local_attestation == failing.value
    assert failing.state.attestation_result is None


# --- observations --------------------------------------------------------------------------


def _floored(sim: HubSim) -> TrustState:
    state = _installed(sim, expires_at=NOW + 100)
    return TrustState(
        state.device, state.root, state.bundle, advance_floor(state.floor, NOW, Role.FRESHNESS)
    )


@dataclass(frozen=True)
class ClockCase:
    name: str
    wall: int
    was_trusted: bool
    trusted: bool
    logs: Kind | None


FLOOR = NOW - SIGNED_TIME_SKEW_S
CLOCK_CASES = [
    ClockCase("behind the floor, was trusted", FLOOR - 1, True, False, Kind.CLOCK_UNTRUSTED),
    ClockCase("behind the floor, already untrusted", FLOOR - 1, False, False, None),
    ClockCase("back at the floor", FLOOR, False, True, Kind.CLOCK_RESTORED),
    ClockCase("ahead of the floor, still trusted", NOW, True, True, None),
]


@pytest.mark.parametrize("case", CLOCK_CASES, ids=lambda c: c.name)
def test_the_clock_verdict_and_its_changes(case: ClockCase) -> None:
    state = _floored(HubSim())
    seen = machine.observe_clock(state, case.wall, case.wall, trusted=case.was_trusted)
    assert seen.trusted is case.trusted
    assert (seen.transition.kind if seen.transition else None) is case.logs


def test_a_trusted_clock_past_the_bundle_expiry_observes_that_deadline() -> None:
    state = _floored(HubSim())
    seen = machine.observe_clock(state, NOW + 150, NOW + 150, trusted=True)
    assert seen.state.floor.observed == NOW + 100
    assert machine.observe_clock(state, NOW + 50, NOW + 50, trusted=True).state is state


def test_a_passed_deadline_is_a_floor_to_persist_and_none_passed_is_nothing_to_do() -> None:
    state = _floored(HubSim())
    assert machine.observe_deadlines(state, NOW + 50) is None
    observed = machine.observe_deadlines(state, NOW + 150)
    assert observed is not None and observed.value.observed == NOW + 100
    assert observed.state.floor == observed.value
    assert (observed.write, observed.transition) == (machine.FloorWrite(observed.value), None)
    assert machine.observe_deadlines(observed.state, NOW + 150) is None


def test_the_attestation_verdict_is_logged_only_when_it_changes() -> None:
    sim = HubSim()
    attested = _installed(
        sim,
        attestation={"profiles": {"generic-x86_64": {"measurements": {"os-release": [MEASURED]}}}},
    )
    first = machine.observe_attestation(attested, NOW, NOW, seen=machine.ATTESTATION_UNOBSERVED)
    assert first.verdict is Reason.ATTESTATION_FAILED
    assert first.transition is not None and first.transition.kind is Kind.ATTESTATION_FAILED
    assert machine.observe_attestation(attested, NOW, NOW, seen=first.verdict).transition is None
    plain = machine.observe_attestation(_installed(sim), NOW, NOW, seen=first.verdict)
    assert (plain.verdict, plain.transition) == (machine.ATTESTATION_NOT_REQUIRED, None)

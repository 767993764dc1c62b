"""Freshness tokens, revocation delivery rules and the signed device/hub exchange objects."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from edge_agent.policy.bundle import compile_for_device
from edge_agent.protocol.freshness import FreshnessError, verify_freshness
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.request import Request
from edge_agent.protocol.revocation import verify_revocation
from edge_agent.protocol.roles import Role
from edge_agent.protocol.shipping import (
    Ack,
    DeviceStatus,
    LineageBatch,
    ShippingError,
    sign_ack,
    sign_batch,
    sign_status,
    verify_ack,
    verify_batch,
    verify_status,
)
from edge_agent.trust.gate import Reason, decide
from edge_agent.trust.state import TrustState, with_bundle, with_freshness, with_revocation
from tests.factory import DEVICE, NOW, HubSim

REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")


@pytest.fixture
def hub() -> HubSim:
    return HubSim()


def _state(hub: HubSim, bundle: bytes) -> TrustState:
    root = hub.root()
    verified = compile_for_device(bundle, root=root, device=DEVICE, installed=None, now=NOW)
    return with_bundle(TrustState(DEVICE, root), verified)


def test_freshness_token_pinning_the_bundle_extends_max_offline(hub: HubSim) -> None:
    bundle = hub.bundle(issued_at=NOW - 60, max_offline=30)
    state = _state(hub, bundle)
    assert decide(state, REQUEST, NOW).reason is Reason.FRESHNESS_EXPIRED
    token = verify_freshness(
        hub.freshness(bundle, hub_time=NOW), root=hub.root(), region="eu-1", now=NOW
    )
    fresh = with_freshness(state, token)
    assert decide(fresh, REQUEST, NOW + 29).allowed
    denied = decide(fresh, REQUEST, NOW + 30)
    assert denied.reason is Reason.FRESHNESS_EXPIRED
    assert "max_offline" in denied.message


def test_freshness_token_for_another_bundle_refreshes_nothing_but_advances_time(
    hub: HubSim,
) -> None:
    bundle = hub.bundle(issued_at=NOW - 60, max_offline=30)
    newer = hub.bundle(2, issued_at=NOW - 10, max_offline=30)
    state = _state(hub, bundle)
    token = verify_freshness(
        hub.freshness(newer, hub_time=NOW + 1000), root=hub.root(), region="eu-1", now=NOW
    )
    after = with_freshness(state, token)
    assert after.fresh_time is None
    assert after.floor.seconds > state.floor.seconds
    assert decide(after, REQUEST, NOW + 1000).reason is Reason.FRESHNESS_EXPIRED


def test_installing_a_new_bundle_forgets_the_old_bundles_freshness(hub: HubSim) -> None:
    bundle = hub.bundle(issued_at=NOW - 60, max_offline=30)
    state = _state(hub, bundle)
    token = verify_freshness(hub.freshness(bundle), root=hub.root(), region="eu-1", now=NOW)
    state = with_freshness(state, token)
    newer = compile_for_device(
        hub.bundle(2, issued_at=NOW - 50, max_offline=30),
        root=hub.root(),
        device=DEVICE,
        installed=state.installed,
        now=NOW,
    )
    assert with_bundle(state, newer).fresh_time is None


@pytest.mark.parametrize(
    ("label", "make"),
    [
        (
            "signed by the revoke key",
            lambda h, b: h.freshness(b, key=h.online_keys[Role.REVOKE][0]),
        ),
        ("signed by an unknown key", lambda h, b: h.freshness(b, key=PrivateKey.generate())),
        ("for another region", lambda h, b: h.freshness(b, region="us-2")),
        ("expired", lambda h, b: h.freshness(b, hub_time=NOW - 120, ttl=60)),
        ("garbage", lambda h, b: b"\xd2garbage"),
        ("a bundle", lambda h, b: b),
    ],
)
def test_bad_freshness_tokens_are_refused(hub: HubSim, label: str, make: object) -> None:
    bundle = hub.bundle()
    with pytest.raises(FreshnessError):
        verify_freshness(make(hub, bundle), root=hub.root(), region="eu-1", now=NOW)  # type: ignore[operator]


def test_announced_kill_epoch_not_yet_received_denies(hub: HubSim) -> None:
    bundle = hub.bundle()
    state = _state(hub, bundle)
    token = verify_freshness(
        hub.freshness(bundle, kill_epoch=3), root=hub.root(), region="eu-1", now=NOW
    )
    state = with_freshness(state, token)
    assert decide(state, REQUEST, NOW).reason is Reason.REVOKED
    other = verify_revocation(hub.revocation(3, "device", "gw-999"), root=hub.root(), region="eu-1")
    assert decide(with_revocation(state, other), REQUEST, NOW).allowed


def _revocation(hub: HubSim, epoch: int, kind: str = "device", value: str = "gw-001", **kw: object):
    return verify_revocation(
        hub.revocation(epoch, kind, value, **kw), root=hub.root(), region="eu-1"
    )  # type: ignore[arg-type]


def test_device_revocation_denies_only_that_device(hub: HubSim) -> None:
    state = _state(hub, hub.bundle())
    revoked = with_revocation(state, _revocation(hub, 1))
    assert decide(revoked, REQUEST, NOW).reason is Reason.REVOKED
    neighbour = replace(state, device=replace(DEVICE, device_id="gw-002"))
    assert decide(with_revocation(neighbour, _revocation(hub, 1)), REQUEST, NOW).allowed


def test_revocation_lifted_by_a_newer_bundle_changes_nothing_when_replayed(hub: HubSim) -> None:
    state = _state(hub, hub.bundle(issued_at=NOW - 600))
    revocation = _revocation(hub, 1, issued_at=NOW - 300)
    state = with_revocation(state, revocation)
    newer = compile_for_device(
        hub.bundle(2, issued_at=NOW - 60),
        root=hub.root(),
        device=DEVICE,
        installed=state.installed,
        now=NOW,
    )
    lifted = with_bundle(state, newer)
    assert decide(lifted, REQUEST, NOW).allowed
    assert decide(with_revocation(lifted, revocation), REQUEST, NOW).allowed


def test_revocations_arriving_out_of_epoch_order_all_apply(hub: HubSim) -> None:
    state = _state(hub, hub.bundle())
    state = with_revocation(state, _revocation(hub, 5, "device", "gw-777"))
    state = with_revocation(state, _revocation(hub, 4, "group", "line-a"))
    assert state.seen_epoch == 5
    assert decide(state, REQUEST, NOW).reason is Reason.REVOKED


def test_lineage_batch_round_trips_and_binds_the_device(hub: HubSim) -> None:
    key = PrivateKey.generate()
    batch = LineageBatch("gw-001", 0, (b"\xa0", b"\xa1"), "note")
    data = sign_batch(batch, key)
    assert verify_batch(data, device="gw-001", key=key.public) == batch
    with pytest.raises(ShippingError):
        verify_batch(data, device="gw-002", key=key.public)
    with pytest.raises(ShippingError):
        verify_batch(data, device="gw-001", key=PrivateKey.generate().public)
    with pytest.raises(ShippingError):
        verify_status(data, device="gw-001", key=key.public)


def test_ack_must_come_from_a_freshness_key_for_this_device(hub: HubSim) -> None:
    ack = Ack("gw-001", 10, hashlib.sha256(b"x").digest(), NOW)
    good = sign_ack(ack, key=hub.online_keys[Role.FRESHNESS][0])
    assert verify_ack(good, root=hub.root(), device="gw-001") == ack
    with pytest.raises(ShippingError):
        verify_ack(good, root=hub.root(), device="gw-002")
    forged = sign_ack(ack, key=hub.online_keys[Role.REVOKE][0])
    with pytest.raises(ShippingError):
        verify_ack(forged, root=hub.root(), device="gw-001")


def test_status_round_trips() -> None:
    key = PrivateKey.generate()
    status = DeviceStatus("gw-001", NOW, False, 3, NOW + 60, "open", 12, 10)
    assert verify_status(sign_status(status, key), device="gw-001", key=key.public) == status


@pytest.mark.parametrize("gate", ["open", "bundle_expired", "x" * 64])
def test_a_status_gate_that_is_open_or_a_reason_code_is_accepted(gate: str) -> None:
    key = PrivateKey.generate()
    status = DeviceStatus("gw-001", NOW, True, 3, None, gate, 0, 0)
    assert verify_status(sign_status(status, key), device="gw-001", key=key.public) == status


@pytest.mark.parametrize(
    "gate", ["", "op\x00en", "open\n", "Open", "bundle-expired", "<b>", "é", "x" * 65]
)
def test_a_signed_status_whose_gate_is_not_a_reason_token_is_refused(gate: str) -> None:
    """The gate reaches both registry backends and the console as it is: PostgreSQL text
    cannot hold NUL, so a gate outside the agent's own tokens is refused for all alike."""
    key = PrivateKey.generate()
    status = DeviceStatus("gw-001", NOW, True, 3, None, gate, 0, 0)
    with pytest.raises(ShippingError, match="reason code"):
        verify_status(sign_status(status, key), device="gw-001", key=key.public)


def test_key_revocations_count_together_against_the_policy_threshold() -> None:
    hub = HubSim(policy_keys=[PrivateKey.generate() for _ in range(3)], policy_threshold=2)
    state = _state(hub, hub.bundle(signers=hub.policy_keys))
    first, second = (k.public.key_id.hex() for k in hub.policy_keys[:2])
    state = with_revocation(state, _revocation(hub, 1, "key", first))
    assert decide(state, REQUEST, NOW).allowed
    state = with_revocation(state, _revocation(hub, 2, "key", second))
    denied = decide(state, REQUEST, NOW)
    assert denied.reason is Reason.REVOKED
    assert "1 signature(s)" in denied.message

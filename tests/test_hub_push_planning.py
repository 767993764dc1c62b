"""Push and revocation planning as values: no registry, broker or clock.

:func:`hub.core.push.plan_push` gets what the caller read (the channels' current bundles,
the current revocations, the registered devices); :func:`hub.core.push.revocation_region`
gets a :class:`hub.core.push.HubInventory`. Bundles and revocations are signed for real.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pytest

from edge_agent.errors import BundleError, ConfigError
from edge_agent.policy.bundle import compile_for_device
from edge_agent.protocol.bundle import BundleTarget
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.revocation import RevocationKind, verify_revocation
from edge_agent.protocol.roles import Role
from edge_agent.trust.clock import SIGNED_TIME_SKEW_S
from edge_agent.trust.state import BundleAheadError, TrustState, check_admissible
from hub.core.bundles import verify_operator_bundle
from hub.core.push import (
    HubInventory,
    LiftedRevocation,
    PushPlan,
    plan_push,
    revocation_region,
    sign_next_revocation,
)
from hub.registry.records import DeviceRecord, IssuedRevocation, PublishedBundle
from tests.factory import DEVICE, NOW, HubSim

HUB = HubSim()
ROOT = HUB.root()
KEY = PrivateKey.generate().public
DEVICES = (
    DeviceRecord("gw-001", "eu-1", ("line-a",), "generic-x86_64", KEY),
    DeviceRecord("gw-002", "eu-1", ("line-b",), "generic-x86_64", KEY),
    DeviceRecord("us-001", "us-1", ("line-a",), "generic-x86_64", KEY),
)
CHANNEL = "group/line-a"
POLICY_KEY = HUB.policy_keys[0].public.key_id.hex()


def _current(
    version: int,
    *,
    region: str = "eu-1",
    data: bytes | None = None,
    channel: str = CHANNEL,
    issued_at: int = NOW - 60,
) -> PublishedBundle:
    data = HUB.bundle(version, issued_at=issued_at) if data is None else data
    digest = hashlib.sha256(data).digest()
    return PublishedBundle(region, channel, version, digest, data, NOW + 86400, None, NOW)


def _revoked(
    kind: str, value: str, *, region: str = "eu-1", epoch: int = 1, issued_at: int = NOW
) -> IssuedRevocation:
    return IssuedRevocation(region, epoch, kind, value, "test", b"", issued_at)


@dataclass(frozen=True)
class Push:
    name: str
    current: tuple[PublishedBundle, ...] = ()
    revocations: tuple[IssuedRevocation, ...] = ()
    code: str | None = None
    """``None``: planned, else the refusal code."""
    unchanged: tuple[str, ...] = ()


PUSHES = [
    Push("a channel with no bundle yet"),
    Push("a channel holding a lower version", current=(_current(1),)),
    Push("exactly this bundle is current already", current=(_current(2),), unchanged=(CHANNEL,)),
    Push("a higher version is current", current=(_current(3),), code="bundle_rollback"),
    Push(
        "the same version with other bytes",
        current=(_current(2, data=HUB.bundle(2, expires_at=NOW + 7200)),),
        code="bundle_conflict",
    ),
    Push("another region's higher version", current=(_current(3, region="us-1"),)),
    Push(
        "a revocation of its version", revocations=(_revoked("bundle", "2"),), code="bundle_revoked"
    ),
    Push("a revocation of a lower version", revocations=(_revoked("bundle", "1"),)),
    Push(
        "a revoked signing key", revocations=(_revoked("key", POLICY_KEY),), code="bundle_revoked"
    ),
    Push("another region's revocation", revocations=(_revoked("bundle", "9", region="us-1"),)),
    Push("a device revocation", revocations=(_revoked("device", "gw-001"),)),
    Push(
        "a higher version on the device channel of a device it targets",
        current=(_current(3, channel="device/gw-001"),),
        code="bundle_rollback",
    ),
    Push(
        "the same version with other bytes on the all channel",
        current=(_current(2, channel="all/_", data=HUB.bundle(2, expires_at=NOW + 7200)),),
        code="bundle_conflict",
    ),
    Push("exactly this bundle on the all channel", current=(_current(2, channel="all/_"),)),
    Push(
        "a higher version on a channel no targeted device listens on",
        current=(_current(3, channel="group/line-b"), _current(3, channel="device/gw-002")),
    ),
]


@pytest.mark.parametrize("case", PUSHES, ids=lambda c: c.name)
def test_a_push_is_planned_against_what_is_current(case: Push) -> None:
    bundle = verify_operator_bundle(HUB.bundle(2), root=ROOT, now=NOW)

    def plan() -> PushPlan:
        return plan_push(
            bundle, root=ROOT, devices=DEVICES, current=case.current, revocations=case.revocations
        )

    if case.code is not None:
        with pytest.raises(BundleError) as caught:
            plan()
        assert caught.value.code == case.code
        return
    assert plan() == PushPlan(bundle, (CHANNEL,), case.unchanged, ("gw-001",))


def test_a_push_a_device_would_refuse_is_not_planned() -> None:
    with pytest.raises(BundleError) as caught:
        verify_operator_bundle(HUB.bundle(2, expires_at=NOW - 1), root=ROOT, now=NOW)
    assert caught.value.code == "bundle_expired"
    with pytest.raises(BundleError) as caught:
        verify_operator_bundle(b"not a bundle", root=ROOT, now=NOW)
    assert caught.value.code == "bundle_format"


def test_a_bundle_issued_further_ahead_than_devices_allow_is_refused_in_their_words() -> None:
    ahead = HUB.bundle(2, issued_at=NOW + SIGNED_TIME_SKEW_S + 1)
    with pytest.raises(BundleAheadError) as at_hub:
        verify_operator_bundle(ahead, root=ROOT, now=NOW)
    on_device = compile_for_device(ahead, root=ROOT, device=DEVICE, installed=None, now=NOW)
    with pytest.raises(BundleAheadError) as at_device:
        check_admissible(TrustState(DEVICE, ROOT), on_device, NOW)
    assert at_hub.value.code == at_device.value.code == "bundle_future"
    assert at_hub.value.message == at_device.value.message
    edge = verify_operator_bundle(
        HUB.bundle(2, issued_at=NOW + SIGNED_TIME_SKEW_S), root=ROOT, now=NOW
    )
    assert edge.version == 2


IN_BOTH = DeviceRecord("gw-003", "eu-1", ("line-a", "line-b"), "generic-x86_64", KEY)
LINE_B = BundleTarget("eu-1", groups=("line-b",))


@pytest.mark.parametrize(
    ("version", "code", "words"),
    [
        (5, "bundle_conflict", "device gw-003 gets version 5 with other contents on group/line-a"),
        (4, "bundle_rollback", "older than version 5, which device gw-003 gets on group/line-a"),
    ],
    ids=["same-version-other-bytes", "older-version"],
)
def test_a_device_in_two_groups_is_never_sent_what_it_would_refuse_from_the_other(
    version: int, code: str, words: str
) -> None:
    held = _current(5)
    other = verify_operator_bundle(
        HUB.bundle(version, target=LINE_B, issued_at=NOW - 30), root=ROOT, now=NOW
    )
    with pytest.raises(BundleError, match=re.escape(words)) as caught:
        plan_push(other, root=ROOT, devices=(*DEVICES, IN_BOTH), current=(held,), revocations=())
    assert caught.value.code == code
    plan = plan_push(other, root=ROOT, devices=DEVICES, current=(held,), revocations=())
    assert (plan.channels, plan.targeted) == (("group/line-b",), ("gw-002",))


EARLY = NOW - 120
"""Before the pushed bundle's ``issued_at`` (``NOW - 60``): its devices lift what was issued
then."""
LINE_A_DEVICES = (*DEVICES, DeviceRecord("gw-004", "eu-1", ("line-a",), "generic-x86_64", KEY))


@dataclass(frozen=True)
class Lift:
    name: str
    revocations: tuple[IssuedRevocation, ...]
    current: tuple[PublishedBundle, ...] = ()
    lifted: tuple[tuple[int, tuple[str, ...]], ...] = ()
    """(epoch, devices) of each revocation the push lifts."""


LIFTS = [
    Lift(
        "a device revocation issued before the bundle",
        (_revoked("device", "gw-001", issued_at=EARLY),),
        lifted=((1, ("gw-001",)),),
    ),
    Lift("a device revocation issued after the bundle", (_revoked("device", "gw-001"),)),
    Lift(
        "a group revocation issued before the bundle",
        (_revoked("group", "line-a", issued_at=EARLY),),
        lifted=((1, ("gw-001", "gw-004")),),
    ),
    Lift(
        "a region revocation issued before the bundle",
        (_revoked("region", "eu-1", issued_at=EARLY),),
        lifted=((1, ("gw-001", "gw-004")),),
    ),
    Lift(
        "a device and a group revocation",
        (
            _revoked("device", "gw-001", issued_at=EARLY),
            _revoked("group", "line-a", epoch=2, issued_at=EARLY),
        ),
        lifted=((1, ("gw-001",)), (2, ("gw-001", "gw-004"))),
    ),
    Lift("another group's revocation", (_revoked("group", "line-b", issued_at=EARLY),)),
    Lift(
        "another region's revocation",
        (_revoked("device", "gw-001", region="us-1", issued_at=EARLY),),
    ),
    Lift("a bundle revocation is never lifted", (_revoked("bundle", "1", issued_at=EARLY),)),
    Lift(
        "the bundle held there lifted it already",
        (_revoked("group", "line-a", issued_at=EARLY),),
        current=(_current(1, issued_at=EARLY + 1),),
    ),
    Lift(
        "the bundle held there was issued before it",
        (_revoked("group", "line-a", issued_at=EARLY),),
        current=(_current(1, issued_at=EARLY - 1),),
        lifted=((1, ("gw-001", "gw-004")),),
    ),
    Lift(
        "a bundle held on one device's channel lifted it there only",
        (_revoked("group", "line-a", issued_at=EARLY),),
        current=(
            _current(
                1,
                channel="device/gw-001",
                data=HUB.bundle(
                    1, target=BundleTarget("eu-1", devices=("gw-001",)), issued_at=EARLY + 1
                ),
            ),
        ),
        lifted=((1, ("gw-004",)),),
    ),
    Lift(
        "a bundle held there that does not target them lifted nothing",
        (_revoked("group", "line-a", issued_at=EARLY),),
        current=(
            _current(
                1,
                data=HUB.bundle(
                    1, target=BundleTarget("eu-1", profiles=("rpi4",)), issued_at=EARLY + 1
                ),
            ),
        ),
        lifted=((1, ("gw-001", "gw-004")),),
    ),
]


@pytest.mark.parametrize("case", LIFTS, ids=lambda c: c.name)
def test_a_push_that_lifts_revocations_names_them_and_goes_ahead_only_when_told(
    case: Lift,
) -> None:
    bundle = verify_operator_bundle(HUB.bundle(2), root=ROOT, now=NOW)

    def plan(lift: bool) -> PushPlan:
        return plan_push(
            bundle,
            root=ROOT,
            devices=LINE_A_DEVICES,
            current=case.current,
            revocations=case.revocations,
            lift_revocations=lift,
        )

    lifted = plan(True).lifted
    assert [(lift.revocation.epoch, lift.devices) for lift in lifted] == list(case.lifted)
    if not case.lifted:
        assert plan(False).lifted == ()
        return
    with pytest.raises(ConfigError, match="--lift-revocations") as caught:
        plan(False)
    assert all(lift.describe() in caught.value.message for lift in lifted)


def test_a_refused_lift_names_the_device_the_epoch_and_the_reason() -> None:
    stolen = IssuedRevocation("eu-1", 3, "device", "gw-001", "stolen", b"", EARLY)
    bundle = verify_operator_bundle(HUB.bundle(2), root=ROOT, now=NOW)
    words = "would lift revocation epoch 3 of eu-1 (device gw-001, reason 'stolen') on gw-001"
    with pytest.raises(ConfigError, match=re.escape(words)):
        plan_push(bundle, root=ROOT, devices=DEVICES, current=(), revocations=(stolen,))
    plan = plan_push(
        bundle,
        root=ROOT,
        devices=DEVICES,
        current=(),
        revocations=(stolen,),
        lift_revocations=True,
    )
    assert plan.lifted == (LiftedRevocation(stolen, ("gw-001",)),)


def test_a_push_to_devices_names_the_registered_devices_it_targets() -> None:
    target = BundleTarget(region="eu-1", devices=("gw-002", "gw-404"))
    bundle = verify_operator_bundle(HUB.bundle(2, target=target), root=ROOT, now=NOW)
    plan = plan_push(bundle, root=ROOT, devices=DEVICES, current=(), revocations=())
    assert plan.targeted == ("gw-002",)
    assert plan.channels == ("device/gw-002", "device/gw-404")


INVENTORY = HubInventory(DEVICES, ("eu-1", "us-1"), {"eu-1": (1, 2), "us-1": (1,)})
ONE_REGION = HubInventory(DEVICES[:2], ("eu-1",), {"eu-1": (1, 2)})


@dataclass(frozen=True)
class Scope:
    name: str
    kind: RevocationKind
    value: str
    region: str | None = None
    force: bool = False
    inventory: HubInventory = INVENTORY
    expected: str | None = None
    """The region, or ``None`` with ``words`` of the refusal."""
    words: str = ""


SCOPES = [
    Scope("a registered device, in its region", RevocationKind.DEVICE, "us-001", expected="us-1"),
    Scope(
        "a registered device named for another region",
        RevocationKind.DEVICE,
        "us-001",
        region="eu-1",
        force=True,
        words="never reaches it",
    ),
    Scope(
        "a device never registered",
        RevocationKind.DEVICE,
        "gw-404",
        words="'gw-404' is not registered at this hub",
    ),
    Scope(
        "a device never registered, forced, on the only region",
        RevocationKind.DEVICE,
        "gw-404",
        force=True,
        inventory=ONE_REGION,
        expected="eu-1",
    ),
    Scope("a group with devices in one region", RevocationKind.GROUP, "line-b", expected="eu-1"),
    Scope(
        "a group with devices in two regions",
        RevocationKind.GROUP,
        "line-a",
        words="in eu-1, us-1: give --region",
    ),
    Scope(
        "a group in the region given",
        RevocationKind.GROUP,
        "line-a",
        region="us-1",
        expected="us-1",
    ),
    Scope(
        "a group with no device",
        RevocationKind.GROUP,
        "line-z",
        words="no device of this hub is in group 'line-z'",
    ),
    Scope("a bundle version pushed to one region", RevocationKind.BUNDLE, "2", expected="eu-1"),
    Scope(
        "a bundle version never pushed",
        RevocationKind.BUNDLE,
        "999999",
        words="never pushed to this hub (the highest there is 2)",
    ),
    Scope(
        "a key, on the hub's only region",
        RevocationKind.KEY,
        POLICY_KEY,
        inventory=ONE_REGION,
        expected="eu-1",
    ),
    Scope("a key, with two regions", RevocationKind.KEY, POLICY_KEY, words="knows 2 regions"),
    Scope(
        "a region this hub does not have",
        RevocationKind.KEY,
        POLICY_KEY,
        region="ap-1",
        words="no device, bundle or revocation in region ap-1",
    ),
    Scope(
        "a region this hub does not have, forced",
        RevocationKind.KEY,
        POLICY_KEY,
        region="ap-1",
        force=True,
        expected="ap-1",
    ),
]


@pytest.mark.parametrize("case", SCOPES, ids=lambda c: c.name)
def test_a_revocation_goes_to_the_region_of_what_it_names(case: Scope) -> None:
    def region() -> str:
        return revocation_region(
            case.inventory, case.kind, case.value, case.region, force=case.force
        )

    if case.expected is None:
        with pytest.raises(ConfigError, match=re.escape(case.words)):
            region()
    else:
        assert region() == case.expected


def test_the_next_revocation_takes_the_epoch_above_the_regions_highest() -> None:
    issued = sign_next_revocation(
        root=ROOT,
        signers=HUB.online_keys[Role.REVOKE],
        region="eu-1",
        kind=RevocationKind.DEVICE,
        value="gw-001",
        reason="stolen",
        kill_epoch=4,
        now=NOW,
    )
    assert (issued.region, issued.epoch, issued.kind, issued.value) == (
        "eu-1",
        5,
        "device",
        "gw-001",
    )
    assert verify_revocation(issued.data, root=ROOT, region="eu-1").epoch == 5

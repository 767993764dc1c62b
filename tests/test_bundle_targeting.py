"""A bundle's validity does not depend on a device; targeting is a separate, pure check.

``verify_bundle`` takes no device, only the region it verifies for (the scope its signatures
cover), so the hub checks a bundle it signs exactly as every device of its target will (no
invented probe device); ``check_targeting`` then says whether one
device is in the target, with the axis that leaves it out; ``check_admission`` judges the
version and expiry, for no device either; ``compile_bundle_policy`` is the last step and
refuses a policy that does not compile.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from edge_agent.errors import BundleError
from edge_agent.policy.bundle import compile_bundle_policy
from edge_agent.policy.compiler import CompiledPolicy
from edge_agent.protocol.bundle import (
    BundleTarget,
    DeviceIdentity,
    InstalledRef,
    check_admission,
    check_targeting,
    verify_bundle,
)
from edge_agent.protocol.expectations import Expectations
from tests.factory import DEVICE, NOW, HubSim


@dataclass(frozen=True)
class Case:
    name: str
    target: BundleTarget
    device: DeviceIdentity
    words: str | None
    """``None``: the device is targeted; otherwise words the refusal must contain."""


REGION = DEVICE.region
OTHER = replace(DEVICE, device_id="gw-777", groups=("line-b",), profile="rpi-arm64")

CASES = [
    Case("region only: any device of the region", BundleTarget("eu-1"), OTHER, None),
    Case("another region", BundleTarget("us-2"), DEVICE, "region 'us-2'"),
    Case("a group the device is in", BundleTarget("eu-1", groups=("line-a",)), DEVICE, None),
    Case("groups the device is not in", BundleTarget("eu-1", groups=("line-a",)), OTHER, "groups"),
    Case(
        "another profile",
        BundleTarget("eu-1", profiles=("generic-x86_64",)),
        OTHER,
        "profiles generic-x86_64",
    ),
    Case("named device", BundleTarget("eu-1", devices=("gw-001",)), DEVICE, None),
    Case("another named device", BundleTarget("eu-1", devices=("gw-001",)), OTHER, "'gw-777'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_targeting_is_judged_apart_from_verification(case: Case) -> None:
    sim = HubSim()
    verified = verify_bundle(
        sim.bundle(1, target=case.target),
        root=sim.root(),
        region=case.target.region,
    )
    assert verified.target == case.target
    if case.words is None:
        check_targeting(verified, case.device)
        return
    with pytest.raises(BundleError) as refused:
        check_targeting(verified, case.device)
    assert refused.value.code == "bundle_target"
    assert case.words in str(refused.value)


def test_verified_bundle_keeps_payload_policy_until_compiled() -> None:
    sim = HubSim()
    verified = verify_bundle(sim.bundle(1), root=sim.root(), region=REGION)
    assert isinstance(verified.policy, dict) and verified.policy["format"] == 1
    compiled = compile_bundle_policy(verified)
    assert isinstance(compiled.policy, CompiledPolicy)
    assert (compiled.version, compiled.digest, compiled.raw) == (
        verified.version,
        verified.digest,
        verified.raw,
    )


def test_policy_that_does_not_compile_is_refused_after_verification() -> None:
    sim = HubSim()
    data = sim.bundle(1, policy={"format": 1, "rules": "not a list"})
    verified = verify_bundle(data, root=sim.root(), region=REGION)
    with pytest.raises(BundleError) as refused:
        compile_bundle_policy(verified)
    assert refused.value.code == "bundle_policy"


def test_verified_bundle_carries_parsed_expectations() -> None:
    sim = HubSim()
    digest = bytes(32)
    expectations = {"profiles": {"generic-x86_64": {"measurements": {"os-release": [digest]}}}}
    plain = verify_bundle(sim.bundle(1), root=sim.root(), region=REGION)
    required = verify_bundle(
        sim.bundle(2, attestation=expectations), root=sim.root(), region=REGION
    )
    assert plain.attestation is None
    assert isinstance(required.attestation, Expectations)
    assert required.attestation.for_device("generic-x86_64", "gw-001") == {
        "os-release": frozenset({digest})
    }


def test_admission_judges_version_and_expiry_of_a_verified_bundle_for_no_device() -> None:
    sim = HubSim()
    for_others = BundleTarget(REGION, devices=("gw-999",))
    v2 = verify_bundle(sim.bundle(2, target=for_others), root=sim.root(), region=REGION)
    assert not check_admission(v2, None, NOW).unchanged
    assert check_admission(v2, InstalledRef(2, v2.digest), NOW).unchanged
    refusals = [
        (InstalledRef(3, v2.digest), NOW, "bundle_rollback"),
        (InstalledRef(2, bytes(32)), NOW, "bundle_conflict"),
        (None, v2.expires_at, "bundle_expired"),
    ]
    for installed, now, code in refusals:
        with pytest.raises(BundleError) as refused:
            check_admission(v2, installed, now)
        assert refused.value.code == code

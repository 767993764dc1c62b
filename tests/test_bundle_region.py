"""A bundle is verified for a region: signatures first, then the payload.

A device verifies for its own region, so the signatures (whose ``external_aad`` names the
region) are checked over the exact received bytes before any byte of the payload is decoded
(DESIGN.md section 2). The hub, verifying an operator's file, first reads the region the file
claims (``claimed_region``, unverified) and verifies for it; the signatures then bind it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from edge_agent.errors import BundleError
from edge_agent.protocol.bundle import BundleTarget, claimed_region, verify_bundle
from edge_agent.protocol.keys import PrivateKey
from hub.core.bundles import verify_operator_bundle
from tests.factory import DEVICE, NOW, HubSim

UNREADABLE_PAYLOAD = b"\xff\xff not CBOR"
UNSORTED_MAP = b"\xa2\x61b\x01\x61a\x02"
"""A CBOR map whose keys are out of deterministic order: strict decoding refuses it."""
US = BundleTarget(region="us-2")


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[HubSim], bytes]
    code: str


VERIFY_CASES = [
    Case(
        "unreadable payload, untrusted signer: the signature fails before any decoding",
        lambda s: s.sign_raw(UNREADABLE_PAYLOAD, signers=[PrivateKey.generate()]),
        "bundle_signature",
    ),
    Case(
        "non-deterministic payload signed for another region",
        lambda s: s.sign_raw(UNSORTED_MAP, scope="us-2"),
        "bundle_signature",
    ),
    Case("unreadable payload, signed", lambda s: s.sign_raw(UNREADABLE_PAYLOAD), "bundle_format"),
    Case("non-deterministic payload, signed", lambda s: s.sign_raw(UNSORTED_MAP), "bundle_format"),
    Case("signed for another region", lambda s: s.bundle(2, region="us-2"), "bundle_signature"),
    Case(
        "signed for this region, targeting another",
        lambda s: s.bundle(2, target=US, region=DEVICE.region),
        "bundle_target",
    ),
]


@pytest.mark.parametrize("case", VERIFY_CASES, ids=[c.name for c in VERIFY_CASES])
def test_signatures_over_the_region_are_checked_before_the_payload(case: Case) -> None:
    sim = HubSim()
    with pytest.raises(BundleError) as refused:
        verify_bundle(case.build(sim), root=sim.root(), region=DEVICE.region)
    assert refused.value.code == case.code


CLAIM_CASES = [
    Case("not a signed object", lambda _: b"not a bundle", "bundle_format"),
    Case("payload is not CBOR", lambda s: s.sign_raw(UNREADABLE_PAYLOAD), "bundle_format"),
    Case("payload is not deterministic", lambda s: s.sign_raw(UNSORTED_MAP), "bundle_format"),
    Case("payload has no target", lambda s: s.sign_raw(b"\xa0"), "bundle_format"),
]


@pytest.mark.parametrize("case", CLAIM_CASES, ids=[c.name for c in CLAIM_CASES])
def test_a_bundle_whose_region_cannot_be_read_claims_none(case: Case) -> None:
    with pytest.raises(BundleError) as refused:
        claimed_region(case.build(HubSim()))
    assert refused.value.code == case.code


def test_the_claimed_region_is_the_target_region_unverified() -> None:
    sim = HubSim()
    assert claimed_region(sim.bundle(1)) == DEVICE.region
    assert claimed_region(sim.bundle(1, target=US, region=DEVICE.region)) == "us-2"


def test_the_hub_verifies_a_pushed_file_for_the_region_it_claims() -> None:
    sim = HubSim()
    assert verify_operator_bundle(sim.bundle(1, target=US), root=sim.root(), now=NOW).target == US
    with pytest.raises(BundleError) as refused:
        verify_operator_bundle(
            sim.bundle(1, target=US, region=DEVICE.region), root=sim.root(), now=NOW
        )
    assert refused.value.code == "bundle_signature"


def test_a_refusal_for_another_region_names_the_region_verified_for_not_this_device() -> None:
    """The technician learns which region the signatures were checked for: the device's own,
    or at the hub the region the file claims (where there is no "this device")."""
    sim = HubSim()
    with pytest.raises(BundleError) as at_device:
        verify_bundle(sim.bundle(2, region="us-2"), root=sim.root(), region="eu-1")
    with pytest.raises(BundleError) as at_hub:
        verify_operator_bundle(
            sim.bundle(1, target=US, region=DEVICE.region), root=sim.root(), now=NOW
        )
    for refused, region in ((at_device, "eu-1"), (at_hub, "us-2")):
        assert refused.value.code == "bundle_signature"
        assert f"signatures do not verify for region {region!r}" in refused.value.message
        assert "this device" not in refused.value.message


def test_the_hub_verifies_a_bundle_it_built_for_the_region_it_signed_it_for() -> None:
    """``build_bundle`` names the region it signed for instead of decoding the payload once
    more for its claim; the signatures and the signed target must still agree with it."""
    sim = HubSim()
    built = verify_operator_bundle(
        sim.bundle(1, target=US), root=sim.root(), now=NOW, region="us-2"
    )
    assert built.target == US
    with pytest.raises(BundleError) as other_signatures:
        verify_operator_bundle(sim.bundle(1, target=US), root=sim.root(), now=NOW, region="eu-1")
    assert other_signatures.value.code == "bundle_signature"
    with pytest.raises(BundleError) as other_target:
        verify_operator_bundle(
            sim.bundle(1, target=US, region=DEVICE.region),
            root=sim.root(),
            now=NOW,
            region=DEVICE.region,
        )
    assert other_target.value.code == "bundle_target"

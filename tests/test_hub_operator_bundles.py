"""An operator's bundle at the hub: verified as its devices would, for the region it claims.

``verify_operator_bundle`` is what ``bundle build`` and ``bundle push`` check; ``bundle
inspect --root`` reports the same verification (expiry shown, not judged). Each row is signed
for real (tests/factory.py), under a root whose policy role needs two of two keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from edge_agent.errors import BundleError
from edge_agent.policy import compiler
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.keys import PrivateKey
from hub.cli.operations import build_bundle, inspect_bundle
from hub.core import bundles
from hub.core.bundles import verify_operator_bundle
from tests.factory import DAY, NOW, HubSim

SIM = HubSim(policy_keys=[PrivateKey.generate() for _ in range(2)], policy_threshold=2)
ROOT = SIM.root()


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    code: str
    """The ``BundleError`` code a device would refuse it with; ``""``: accepted."""


CASES = [
    Case("signed by both policy keys", lambda: SIM.bundle(3), ""),
    Case(
        "under the policy threshold",
        lambda: SIM.bundle(3, signers=SIM.policy_keys[:1]),
        "bundle_threshold",
    ),
    Case(
        "signed by keys the root does not hold",
        lambda: SIM.bundle(3, signers=[PrivateKey.generate(), PrivateKey.generate()]),
        "bundle_signature",
    ),
    Case(
        "signed for another region than it targets",
        lambda: SIM.bundle(3, region="us-1"),
        "bundle_signature",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_an_operators_bundle_is_verified_for_the_region_it_claims(case: Case) -> None:
    data = case.make()
    if not case.code:
        assert verify_operator_bundle(data, root=ROOT, now=NOW).version == 3
        return
    with pytest.raises(BundleError) as caught:
        verify_operator_bundle(data, root=ROOT, now=NOW)
    assert caught.value.code == case.code


def test_an_operators_bundle_past_its_expiry_is_refused() -> None:
    data = SIM.bundle(3, issued_at=NOW - 2 * DAY, expires_at=NOW - DAY)
    with pytest.raises(BundleError) as caught:
        verify_operator_bundle(data, root=ROOT, now=NOW)
    assert caught.value.code == "bundle_expired"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_inspect_with_a_root_verifies_the_bundle_as_a_device_would(case: Case) -> None:
    summary = inspect_bundle(case.make(), ROOT)
    if not case.code:
        assert summary.verify_error is None
        assert summary.verified_signers == tuple(
            sorted(k.public.key_id.hex() for k in SIM.policy_keys)
        )
    else:
        assert summary.verified_signers is None
        assert summary.verify_error is not None


def test_inspect_shows_an_expired_bundle_as_verified() -> None:
    data = SIM.bundle(3, issued_at=NOW - 2 * DAY, expires_at=NOW - DAY)
    summary = inspect_bundle(data, ROOT)
    assert summary.verify_error is None and summary.verified_signers is not None


def test_inspect_without_a_root_only_decodes() -> None:
    summary = inspect_bundle(SIM.bundle(3, signers=[PrivateKey.generate()]), None)
    assert (summary.verified_signers, summary.verify_error) == (None, None)
    assert summary.payload["version"] == 3


def test_a_build_compiles_the_signed_policy_once_and_decodes_its_payload_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After reading the source (which compiles it, for line-numbered errors), a build
    compiles only what it signed, as a device would, and verifies it for the region it
    signed for rather than decoding the payload once more for the region it claims."""
    source = load_policy_source(
        "target: {region: eu-1}\nttl: 1h\nrules:\n"
        "  - {id: a, effect: allow, subjects: ['*'], actions: [read], resources: [/x]}\n"
    )
    compiled: list[object] = []
    real_compile = compiler._compile

    def counting(payload: object) -> object:
        compiled.append(payload)
        return real_compile(payload)

    def claimed(data: bytes) -> str:
        raise AssertionError("the built bundle's region is known; its claim is not read")

    monkeypatch.setattr(compiler, "_compile", counting)
    monkeypatch.setattr(bundles, "claimed_region", claimed)
    data, bundle = build_bundle(
        source, root=ROOT, signers=SIM.policy_keys, version=1, ttl=None, now=NOW
    )
    assert len(compiled) == 1
    assert bundle.policy.rule_count == 1
    monkeypatch.undo()
    assert verify_operator_bundle(data, root=ROOT, now=NOW).digest == bundle.digest

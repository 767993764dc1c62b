"""Which refusal a header fault gets, for every kind of signed object (table-driven).

A header that breaks the rules of docs/trust.md ("Format or signature") is a format fault
for every kind: ``bundle_format`` for a bundle, "not a trust root" for a root, and for kinds
with one refusal code (revocation, freshness token) a refusal caused by
:class:`~edge_agent.protocol.cose.MalformedEnvelopeError`. Another kind's content type is
not a format fault: the envelope is well formed, it is just not this kind of object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol.bundle import verify_bundle
from edge_agent.protocol.freshness import FreshnessToken, freshness_payload, verify_freshness
from edge_agent.protocol.keys import ALG_ED25519, ALG_EDDSA, PrivateKey
from edge_agent.protocol.revocation import (
    Revocation,
    RevocationKind,
    revocation_payload,
    verify_revocation,
)
from edge_agent.protocol.roles import Role, content_type, external_aad
from edge_agent.protocol.root import verify_root_update
from tests.factory import DEVICE, NOW, HubSim

ALG, CTY, KID = cose.HEADER_ALG, cose.HEADER_CONTENT_TYPE, cose.HEADER_KID
ES256 = -7


@dataclass(frozen=True)
class Kind:
    """One kind of signed object: how to make its payload, who signs, how it is verified,
    and whether a refusal says "format"."""

    name: str
    role: Role
    sign1: bool
    payload: Callable[[HubSim], bytes]
    signers: Callable[[HubSim], list[PrivateKey]]
    verify: Callable[[HubSim, bytes], object]
    is_format: Callable[[EnvelopeError], bool]


def _caused_by_malformed(exc: EnvelopeError) -> bool:
    return isinstance(exc.__cause__, cose.MalformedEnvelopeError)


KINDS = [
    Kind(
        "bundle",
        Role.POLICY,
        False,
        lambda s: s.bundle_payload(1),
        lambda s: s.policy_keys,
        lambda s, d: verify_bundle(d, root=s.root(), region=DEVICE.region),
        lambda exc: exc.code == "bundle_format",
    ),
    Kind(
        "trust root",
        Role.ROOT,
        False,
        lambda s: s.root_payload(2),
        lambda s: s.root_keys,
        lambda s, d: verify_root_update(s.root(), d, now=NOW),
        lambda exc: exc.message.startswith("not a trust root"),
    ),
    Kind(
        "revocation",
        Role.REVOKE,
        False,
        lambda s: revocation_payload(Revocation(1, NOW, RevocationKind.DEVICE, "gw-9", "test")),
        lambda s: s.online_keys[Role.REVOKE],
        lambda s, d: verify_revocation(d, root=s.root(), region="eu-1"),
        _caused_by_malformed,
    ),
    Kind(
        "freshness token",
        Role.FRESHNESS,
        True,
        lambda s: freshness_payload(
            FreshnessToken("eu-1", "group/line-a", bytes(32), 1, NOW, NOW + 60, 0)
        ),
        lambda s: s.online_keys[Role.FRESHNESS],
        lambda s, d: verify_freshness(d, root=s.root(), region="eu-1", now=NOW),
        _caused_by_malformed,
    ),
]


def _envelope(
    sim: HubSim, kind: Kind, body: dict[int, object], signature: dict[int, object]
) -> bytes:
    """``kind``'s object with these protected headers, correctly signed over them (so only
    the header rules can refuse it). A COSE_Sign1 has one header: ``body | signature``."""
    payload = kind.payload(sim)
    aad = external_aad(kind.role, "" if kind.role is Role.ROOT else "eu-1")
    keys = kind.signers(sim)
    if kind.sign1:
        raw = dcbor.encode({**signature, **body})
        to_sign = cose.sig_structure(
            body_protected=raw, sign_protected=None, external_aad=aad, payload=payload
        )
        return dcbor.encode_tagged(18, [raw, {}, payload, keys[0].sign(to_sign)])
    raw_body = dcbor.encode(body) if body else b""
    signatures = []
    for key in keys:
        raw_sign = dcbor.encode(signature)
        to_sign = cose.sig_structure(
            body_protected=raw_body, sign_protected=raw_sign, external_aad=aad, payload=payload
        )
        signatures.append([raw_sign, {KID: key.public.key_id}, key.sign(to_sign)])
    return dcbor.encode_tagged(98, [raw_body, {}, payload, signatures])


@dataclass(frozen=True)
class Fault:
    name: str
    body: Callable[[Kind], dict[int, object]]
    signature: dict[int, object]
    refusal: str
    """``accepted``, ``format`` (a format fault) or ``signature`` (any other refusal)."""


def _own(kind: Kind) -> dict[int, object]:
    return {CTY: content_type(kind.role)}


FAULTS = [
    Fault("well formed", _own, {ALG: ALG_ED25519}, "accepted"),
    Fault(
        "Ed25519 named in the body too",
        lambda k: {**_own(k), ALG: ALG_ED25519},
        {ALG: ALG_ED25519},
        "accepted",
    ),
    Fault("ES256 (-7) signature algorithm", _own, {ALG: ES256}, "format"),
    Fault(
        "ES256 (-7) in the body", lambda k: {**_own(k), ALG: ES256}, {ALG: ALG_ED25519}, "format"
    ),
    Fault(
        "EdDSA (-8) in the body, no key pinned to it",
        lambda k: {**_own(k), ALG: ALG_EDDSA},
        {ALG: ALG_ED25519},
        "signature",
    ),
    Fault(
        "boolean algorithm in the body",
        lambda k: {**_own(k), ALG: True},
        {ALG: ALG_ED25519},
        "format",
    ),
    Fault("no content type", lambda k: {}, {ALG: ALG_ED25519}, "format"),
    Fault(
        "another kind's content type",
        lambda k: {CTY: content_type(Role.VERIFIER)},
        {ALG: ALG_ED25519},
        "signature",
    ),
]

CASES = [(kind, fault) for kind in KINDS for fault in FAULTS]


@pytest.mark.parametrize(("kind", "fault"), CASES, ids=[f"{k.name}: {f.name}" for k, f in CASES])
def test_a_header_fault_is_a_format_refusal_for_every_kind(kind: Kind, fault: Fault) -> None:
    sim = HubSim()
    data = _envelope(sim, kind, fault.body(kind), fault.signature)
    if fault.refusal == "accepted":
        kind.verify(sim, data)
        return
    with pytest.raises(EnvelopeError) as refused:
        kind.verify(sim, data)
    assert kind.is_format(refused.value) is (fault.refusal == "format"), refused.value

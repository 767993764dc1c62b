"""Which bundles a device accepts, and that a refused one never replaces the installed one.

One table of refusals, as python-tuf tests rollback and rotation: each case builds bytes with
real keys and real signatures, offers them to an agent whose state dir holds bundle v1, and
checks the refusal code, a clear message, and that v1 is still what the agent decides with.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cbor2
import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.errors import BundleError
from edge_agent.protocol import dcbor
from edge_agent.protocol.bundle import BundleTarget
from edge_agent.protocol.keys import ALG_EDDSA, PrivateKey
from edge_agent.protocol.request import Request
from edge_agent.protocol.revocation import (
    Revocation,
    RevocationKind,
    revocation_payload,
    sign_revocation,
)
from edge_agent.protocol.roles import Role, content_type, external_aad
from edge_agent.protocol.root import KeyScope
from tests.factory import DAY, DEVICE, NOW, TARGET, HubSim

CAMERA = Request(subject="svc:camera", action="exec", resource="/opt/camera/bin/capture")


def _pairs(payload: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) encodings of a deterministic payload map, in order."""
    value = dcbor.decode(payload, max_bytes=1 << 20)
    assert isinstance(value, dict)
    return [(dcbor.encode(k), dcbor.encode(v)) for k, v in value.items()]


def _map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    assert len(pairs) < 24
    return bytes([0xA0 + len(pairs)]) + b"".join(k + v for k, v in pairs)


def _custom_sign(
    payload: bytes,
    key: PrivateKey,
    *,
    body_protected: dict[int, object] | None = None,
    sig_protected: dict[int, object] | None = None,
    sig_unprotected: dict[int, object] | None = None,
    region: str = "eu-1",
) -> bytes:
    """A COSE_Sign with hand-chosen headers, signed for real."""
    body = dcbor.encode(
        body_protected if body_protected is not None else {3: content_type(Role.POLICY)}
    )
    sig_p = dcbor.encode(sig_protected if sig_protected is not None else {1: -19})
    to_sign = dcbor.encode(["Signature", body, sig_p, external_aad(Role.POLICY, region), payload])
    signature = key.sign(to_sign)
    unprotected = sig_unprotected if sig_unprotected is not None else {4: key.public.key_id}
    return dcbor.encode_tagged(98, [body, {}, payload, [[sig_p, unprotected, signature]]])


def _duplicate_signature(data: bytes) -> bytes:
    value = dcbor.decode_tagged(data, tag=98, max_bytes=1 << 20, what="bundle")
    assert isinstance(value, list)
    value[3] = [value[3][0], value[3][0]]
    return dcbor.encode_tagged(98, value)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[HubSim], bytes]
    code: str
    words: str
    policy_threshold: int = 1


def _flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


def _payload_with(sim: HubSim, edit: Callable[[list[tuple[bytes, bytes]]], bytes]) -> bytes:
    return sim.sign_raw(edit(_pairs(sim.bundle_payload(3))))


CASES = [
    Case(
        "flipped byte in the signature",
        lambda s: _flip(s.bundle(3), len(s.bundle(3)) - 5),
        "bundle_signature",
        "signature",
    ),
    Case("flipped byte in the payload", lambda s: _flip(s.bundle(3), 60), "bundle_signature", ""),
    Case("truncated file", lambda s: s.bundle(3)[:-10], "bundle_format", "CBOR"),
    Case("random bytes", lambda s: os.urandom(512), "bundle_format", "not a signed bundle"),
    Case("empty file", lambda s: b"", "bundle_format", "empty"),
    Case(
        "unknown signer",
        lambda s: s.bundle(3, signers=[PrivateKey.generate()]),
        "bundle_signature",
        "trust",
    ),
    Case(
        "threshold not met",
        lambda s: s.bundle(3, signers=s.policy_keys[:1]),
        "bundle_threshold",
        "2 required",
        policy_threshold=2,
    ),
    Case(
        "same signature repeated to fake a threshold",
        lambda s: _duplicate_signature(s.bundle(3, signers=s.policy_keys[:1])),
        "bundle_threshold",
        "2 required",
        policy_threshold=2,
    ),
    Case(
        "same key signing twice",
        lambda s: s.bundle(3, signers=[s.policy_keys[0], s.policy_keys[0]]),
        "bundle_threshold",
        "2 required",
        policy_threshold=2,
    ),
    Case(
        "signer not authorised for the target",
        lambda s: s.bundle(3, signers=[s.policy_keys[2]]),
        "bundle_unauthorised",
        "may sign",
    ),
    Case(
        "revocation offered as a bundle",
        lambda s: sign_revocation(
            revocation_payload(Revocation(1, NOW, RevocationKind.DEVICE, "gw-001", "x")),
            region="eu-1",
            signers=s.online_keys[Role.REVOKE],
        ),
        "bundle_signature",
        "",
    ),
    Case(
        "revocation payload signed by the policy key as a revocation",
        lambda s: s.sign_raw(s.bundle_payload(3), role=Role.REVOKE),
        "bundle_signature",
        "content type",
    ),
    Case("trust root offered as a bundle", lambda s: s.root_bytes(), "bundle_signature", ""),
    Case(
        "bundle signed for another region",
        lambda s: s.bundle(3, region="us-2"),
        "bundle_signature",
        "",
    ),
    Case(
        "bundle for another region",
        lambda s: s.bundle(3, target=BundleTarget(region="us-2"), region="eu-1"),
        "bundle_target",
        "region",
    ),
    Case(
        "bundle signed for another region and targeting it",
        lambda s: s.bundle(3, target=BundleTarget(region="us-2"), region="us-2"),
        "bundle_signature",
        "",
    ),
    Case(
        "bundle for another group",
        lambda s: s.bundle(3, target=BundleTarget(region="eu-1", groups=("line-b",))),
        "bundle_target",
        "groups",
    ),
    Case(
        "bundle for another profile",
        lambda s: s.bundle(3, target=BundleTarget(region="eu-1", profiles=("raspberry-pi-4",))),
        "bundle_target",
        "profiles",
    ),
    Case(
        "bundle for another device",
        lambda s: s.bundle(3, target=BundleTarget(region="eu-1", devices=("gw-999",))),
        "bundle_target",
        "devices",
    ),
    Case("older version (rollback)", lambda s: s.bundle(1), "bundle_rollback", "rollback"),
    Case(
        "version 0",
        lambda s: s.sign_raw(
            _map(
                [
                    (k, dcbor.encode(0) if k == dcbor.encode("version") else v)
                    for k, v in _pairs(s.bundle_payload(1))
                ]
            )
        ),
        "bundle_format",
        "version",
    ),
    Case(
        "same version, different bytes",
        lambda s: s.bundle(2, expires_at=NOW + 3 * DAY),
        "bundle_conflict",
        "new version",
    ),
    Case(
        "expired",
        lambda s: s.bundle(3, issued_at=NOW - 2 * DAY, expires_at=NOW - DAY),
        "bundle_expired",
        "expired",
    ),
    Case(
        "wrong algorithm id",
        lambda s: _custom_sign(s.bundle_payload(3), s.policy_keys[0], sig_protected={1: -7}),
        "bundle_format",
        "algorithm",
    ),
    Case(
        "EdDSA (-8) for a key pinned to Ed25519 (-19)",
        lambda s: _custom_sign(s.bundle_payload(3), s.policy_keys[0], sig_protected={1: ALG_EDDSA}),
        "bundle_signature",
        "algorithm",
    ),
    Case(
        "algorithm only in the unprotected header",
        lambda s: _custom_sign(
            s.bundle_payload(3),
            s.policy_keys[0],
            sig_protected={},
            sig_unprotected={1: -19, 4: s.policy_keys[0].public.key_id},
        ),
        "bundle_format",
        "protected",
    ),
    Case(
        "unknown crit header",
        lambda s: _custom_sign(
            s.bundle_payload(3), s.policy_keys[0], sig_protected={1: -19, 2: [99], 99: 1}
        ),
        "bundle_format",
        "crit",
    ),
    Case(
        "wrong content type",
        lambda s: _custom_sign(
            s.bundle_payload(3), s.policy_keys[0], body_protected={3: "application/cbor"}
        ),
        "bundle_signature",
        "content type",
    ),
    Case(
        "duplicate map keys",
        lambda s: _payload_with(s, lambda p: _map([*p, p[-1]])),
        "bundle_format",
        "Duplicate",
    ),
    Case(
        "a float",
        lambda s: _payload_with(
            s,
            lambda p: _map(
                [(k, cbor2.dumps(1.5) if k == dcbor.encode("max_offline") else v) for k, v in p]
            ),
        ),
        "bundle_format",
        "float",
    ),
    Case(
        "an indefinite-length item",
        lambda s: _payload_with(
            s,
            lambda p: _map(
                [(k, b"\x7f\x61a\xff" if k == dcbor.encode("max_offline") else v) for k, v in p]
            ),
        ),
        "bundle_format",
        "indefinite",
    ),
    Case(
        "non-deterministic key order",
        lambda s: _payload_with(s, lambda p: _map(list(reversed(p)))),
        "bundle_format",
        "deterministic",
    ),
    Case(
        "non-shortest integer",
        lambda s: _payload_with(
            s,
            lambda p: _map(
                [(k, b"\x1a\x00\x00\x00\x02" if k == dcbor.encode("version") else v) for k, v in p]
            ),
        ),
        "bundle_format",
        "deterministic",
    ),
    Case(
        "nesting 10,000 deep",
        lambda s: s.sign_raw(b"\x81" * 10_000 + b"\x00"),
        "bundle_format",
        "depth",
    ),
    Case(
        "a 1 GB declared length",
        lambda s: s.sign_raw(b"\x5a\x40\x00\x00\x00" + b"x" * 16),
        "bundle_format",
        "CBOR",
    ),
    Case("over the size cap", lambda s: b"\x00" * (9 * 1024 * 1024), "bundle_format", "limit"),
    Case(
        "a payload that is not a map",
        lambda s: s.sign_raw(dcbor.encode([1, 2])),
        "bundle_format",
        "map",
    ),
    Case(
        "unknown payload field",
        lambda s: _payload_with(
            s,
            lambda p: _map(
                sorted([*p, (dcbor.encode("zzz"), dcbor.encode(1))], key=lambda kv: kv[0])
            ),
        ),
        "bundle_format",
        "unknown",
    ),
    Case(
        "a policy that is not a map",
        lambda s: _payload_with(
            s,
            lambda p: _map(
                [(k, dcbor.encode([1, 2]) if k == dcbor.encode("policy") else v) for k, v in p]
            ),
        ),
        "bundle_policy",
        "map",
    ),
    Case(
        "older version (rollback) for another group",
        lambda s: s.bundle(1, target=BundleTarget(region="eu-1", groups=("line-b",))),
        "bundle_target",
        "groups",
    ),
    Case(
        "same version, different bytes, for another profile",
        lambda s: s.bundle(
            2,
            expires_at=NOW + 3 * DAY,
            target=BundleTarget(region="eu-1", profiles=("raspberry-pi-4",)),
        ),
        "bundle_target",
        "profiles",
    ),
    Case(
        "expired, for another device",
        lambda s: s.bundle(
            3,
            issued_at=NOW - 2 * DAY,
            expires_at=NOW - DAY,
            target=BundleTarget(region="eu-1", devices=("gw-999",)),
        ),
        "bundle_target",
        "devices",
    ),
    Case(
        "invalid policy",
        lambda s: s.bundle(
            3, policy={"format": 1, "groups": {}, "workloads": {}, "rules": [{"id": "x"}]}
        ),
        "bundle_policy",
        "policy",
    ),
]


def _agent(tmp_path: Path, sim: HubSim) -> tuple[LocalAgent, bytes]:
    init_state_dir(tmp_path / "state", DEVICE, sim.root_bytes(), NOW)
    agent = LocalAgent.open(tmp_path / "state")
    agent.install_bundle(sim.bundle(1), NOW)
    v2 = sim.bundle(2)
    agent.install_bundle(v2, NOW)
    return agent, v2


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_bundle_leaves_installed_bundle_untouched(tmp_path: Path, case: Case) -> None:
    sim = HubSim(
        policy_keys=[PrivateKey.generate() for _ in range(3)],
        policy_threshold=case.policy_threshold,
    )
    sim.scopes[sim.policy_keys[2].public.key_id] = KeyScope(groups=frozenset({"line-b"}))
    agent, installed = _agent(tmp_path, sim)
    bad = case.make(sim)

    with pytest.raises(BundleError) as refused:
        agent.install_bundle(bad, NOW)

    assert refused.value.code == case.code, refused.value
    assert case.words.lower() in str(refused.value).lower()
    agent.close()
    with LocalAgent.open(tmp_path / "state") as reopened:
        assert reopened.state.bundle is not None
        assert reopened.state.bundle.raw == installed
        assert reopened.decide(CAMERA, NOW).allowed


def test_every_flipped_byte_is_refused(tmp_path: Path) -> None:
    sim = HubSim()
    agent, _ = _agent(tmp_path, sim)
    good = sim.bundle(3)
    for position in range(len(good)):
        with pytest.raises(BundleError):
            agent.install_bundle(_flip(good, position), NOW)
    assert agent.state.bundle is not None and agent.state.bundle.version == 2


def test_newer_bundle_replaces_installed_one(tmp_path: Path) -> None:
    sim = HubSim()
    agent, _ = _agent(tmp_path, sim)
    result = agent.install_bundle(sim.bundle(3), NOW)
    assert not result.unchanged
    with LocalAgent.open(tmp_path / "state") as reopened:
        assert reopened.state.bundle is not None and reopened.state.bundle.version == 3


def test_same_bundle_again_is_a_no_op(tmp_path: Path) -> None:
    sim = HubSim()
    agent, installed = _agent(tmp_path, sim)
    assert agent.install_bundle(installed, NOW).unchanged


def test_bundle_signed_by_threshold_of_distinct_keys_is_accepted(tmp_path: Path) -> None:
    sim = HubSim(policy_keys=[PrivateKey.generate(), PrivateKey.generate()], policy_threshold=2)
    agent, _ = _agent(tmp_path, sim)
    assert agent.install_bundle(sim.bundle(3), NOW).bundle.version == 3


def test_scoped_key_signs_bundles_inside_its_scope(tmp_path: Path) -> None:
    sim = HubSim(policy_keys=[PrivateKey.generate(), PrivateKey.generate()])
    sim.scopes[sim.policy_keys[1].public.key_id] = KeyScope(
        regions=frozenset({"eu-1"}), groups=frozenset({"line-a"})
    )
    agent, _ = _agent(tmp_path, sim)
    bundle = sim.bundle(3, signers=[sim.policy_keys[1]], target=TARGET)
    assert agent.install_bundle(bundle, NOW).bundle.version == 3


def test_bundle_database_edited_on_disk_denies(tmp_path: Path) -> None:
    import sqlite3

    sim = HubSim()
    agent, installed = _agent(tmp_path, sim)
    agent.close()
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    db.execute("UPDATE bundles SET data = ?", (_flip(installed, len(installed) - 3),))
    db.commit()
    db.close()
    with LocalAgent.open(tmp_path / "state") as reopened:
        decision = reopened.decide(CAMERA, NOW)
    assert not decision.allowed
    assert decision.reason == "bundle_untrusted"
    assert "does not verify" in decision.message


@pytest.mark.parametrize(
    "attestation",
    [
        {"measurements": {"kernel": "6.1"}},
        {"profiles": {"generic-x86_64": {"measurements": {"kernel": [b"short"]}}}},
        {"profiles": {}},
    ],
)
def test_malformed_attestation_expectations_are_refused_at_install(
    tmp_path: Path, attestation: dict[str, object]
) -> None:
    sim = HubSim()
    agent, _ = _agent(tmp_path, sim)
    with agent, pytest.raises(BundleError) as refused:
        agent.install_bundle(sim.bundle(3, attestation=attestation), NOW)
    assert refused.value.code == "bundle_format"

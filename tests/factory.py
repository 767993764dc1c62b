"""An in-memory hub for tests: keys for every role, roots and bundles signed for real.

As python-tuf's RepositorySimulator, it lets a test build any object the real hub could
(and many it never would) without files or the CLI.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edge_agent.policy.compiler import policy_payload
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol.bundle import BundleTarget, DeviceIdentity, bundle_payload, sign_bundle
from edge_agent.protocol.freshness import FreshnessToken, freshness_payload, sign_freshness
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.revocation import (
    Revocation,
    RevocationKind,
    revocation_payload,
    sign_revocation,
)
from edge_agent.protocol.roles import HUB_ROLES, Role, content_type, external_aad
from edge_agent.protocol.root import (
    KeyScope,
    TrustRoot,
    build_root_payload,
    sign_root,
    verify_trusted_root,
)

NOW = 1_800_000_000
DAY = 86400

DEVICE = DeviceIdentity(
    device_id="gw-001", region="eu-1", groups=("line-a",), profile="generic-x86_64"
)
TARGET = BundleTarget(region="eu-1", groups=("line-a",), profiles=("generic-x86_64",))


SAMPLE_POLICY = policy_payload(
    groups={"sensors": ["svc:camera", "svc:thermo"]},
    workloads={"svc:camera": ["exe:/opt/camera/bin/capture", "uid:1001"]},
    rules=[
        {
            "id": "camera-exec",
            "effect": "allow",
            "subjects": ["svc:camera", "group:sensors"],
            "actions": ["exec"],
            "resources": ["/opt/camera/bin/*"],
        },
        {
            "id": "zone-read",
            "effect": "allow",
            "subjects": ["group:sensors"],
            "actions": ["read"],
            "resources": ["/data/**"],
            "when": {"context": {"zone": ["plant-a", "plant-b"]}},
        },
        {
            "id": "no-shells",
            "effect": "deny",
            "subjects": ["*"],
            "actions": ["exec"],
            "resources": ["/bin/sh", "/usr/bin/*sh"],
        },
    ],
)


def _keys(n: int) -> list[PrivateKey]:
    return [PrivateKey.generate() for _ in range(n)]


@dataclass
class HubSim:
    """Keys for each role and helpers to sign roots and bundles with any subset of them."""

    root_keys: list[PrivateKey] = field(default_factory=lambda: _keys(3))
    policy_keys: list[PrivateKey] = field(default_factory=lambda: _keys(1))
    online_keys: dict[Role, list[PrivateKey]] = field(
        default_factory=lambda: {r: _keys(1) for r in (Role.FRESHNESS, Role.VERIFIER, Role.REVOKE)}
    )
    root_threshold: int = 2
    policy_threshold: int = 1
    scopes: dict[bytes, KeyScope] = field(default_factory=dict)

    def root_payload(
        self,
        version: int = 1,
        *,
        root_keys: Sequence[PrivateKey] | None = None,
        policy_keys: Sequence[PrivateKey] | None = None,
        issued_at: int = NOW - DAY,
        expires_at: int = NOW + 365 * DAY,
    ) -> bytes:
        roles: dict[Role, tuple[Sequence[PublicKey], int]] = {
            Role.ROOT: ([k.public for k in (root_keys or self.root_keys)], self.root_threshold),
            Role.POLICY: (
                [k.public for k in (policy_keys or self.policy_keys)],
                self.policy_threshold,
            ),
        }
        for role in HUB_ROLES:
            if role not in roles:
                roles[role] = ([k.public for k in self.online_keys[role]], 1)
        return build_root_payload(
            version=version,
            issued_at=issued_at,
            expires_at=expires_at,
            roles=roles,
            scopes=self.scopes,
        )

    def root_bytes(self, **kwargs: object) -> bytes:
        return sign_root(self.root_payload(**kwargs), self.root_keys)  # type: ignore[arg-type]

    def root(self) -> TrustRoot:
        return verify_trusted_root(self.root_bytes(), now=NOW)

    def bundle_payload(
        self,
        version: int = 1,
        *,
        target: BundleTarget = TARGET,
        policy: Mapping[str, object] = SAMPLE_POLICY,
        issued_at: int = NOW - 60,
        expires_at: int = NOW + DAY,
        max_offline: int | None = None,
        attestation: Mapping[str, object] | None = None,
    ) -> bytes:
        return bundle_payload(
            version=version,
            issued_at=issued_at,
            expires_at=expires_at,
            target=target,
            policy=policy,
            attestation=attestation,
            max_offline=max_offline,
        )

    def bundle(
        self,
        version: int = 1,
        *,
        signers: Sequence[PrivateKey] | None = None,
        region: str | None = None,
        **kwargs: object,
    ) -> bytes:
        target = kwargs.get("target", TARGET)
        assert isinstance(target, BundleTarget)
        payload = self.bundle_payload(version, **kwargs)  # type: ignore[arg-type]
        return sign_bundle(
            payload,
            region=region or target.region,
            signers=self.policy_keys[: self.policy_threshold] if signers is None else signers,
        )

    def sign_raw(
        self,
        payload: bytes,
        *,
        role: Role = Role.POLICY,
        scope: str = "eu-1",
        signers: Sequence[PrivateKey] | None = None,
    ) -> bytes:
        """Sign arbitrary payload bytes as ``role`` (for malformed-payload cases)."""
        return cose.sign(
            payload,
            keys=list(self.policy_keys[: self.policy_threshold] if signers is None else signers),
            content_type=content_type(role),
            external_aad=external_aad(role, scope),
        )

    def freshness(
        self,
        bundle: bytes,
        *,
        hub_time: int = NOW,
        ttl: int = 60,
        kill_epoch: int = 0,
        channel: str = "group/line-a",
        region: str = "eu-1",
        key: PrivateKey | None = None,
    ) -> bytes:
        """A freshness token pinning ``bundle`` (its bytes), signed by the freshness key."""
        token = FreshnessToken(
            region=region,
            channel=channel,
            bundle_digest=hashlib.sha256(bundle).digest(),
            bundle_version=_version_of(bundle),
            hub_time=hub_time,
            expires_at=hub_time + ttl,
            kill_epoch=kill_epoch,
        )
        return sign_freshness(
            freshness_payload(token),
            region=region,
            key=key or self.online_keys[Role.FRESHNESS][0],
        )

    def revocation(
        self,
        epoch: int,
        kind: str = "device",
        value: str = "gw-001",
        *,
        issued_at: int = NOW,
        reason: str = "test",
        region: str = "eu-1",
        signers: Sequence[PrivateKey] | None = None,
    ) -> bytes:
        payload = revocation_payload(
            Revocation(epoch, issued_at, RevocationKind(kind), value, reason)
        )
        return sign_revocation(
            payload, region=region, signers=list(signers or self.online_keys[Role.REVOKE])
        )


def _version_of(bundle: bytes) -> int:
    payload = dcbor.decode(cose.peek_payload(bundle, max_bytes=1 << 23), max_bytes=1 << 23)
    assert isinstance(payload, dict)
    version = payload["version"]
    assert isinstance(version, int)
    return version


def raw_payload(value: object) -> bytes:
    return dcbor.encode(value)

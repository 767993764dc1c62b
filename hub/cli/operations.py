"""What the hub operator's commands do, apart from argument parsing and printing.

Key generation, bundle building (compile, sign, then verify exactly as a device would, so
the hub never emits a bundle its agents would refuse), inspection and root rotation.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import BundleError, ConfigError, EnvelopeError
from edge_agent.policy.bundle import CompiledBundle
from edge_agent.policy.source import PolicySource
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol.bundle import (
    BundleTarget,
    bundle_payload,
    claimed_region,
    sign_bundle,
    verify_bundle,
)
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.roles import HUB_ROLES, Role
from edge_agent.protocol.root import (
    TrustRoot,
    build_root_payload,
    sign_root,
    verify_root_update,
    verify_trusted_root,
)
from edge_agent.support.cli import write_atomic
from hub.core.bundles import verify_operator_bundle
from hub.hubdir.keys import (
    ROOT_FILE,
    ensure_key_dir,
    load_role_keys,
    load_root,
    role_key_paths,
    write_private_key,
)

__all__ = ["BundleSummary", "build_bundle", "init_keys", "inspect_bundle", "rotate_root"]

DEFAULT_ROOT_TTL_S = 365 * 86400


def init_keys(
    directory: Path, *, root_keys: int, root_threshold: int, now: int, ttl: int
) -> TrustRoot:
    """Generate root keys (``root_threshold``-of-``root_keys``), one key per online role,
    and a self-signed trust root version 1 in ``directory``.

    Raises:
        ConfigError: bad counts, or ``directory`` already holds keys.
    """
    if not 1 <= root_threshold <= root_keys <= 16:
        raise ConfigError("need 1 <= --root-threshold <= --root-keys <= 16")
    ensure_key_dir(directory)
    if (directory / ROOT_FILE).exists() or any(directory.glob("*.pem")):
        raise ConfigError(f"{directory} already holds keys; choose an empty directory")
    roles: dict[Role, tuple[Sequence[PublicKey], int]] = {}
    root_signers: list[PrivateKey] = []
    for role in HUB_ROLES:
        count = root_keys if role is Role.ROOT else 1
        generated = [PrivateKey.generate() for _ in range(count)]
        for index, key in enumerate(generated, start=1):
            write_private_key(directory, f"{role}-{index}", key)
        roles[role] = ([k.public for k in generated], root_threshold if role is Role.ROOT else 1)
        if role is Role.ROOT:
            root_signers = generated
    payload = build_root_payload(version=1, issued_at=now, expires_at=now + ttl, roles=roles)
    data = sign_root(payload, root_signers)
    _write_root(directory, data, 1)
    return verify_trusted_root(data, now=now)


def rotate_root(directory: Path, *, rotate: Sequence[Role], now: int, ttl: int) -> TrustRoot:
    """Make root N+1 in ``directory``: new keys for the ``rotate`` roles (old ones move to
    ``retired/``), signed by a threshold of root N's root keys and of its own.

    Raises:
        ConfigError: the key directory lacks the keys needed to sign.
        RootError: the result would not verify on a device (never written then).
    """
    current = load_root(directory / ROOT_FILE)
    old_signers = load_role_keys(directory, Role.ROOT, current)
    if len(old_signers) < current.role(Role.ROOT).threshold:
        raise ConfigError(
            f"{directory} holds {len(old_signers)} of root version {current.version}'s root "
            f"keys; {current.role(Role.ROOT).threshold} are needed to sign its successor"
        )
    roles: dict[Role, tuple[Sequence[PublicKey], int]] = {}
    new_private: dict[Role, list[PrivateKey]] = {}
    for role in HUB_ROLES:
        role_keys = current.role(role)
        if role in rotate:
            new_private[role] = [PrivateKey.generate() for _ in role_keys.keys]
            roles[role] = ([k.public for k in new_private[role]], role_keys.threshold)
        else:
            roles[role] = (list(role_keys.keys.values()), role_keys.threshold)
    version = current.version + 1
    payload = build_root_payload(
        version=version, issued_at=now, expires_at=now + ttl, roles=roles, scopes=current.scopes
    )
    new_root_signers = new_private.get(Role.ROOT, old_signers)
    data = sign_root(payload, [*old_signers, *new_root_signers])
    root = verify_root_update(current, data, now=now)
    retired = directory / "retired" / f"v{current.version}"
    for role, keys in new_private.items():
        retired.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in role_key_paths(directory, role):
            shutil.move(path, retired / path.name)
            pub = path.with_name(path.name.removesuffix(".pem") + ".pub.pem")
            if pub.exists():
                shutil.move(pub, retired / pub.name)
        for index, key in enumerate(keys, start=1):
            write_private_key(directory, f"{role}-{index}", key)
    _write_root(directory, data, version)
    return root


def _write_root(directory: Path, data: bytes, version: int) -> None:
    write_atomic(directory / f"root-v{version}.cbor", data)
    write_atomic(directory / ROOT_FILE, data)


def build_bundle(
    source: PolicySource,
    *,
    root: TrustRoot,
    signers: Sequence[PrivateKey],
    version: int,
    ttl: int | None,
    now: int,
) -> tuple[bytes, CompiledBundle]:
    """Sign ``source`` and verify the result as a targeted device would: the signatures
    for the region it was built for, then the policy compiled from the signed bytes.

    ``source``'s policy was compiled already when it was read (``load_policy_source``, for
    its line-numbered errors); it is not compiled a second time before signing, since the
    verification compiles exactly what was signed and refuses it before anything is written.

    Raises:
        ConfigError: no TTL, or not enough authorised policy keys to sign.
        BundleError: the signed bundle would be refused by its devices (nothing is written).
    """
    ttl_seconds = ttl if ttl is not None else source.ttl_seconds
    if ttl_seconds is None:
        raise ConfigError("no TTL: set 'ttl:' in the policy file or pass --ttl")
    threshold = root.role(Role.POLICY).threshold
    if len(signers) < threshold:
        raise ConfigError(
            f"found {len(signers)} policy key(s) of trust root version {root.version}; "
            f"{threshold} needed (use --keys DIR or --key FILE)"
        )
    target = _target(source.target)
    payload = bundle_payload(
        version=version,
        issued_at=now,
        expires_at=now + ttl_seconds,
        target=target,
        policy=source.policy,
        max_offline=source.max_offline_seconds,
    )
    data = sign_bundle(payload, region=target.region, signers=signers)
    return data, verify_operator_bundle(data, root=root, now=now, region=target.region)


def _target(target: dict[str, object]) -> BundleTarget:
    def names(key: str) -> tuple[str, ...]:
        value = target.get(key) or []
        if not isinstance(value, list):
            raise ConfigError(f"target.{key} must be a list")
        return tuple(str(v) for v in value)

    return BundleTarget(
        region=str(target["region"]),
        groups=names("groups"),
        profiles=names("profiles"),
        devices=names("devices"),
    )


@dataclass(frozen=True, slots=True)
class BundleSummary:
    """What ``bundle inspect`` shows; ``verified`` only when a root was given and it holds."""

    payload: dict[str, object]
    digest: bytes
    size: int
    signer_hints: tuple[str, ...]
    verified_signers: tuple[str, ...] | None
    verify_error: str | None


def inspect_bundle(data: bytes, root: TrustRoot | None) -> BundleSummary:
    """Decode a bundle for display, verifying it when ``root`` is given as a device of the
    region it claims would (:func:`~edge_agent.protocol.bundle.verify_bundle`: signatures,
    threshold, authorisation, payload; expiry is shown, not judged).

    Raises:
        EnvelopeError: not a well-formed bundle.
    """
    payload_bytes = cose.peek_payload(data, max_bytes=MAX_BUNDLE_BYTES)
    payload: object = dcbor.decode(payload_bytes, max_bytes=MAX_BUNDLE_BYTES, what="bundle payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("target"), dict):
        raise EnvelopeError("not an edgegov bundle: the payload has no target")
    hints = _signature_hints(data)
    verified: tuple[str, ...] | None = None
    error: str | None = None
    if root is not None:
        try:
            bundle = verify_bundle(data, root=root, region=claimed_region(data))
            verified = tuple(sorted(k.hex() for k in bundle.signer_ids))
        except BundleError as exc:
            error = str(exc)
    return BundleSummary(
        payload=payload,
        digest=hashlib.sha256(data).digest(),
        size=len(data),
        signer_hints=hints,
        verified_signers=verified,
        verify_error=error,
    )


def _signature_hints(data: bytes) -> tuple[str, ...]:
    kids = cose.signature_kids(data, max_bytes=MAX_BUNDLE_BYTES)
    return tuple("?" if kid is None else kid.hex() for kid in kids)

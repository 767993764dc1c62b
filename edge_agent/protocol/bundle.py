"""Policy bundles: the signed, CBOR-encoded policy a device enforces.

A bundle is a COSE_Sign object (role ``policy``, scope = the target region) whose payload is::

    {"version": uint >= 1, "issued_at": uint, "expires_at": uint,
     "target": {"region": tstr, "groups": [tstr], "profiles": [tstr], "devices": [tstr]},
     "policy": {...}            ; see edge_agent.policy (compiled once at install)
     "attestation": {...},      ; expectations; empty map = none required
     "max_offline": uint | null}

Acceptance, in this order (DESIGN.md section 2, STYLE.md rule 4): size cap; a threshold of
policy keys, each authorised for the bundle's target, signed the exact received bytes; strict
decode with byte-identical re-encoding; schema; targeted at this device; version newer than
the installed one (equal version and bytes: no change; equal version, other bytes: refused);
not expired at ``now``; the policy compiles. Nothing here persists or swaps state: the caller
commits a :class:`VerifiedBundle` only after this returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edge_agent.errors import BundleError, EnvelopeError, PolicyError
from edge_agent.policy.compiler import CompiledPolicy, compile_policy
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol._gc import paused_gc
from edge_agent.protocol._schema import Fields
from edge_agent.protocol.expectations import ExpectationsError, parse_expectations
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.roles import Role, content_type, external_aad
from edge_agent.protocol.root import TrustRoot

__all__ = [
    "BundleFormatError",
    "BundleTarget",
    "DeviceIdentity",
    "InstalledRef",
    "VerifiedBundle",
    "bundle_payload",
    "sign_bundle",
    "verify_bundle",
]


class BundleFormatError(BundleError):
    """A bundle's payload is malformed or breaks the schema."""

    code = "bundle_format"


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Who this device is, as pinned at ``init``: what bundle targets are matched against."""

    device_id: str
    region: str
    groups: tuple[str, ...]
    profile: str


@dataclass(frozen=True, slots=True)
class BundleTarget:
    """Which devices a bundle is for; an empty list does not restrict on that axis."""

    region: str
    groups: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    def mismatch(self, device: DeviceIdentity) -> str | None:
        """Why this target does not include ``device``, or ``None`` when it does."""
        if self.region != device.region:
            return f"it is for region {self.region!r}, this device is in {device.region!r}"
        if self.groups and not set(self.groups) & set(device.groups):
            return f"it is for groups {', '.join(self.groups)}; this device is not in them"
        if self.profiles and device.profile not in self.profiles:
            return f"it is for profiles {', '.join(self.profiles)}, not {device.profile!r}"
        if self.devices and device.device_id not in self.devices:
            return f"it is for devices {', '.join(self.devices)}, not {device.device_id!r}"
        return None

    def as_cbor(self) -> dict[str, object]:
        return {
            "region": self.region,
            "groups": list(self.groups),
            "profiles": list(self.profiles),
            "devices": list(self.devices),
        }


@dataclass(frozen=True, slots=True)
class InstalledRef:
    """What is installed now, for rollback checks: its version and digest."""

    version: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle that passed every check, compiled and ready to decide with."""

    version: int
    issued_at: int
    expires_at: int
    max_offline: int | None
    target: BundleTarget
    policy: CompiledPolicy
    attestation: Mapping[object, object]
    signer_ids: frozenset[bytes]
    raw: bytes
    digest: bytes
    unchanged: bool = False
    """True when this exact bundle is already installed (a no-op install)."""


def verify_bundle(
    data: bytes,
    *,
    root: TrustRoot,
    device: DeviceIdentity,
    installed: InstalledRef | None,
    now: int | None,
) -> VerifiedBundle:
    """Verify and compile a bundle for ``device`` under ``root``.

    ``now`` is ``None`` only when re-loading the installed bundle from the device's own state:
    expiry then is the gate's decision, not a load failure. ``installed`` is ``None`` then too.

    Raises:
        BundleError: with ``code`` naming the failed check (``bundle_format``,
            ``bundle_signature``, ``bundle_threshold``, ``bundle_unauthorised``,
            ``bundle_target``, ``bundle_rollback``, ``bundle_conflict``, ``bundle_expired``,
            ``bundle_policy``).
    """
    with paused_gc():
        return _verify_bundle(data, root=root, device=device, installed=installed, now=now)


def _verify_bundle(
    data: bytes,
    *,
    root: TrustRoot,
    device: DeviceIdentity,
    installed: InstalledRef | None,
    now: int | None,
) -> VerifiedBundle:
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleFormatError(
            f"bundle is {len(data)} bytes, over the {MAX_BUNDLE_BYTES}-byte limit"
        )
    signer_ids, payload = _verify_signatures(data, root, device.region)
    fields = _decode(payload)
    target = _parse_target(fields.raw("target"))
    _authorise(signer_ids, root, target)
    why = target.mismatch(device)
    if why is not None:
        raise BundleError(f"bundle is not for this device: {why}", code="bundle_target")
    version = fields.integer("version", minimum=1)
    digest = hashlib.sha256(data).digest()
    unchanged = _check_version(version, digest, installed)
    issued_at = fields.integer("issued_at")
    expires_at = fields.integer("expires_at")
    if expires_at <= issued_at:
        raise BundleFormatError("bundle expires before it was issued")
    if now is not None and now >= expires_at:
        raise BundleError(
            f"bundle version {version} expired {now - expires_at} s ago", code="bundle_expired"
        )
    attestation = fields.raw("attestation")
    if not isinstance(attestation, dict):
        raise BundleFormatError("bundle.attestation must be a map")
    if attestation:
        try:
            parse_expectations(attestation)
        except ExpectationsError as exc:
            raise BundleFormatError(f"bundle attestation expectations: {exc.message}") from exc
    try:
        policy = compile_policy(fields.raw("policy"))
    except PolicyError as exc:
        raise BundleError(f"bundle policy is invalid: {exc}", code="bundle_policy") from exc
    return VerifiedBundle(
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        max_offline=fields.optional_integer("max_offline", minimum=1),
        target=target,
        policy=policy,
        attestation=attestation,
        signer_ids=signer_ids,
        raw=data,
        digest=digest,
        unchanged=unchanged,
    )


def _verify_signatures(data: bytes, root: TrustRoot, region: str) -> tuple[frozenset[bytes], bytes]:
    try:
        verified = cose.verify_sign(
            data,
            keys=root.role(Role.POLICY).keys,
            content_type=content_type(Role.POLICY),
            external_aad=external_aad(Role.POLICY, region),
            max_bytes=MAX_BUNDLE_BYTES,
        )
    except cose.MalformedEnvelopeError as exc:
        raise BundleFormatError(f"not a signed bundle: {exc.message}") from exc
    except EnvelopeError as exc:
        raise BundleError(f"bundle refused: {exc.message}", code="bundle_signature") from exc
    return verified.signer_ids, verified.payload


def _decode(payload: bytes) -> Fields:
    try:
        value = dcbor.decode(payload, max_bytes=MAX_BUNDLE_BYTES, what="bundle payload")
        return Fields(
            value,
            "bundle",
            BundleFormatError,
            required=frozenset(
                {"version", "issued_at", "expires_at", "target", "policy", "attestation"}
            ),
            optional=frozenset({"max_offline"}),
        )
    except BundleError:
        raise
    except EnvelopeError as exc:
        raise BundleFormatError(exc.message) from exc


def _parse_target(value: object) -> BundleTarget:
    fields = Fields(
        value,
        "bundle.target",
        BundleFormatError,
        required=frozenset({"region", "groups", "profiles", "devices"}),
    )
    return BundleTarget(
        region=fields.name("region"),
        groups=fields.names("groups"),
        profiles=fields.names("profiles"),
        devices=fields.names("devices"),
    )


def _authorise(signer_ids: frozenset[bytes], root: TrustRoot, target: BundleTarget) -> None:
    role = root.role(Role.POLICY)
    authorised = {
        key_id
        for key_id in signer_ids
        if key_id not in root.scopes or root.scopes[key_id].covers(target.region, target.groups)
    }
    if len(authorised) >= role.threshold:
        return
    if len(signer_ids) >= role.threshold:
        raise BundleError(
            f"bundle signed by {len(signer_ids)} policy key(s), but only {len(authorised)} "
            f"may sign for region {target.region!r} and groups {list(target.groups)} "
            f"({role.threshold} required)",
            code="bundle_unauthorised",
        )
    raise BundleError(
        f"bundle signed by {len(signer_ids)} trusted policy key(s), {role.threshold} required",
        code="bundle_threshold",
    )


def _check_version(version: int, digest: bytes, installed: InstalledRef | None) -> bool:
    if installed is None or version > installed.version:
        return False
    if version < installed.version:
        raise BundleError(
            f"bundle version {version} is older than installed version {installed.version} "
            "(rollback refused)",
            code="bundle_rollback",
        )
    if digest != installed.digest:
        raise BundleError(
            f"bundle version {version} is already installed with different contents; "
            "a changed bundle needs a new version",
            code="bundle_conflict",
        )
    return True


def bundle_payload(
    *,
    version: int,
    issued_at: int,
    expires_at: int,
    target: BundleTarget,
    policy: Mapping[str, object],
    attestation: Mapping[str, object] | None = None,
    max_offline: int | None = None,
) -> bytes:
    """The deterministic CBOR payload of a bundle (what the policy role signs)."""
    if version < 1 or expires_at <= issued_at:
        raise ValueError("a bundle needs version >= 1 and expires_at after issued_at")
    return dcbor.encode(
        {
            "version": version,
            "issued_at": issued_at,
            "expires_at": expires_at,
            "target": target.as_cbor(),
            "policy": dict(policy),
            "attestation": dict(attestation or {}),
            "max_offline": max_offline,
        }
    )


def sign_bundle(payload: bytes, *, region: str, signers: Iterable[PrivateKey]) -> bytes:
    """A COSE_Sign bundle over ``payload`` for ``region``, one signature per distinct key."""
    unique = {k.public.key_id: k for k in signers}
    return cose.sign(
        payload,
        keys=list(unique.values()),
        content_type=content_type(Role.POLICY),
        external_aad=external_aad(Role.POLICY, region),
    )

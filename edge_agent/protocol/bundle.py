"""Policy bundles: the signed, CBOR-encoded policy a device enforces.

A bundle is a COSE_Sign object (role ``policy``, scope = the target region) whose payload is::

    {"version": uint >= 1, "issued_at": uint, "expires_at": uint,
     "target": {"region": tstr, "groups": [tstr], "profiles": [tstr], "devices": [tstr]},
     "policy": {...}            ; see edge_agent.policy (compiled after verification)
     "attestation": {...},      ; expectations; empty map = none required
     "max_offline": uint | null}

Acceptance, in this order (DESIGN.md section 2, STYLE.md rule 4), split in four pure steps:

1. :func:`verify_bundle`, for a region and no particular device or time: size cap; a
   threshold of policy keys, each authorised for the bundle's target, signed the exact
   received bytes with the ``external_aad`` of that region; strict decode with
   byte-identical re-encoding; schema (attestation expectations included, kept parsed; the
   policy is the compiler's to check); signer authorisation; the target is that region.
2. :func:`check_targeting`: the bundle's target includes this device.
3. :func:`check_admission`: version newer than the installed one (equal version and bytes:
   no change; equal version, other bytes: refused); not expired at ``now``.
4. ``edge_agent.policy.bundle.compile_bundle_policy``: the policy compiles. This package
   never imports the policy compiler, so a :class:`VerifiedBundle` carries the policy as
   verified CBOR (``VerifiedBundle[PolicyPayload]``) until a caller compiles it.

A device runs all four (``edge_agent.policy.bundle.compile_for_device``), verifying for its
own region: the signatures are checked before any byte of the payload is decoded, and a
bundle that is not for it is refused as such before its version or age is judged. A hub
checks an operator's bundle file with steps 1, 3 and 4, for the region the file claims
(:func:`claimed_region`, read unverified only to choose that region; the signatures then
bind it). Nothing here persists or swaps state: the caller commits a bundle only after every
step returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, TypeAlias, TypeVar

from edge_agent.errors import BundleError, EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol._schema import Fields
from edge_agent.protocol.allocation import paused_gc
from edge_agent.protocol.expectations import Expectations, ExpectationsError, parse_expectations
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.roles import Role, content_type, external_aad
from edge_agent.protocol.root import TrustRoot

__all__ = [
    "BundleFormatError",
    "BundleTarget",
    "DeviceIdentity",
    "InstalledRef",
    "PolicyPayload",
    "VerifiedBundle",
    "bundle_payload",
    "check_admission",
    "check_targeting",
    "claimed_region",
    "sign_bundle",
    "verify_bundle",
]

PolicyPayload: TypeAlias = object
"""A bundle's ``policy`` value as signed and strictly decoded, not yet compiled: its shape is
the compiler's to check (``bundle_policy``)."""

PolicyT = TypeVar("PolicyT", covariant=True)
OtherPolicyT = TypeVar("OtherPolicyT")


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
        return {  # in deterministic key order: encoded without a sort
            "groups": list(self.groups),
            "region": self.region,
            "devices": list(self.devices),
            "profiles": list(self.profiles),
        }


@dataclass(frozen=True, slots=True)
class InstalledRef:
    """What is installed now, for rollback checks: its version and digest."""

    version: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class VerifiedBundle(Generic[PolicyT]):
    """A bundle that passed :func:`verify_bundle`, with its policy as ``PolicyT``: the
    verified payload (:data:`PolicyPayload`) or, once compiled, what the policy compiler made
    of it (``edge_agent.policy.bundle.CompiledBundle``)."""

    version: int
    issued_at: int
    expires_at: int
    max_offline: int | None
    target: BundleTarget
    policy: PolicyT
    attestation: Expectations | None
    """The parsed attestation expectations; ``None`` when the bundle requires none."""
    signer_ids: frozenset[bytes]
    raw: bytes
    digest: bytes
    unchanged: bool = False
    """True when this exact bundle is already installed (a no-op install)."""

    def with_policy(self, policy: OtherPolicyT) -> VerifiedBundle[OtherPolicyT]:
        """This bundle with its policy replaced by ``policy`` (its compiled form)."""
        return VerifiedBundle(
            version=self.version,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
            max_offline=self.max_offline,
            target=self.target,
            policy=policy,
            attestation=self.attestation,
            signer_ids=self.signer_ids,
            raw=self.raw,
            digest=self.digest,
            unchanged=self.unchanged,
        )


def verify_bundle(
    data: bytes,
    *,
    root: TrustRoot,
    region: str,
) -> VerifiedBundle[PolicyPayload]:
    """Verify a bundle under ``root`` for the devices of ``region``, none in particular, at
    no particular time (step 1 of the module docstring).

    ``region`` is the scope of the signatures' ``external_aad``: a device's own region, or at
    the hub the region an operator's file claims (:func:`claimed_region`). A bundle signed for
    another region fails as ``bundle_signature``; one signed for ``region`` whose target names
    another as ``bundle_target``. The result is not yet checked against any device
    (:func:`check_targeting`), version or time (:func:`check_admission`), and its policy is
    not yet compiled (``edge_agent.policy.bundle.compile_bundle_policy``).

    Raises:
        BundleError: with ``code`` naming the failed check (``bundle_format``,
            ``bundle_signature``, ``bundle_threshold``, ``bundle_unauthorised``,
            ``bundle_target``).
    """
    with paused_gc():
        return _verify_bundle(data, root=root, region=region)


def check_admission(
    bundle: VerifiedBundle[PolicyT], installed: InstalledRef | None, now: int | None
) -> VerifiedBundle[PolicyT]:
    """``bundle`` (verified) judged against what is ``installed`` and the time ``now``
    (step 3 of the module docstring): its version newer than the installed one, or the
    installed bundle itself (then returned with ``unchanged`` set); not expired at ``now``.

    ``installed`` is ``None`` when nothing bounds the version; ``now`` is ``None`` only
    when re-loading the installed bundle from the device's own state: expiry then is the
    gate's decision, not a load failure.

    Raises:
        BundleError: ``bundle_rollback``, ``bundle_conflict`` (same version, other bytes),
            ``bundle_expired``.
    """
    unchanged = _check_version(bundle.version, bundle.digest, installed)
    if now is not None and now >= bundle.expires_at:
        raise BundleError(
            f"bundle version {bundle.version} expired {now - bundle.expires_at} s ago",
            code="bundle_expired",
        )
    return replace(bundle, unchanged=True) if unchanged else bundle


def claimed_region(data: bytes) -> str:
    """The region a bundle says it targets, UNVERIFIED: only to choose which region to verify
    it for (:func:`verify_bundle`), whose signatures then bind it; never act on it otherwise.

    Raises:
        BundleError: ``bundle_format``, the bundle or its target region cannot be read.
    """
    payload: object
    try:
        payload = dcbor.decode(
            cose.peek_payload(data, max_bytes=MAX_BUNDLE_BYTES),
            max_bytes=MAX_BUNDLE_BYTES,
            what="bundle payload",
        )
    except EnvelopeError as exc:
        raise BundleFormatError(f"not a readable bundle: {exc.message}") from exc
    target = payload.get("target") if isinstance(payload, dict) else None
    return _parse_target(target).region


def check_targeting(bundle: VerifiedBundle[object], device: DeviceIdentity) -> None:
    """Refuse ``bundle`` unless its target includes ``device``.

    Raises:
        BundleError: ``bundle_target``, saying which axis (region, groups, profiles,
            devices) leaves the device out.
    """
    why = bundle.target.mismatch(device)
    if why is not None:
        raise BundleError(f"bundle is not for this device: {why}", code="bundle_target")


def _verify_bundle(data: bytes, *, root: TrustRoot, region: str) -> VerifiedBundle[PolicyPayload]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleFormatError(f"bundle is larger than the {MAX_BUNDLE_BYTES}-byte limit")
    signer_ids, payload = _verify_signatures(data, root, region)
    fields = _decode(payload)
    target = _parse_target(fields.raw("target"))
    _authorise(signer_ids, root, target)
    if target.region != region:
        raise BundleError(
            f"bundle is for region {target.region!r}, not {region!r}", code="bundle_target"
        )
    issued_at = fields.integer("issued_at")
    expires_at = fields.integer("expires_at")
    if expires_at <= issued_at:
        raise BundleFormatError("bundle expires before it was issued")
    return VerifiedBundle(
        version=fields.integer("version", minimum=1),
        issued_at=issued_at,
        expires_at=expires_at,
        max_offline=fields.optional_integer("max_offline", minimum=1),
        target=target,
        policy=fields.raw("policy"),
        attestation=_expectations(fields.raw("attestation")),
        signer_ids=signer_ids,
        raw=data,
        digest=hashlib.sha256(data).digest(),
    )


def _expectations(value: object) -> Expectations | None:
    if not isinstance(value, dict):
        raise BundleFormatError("bundle.attestation must be a map")
    if not value:
        return None
    try:
        return parse_expectations(value)
    except ExpectationsError as exc:
        raise BundleFormatError(f"bundle attestation expectations: {exc.message}") from exc


def _verify_signatures(data: bytes, root: TrustRoot, region: str) -> tuple[frozenset[bytes], bytes]:
    """The policy keys of ``root`` whose signatures over ``data`` verify with the
    ``external_aad`` of ``region``, and the signed payload bytes (not yet decoded)."""
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
    except cose.UnverifiedEnvelopeError as exc:
        raise BundleError(
            f"bundle signatures do not verify for region {region!r}: {exc.message}",
            code="bundle_signature",
        ) from exc
    except EnvelopeError as exc:
        raise BundleError(f"bundle refused: {exc.message}", code="bundle_signature") from exc
    return verified.signer_ids, verified.payload


def _decode(payload: bytes) -> Fields:
    """The payload decoded strictly (byte-identical re-encoding), as the bundle's fields."""
    try:
        value = dcbor.decode(payload, max_bytes=MAX_BUNDLE_BYTES, what="bundle payload")
    except EnvelopeError as exc:
        raise BundleFormatError(exc.message) from exc
    return Fields(
        value,
        "bundle",
        BundleFormatError,
        required=frozenset(
            {"version", "issued_at", "expires_at", "target", "policy", "attestation"}
        ),
        optional=frozenset({"max_offline"}),
    )


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
        {  # in deterministic key order: encoded without a sort
            "policy": dict(policy),
            "target": target.as_cbor(),
            "version": version,
            "issued_at": issued_at,
            "expires_at": expires_at,
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

"""The trust state a device decides with: one immutable value, replaced whole on change.

Transitions (install a bundle, rotate the root, record a revocation, accept a freshness
token, record a local measurement verdict, accept an attestation result) return a new state;
the shell persists it atomically and only then swaps it in.

Attestation: the state holds the verdict of the last local measurement (computed by the shell
against the installed bundle's expectations) and the last verified result of the hub's
verifier. A failing local verdict drops the hub's result: after a mismatch, only a fresh
challenge answered with the restored state brings the device back.

Rotation (TUF's fast-forward recovery): a new root that rotates a role's keys drops what
only that role vouched for: its mark on the time floor; for the freshness role also the
kill epoch it announced and the bundle it pinned; for the revoke role also the revocations
the new root no longer verifies and the epochs they raised ``seen_epoch`` to, so a kill
epoch announced later is compared with what the current revoke keys signed; for the verifier
role also the device directory's version floor. The installed
bundle is verified again under the new root; one that no longer verifies is kept only as
``distrusted`` (the gate denies ``bundle_untrusted`` until a new bundle is installed) and no
longer bounds the next version: its version was vouched for by the rotated-away key.

Pin: the newest verified freshness token for one of this device's channels names the bundle
the hub holds current there (version and digest). A bundle older than that, or of that
version with other bytes, is refused even when it is newer than the installed one: a
replayed old bundle cannot undo a withdrawal. A token for another channel pins nothing here.

Revocations (:func:`revocation_effect` is the one place that decides what one does): each
epoch is applied once. A device/group/region revocation issued before the installed bundle
was issued is already lifted and changes nothing when it arrives (again); one for another
device or group only raises ``seen_epoch``. Epochs may arrive out of order (retained messages
on several topics), so a lower epoch not seen before still applies; a lower epoch that does
not apply is old news and changes nothing. The envelope check
(:func:`~edge_agent.protocol.revocation.verify_revocation`) judges no epoch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from enum import StrEnum

from edge_agent.errors import BundleError
from edge_agent.policy.bundle import CompiledBundle, compile_for_device
from edge_agent.protocol.attestation import AttestationResult
from edge_agent.protocol.bundle import DeviceIdentity, InstalledRef
from edge_agent.protocol.freshness import FreshnessToken
from edge_agent.protocol.revocation import (
    Revocation,
    RevocationError,
    RevocationKind,
    verify_revocation,
)
from edge_agent.protocol.roles import HUB_ROLES, Role
from edge_agent.protocol.root import TrustRoot
from edge_agent.protocol.topics import agent_channels
from edge_agent.trust.clock import (
    BundleAheadError,
    TimeFloor,
    advance_floor,
    check_not_ahead,
    observe_deadline,
    without_roles,
)

__all__ = [
    "BundleAheadError",
    "DistrustedBundle",
    "LocalVerdict",
    "RevocationEffect",
    "TrustState",
    "check_admissible",
    "check_not_ahead",
    "passed_deadline",
    "revocation_effect",
    "rotated_roles",
    "with_active_bundle",
    "with_attestation_result",
    "with_bundle",
    "with_freshness",
    "with_local_verdict",
    "with_revocation",
    "with_root",
]


@dataclass(frozen=True, slots=True)
class LocalVerdict:
    """The verdict of one local measurement against the installed bundle's expectations.

    ``digest`` names the whole measured state (``expectations.measured_digest``); it must be
    the one the hub's result attests. ``valid_until`` bounds how long the verdict counts
    without a new measurement (two re-measure intervals plus a grace), so a stalled
    measurement loop turns stale instead of allowing forever.
    """

    passed: bool
    digest: bytes
    bundle_digest: bytes
    measured_at: int
    valid_until: int
    detail: str


@dataclass(frozen=True, slots=True)
class DistrustedBundle:
    """The installed bundle when it no longer verifies under the current root: it decides
    nothing and bounds nothing (a key rotated away may have signed any version, up to the
    largest counter); it is kept to name what is installed and why it is not trusted."""

    version: int
    digest: bytes
    why: str


@dataclass(frozen=True, slots=True)
class TrustState:
    """Everything the gate needs besides the request and ``now``.

    ``fault`` is set when the shell could not load or verify part of the state; the gate then
    denies everything with ``internal_error`` and this sentence.
    """

    device: DeviceIdentity
    root: TrustRoot
    bundle: CompiledBundle | None = None
    floor: TimeFloor = field(default_factory=TimeFloor)
    revocations: tuple[Revocation, ...] = ()
    fault: str | None = None
    seen_epoch: int = 0
    """Highest revocation epoch this device has verified, applied or not."""
    announced_epoch: int = 0
    """Highest kill epoch a verified freshness token announced."""
    fresh_time: int | None = None
    """Newest hub time of a freshness token that pins the installed bundle."""
    local_attestation: LocalVerdict | None = None
    """The last local measurement's verdict (``None``: not measured in this state)."""
    attestation_result: AttestationResult | None = None
    """The last verified result of the hub's verifier for this device."""
    distrusted: DistrustedBundle | None = None
    """The installed bundle, when it does not verify under ``root`` (``bundle`` is None)."""
    pin: InstalledRef | None = None
    """The newest bundle a verified freshness token named current (version and digest)."""
    directory_version: int = 0
    """The highest device directory version this device verified and kept: the floor no
    directory may go below, whatever happens to the directory's own file (0: none kept, or
    the verifier role was rotated since)."""

    @property
    def installed(self) -> InstalledRef | None:
        """The version floor for the next bundle: the installed bundle while it verifies
        under ``root``. A distrusted one sets none (TUF: rotating the policy keys discards
        what they signed, its version included); the freshness pin still refuses replays."""
        if self.bundle is not None:
            return InstalledRef(self.bundle.version, self.bundle.digest)
        return None


def with_bundle(state: TrustState, bundle: CompiledBundle) -> TrustState:
    """The state after installing ``bundle``: signed time advances the floor, and scope
    revocations issued before the bundle are lifted by it."""
    kept = tuple(
        r for r in state.revocations if not (r.issued_at < bundle.issued_at and _is_scope(r))
    )
    return replace(
        state,
        bundle=bundle,
        distrusted=None,
        floor=advance_floor(state.floor, bundle.issued_at, Role.POLICY),
        revocations=kept,
        fresh_time=None,
    )


def check_admissible(state: TrustState, bundle: CompiledBundle, now: int) -> None:
    """Refuse a verified, newer ``bundle`` that ``state`` rules out at trusted ``now``.

    1. Its ``issued_at`` may be at most :data:`SIGNED_TIME_SKEW_S` ahead of ``now``: signed
       time raises the floor, and a bundle from the far future would hold every decision at
       ``clock_untrusted`` for good.
    2. The newest freshness token's pin: an older version, or the pinned version with other
       bytes, is a replayed or forged bundle the hub no longer publishes.

    Raises:
        BundleAheadError: ``bundle_future``.
        BundleError: ``bundle_superseded``.
    """
    check_not_ahead(bundle, now)
    pin = state.pin
    if pin is None or bundle.version > pin.version:
        return
    if bundle.version < pin.version:
        raise BundleError(
            f"bundle version {bundle.version} is older than version {pin.version}, which the "
            "hub's freshness token names current (replayed old bundle refused)",
            code="bundle_superseded",
        )
    if bundle.digest != pin.digest:
        raise BundleError(
            f"bundle version {bundle.version} differs from the version {pin.version} the "
            f"hub's freshness token names (sha256:{pin.digest.hex()[:16]}); refused",
            code="bundle_superseded",
        )


def with_active_bundle(state: TrustState, data: bytes, version: int) -> TrustState:
    """``state`` with the stored active bundle ``data`` (of ``version``) verified under
    ``state.root``: as the bundle when it verifies, else as distrusted (the gate denies
    ``bundle_untrusted``).

    Expiry is not checked (the gate judges it) and nor is the version (it is the installed
    one)."""
    try:
        bundle = compile_for_device(
            data, root=state.root, device=state.device, installed=None, now=None
        )
    except BundleError as exc:
        digest = hashlib.sha256(data).digest()
        why = (
            f"the installed bundle does not verify under trust root version "
            f"{state.root.version} ({exc.code}: {exc.message}); install a bundle signed for "
            "this root"
        )
        return replace(state, bundle=None, distrusted=DistrustedBundle(version, digest, why))
    return replace(
        state,
        bundle=bundle,
        distrusted=None,
        floor=advance_floor(state.floor, bundle.issued_at, Role.POLICY),
    )


def rotated_roles(old: TrustRoot, new: TrustRoot) -> frozenset[Role]:
    """The roles whose keys ``new`` changes (a key added, removed, or re-scoped)."""
    rotated = set()
    for role in HUB_ROLES:
        before, after = old.role(role).keys, new.role(role).keys
        scoped = {k: old.scopes.get(k) for k in before} != {k: new.scopes.get(k) for k in after}
        if set(before) != set(after) or scoped:
            rotated.add(role)
    return frozenset(rotated)


def with_root(state: TrustState, root: TrustRoot) -> TrustState:
    """The state after rotating to ``root`` (already verified against the current one).

    What a rotated role vouched for is dropped: its time mark; for the revoke role the
    revocations ``root`` no longer verifies and ``seen_epoch`` down to the highest epoch
    still held, so withheld-revocation detection (announced against seen) works again; for
    the freshness role the announced kill epoch (down to ``seen_epoch``) and the pin; for
    the verifier role the device directory's version floor. The
    installed bundle is verified again under ``root``. Freshness tokens and the attestation
    result are verified again by the shell, which holds their bytes.
    """
    rotated = rotated_roles(state.root, root)
    floor = advance_floor(without_roles(state.floor, rotated), root.issued_at, Role.ROOT)
    new = replace(state, root=root, floor=floor)
    if Role.REVOKE in rotated:
        kept = tuple(r for r in new.revocations if _verifies(r, root, state.device.region))
        seen = max((r.epoch for r in kept), default=0)
        new = replace(new, revocations=kept, seen_epoch=seen)
    if Role.FRESHNESS in rotated:
        new = replace(new, announced_epoch=new.seen_epoch, pin=None, fresh_time=None)
    if Role.VERIFIER in rotated:
        new = replace(new, directory_version=0)
    if state.bundle is not None:
        new = with_active_bundle(new, state.bundle.raw, state.bundle.version)
    return new


def passed_deadline(state: TrustState, now: int) -> TrustState:
    """``state`` with its observed floor at the latest signed deadline that trusted ``now``
    has passed: the bundle's expiry or its ``max_offline``. The same object when none is
    newer (or the clock is untrusted), so the shell persists only when something changed.

    The root's expiry is not among them: a wall clock briefly far ahead would otherwise hold
    the device at ``root_expired`` until the offline root keys sign a new root, where a
    passed bundle deadline only needs a new bundle or freshness token.
    """
    bundle = state.bundle
    if bundle is None or (now < bundle.expires_at and bundle.max_offline is None):
        return state
    if now < state.floor.signed:
        return state
    deadlines = [bundle.expires_at]
    if bundle.max_offline is not None:
        deadlines.append(max(bundle.issued_at, state.fresh_time or 0) + bundle.max_offline)
    passed = [d for d in deadlines if state.floor.observed < d <= now]
    if not passed:
        return state
    return replace(state, floor=observe_deadline(state.floor, max(passed)))


class RevocationEffect(StrEnum):
    """What a verified revocation does to a device's trust state."""

    APPLIES = "applies"
    """It changes what this device decides: kept (and persisted), logged as applied."""
    NEW_EPOCH = "new_epoch"
    """It changes no decision here (another device's, lifted, or an epoch already applied),
    but its epoch is above any seen: the seen epoch and its signed time are recorded."""
    KNOWN = "known"
    """Nothing new: an epoch at or below the seen one that changes no decision."""


def revocation_effect(state: TrustState, revocation: Revocation) -> RevocationEffect:
    """What ``revocation`` (verified) does to ``state``: the one rule for every revocation.

    It applies unless its epoch is already applied, or it is a scope revocation that does
    not cover this device or that the installed bundle already lifted (issued before it).
    One that does not apply still counts when its epoch is new (withheld-revocation
    detection compares the announced kill epoch with the seen one).
    """
    if _applies(state, revocation):
        return RevocationEffect.APPLIES
    if revocation.epoch > state.seen_epoch:
        return RevocationEffect.NEW_EPOCH
    return RevocationEffect.KNOWN


def with_revocation(state: TrustState, revocation: Revocation) -> TrustState:
    """The state after learning of ``revocation`` (already verified), as
    :func:`revocation_effect` rules: kept when it applies; its epoch and signed time recorded
    unless it is already known (then ``state`` itself is returned)."""
    effect = revocation_effect(state, revocation)
    if effect is RevocationEffect.KNOWN:
        return state
    kept = state.revocations
    if effect is RevocationEffect.APPLIES:
        kept = (*kept, revocation)
    return replace(
        state,
        revocations=kept,
        seen_epoch=max(state.seen_epoch, revocation.epoch),
        floor=advance_floor(state.floor, revocation.issued_at, Role.REVOKE),
    )


def with_freshness(state: TrustState, token: FreshnessToken) -> TrustState:
    """The state after a verified freshness token: its hub time is signed time, its kill
    epoch (the region's) is announced, and when it pins the installed bundle it renews
    ``max_offline``. The bundle it names becomes the pin when newer than the pin and the
    token is for a channel this device listens on: another channel's bundle (another
    group's, another device's) says nothing about which bundle this device should run."""
    fresh = state.fresh_time
    if state.bundle is not None and token.bundle_digest == state.bundle.digest:
        fresh = max(fresh or 0, token.hub_time)
    pin = state.pin
    if _listens_on(state.device, token.channel) and (
        pin is None or token.bundle_version > pin.version
    ):
        pin = InstalledRef(token.bundle_version, token.bundle_digest)
    return replace(
        state,
        floor=advance_floor(state.floor, token.hub_time, Role.FRESHNESS),
        announced_epoch=max(state.announced_epoch, token.kill_epoch),
        fresh_time=fresh,
        pin=pin,
    )


def with_local_verdict(state: TrustState, verdict: LocalVerdict) -> TrustState:
    """The state after a local measurement: a failing verdict also drops the hub's result,
    so the device needs a fresh challenge after any mismatch."""
    result = state.attestation_result if verdict.passed else None
    return replace(state, local_attestation=verdict, attestation_result=result)


def with_attestation_result(state: TrustState, result: AttestationResult) -> TrustState:
    """The state after a verified attestation result: its issue time is signed time."""
    return replace(
        state,
        attestation_result=result,
        floor=advance_floor(state.floor, result.issued_at, Role.VERIFIER),
    )


def _listens_on(device: DeviceIdentity, channel: str) -> bool:
    return channel in {str(c) for c in agent_channels(device.device_id, device.groups)}


def _applies(state: TrustState, revocation: Revocation) -> bool:
    if any(r.epoch == revocation.epoch for r in state.revocations):
        return False
    if _is_scope(revocation):
        lifted = state.bundle is not None and revocation.issued_at < state.bundle.issued_at
        return revocation.denies_device(state.device) and not lifted
    return True


def _verifies(revocation: Revocation, root: TrustRoot, region: str) -> bool:
    try:
        verify_revocation(revocation.raw, root=root, region=region)
    except RevocationError:
        return False
    return True


def _is_scope(revocation: Revocation) -> bool:
    return revocation.kind in (RevocationKind.DEVICE, RevocationKind.GROUP, RevocationKind.REGION)

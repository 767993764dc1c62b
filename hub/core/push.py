"""What ``edge-hub bundle push`` and ``edge-hub revoke`` decide before anything is published.

A push is verified exactly as a targeted device would verify it (signatures by the policy
role of the hub's current root, target, expiry, policy compiles, issued no further ahead of
the hub's clock than a device allows), then against what is current on each channel it goes
to and on every channel a device it targets listens on (a lower version is a rollback, the
same version with other bytes a conflict: agents would refuse both), and against the
region's revocations (a bundle version or key revoked there: agents would install it and
deny), so the hub never publishes what its agents would refuse. A device, group or region
revocation in force on a device the bundle targets is lifted there when the bundle was
issued after it (the device's rule, :func:`edge_agent.trust.state.with_bundle`): the plan
names those, and refuses unless the operator lifts them on purpose.

A revocation names what this hub knows: a device registered in its region, a group with a
device there, a bundle version pushed there, a region of this hub (``force`` lifts all but
the first). It takes the region's next epoch, is signed by a threshold of revoke keys and
verified as a device would before it is recorded.

Everything here is a function of values: the caller reads the registry (the channels'
current bundles, the revocations, :class:`HubInventory`, the region's kill epoch), hands
them in and records what comes back. No registry, file or clock is touched here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from edge_agent.errors import BundleError, ConfigError
from edge_agent.policy.bundle import CompiledBundle, compile_bundle_policy
from edge_agent.protocol import topics
from edge_agent.protocol.bundle import DeviceIdentity, verify_bundle
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.revocation import (
    Revocation,
    RevocationKind,
    revocation_payload,
    sign_revocation,
    verify_revocation,
)
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import TrustRoot
from edge_agent.trust.state import (
    RevocationEffect,
    TrustState,
    revocation_effect,
    with_bundle,
)
from hub.registry.records import DeviceRecord, IssuedRevocation, PublishedBundle

__all__ = [
    "HubInventory",
    "LiftedRevocation",
    "PushPlan",
    "irreversible_warning",
    "plan_push",
    "resolve_key_id",
    "revocation_region",
    "sign_next_revocation",
]


@dataclass(frozen=True, slots=True)
class LiftedRevocation:
    """A device, group or region revocation a push lifts, and the devices it lifts it on."""

    revocation: IssuedRevocation
    devices: tuple[str, ...]

    def describe(self) -> str:
        r = self.revocation
        return (
            f"revocation epoch {r.epoch} of {r.region} ({r.kind} {r.value}, reason "
            f"{r.reason or '(none)'!r}) on {', '.join(self.devices)}"
        )


@dataclass(frozen=True, slots=True)
class PushPlan:
    """A verified bundle and where it goes."""

    bundle: CompiledBundle
    channels: tuple[str, ...]
    unchanged: tuple[str, ...]
    """Channels where exactly this bundle is current already (re-published, no change)."""
    targeted: tuple[str, ...]
    """Registered devices the bundle is for."""
    lifted: tuple[LiftedRevocation, ...] = ()
    """Revocations in force on targeted devices that installing the bundle lifts there."""


def plan_push(
    bundle: CompiledBundle,
    *,
    root: TrustRoot,
    devices: Sequence[DeviceRecord],
    current: Sequence[PublishedBundle],
    revocations: Sequence[IssuedRevocation],
    lift_revocations: bool = False,
) -> PushPlan:
    """Where the verified ``bundle`` goes, checked against the bundles ``current`` on the
    channels of its region and against the ``revocations`` current at the hub; ``devices``
    are the registered devices (those it targets are named in the plan).

    Each targeted device is checked on every channel it listens on
    (:func:`~edge_agent.protocol.topics.agent_channels`): a bundle current on another of its
    channels is one it holds (installed, or pinned by that channel's freshness token), so a
    newer one there makes this a rollback for it and the same version with other bytes a
    conflict. The scope revocations in force on a targeted device that this bundle would
    lift there (:class:`LiftedRevocation`) refuse the push unless ``lift_revocations``.

    Raises:
        BundleError: a device would refuse it: ``bundle_rollback`` or ``bundle_conflict``
            against the bundle current on a channel, ``bundle_revoked`` when a revocation
            of its region voids it.
        ConfigError: it would lift revocations and ``lift_revocations`` is false.
    """
    target = bundle.target
    _check_not_revoked(bundle, root, revocations)
    channels = tuple(str(c) for c in topics.channels_for_target(target.devices, target.groups))
    held_on = {b.channel: b for b in current if b.region == target.region}
    unchanged = []
    for channel in channels:
        held = held_on.get(channel)
        if held is None or bundle.version > held.version:
            continue
        if bundle.version < held.version:
            raise BundleError(
                f"bundle version {bundle.version} is older than version {held.version} "
                f"published on {channel} (devices would refuse it as a rollback)",
                code="bundle_rollback",
            )
        if bundle.digest != held.digest:
            raise BundleError(
                f"version {bundle.version} is published on {channel} with other contents; "
                "a changed bundle needs a new version",
                code="bundle_conflict",
            )
        unchanged.append(channel)
    targeted = [d for d in devices if target.mismatch(_identity(d)) is None]
    for device in targeted:
        _check_held_elsewhere(bundle, device, held_on, channels)
    lifted = _lifted(bundle, root, targeted, held_on, revocations)
    if lifted and not lift_revocations:
        raise ConfigError(
            f"bundle version {bundle.version} would lift "
            + "; ".join(lift.describe() for lift in lifted)
            + ": a device lifts a device, group or region revocation issued before the bundle "
            "it installs. Leave those devices out of the bundle's target, or add "
            "--lift-revocations to re-open them on purpose"
        )
    return PushPlan(
        bundle, channels, tuple(unchanged), tuple(d.device_id for d in targeted), lifted
    )


def _check_held_elsewhere(
    bundle: CompiledBundle,
    device: DeviceRecord,
    held_on: Mapping[str, PublishedBundle],
    channels: Sequence[str],
) -> None:
    """Refuse ``bundle`` when ``device`` holds, through another channel it listens on, a
    newer bundle or this version with other bytes: it would refuse this one."""
    for channel in map(str, topics.agent_channels(device.device_id, device.groups)):
        held = held_on.get(channel)
        if channel in channels or held is None or bundle.version > held.version:
            continue
        if bundle.version < held.version:
            raise BundleError(
                f"bundle version {bundle.version} is older than version {held.version}, which "
                f"device {device.device_id} gets on {channel} (it would refuse this one as a "
                f"rollback); push a version above {held.version}",
                code="bundle_rollback",
            )
        if bundle.digest != held.digest:
            raise BundleError(
                f"device {device.device_id} gets version {bundle.version} with other contents "
                f"on {channel} (sha256:{held.digest.hex()[:16]}), so it would refuse this one "
                "as a conflict; a changed bundle needs a new version",
                code="bundle_conflict",
            )


def _lifted(
    bundle: CompiledBundle,
    root: TrustRoot,
    targeted: Sequence[DeviceRecord],
    held_on: Mapping[str, PublishedBundle],
    issued: Sequence[IssuedRevocation],
) -> tuple[LiftedRevocation, ...]:
    """The revocations in force on ``targeted`` devices that installing ``bundle`` lifts,
    decided by the device's own transitions: in force under the bundle the device holds now
    (:func:`~edge_agent.trust.state.revocation_effect`), gone after installing this one
    (:func:`~edge_agent.trust.state.with_bundle`)."""
    regional = [r for r in issued if r.region == bundle.target.region]
    if not regional:
        return ()
    installed = _HeldBundles(root, bundle.target.region, held_on)
    lifted_on: dict[IssuedRevocation, list[str]] = {}
    for device in targeted:
        state = TrustState(_identity(device), root, bundle=installed.for_device(device))
        in_force = {}
        for record in regional:
            revocation = _revocation(record)
            if revocation.denies_device(state.device) and (
                revocation_effect(state, revocation) is RevocationEffect.APPLIES
            ):
                in_force[revocation] = record
        after = with_bundle(replace(state, revocations=tuple(in_force)), bundle)
        for revocation, record in in_force.items():
            if revocation not in after.revocations:
                lifted_on.setdefault(record, []).append(device.device_id)
    return tuple(LiftedRevocation(r, tuple(d)) for r, d in lifted_on.items())


class _HeldBundles:
    """The bundle a device holds installed: the highest version current on a channel it
    listens on that verifies under ``root`` and targets it, as the device would install."""

    def __init__(self, root: TrustRoot, region: str, held_on: Mapping[str, PublishedBundle]):
        self._root, self._region, self._held_on = root, region, held_on
        self._verified: dict[str, CompiledBundle | None] = {}

    def for_device(self, device: DeviceRecord) -> CompiledBundle | None:
        identity = _identity(device)
        candidates = [
            b
            for c in topics.agent_channels(device.device_id, device.groups)
            if (b := self._verify(str(c))) is not None and b.target.mismatch(identity) is None
        ]
        return max(candidates, key=lambda b: b.version, default=None)

    def _verify(self, channel: str) -> CompiledBundle | None:
        if channel not in self._verified:
            held = self._held_on.get(channel)
            self._verified[channel] = None if held is None else self._compile(held.data)
        return self._verified[channel]

    def _compile(self, data: bytes) -> CompiledBundle | None:
        """``data`` verified and compiled; ``None`` when a device would not install it (it
        then lifts nothing there)."""
        try:
            return compile_bundle_policy(verify_bundle(data, root=self._root, region=self._region))
        except BundleError:
            return None


def _revocation(record: IssuedRevocation) -> Revocation:
    return Revocation(
        record.epoch, record.issued_at, RevocationKind(record.kind), record.value, record.reason
    )


def _check_not_revoked(
    bundle: CompiledBundle, root: TrustRoot, issued: Sequence[IssuedRevocation]
) -> None:
    """Refuse a bundle a revocation of its region voids: devices would install it and deny
    everything (``revoked``), while the push reported success."""
    threshold = root.role(Role.POLICY).threshold
    for record in issued:
        if record.region != bundle.target.region:
            continue
        kind = RevocationKind(record.kind)
        revocation = _revocation(record)
        if not revocation.denies_bundle(bundle.version, bundle.signer_ids, threshold):
            continue
        remedy = (
            f"push a version above {record.value}"
            if kind is RevocationKind.BUNDLE
            else f"sign it with {threshold} policy keys that are not revoked"
        )
        raise BundleError(
            f"bundle version {bundle.version} is void in {record.region}: revocation epoch "
            f"{record.epoch} ({record.kind} {record.value}) revoked it, so devices would deny "
            f"everything with it installed; {remedy}",
            code="bundle_revoked",
        )


def _identity(device: DeviceRecord) -> DeviceIdentity:
    return DeviceIdentity(device.device_id, device.region, device.groups, device.profile)


def resolve_key_id(text: str, root: TrustRoot) -> str:
    """The full hex key id of the root's key whose id starts with ``text`` (8+ hex digits).

    Raises:
        ConfigError: not hex, too short, or not exactly one key of the root.
    """
    prefix = text.lower()
    if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
        raise ConfigError(f"--key {text!r} must be at least 8 hex digits of a key id")
    ids = {key_id for role in root.roles.values() for key_id in role.keys}
    matches = {k.hex() for k in ids if k.hex().startswith(prefix)}
    if len(matches) != 1:
        raise ConfigError(
            f"--key {text!r} matches {len(matches)} keys of trust root version {root.version}"
        )
    return matches.pop()


@dataclass(frozen=True, slots=True)
class HubInventory:
    """What this hub has registered and pushed, by region: what a revocation may name."""

    devices: tuple[DeviceRecord, ...]
    regions: tuple[str, ...]
    """Every region a device, bundle or revocation of this hub is in."""
    bundle_versions: Mapping[str, tuple[int, ...]]
    """Every bundle version ever pushed to each region."""

    def device(self, device_id: str) -> DeviceRecord | None:
        return next((d for d in self.devices if d.device_id == device_id), None)

    def pushed(self, region: str) -> tuple[int, ...]:
        return self.bundle_versions.get(region, ())


def revocation_region(
    inventory: HubInventory,
    kind: RevocationKind,
    value: str,
    region: str | None,
    *,
    force: bool,
) -> str:
    """The region a revocation of ``kind`` ``value`` goes to, checked against ``inventory``:
    ``region`` when given, else the one where the device, the group's devices or the bundle
    version are (else the hub's only region).

    A revocation naming what this hub never registered or pushed is almost always a typo that
    would deny (a bundle version far above any pushed one voids every bundle until a higher
    one), or publish to a region where nothing listens: refused unless ``force``. A device
    registered in another region is refused always (the revocation could never reach it).

    Raises:
        ConfigError: the scope is not this hub's (as above), or the region is ambiguous.
    """
    if kind is RevocationKind.DEVICE:
        device = inventory.device(value)
        if device is not None and region not in (None, device.region):
            raise ConfigError(
                f"device {value!r} is registered in region {device.region}, not {region}: "
                f"a revocation for {region} never reaches it (drop --region)"
            )
        if device is not None:
            return device.region
        _unless_forced(force, f"device {value!r} is not registered at this hub")
    elif kind is RevocationKind.GROUP:
        holding = sorted({d.region for d in inventory.devices if value in d.groups})
        region = _pick(region, holding, f"group {value!r} has devices")
        if region not in holding:
            where = f" (its devices are in {', '.join(holding)})" if holding else ""
            _unless_forced(
                force, f"no device of {region or 'this hub'} is in group {value!r}{where}"
            )
    elif kind is RevocationKind.BUNDLE:
        version = int(value)
        pushed = [r for r in inventory.regions if version in inventory.pushed(r)]
        region = _pick(region, pushed, f"bundle version {value} was pushed")
        if region not in pushed:
            scope = [region] if region else inventory.regions
            highest = max((v for r in scope for v in inventory.pushed(r)), default=0)
            _unless_forced(
                force,
                f"bundle version {value} was never pushed to {region or 'this hub'}"
                + (f" (the highest there is {highest})" if highest else "")
                + f"; revoking it would void every version up to {value}",
            )
    if region is None:
        return _only_region(inventory.regions)
    if region not in inventory.regions:
        _unless_forced(force, f"this hub has no device, bundle or revocation in region {region}")
    return region


def irreversible_warning(kind: RevocationKind, value: str, region: str) -> str | None:
    """What the operator confirms before a revocation nothing undoes; ``None`` for one a
    newer bundle lifts."""
    if kind is RevocationKind.BUNDLE:
        return (
            f"Revoking bundle {value} in {region} cannot be undone: every device there denies "
            f"everything while its bundle is version {value} or older, and only a bundle "
            f"version above {value} recovers it."
        )
    if kind is RevocationKind.KEY:
        return (
            f"Revoking key {value[:16]} in {region} cannot be undone: it never counts towards a "
            "threshold there again, and only a root rotation replaces it."
        )
    return None


def _pick(region: str | None, candidates: Sequence[str], what: str) -> str | None:
    """``region``, else the only candidate (``None`` when there is none)."""
    if region is not None or len(candidates) <= 1:
        return region or (candidates[0] if candidates else None)
    raise ConfigError(f"{what} in {', '.join(candidates)}: give --region")


def _unless_forced(force: bool, problem: str) -> None:
    if not force:
        raise ConfigError(f"{problem}: check it (edge-hub fleet), or add --force to revoke anyway")


def _only_region(regions: Sequence[str]) -> str:
    if len(regions) != 1:
        raise ConfigError(
            f"this hub knows {len(regions)} regions ({', '.join(regions) or 'none'}): give --region"
        )
    return regions[0]


def sign_next_revocation(
    *,
    root: TrustRoot,
    signers: Sequence[PrivateKey],
    region: str,
    kind: RevocationKind,
    value: str,
    reason: str,
    kill_epoch: int,
    now: int,
) -> IssuedRevocation:
    """Sign the region's next revocation (epoch ``kill_epoch + 1``, ``kill_epoch`` being the
    highest the region has) and verify it as a device would.

    Raises:
        ConfigError: the value cannot go into a topic.
        RevocationError: the signed object would be refused (for example, under threshold).
    """
    try:
        topics.revocation_topic(region, str(kind), value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    epoch = kill_epoch + 1
    payload = revocation_payload(Revocation(epoch, now, kind, value, reason))
    data = sign_revocation(payload, region=region, signers=list(signers))
    verify_revocation(data, root=root, region=region)
    return IssuedRevocation(region, epoch, str(kind), value, reason, data, now)

"""The trust state a device decides with: one immutable value, replaced whole on change.

Transitions (install a bundle, rotate the root, record a revocation, accept a freshness
token) return a new state; the shell persists it atomically and only then swaps it in.

Revocations: each epoch is applied once. A device/group/region revocation issued before the
installed bundle was issued is already lifted and changes nothing when it arrives (again);
one for another device or group only raises ``seen_epoch``. Epochs may arrive out of order
(retained messages on several topics), so a lower epoch not seen before still applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from edge_agent.protocol.bundle import DeviceIdentity, InstalledRef, VerifiedBundle
from edge_agent.protocol.freshness import FreshnessToken
from edge_agent.protocol.revocation import Revocation, RevocationKind
from edge_agent.protocol.root import TrustRoot
from edge_agent.trust.clock import TimeFloor, advance_floor

__all__ = [
    "TrustState",
    "revocation_applies",
    "with_bundle",
    "with_freshness",
    "with_revocation",
    "with_root",
]


@dataclass(frozen=True, slots=True)
class TrustState:
    """Everything the gate needs besides the request and ``now``.

    ``fault`` is set when the shell could not load or verify part of the state; the gate then
    denies everything with ``internal_error`` and this sentence.
    """

    device: DeviceIdentity
    root: TrustRoot
    bundle: VerifiedBundle | None = None
    floor: TimeFloor = field(default_factory=TimeFloor)
    revocations: tuple[Revocation, ...] = ()
    fault: str | None = None
    seen_epoch: int = 0
    """Highest revocation epoch this device has verified, applied or not."""
    announced_epoch: int = 0
    """Highest kill epoch a verified freshness token announced."""
    fresh_time: int | None = None
    """Newest hub time of a freshness token that pins the installed bundle."""

    @property
    def installed(self) -> InstalledRef | None:
        if self.bundle is None:
            return None
        return InstalledRef(self.bundle.version, self.bundle.digest)


def with_bundle(state: TrustState, bundle: VerifiedBundle) -> TrustState:
    """The state after installing ``bundle``: signed time advances the floor, and scope
    revocations issued before the bundle are lifted by it."""
    kept = tuple(
        r for r in state.revocations if not (r.issued_at < bundle.issued_at and _is_scope(r))
    )
    return replace(
        state,
        bundle=bundle,
        floor=advance_floor(state.floor, bundle.issued_at),
        revocations=kept,
        fresh_time=None,
    )


def with_root(state: TrustState, root: TrustRoot) -> TrustState:
    """The state after rotating to ``root`` (already verified against the current one)."""
    return replace(state, root=root, floor=advance_floor(state.floor, root.issued_at))


def revocation_applies(state: TrustState, revocation: Revocation) -> bool:
    """Whether ``revocation`` (verified) would change what this device decides.

    False for an epoch already applied, for a scope revocation that does not cover this
    device, and for one the installed bundle already lifted (issued before it).
    """
    if any(r.epoch == revocation.epoch for r in state.revocations):
        return False
    if _is_scope(revocation):
        lifted = state.bundle is not None and revocation.issued_at < state.bundle.issued_at
        return revocation.denies_device(state.device) and not lifted
    return True


def with_revocation(state: TrustState, revocation: Revocation) -> TrustState:
    """The state after learning of ``revocation`` (already verified): applied when
    :func:`revocation_applies`, otherwise only its epoch and signed time are recorded."""
    kept = state.revocations
    if revocation_applies(state, revocation):
        kept = (*kept, revocation)
    return replace(
        state,
        revocations=kept,
        seen_epoch=max(state.seen_epoch, revocation.epoch),
        floor=advance_floor(state.floor, revocation.issued_at),
    )


def with_freshness(state: TrustState, token: FreshnessToken) -> TrustState:
    """The state after a verified freshness token: its hub time is signed time, its kill
    epoch is announced, and when it pins the installed bundle it renews ``max_offline``."""
    fresh = state.fresh_time
    if state.bundle is not None and token.bundle_digest == state.bundle.digest:
        fresh = max(fresh or 0, token.hub_time)
    return replace(
        state,
        floor=advance_floor(state.floor, token.hub_time),
        announced_epoch=max(state.announced_epoch, token.kill_epoch),
        fresh_time=fresh,
    )


def _is_scope(revocation: Revocation) -> bool:
    return revocation.kind in (RevocationKind.DEVICE, RevocationKind.GROUP, RevocationKind.REGION)

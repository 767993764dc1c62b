"""The trust state a device decides with: one immutable value, replaced whole on change.

Transitions (install a bundle, rotate the root, record a revocation, accept a freshness
token, record a local measurement verdict, accept an attestation result) return a new state;
the shell persists it atomically and only then swaps it in.

Attestation: the state holds the verdict of the last local measurement (computed by the shell
against the installed bundle's expectations) and the last verified result of the hub's
verifier. A failing local verdict drops the hub's result: after a mismatch, only a fresh
challenge answered with the restored state brings the device back.

Revocations: each epoch is applied once. A device/group/region revocation issued before the
installed bundle was issued is already lifted and changes nothing when it arrives (again);
one for another device or group only raises ``seen_epoch``. Epochs may arrive out of order
(retained messages on several topics), so a lower epoch not seen before still applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from edge_agent.protocol.attestation import AttestationResult
from edge_agent.protocol.bundle import DeviceIdentity, InstalledRef, VerifiedBundle
from edge_agent.protocol.freshness import FreshnessToken
from edge_agent.protocol.revocation import Revocation, RevocationKind
from edge_agent.protocol.root import TrustRoot
from edge_agent.trust.clock import TimeFloor, advance_floor

__all__ = [
    "LocalVerdict",
    "TrustState",
    "revocation_applies",
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
    local_attestation: LocalVerdict | None = None
    """The last local measurement's verdict (``None``: not measured in this state)."""
    attestation_result: AttestationResult | None = None
    """The last verified result of the hub's verifier for this device."""

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


def with_local_verdict(state: TrustState, verdict: LocalVerdict) -> TrustState:
    """The state after a local measurement: a failing verdict also drops the hub's result,
    so the device needs a fresh challenge after any mismatch."""
    result = state.attestation_result if verdict.passed else None
    return replace(state, local_attestation=verdict, attestation_result=result)


def with_attestation_result(state: TrustState, result: AttestationResult) -> TrustState:
    """The state after a verified attestation result: its issue time is signed time."""
    return replace(
        state, attestation_result=result, floor=advance_floor(state.floor, result.issued_at)
    )


def _is_scope(revocation: Revocation) -> bool:
    return revocation.kind in (RevocationKind.DEVICE, RevocationKind.GROUP, RevocationKind.REGION)

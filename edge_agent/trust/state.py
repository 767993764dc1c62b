"""The trust state a device decides with: one immutable value, replaced whole on change.

Transitions (install a bundle, rotate the root, record a revocation) return a new state;
the shell persists it atomically and only then swaps it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from edge_agent.protocol.bundle import DeviceIdentity, InstalledRef, VerifiedBundle
from edge_agent.protocol.revocation import Revocation
from edge_agent.protocol.root import TrustRoot
from edge_agent.trust.clock import TimeFloor, advance_floor

__all__ = ["TrustState", "with_bundle", "with_revocation", "with_root"]


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

    @property
    def installed(self) -> InstalledRef | None:
        if self.bundle is None:
            return None
        return InstalledRef(self.bundle.version, self.bundle.digest)

    @property
    def revocation_epoch(self) -> int:
        return max((r.epoch for r in self.revocations), default=0)


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
    )


def with_root(state: TrustState, root: TrustRoot) -> TrustState:
    """The state after rotating to ``root`` (already verified against the current one)."""
    return replace(state, root=root, floor=advance_floor(state.floor, root.issued_at))


def with_revocation(state: TrustState, revocation: Revocation) -> TrustState:
    """The state after recording ``revocation`` (already verified, epoch already checked)."""
    return replace(
        state,
        revocations=(*state.revocations, revocation),
        floor=advance_floor(state.floor, revocation.issued_at),
    )


def _is_scope(revocation: Revocation) -> bool:
    return revocation.kind.value in ("device", "group", "region")

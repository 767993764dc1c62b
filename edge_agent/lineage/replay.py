"""Replay: re-decide logged requests with the bundle each was decided under (by digest).

Entries whose outcome depended on state a bundle does not hold (no bundle, clock, the root in
force, a bundle distrusted after a rotation, revocation, freshness, attestation, the lineage,
internal errors) are skipped; all others must come out with the same verdict, reason and
rule. Those others passed every such check when they were decided, so replay takes them as
passing at each entry's time: the newest root as unexpired, the hub's freshness as current,
and the bundle's attestation expectations as met (measurements are not in the bundle).

A decision that cited a parent is re-decided from the parent facts its entry recorded (the
verified device, groups, action, resource, subject, time and depth, or the refusal, judged
against the directory version named there): the receipt is not verified again, and the
directory need not be held any more. Its age is the entry's time minus the parent's, as when
it was decided, so ``parent_missing`` and ``parent_invalid`` replay exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from edge_agent.errors import BundleError, EdgeGovError
from edge_agent.lineage.store import LineageStore
from edge_agent.policy.bundle import CompiledBundle, compile_for_device
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.root import TrustRoot
from edge_agent.store import StateStore
from edge_agent.trust.clock import TimeFloor
from edge_agent.trust.gate import decide
from edge_agent.trust.restore import verify_stored_roots
from edge_agent.trust.state import TrustState

__all__ = ["Divergence", "ReplayReport", "replay"]

_NOT_REPLAYABLE = frozenset(
    {
        "no_bundle",
        "clock_untrusted",
        "root_expired",
        "bundle_untrusted",
        "revoked",
        "freshness_expired",
        "internal_error",
        "lineage_unavailable",
        "attestation_failed",
        "attestation_stale",
    }
)
"""Gate reasons that come from state a bundle does not hold (module docstring)."""


@dataclass(frozen=True, slots=True)
class Divergence:
    seq: int
    why: str


@dataclass(frozen=True, slots=True)
class ReplayReport:
    replayed: int
    skipped: int
    divergences: tuple[Divergence, ...]


def replay(state_dir: Path, lineage: LineageStore, since: int | None) -> ReplayReport:
    """Re-decide every decision entry (from time ``since``) and report divergences.

    Raises:
        LineageError: the log cannot be read or an entry is malformed.
        StateError: the trust state cannot be read.
    """
    state_store = StateStore.open(state_dir)
    try:
        stored = state_store.load()
        roots = verify_stored_roots(stored.roots)
        bundles: dict[bytes, CompiledBundle | str] = {}
        replayed = skipped = 0
        divergences: list[Divergence] = []
        where, params = (
            ("kind = 'decision'", [])
            if since is None
            else ("kind = 'decision' AND time >= ?", [since])
        )
        for seq, data, _ in lineage.iter_rows(0, where, params):
            entry = decode_entry(data, seq)
            if entry.kind is not Kind.DECISION or entry.request is None:
                continue
            if entry.reason in _NOT_REPLAYABLE or entry.bundle_digest is None:
                skipped += 1
                continue
            digest = entry.bundle_digest
            if digest not in bundles:
                bundles[digest] = _bundle(state_store, digest, roots, stored.identity)
            bundle = bundles[digest]
            replayed += 1
            if isinstance(bundle, str):
                divergences.append(Divergence(seq, bundle))
                continue
            state = _replay_state(stored.identity, roots[-1], bundle, entry.time)
            again = decide(state, entry.request, entry.time)
            logged = (entry.allowed, entry.reason, entry.rule)
            now = (again.allowed, str(again.reason), again.rule_id)
            if logged != now:
                divergences.append(Divergence(seq, f"logged {logged}, replayed {now}"))
        return ReplayReport(replayed, skipped, tuple(divergences))
    finally:
        state_store.close()


def _replay_state(
    device: DeviceIdentity, root: TrustRoot, bundle: CompiledBundle, time: int
) -> TrustState:
    """The state a replayable entry logged at ``time`` was decided in, as far as the bundle
    tells: every check on other state passed then (module docstring). The newest root may
    have expired since, or have been installed already expired, and neither says anything
    about the decision."""
    return TrustState(
        device,
        replace(root, expires_at=max(root.expires_at, time + 1)),
        replace(bundle, attestation=None),
        TimeFloor(0),
        fresh_time=time,
    )


def _bundle(
    store: StateStore, digest: bytes, roots: tuple[TrustRoot, ...], device: DeviceIdentity
) -> CompiledBundle | str:
    data = store.bundle_by_digest(digest)
    if data is None:
        return f"bundle sha256:{digest.hex()[:16]} is no longer stored"
    if hashlib.sha256(data).digest() != digest:
        return f"the bundle stored under sha256:{digest.hex()[:16]} is not the one logged"
    error: EdgeGovError | None = None
    for root in reversed(roots):
        try:
            return compile_for_device(data, root=root, device=device, installed=None, now=None)
        except BundleError as exc:
            error = exc
    return f"bundle sha256:{digest.hex()[:16]} does not verify: {error}"

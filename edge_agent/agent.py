"""The agent's state directory, opened: load and re-verify, install, decide, report.

This is the I/O shell around the pure core. Each operation reads the clock once (the caller
passes ``wall``) and uses that value throughout. Everything read back from disk is verified
again before it is trusted: a database edited behind the agent's back can only make it deny.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from edge_agent.device_key import load_or_create_device_key
from edge_agent.errors import BundleError, EdgeGovError, StateError
from edge_agent.lineage.entries import Kind
from edge_agent.lineage.log import LineageConfig, LineageLog
from edge_agent.policy.engine import Request
from edge_agent.protocol.bundle import DeviceIdentity, VerifiedBundle, verify_bundle
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.root import TrustRoot, verify_root_update, verify_trusted_root
from edge_agent.store import StateStore
from edge_agent.trust.clock import TimeFloor
from edge_agent.trust.gate import Decision, GateCheck, check_report, decide, lineage_unavailable
from edge_agent.trust.state import TrustState, with_bundle, with_root

__all__ = ["InstallResult", "LocalAgent", "init_state_dir"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InstallResult:
    bundle: VerifiedBundle
    unchanged: bool


def init_state_dir(
    state_dir: Path, identity: DeviceIdentity, root_bytes: bytes, wall: int
) -> PublicKey:
    """Enrol this device: pin ``root_bytes``, record ``identity``, create the device key.

    Returns the device's public key, for the hub to register.

    Raises:
        RootError: the root is not a valid, self-signed, unexpired trust root.
        StateError: the directory is already initialised or cannot be written.
    """
    root = verify_trusted_root(root_bytes, now=wall)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the state directory {state_dir}: {exc}") from exc
    if not os.access(state_dir, os.W_OK):
        raise StateError(f"the state directory {state_dir} is not writable")
    StateStore.create(state_dir, identity, root.raw, wall)
    key = load_or_create_device_key(state_dir)
    logger.info(
        "device enrolled: device=%s region=%s root_version=%d",
        identity.device_id,
        identity.region,
        root.version,
    )
    return key.public


class LocalAgent:
    """An opened state directory and the trust state verified from it."""

    def __init__(
        self, store: StateStore, state: TrustState, lineage: LineageLog | None = None
    ) -> None:
        self.store = store
        self.state = state
        self.lineage = lineage
        self.last_seq: int | None = None
        """Lineage seq of the last decision this agent returned (``None``: not logged)."""

    @classmethod
    def open(cls, state_dir: Path, lineage: LineageConfig | None = None) -> LocalAgent:
        """Open ``state_dir`` and re-verify the root chain and the active bundle.

        A root chain that fails verification is an error (nothing can be trusted); an active
        bundle that fails verification leaves a state that denies with ``internal_error``.

        Raises:
            StateError: not initialised, unreadable, or its trust roots do not verify.
        """
        store = StateStore.open(state_dir)
        try:
            stored = store.load()
            root = _verify_root_chain(stored.roots)
        except EdgeGovError as exc:
            store.close()
            raise StateError(f"the agent state in {state_dir} does not verify: {exc}") from exc
        state = TrustState(device=stored.identity, root=root, floor=TimeFloor(stored.time_floor))
        if stored.active_bundle is not None:
            try:
                bundle = verify_bundle(
                    stored.active_bundle,
                    root=root,
                    device=stored.identity,
                    installed=None,
                    now=None,
                )
                state = TrustState(stored.identity, root, bundle, state.floor)
            except BundleError as exc:
                logger.error("installed bundle failed re-verification: %s", exc)
                state = TrustState(
                    stored.identity,
                    root,
                    None,
                    state.floor,
                    fault=f"the installed bundle failed verification: {exc}",
                )
        log = LineageLog.open(state_dir, stored.identity.device_id, config=lineage)
        return cls(store, state, log)

    def close(self) -> None:
        if self.lineage is not None:
            self.lineage.close(int(time.time()))
        self.store.close()

    def __enter__(self) -> LocalAgent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def install_bundle(self, data: bytes, wall: int) -> InstallResult:
        """Verify ``data`` and make it the active bundle; on any failure nothing changes.

        The expiry check uses the later of the wall clock and the trusted floor: time is at
        least the floor even when the wall clock is behind it.

        Raises:
            BundleError: the bundle was refused; the installed one stays.
            StateError: the new state could not be written; the installed one stays.
        """
        now = max(wall, self.state.floor.seconds)
        try:
            bundle = verify_bundle(
                data,
                root=self.state.root,
                device=self.state.device,
                installed=self.state.installed,
                now=now,
            )
        except BundleError as exc:
            logger.warning("bundle rejected: code=%s %s", exc.code, exc)
            self._transition(Kind.BUNDLE_REJECTED, wall, False, exc.code, str(exc))
            raise
        if bundle.unchanged:
            logger.info("bundle version %d already installed; no change", bundle.version)
            return InstallResult(bundle, unchanged=True)
        new_state = with_bundle(self.state, bundle)
        self.store.install_bundle(
            data=data,
            digest=bundle.digest,
            version=bundle.version,
            time_floor=new_state.floor.seconds,
            now=wall,
        )
        self.state = new_state
        logger.info(
            "bundle installed: version=%d digest=%s expires_at=%d",
            bundle.version,
            bundle.digest.hex(),
            bundle.expires_at,
        )
        self._transition(
            Kind.BUNDLE_INSTALLED,
            wall,
            True,
            "bundle_installed",
            f"bundle version {bundle.version} installed",
            bundle.digest,
            bundle.version,
        )
        return InstallResult(bundle, unchanged=False)

    def install_root(self, data: bytes, wall: int) -> TrustRoot:
        """Rotate to the next trust root; on any failure nothing changes.

        Raises:
            RootError: not signed by both thresholds, not exactly the next version, or expired.
            StateError: the new root could not be written.
        """
        now = max(wall, self.state.floor.seconds)
        root = verify_root_update(self.state.root, data, now=now)
        new_state = with_root(self.state, root)
        self.store.install_root(
            data=root.raw, version=root.version, time_floor=new_state.floor.seconds, now=wall
        )
        self.state = new_state
        logger.info("trust root rotated to version %d", root.version)
        self._transition(
            Kind.ROOT_ROTATED, wall, True, "root_rotated", f"trust root version {root.version}"
        )
        return root

    def decide(self, request: Request, wall: int) -> Decision:
        """Decide ``request`` at ``wall``; the decision is durable in the lineage before it
        is returned, or it is replaced by a deny with ``lineage_unavailable``."""
        decision = decide(self.state, request, wall)
        if self.lineage is None:
            return lineage_unavailable(decision, "the lineage is not open")
        decision, self.last_seq = self.lineage.record_decision(decision)
        return decision

    def _transition(
        self,
        kind: Kind,
        wall: int,
        applied: bool,
        reason: str,
        detail: str,
        digest: bytes | None = None,
        version: int | None = None,
    ) -> None:
        if self.lineage is not None:
            self.lineage.record_transition(
                kind,
                time=wall,
                applied=applied,
                reason=reason,
                detail=detail,
                bundle_digest=digest,
                bundle_version=version,
            )

    def checks(self, wall: int) -> tuple[GateCheck, ...]:
        return check_report(self.state, wall)


def _verify_root_chain(roots: tuple[bytes, ...]) -> TrustRoot:
    root = verify_trusted_root(roots[0], now=None)
    for data in roots[1:]:
        root = verify_root_update(root, data, now=None)
    return root

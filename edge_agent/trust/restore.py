"""The trust state a state directory holds, verified again from its bytes.

Everything the store hands back is bytes the agent verified once; none of it is trusted
again until it verifies under the newest root of the stored chain. The rules:

1. The root chain must verify from the pinned root up (expiry not judged: TUF); when it
   does not, nothing can be trusted and the state does not load.
2. The active bundle that no longer verifies under the newest root is kept only as
   distrusted (the gate denies ``bundle_untrusted``).
3. A stored revocation that no longer verifies faults the state: an edited database must
   deny, not silently drop a kill switch.
4. A stored freshness token or attestation result that no longer verifies is left out
   (logged): it could only have allowed more.

A root rotation voids what the new root no longer verifies (:func:`void_revocations`,
:func:`void_tokens`), so that the store deletes exactly what step 3 and 4 would refuse.

Nothing here reads the store or a file: the shell loads the bytes and passes them in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from edge_agent.protocol.attestation import AttestationError, verify_result
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.freshness import FreshnessError, verify_freshness
from edge_agent.protocol.revocation import RevocationError, verify_revocation
from edge_agent.protocol.root import TrustRoot, verify_root_update, verify_trusted_root
from edge_agent.trust.clock import TimeFloor
from edge_agent.trust.state import (
    LocalVerdict,
    TrustState,
    with_active_bundle,
    with_freshness,
    with_revocation,
)

__all__ = [
    "StoredTrust",
    "restore_state",
    "verify_stored_roots",
    "void_revocations",
    "void_tokens",
]

logger = logging.getLogger(__name__)


class StoredTrust(Protocol):
    """The raw state as stored (:class:`edge_agent.store.StoredState`), before it is
    verified again: what restoring and rotating read."""

    @property
    def identity(self) -> DeviceIdentity: ...

    @property
    def roots(self) -> tuple[bytes, ...]: ...

    @property
    def active_bundle(self) -> bytes | None: ...

    @property
    def active_version(self) -> int: ...

    @property
    def floor(self) -> TimeFloor: ...

    @property
    def revocations(self) -> tuple[bytes, ...]: ...

    @property
    def revocation_epochs(self) -> tuple[int, ...]: ...

    @property
    def seen_epoch(self) -> int: ...

    @property
    def announced_epoch(self) -> int: ...

    @property
    def freshness(self) -> bytes | None: ...

    @property
    def pin(self) -> bytes | None: ...


def restore_state(
    stored: StoredTrust, result: bytes | None, local: LocalVerdict | None
) -> TrustState:
    """The trust state ``stored`` holds, every object verified again under its newest root,
    with the attestation state kept beside it: the hub's ``result`` (bytes) and the
    ``local`` verdict (module docstring, steps 1 to 4).

    Raises:
        RootError: the root chain does not verify (step 1).
    """
    root = verify_stored_roots(stored.roots)[-1]
    state = TrustState(device=stored.identity, root=root, floor=stored.floor)
    if stored.active_bundle is not None:
        state = with_active_bundle(state, stored.active_bundle, stored.active_version)
        if state.distrusted is not None:
            logger.debug("decisions deny bundle_untrusted: %s", state.distrusted.why)
    state = _restore_revocations(state, stored.revocations, stored.seen_epoch)
    state = replace(state, announced_epoch=stored.announced_epoch)
    state = _restore_freshness(state, stored.freshness)
    state = _restore_freshness(state, stored.pin)
    return _restore_attestation(state, result, local)


def verify_stored_roots(roots: Sequence[bytes]) -> tuple[TrustRoot, ...]:
    """The stored ``roots`` (pinned root first, the newest, in force, last), each verified
    against the one before it; expiry is not judged (the gate denies ``root_expired``).

    Raises:
        RootError: a root does not verify.
    """
    chain = [verify_trusted_root(roots[0], now=None)]
    for data in roots[1:]:
        chain.append(verify_root_update(chain[-1], data, now=None))
    return tuple(chain)


def void_revocations(stored: StoredTrust, state: TrustState) -> tuple[int, ...]:
    """Epochs of stored revocations that do not verify under ``state.root`` (their revoke
    key was rotated away: rotating it voids what it signed)."""
    void = []
    for epoch, data in zip(stored.revocation_epochs, stored.revocations, strict=True):
        try:
            verify_revocation(data, root=state.root, region=state.device.region)
        except RevocationError:
            void.append(epoch)
    return tuple(void)


def void_tokens(stored: StoredTrust, state: TrustState) -> tuple[str, ...]:
    """Which stored freshness tokens (``freshness``, ``pin``) do not verify under
    ``state.root``."""
    void = []
    for key, data in (("freshness", stored.freshness), ("pin", stored.pin)):
        if data is None:
            continue
        try:
            verify_freshness(data, root=state.root, region=state.device.region, now=0)
        except FreshnessError:
            void.append(key)
    return tuple(void)


def _restore_revocations(state: TrustState, stored: tuple[bytes, ...], seen: int) -> TrustState:
    """Re-verify every stored revocation and re-apply those the active bundle has not lifted;
    one that no longer verifies faults the state (step 3)."""
    for data in stored:
        try:
            revocation = verify_revocation(data, root=state.root, region=state.device.region)
        except RevocationError as exc:
            return replace(state, fault=f"a stored revocation failed verification: {exc}")
        state = with_revocation(state, revocation)
    return replace(state, seen_epoch=max(seen, state.seen_epoch))


def _restore_freshness(state: TrustState, stored: bytes | None) -> TrustState:
    """Re-apply the stored freshness token, if it still verifies (expiry is not checked:
    its hub time is what counts, and ``max_offline`` ages it)."""
    if stored is None:
        return state
    try:
        token = verify_freshness(stored, root=state.root, region=state.device.region, now=0)
    except FreshnessError as exc:
        logger.error("stored freshness token failed verification: %s", exc)
        return state
    return with_freshness(state, token)


def _restore_attestation(
    state: TrustState, result: bytes | None, local: LocalVerdict | None
) -> TrustState:
    """The hub's ``result`` only if it still verifies for this device under the current root
    (its expiry is the gate's to judge), the ``local`` verdict as recorded (it counts only
    until its ``valid_until``)."""
    verified = None
    if result is not None:
        try:
            verified = verify_result(result, root=state.root, device=state.device.device_id)
        except AttestationError as exc:
            logger.error("stored attestation result failed verification: %s", exc)
    return replace(state, local_attestation=local, attestation_result=verified)

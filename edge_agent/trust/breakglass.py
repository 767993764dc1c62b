"""Break-glass tokens judged against a device's trust state.

The token format and everything a token says about itself live in
``edge_agent.protocol.breakglass``; this module adds what only the device's state knows: its
trusted time (never earlier than the signed time floor, so setting the clock back cannot
revive an old token), the keys a revocation has revoked, and that a revocation denying this
device outranks any token.
"""

from __future__ import annotations

from edge_agent.protocol.breakglass import (
    BreakGlassError,
    BreakGlassToken,
    verify_break_glass_token,
)
from edge_agent.protocol.revocation import RevocationKind
from edge_agent.trust.clock import earliest_now
from edge_agent.trust.state import TrustState

__all__ = ["verify_break_glass"]


def verify_break_glass(data: bytes, *, state: TrustState, now: int) -> BreakGlassToken:
    """Verify a token for this device against ``state`` at trusted time ``now``.

    Raises:
        BreakGlassError: too large, malformed, under the verifier threshold (revoked keys
            not counted), for another device, outside its window, or a revocation denies
            this device.
    """
    device = state.device
    token = verify_break_glass_token(
        data,
        root=state.root,
        device_id=device.device_id,
        revoked_keys=frozenset(r.value for r in state.revocations if r.kind is RevocationKind.KEY),
        now=earliest_now(now, state.floor),
    )
    for revocation in state.revocations:
        if revocation.denies_device(device):
            raise BreakGlassError(
                f"this device is revoked (epoch {revocation.epoch}); a revocation outranks "
                "break-glass: the hub must lift it with a new bundle"
            )
    return token

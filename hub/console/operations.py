"""What the console's governance actions ask of the running hub: :class:`HubActions`.

The console never signs with root or policy keys and never publishes on its own: it hands
each action to the hub that serves it (:class:`hub.service.governance.Governance`, the same
operations ``edge-hub bundle push``, ``revoke``, ``attest challenge`` and ``device add``
run), which verifies, records and publishes on its own broker connection. This module names
that contract only, so the console imports nothing of the hub's service (which imports the
console to serve it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from edge_agent.protocol.attestation import Challenge
from edge_agent.protocol.revocation import RevocationKind
from hub.core.push import PushPlan
from hub.registry import DeviceRecord, IssuedRevocation

__all__ = ["HubActions", "Published"]


@dataclass(frozen=True, slots=True)
class Published:
    """What a governance action on the running hub did with its messages."""

    count: int
    """Messages published on the hub's connection (0 when it had none)."""
    error: str | None = None
    """Why nothing was published now (recorded only; the hub publishes on reconnecting)."""

    def describe(self) -> str:
        if self.error is not None:
            return (
                f"recorded; not published yet ({self.error}): the hub publishes it when it "
                "reconnects"
            )
        return f"published on the hub's connection ({self.count} message(s))"


class HubActions(Protocol):
    """The governance actions of a running hub (each method's docstring in
    :class:`hub.service.governance.Governance`)."""

    async def preview_push(self, data: bytes, *, lift_revocations: bool = False) -> PushPlan:
        """Verify and plan a signed bundle as ``bundle push`` does; record nothing."""
        ...

    async def push(
        self, data: bytes, *, lift_revocations: bool = False
    ) -> tuple[PushPlan, Published]:
        """Verify, record and publish a signed bundle."""
        ...

    async def preview_revocation(
        self, scope: tuple[RevocationKind, str], *, region: str | None
    ) -> str:
        """The region a revocation of ``scope`` goes to; nothing signed."""
        ...

    def resolve_key(self, text: str) -> str:
        """The full id of the current root's key whose id starts with ``text``."""
        ...

    async def revoke(
        self, scope: tuple[RevocationKind, str], *, region: str | None, reason: str
    ) -> tuple[IssuedRevocation, Published]:
        """Sign with the hub's revoke keys, record and publish a revocation."""
        ...

    async def challenge(self, device_id: str) -> Challenge:
        """Challenge a registered device's attestation now."""
        ...

    def preview_register(
        self,
        device_id: str,
        *,
        region: str,
        groups: Sequence[str],
        profile: str,
        public_key_pem: str,
    ) -> DeviceRecord:
        """The record ``device add`` would register, checked; nothing written."""
        ...

    async def register(
        self,
        device_id: str,
        *,
        region: str,
        groups: Sequence[str],
        profile: str,
        public_key_pem: str,
    ) -> DeviceRecord:
        """Check and register a device with the running hub."""
        ...

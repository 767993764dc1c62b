"""The status family: record each verified, fresh device status.

A device's signed status is the only thing that moves "last heard from". It is recorded
only if signed within ``status_window_s`` of the hub's time and not older than the one held;
a device reporting ``attestation_failed`` or ``attestation_stale`` is challenged soon.
"""

from __future__ import annotations

import logging

from edge_agent.protocol.shipping import DeviceStatus
from edge_agent.trust.gate import Reason
from hub.registry import DeviceRecord
from hub.service.context import ServiceContext, wall
from hub.service.evidence import EvidenceHandler

__all__ = ["StatusHandler"]

logger = logging.getLogger(__name__)

_ATTESTATION_GATES = frozenset({Reason.ATTESTATION_FAILED, Reason.ATTESTATION_STALE})


class StatusHandler:
    """Records fresh statuses; asks the evidence handler to challenge a device that needs it."""

    def __init__(self, context: ServiceContext, evidence: EvidenceHandler) -> None:
        self._context = context
        self._evidence = evidence

    def handle(self, device: DeviceRecord, status: DeviceStatus, payload: bytes) -> None:
        """Record a verified status if it is fresh: signed within ``status_window_s`` of the
        hub's time and not older than the one held (:meth:`Registry.record_status`).
        Anything else (a replay, a last will signed at connect and delivered after newer
        heartbeats, the retained status of a device that stopped long ago) is not news and
        changes nothing, liveness included."""
        context = self._context
        now = wall()
        if abs(status.time - now) > context.config.status_window_s:
            context.stats.stale_statuses += 1
            logger.debug(
                "status of %s signed at %d ignored: hub time is %d",
                device.device_id,
                status.time,
                now,
            )
            return
        if not context.registry.record_status(status, payload, now):
            context.stats.stale_statuses += 1
            logger.debug("status of %s signed at %d is not newer", device.device_id, status.time)
            return
        context.stats.statuses += 1
        if status.online and status.gate in _ATTESTATION_GATES:
            self._evidence.challenge_soon(device)

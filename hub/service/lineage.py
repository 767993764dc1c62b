"""The lineage family: store each verified batch, witness it, then acknowledge it.

A batch whose envelope verified is checked against the device's stored log
(:mod:`hub.core.ingest`); an accepted one has its checkpoint cosigned by the hub's witness
key (:mod:`hub.core.witness`) and is stored, cosigned note included, in the burst's
transaction; its signed, retained ack, carrying the cosigned note, is queued in the outbox
and published only after the commit that made the entries durable (DESIGN.md section 5: a
broker's PUBACK says nothing about disk). A duplicate or a re-acknowledged refusal carries
the note stored at the acknowledged size; nothing but an accepted batch is cosigned.
"""

from __future__ import annotations

import logging

from edge_agent.protocol.checkpoint import origin_for
from edge_agent.protocol.shipping import LineageBatch
from hub.core.ingest import Duplicate, IngestError, ingest_opened
from hub.core.publications import ack_publication
from hub.core.witness import witness_accepted
from hub.registry import DeviceRecord
from hub.registry.records import Accepted, DeviceLog
from hub.service.context import ServiceContext, wall

__all__ = ["STORE_RETRIES", "LineageHandler"]

logger = logging.getLogger(__name__)

STORE_RETRIES = 3
"""Times a batch is re-verified when another hub process stored one of that device's
batches between verification and commit."""


class LineageHandler:
    """Ingests verified lineage batches and queues their acks."""

    def __init__(self, context: ServiceContext) -> None:
        self._context = context
        if context.keys.witness is None:
            logger.warning(
                "no verifier key of trust root version %d: device checkpoints are stored and "
                "acknowledged without the hub's cosignature, so hub receipts cannot be made",
                context.keys.root.version,
            )

    def handle(self, device: DeviceRecord, batch: LineageBatch, payload: bytes) -> None:
        """Ingest a batch whose envelope verified. A duplicate is acknowledged again but
        says nothing about the device being alive now (it may be a replay)."""
        registry, stats, device_id = self._context.registry, self._context.stats, device.device_id
        origin = origin_for(device_id, device.key_epoch)
        for _ in range(STORE_RETRIES):
            log = registry.lineage_state(device_id)
            now = wall()
            try:
                result = ingest_opened(
                    batch,
                    payload,
                    key=device.public_key,
                    origin=origin,
                    log=log,
                    stored=registry.stored_log(device_id),
                )
            except IngestError as exc:
                self._refused(device, exc, now)
                return
            if isinstance(result, Duplicate):
                stats.duplicates += 1
                self._ack(device, log, now)
                return
            result = self._witnessed(result, device, now)
            if registry.store_batch(result, expected_size=log.size, received_at=now):
                stats.batches_accepted += 1
                stats.entries_stored += len(result.entries)
                logger.debug(
                    "lineage of %s: stored %d..%d",
                    device_id,
                    result.first_seq,
                    result.acked - 1,
                )
                self._ack(device, result.log, now)
                return
        logger.warning(
            "lineage batch of %s raced other hubs %d times; dropped", device_id, STORE_RETRIES
        )

    def _witnessed(self, accepted: Accepted, device: DeviceRecord, now: int) -> Accepted:
        """``accepted`` with its checkpoint cosigned by the witness key; as it is when the
        hub holds no witness key or the note cannot carry another line (logged)."""
        key = self._context.witness
        if key is None:
            return accepted
        try:
            return witness_accepted(accepted, key, device_key=device.public_key, now=now)
        except ValueError as exc:
            logger.warning(
                "checkpoint of %s at size %d stored without the hub's cosignature: %s",
                accepted.device,
                accepted.acked,
                exc,
            )
            return accepted

    def _refused(self, device: DeviceRecord, exc: IngestError, now: int) -> None:
        level = logging.ERROR if exc.fork is not None else logging.WARNING
        logger.log(level, "lineage batch of %s refused: %s", device.device_id, exc)
        if exc.fork is not None:
            self._context.registry.record_fork(exc.fork, now)
        self._context.rejections.reject(device.device_id, exc.reject_code, str(exc))
        if exc.reack:
            self._ack(device, self._context.registry.lineage_state(device.device_id), now)

    def _ack(self, device: DeviceRecord, log: DeviceLog, now: int) -> None:
        """Queue the signed ack of ``log``, with the checkpoint note stored at its size (the
        newest per device wins); it is published after the registry commit that made the
        acknowledged entries durable."""
        publication = ack_publication(
            region=device.region,
            device=device.device_id,
            acked=log.size,
            root=log.root,
            key=self._context.keys.freshness,
            now=now,
            checkpoint=log.checkpoint,
        )
        self._context.outbox[publication.topic] = publication

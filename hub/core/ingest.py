"""Verify one shipped lineage batch against what the hub already holds for that device.

The hub is the witness of each device's log (DESIGN.md section 4): it accepts a batch only
when it extends, entry by entry, the tree it holds, and when the device's signed checkpoint
names exactly the root the hub recomputed. :func:`ingest_batch` is pure: the caller hands in
the stored state of the device's log (:class:`DeviceLog`) and read access to the entries and
checkpoints it stored (:class:`StoredLog`), and gets back what to store and acknowledge, or
an :class:`IngestError` saying why not and whether to re-acknowledge the stored size.

Outcomes:

- :class:`Accepted`: the new entries (a batch overlapping the stored tail with identical
  entries is trimmed to what is new), the log state after them, the root to acknowledge,
  and the Merkle nodes the registry keeps that they closed.
- :class:`Duplicate`: every entry is stored already, identically: re-acknowledge, store
  nothing.
- :class:`IngestError` with ``reack`` set for batches the real device may legitimately send
  (a gap after a lost batch, a broken chain): the stored size is acknowledged again so the
  device resends from there. Batches that are not the device's (envelope not signed by its
  registered key: ``impersonation``) or no batch at all (bytes that are no well-formed
  envelope: ``malformed``) are never acknowledged.
- :class:`IngestError` with ``fork`` set: the device signed a checkpoint whose root is not
  the one recomputed from the entries it shipped on top of what the hub holds, or shipped
  other entries for positions it had already shipped under a signed checkpoint. Both
  signed notes are kept as evidence; nothing is stored.

This module does no I/O and keeps no state.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import LineageError
from edge_agent.protocol.checkpoint import Checkpoint, verify_checkpoint
from edge_agent.protocol.cose import MalformedEnvelopeError
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.lineage_entries import ChainVerifier, Entry
from edge_agent.protocol.merkle import HASH_SIZE, Node
from edge_agent.protocol.shipping import LineageBatch, ShippingError, verify_batch
from hub.core.codes import RejectCode
from hub.registry.records import (
    STORED_NODE_LEVEL,
    Accepted,
    DeviceLog,
    ForkEvidence,
    StoredLog,
)

__all__ = [
    "Duplicate",
    "IngestError",
    "RejectCode",
    "ingest_batch",
    "ingest_opened",
    "open_batch",
]


class IngestError(LineageError):
    """A lineage batch was refused.

    ``reject_code`` names the check (see :class:`RejectCode`); ``reack`` says whether the
    stored size should be acknowledged again so the device resends from there; ``fork``
    holds the evidence when the refusal is a fork.
    """

    code = "lineage_batch_rejected"

    def __init__(
        self,
        message: str,
        *,
        reject_code: RejectCode,
        reack: bool,
        seq: int | None = None,
        fork: ForkEvidence | None = None,
    ) -> None:
        super().__init__(message, seq=seq)
        self.reject_code = reject_code
        self.reack = reack
        self.fork = fork


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Everything in the batch is stored already: acknowledge ``acked`` again."""

    device: str
    acked: int
    root: bytes


def ingest_batch(
    data: bytes,
    *,
    device: str,
    key: PublicKey,
    origin: str,
    log: DeviceLog,
    stored: StoredLog,
) -> Accepted | Duplicate:
    """Verify the batch ``data`` received on ``device``'s lineage topic.

    Steps: 1. the envelope is signed by the device's registered ``key`` for ``device``;
    2. the checkpoint note is signed by that key under ``origin`` and covers exactly the
    batch's end; 3. the batch starts at or before the stored size (after: a gap); 4. the
    part already stored is identical (otherwise: fork); 5. the new entries chain onto the
    stored frontier and last hash; 6. the checkpoint root is the recomputed root (otherwise:
    fork).

    Raises:
        IngestError: with ``reject_code`` and ``reack``, and ``fork`` for fork evidence.
    """
    return ingest_opened(
        open_batch(data, device, key), data, key=key, origin=origin, log=log, stored=stored
    )


def ingest_opened(
    batch: LineageBatch,
    data: bytes,
    *,
    key: PublicKey,
    origin: str,
    log: DeviceLog,
    stored: StoredLog,
) -> Accepted | Duplicate:
    """:func:`ingest_batch` from step 2, for ``batch`` that :func:`open_batch` returned
    for ``data`` (the hub checks the envelope before it charges the device's rate budget).

    Raises:
        IngestError: with ``reject_code`` and ``reack``, and ``fork`` for fork evidence.
    """
    device = batch.device
    end = batch.first_seq + len(batch.entries)
    checkpoint = _checkpoint(batch, key, origin, end, log)
    if batch.first_seq > log.size:
        raise IngestError(
            f"batch starts at entry {batch.first_seq} but the hub holds {log.size} entries "
            "(an earlier batch was lost)",
            reject_code=RejectCode.GAP,
            reack=True,
            seq=log.size,
        )
    overlap = min(end, log.size) - batch.first_seq
    if overlap > 0:
        _check_overlap(batch, overlap, stored, log, data)
    if end <= log.size:
        held = stored.checkpoint_root(end)
        if held is not None and held != checkpoint.root:
            raise _fork(batch, log, data, f"two signed roots for tree size {end}")
        return Duplicate(device, log.size, log.root)
    new_entries = batch.entries[max(overlap, 0) :]
    verifier = ChainVerifier(log.frontier, log.last_hash)
    nodes: list[Node] = []
    decoded: list[Entry] = []
    for offset, entry in enumerate(new_entries):
        try:
            decoded.append(verifier.feed(log.size + offset, entry))
            if len(verifier.closed) > _STORED_PREFIX:
                nodes.extend(_stored_nodes(log.size + offset, verifier.closed))
        except LineageError as exc:
            raise IngestError(
                f"batch breaks the chain: {exc}",
                reject_code=RejectCode.CHAIN_BREAK,
                reack=True,
                seq=exc.seq,
            ) from exc
    if verifier.frontier.root() != checkpoint.root:
        raise _fork(
            batch, log, data, f"signed root for size {end} is not the root of the shipped entries"
        )
    assert verifier.prev is not None
    new_log = DeviceLog(end, verifier.frontier, verifier.prev, batch.checkpoint)
    return Accepted(
        device, log.size, tuple(new_entries), new_log, checkpoint, tuple(nodes), tuple(decoded)
    )


_STORED_PREFIX = STORED_NODE_LEVEL * HASH_SIZE


def _stored_nodes(seq: int, closed: bytes) -> list[Node]:
    """The nodes of level :data:`STORED_NODE_LEVEL` and up in ``closed``, the leaf of entry
    ``seq`` and the inner nodes it closed, concatenated bottom up."""
    return [
        Node(level, seq >> level, closed[level * HASH_SIZE : (level + 1) * HASH_SIZE])
        for level in range(STORED_NODE_LEVEL, len(closed) // HASH_SIZE)
    ]


def open_batch(data: bytes, device: str, key: PublicKey) -> LineageBatch:
    """Step 1 of :func:`ingest_batch`: the envelope of ``data`` is signed by ``key`` for
    ``device``.

    Raises:
        IngestError: never re-acknowledged: ``malformed`` when ``data`` is no well-formed
            ``COSE_Sign1`` envelope, else ``impersonation``.
    """
    try:
        return verify_batch(data, device=device, key=key)
    except ShippingError as exc:
        if isinstance(exc.__cause__, MalformedEnvelopeError):
            raise IngestError(
                f"payload on {device}'s lineage topic is not a signed batch: {exc.message}",
                reject_code=RejectCode.MALFORMED,
                reack=False,
            ) from exc
        raise IngestError(
            f"batch on {device}'s topic is not signed by its registered key: {exc.message}",
            reject_code=RejectCode.IMPERSONATION,
            reack=False,
        ) from exc


def _checkpoint(
    batch: LineageBatch, key: PublicKey, origin: str, end: int, log: DeviceLog
) -> Checkpoint:
    try:
        checkpoint = verify_checkpoint(batch.checkpoint, key, origin)
    except LineageError as exc:
        raise IngestError(
            f"batch checkpoint refused: {exc}",
            reject_code=RejectCode.BAD_CHECKPOINT,
            reack=True,
        ) from exc
    if checkpoint.size != end:
        raise IngestError(
            f"batch checkpoint is for tree size {checkpoint.size}, the batch ends at {end}",
            reject_code=RejectCode.BAD_CHECKPOINT,
            reack=True,
        )
    return checkpoint


def _check_overlap(
    batch: LineageBatch, overlap: int, stored: StoredLog, log: DeviceLog, data: bytes
) -> None:
    held = stored.entries(batch.first_seq, batch.first_seq + overlap)
    for offset in range(overlap):
        if offset >= len(held) or held[offset] != batch.entries[offset]:
            seq = batch.first_seq + offset
            raise _fork(batch, log, data, f"entry {seq} differs from the one shipped before")


def _fork(batch: LineageBatch, log: DeviceLog, data: bytes, reason: str) -> IngestError:
    return IngestError(
        f"FORK: {reason}: the device signed two inconsistent histories",
        reject_code=RejectCode.FORK,
        reack=False,
        fork=ForkEvidence(batch.device, reason, log.checkpoint, batch.checkpoint, data),
    )

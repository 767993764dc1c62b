"""Verification of the stored lineage: chain, tree, checkpoint signatures and consistency.

Two depths: :func:`verify_store` from the log's base (``log verify``), and ``tail=True`` from
the last signed checkpoint only (start-up, bounded by the checkpoint interval). Both stream
the entries, so memory stays O(log n). Every failure is a :class:`LineageError` naming the
first bad seq when there is one.

A verification reads one snapshot of the log (one read transaction): the agent may append
while it runs, and entries committed meanwhile are simply not part of what is checked.

Given the head the agent recorded outside the log (:class:`~edge_agent.store.RecordedHead`),
:func:`check_head` also proves that the log still holds the tree it last signed and the one
the hub acknowledged: a log deleted, truncated or rewritten behind the agent's back fails it
even when what is left verifies on its own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from edge_agent.errors import LineageError
from edge_agent.lineage.store import LineageStore, StoredCheckpoint
from edge_agent.protocol.checkpoint import Checkpoint, verify_checkpoint
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.lineage_entries import GENESIS_PREV, ChainVerifier, entry_hash
from edge_agent.protocol.merkle import consistency_proof, verify_consistency
from edge_agent.store import RecordedHead

__all__ = ["VerifyReport", "check_head", "verify_store"]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a successful verification covered."""

    base: int
    start: int
    size: int
    checkpoints: int
    last_checkpoint: int | None
    unsigned_tail: int


def verify_store(
    store: LineageStore,
    public_key: PublicKey,
    origin: str,
    *,
    tail: bool = False,
    head: RecordedHead | None = None,
) -> VerifyReport:
    """Verify the stored log from its base (or, with ``tail``, from the last checkpoint),
    in one snapshot; with ``head``, then :func:`check_head` in the same snapshot (after the
    entries, so a failure names the first bad entry when there is one).

    Raises:
        LineageError: the first failure, with the seq at fault when there is one.
    """
    with store.snapshot() as view:
        report = _verify(view, public_key, origin, tail)
        if head is not None:
            check_head(view, head, public_key, origin)
        return report


def check_head(store: LineageStore, head: RecordedHead, public_key: PublicKey, origin: str) -> None:
    """Check that the log still holds the trees recorded in the agent state.

    Steps, for the last signed checkpoint and the hub's last acknowledgement (each skipped
    while nothing is recorded): 1. the log has at least that many entries and was not
    pruned past it; 2. a consistency proof from stored nodes leads from the recorded root
    to the log's current root. Then 3. the signed checkpoint at the recorded size is still
    stored, and signs the recorded root.

    Raises:
        LineageError: the log is shorter than, or not an extension of, what was recorded.
    """
    tip = store.tip()
    recorded = (
        ("the last signed checkpoint", head.size, head.root),
        ("the hub's last acknowledgement", head.acked, head.acked_root),
    )
    for what, size, root in recorded:
        if size == 0:
            continue
        if size > tip.size:
            raise LineageError(
                f"the log holds {tip.size} entries but the agent state records {size} at "
                f"{what}: entries are missing",
                seq=tip.size,
            )
        if size < tip.base:
            raise LineageError(
                f"the log starts at entry {tip.base}, after {what} recorded in the agent "
                f"state (size {size})",
                seq=tip.base,
            )
        try:
            proof = consistency_proof(size, tip.size, store.get_node)
            current = store.frontier(tip.size).root()
            verify_consistency(size, tip.size, root, current, proof)
        except LineageError as exc:
            raise LineageError(
                f"the log is not an extension of {what} recorded in the agent state "
                f"(size {size}, root {root.hex()[:16]}...): {exc}",
                seq=size - 1,
            ) from exc
    if head.size:
        stored = store.checkpoints(head.size)[:1]
        if not stored or stored[0].size != head.size:
            raise LineageError(
                f"the signed checkpoint at size {head.size} recorded in the agent state is "
                "missing from the log",
                seq=head.size,
            )
        if _open(stored[0], public_key, origin).root != head.root:
            raise LineageError(
                f"the checkpoint at size {head.size} does not sign the root recorded in the "
                "agent state",
                seq=head.size,
            )


def _verify(store: LineageStore, public_key: PublicKey, origin: str, tail: bool) -> VerifyReport:
    """Verify one snapshot of the log.

    Steps: 1. verify every checkpoint's signature and origin; 2. those at or below the
    starting point (with ``tail``: all of them) must be consistent, by proofs from stored
    nodes; 3. load the frontier at the starting point and check it against the checkpoint
    there; 4. stream the entries: seq continuity, canonical encoding, prev links, the filter
    columns and tree nodes stored beside each entry; 5. at every later checkpoint size the
    recomputed root must be the signed one (so those checkpoints are consistent with each
    other by construction, no proof needed); 6. the end matches the recorded size, last hash
    and stored frontier.

    Raises:
        LineageError: the first failure, with the seq at fault when there is one.
    """
    tip = store.tip()
    checkpoints = _signed_checkpoints(store, public_key, origin, tip.base, tip.size)
    start = checkpoints[-1].size if tail and checkpoints else tip.base
    _check_consistent(store, [cp for cp in checkpoints if cp.size <= start])
    frontier = store.frontier(start)
    at_start = [cp for cp in checkpoints if cp.size == start]
    if at_start and frontier.root() != at_start[0].root:
        raise LineageError(
            f"the stored tree at size {start} does not match the signed checkpoint",
            seq=max(start - 1, 0),
        )
    verifier = ChainVerifier(frontier, _prev_at(store, start, tip.base, tip.base_prev))
    pending = [cp for cp in checkpoints if cp.size > start]
    next_size = pending[0].size if pending else -1
    for page in store.iter_pages(start):
        for seq, data, time, kind, allowed, reason, subject, action, nodes in page:
            if seq >= tip.size:
                raise LineageError(f"entry beyond the recorded log size {tip.size}", seq=seq)
            entry = verifier.feed(seq, data)
            request = entry.request
            if (
                time != entry.time
                or kind != entry.kind
                or allowed != entry.allowed
                or reason != entry.reason
                or subject != (request.subject if request else None)
                or action != (request.action if request else None)
            ):
                raise LineageError(
                    "the columns stored beside the entry do not match it", seq=entry.seq
                )
            if nodes != verifier.closed:
                raise LineageError(
                    "the tree nodes stored beside the entry do not match it", seq=seq
                )
            if seq + 1 == next_size:
                if verifier.frontier.root() != pending.pop(0).root:
                    raise LineageError(
                        f"the entries up to here do not give the root signed at size {next_size}",
                        seq=seq,
                    )
                next_size = pending[0].size if pending else -1
    if verifier.size != tip.size:
        raise LineageError(
            f"the log ends at entry {verifier.size - 1} but records {tip.size} entries",
            seq=verifier.size,
        )
    if pending:
        raise LineageError(
            f"a checkpoint signs size {pending[0].size} but the log has {tip.size} entries",
            seq=tip.size,
        )
    if verifier.prev is not None and tip.size > start and verifier.prev != tip.prev:
        raise LineageError("the recorded last entry hash is not the last entry's", seq=tip.size - 1)
    if store.frontier(tip.size) != verifier.frontier:
        raise LineageError("the stored tree nodes do not match the entries", seq=tip.size - 1)
    last = checkpoints[-1].size if checkpoints else None
    return VerifyReport(
        tip.base, start, tip.size, len(checkpoints), last, tip.size - (last or tip.base)
    )


def _signed_checkpoints(
    store: LineageStore, public_key: PublicKey, origin: str, base: int, size: int
) -> list[Checkpoint]:
    """The stored checkpoints from ``base`` on, each signature and size checked."""
    verified: list[Checkpoint] = []
    for stored in store.checkpoints(base):
        checkpoint = _open(stored, public_key, origin)
        if checkpoint.size > size:
            raise LineageError(
                f"a checkpoint signs size {checkpoint.size} but the log has {size} entries",
                seq=size,
            )
        verified.append(checkpoint)
    return verified


def _check_consistent(store: LineageStore, checkpoints: list[Checkpoint]) -> None:
    """Each checkpoint is consistent with the one before it, by a proof from stored nodes."""
    for previous, checkpoint in itertools.pairwise(checkpoints):
        proof = consistency_proof(previous.size, checkpoint.size, store.get_node)
        try:
            verify_consistency(
                previous.size, checkpoint.size, previous.root, checkpoint.root, proof
            )
        except LineageError as exc:
            raise LineageError(
                f"checkpoints at sizes {previous.size} and {checkpoint.size} are not "
                f"consistent: {exc}",
                seq=previous.size,
            ) from exc


def _open(stored: StoredCheckpoint, public_key: PublicKey, origin: str) -> Checkpoint:
    try:
        checkpoint = verify_checkpoint(stored.note, public_key, origin)
    except LineageError as exc:
        raise LineageError(f"checkpoint at size {stored.size}: {exc}", seq=stored.size) from exc
    if checkpoint.size != stored.size:
        raise LineageError(
            f"checkpoint stored at size {stored.size} signs size {checkpoint.size}",
            seq=stored.size,
        )
    return checkpoint


def _prev_at(store: LineageStore, start: int, base: int, base_prev: bytes | None) -> bytes | None:
    if start == 0:
        return GENESIS_PREV
    if start == base:
        return base_prev
    for seq, data, _ in store.iter_rows(start - 1, limit=1):
        if seq == start - 1:
            digest = entry_hash(data)
            if digest != store.get_node(0, seq):
                raise LineageError("entry is not the leaf the signed tree holds", seq=seq)
            return digest
    raise LineageError("the entry before the last checkpoint is missing", seq=start - 1)

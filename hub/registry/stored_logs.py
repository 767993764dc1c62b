"""Whether a device log the hub stored still verifies: its entries, read back, rebuild the
hash chain and the Merkle tree the hub accepted, and reach the root of every checkpoint it
stored for the log and of the log's state.

What a copied or restored registry must pass before it is trusted: the hub verified each
batch when it arrived (:mod:`hub.core.ingest`) and stored only what verified, so a stored
log that no longer rebuilds its own checkpoints was changed or lost after it was stored.
Pure: the caller reads the rows and hands them in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge_agent.errors import LineageError
from edge_agent.protocol.lineage_entries import GENESIS_PREV, ChainVerifier
from edge_agent.protocol.merkle import Frontier
from hub.registry.records import DeviceLog, StoredCheckpoint, StoredEntry

__all__ = ["LogCheck", "check_stored_log"]


@dataclass(frozen=True, slots=True)
class LogCheck:
    """What checking one device's stored log found: its size, how many stored checkpoints
    its entries reached, and the first problem (``None``: it verifies)."""

    device: str
    size: int
    checkpoints: int
    problem: str | None = None

    @property
    def verified(self) -> bool:
        return self.problem is None


def check_stored_log(
    device: str,
    log: DeviceLog,
    entries: Iterable[StoredEntry],
    checkpoints: Iterable[StoredCheckpoint],
    node_root: bytes | None,
) -> LogCheck:
    """Check the stored log of ``device``.

    Steps: 1. every entry, from the first, is the next seq, decodes and links to the one
    before (:class:`ChainVerifier`); 2. at the size of each stored checkpoint, the tree of
    the entries so far has that checkpoint's root; 3. the entries end at the log state's
    size, with its root and last entry hash, and no checkpoint is beyond them; 4. the root
    rebuilt from the stored tree nodes (``node_root``, ``None`` for an empty log) is the
    same.
    """
    roots = {checkpoint.size: checkpoint.root for checkpoint in checkpoints}
    verifier = ChainVerifier(Frontier(), GENESIS_PREV)
    reached = 0

    def found(problem: str) -> LogCheck:
        return LogCheck(device, verifier.size, reached, problem)

    for entry in entries:
        try:
            verifier.feed(entry.seq, entry.data)
        except LineageError as exc:
            return found(exc.message)
        held = roots.get(verifier.size)
        if held is not None:
            if verifier.frontier.root() != held:
                return found(
                    f"the entries do not reach the checkpoint root at size {verifier.size}"
                )
            reached += 1
    if verifier.size != log.size:
        return found(f"{verifier.size} entries stored, the log state says {log.size}")
    if verifier.frontier.root() != log.root or (log.size and verifier.prev != log.last_hash):
        return found(f"the entries do not reach the log state's root at size {log.size}")
    if reached != len(roots):
        beyond = max(roots)
        return found(f"a checkpoint at size {beyond} is beyond the {log.size} stored entries")
    if log.size and node_root != log.root:
        return found(f"the stored tree nodes do not rebuild the root at size {log.size}")
    return LogCheck(device, log.size, reached)

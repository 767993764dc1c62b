"""Proofs of stored entries at the hub: the cosigned checkpoint covering an entry, its
inclusion proof, and the receipt the hub's witness key signs over them.

The hub holds every device's shipped log, the tree nodes proofs read (O(log n) reads) and the
checkpoints it cosigned as the logs' witness. ``edge-hub lineage receipt`` (one entry) and
``edge-hub lineage ancestry --export`` (every link of a chain) build their receipts here, so
both prove an entry the same way: 1. the device is registered and the hub holds the entry;
2. the newest checkpoint covering it that the device signed and the witness cosigned;
3. the inclusion proof from the tree nodes, verified against that checkpoint's root; 4. the
receipt (:func:`edge_agent.protocol.receipt.build_receipt`), checked as it is made. The
console's decision page builds its receipts here too, so a receipt downloaded from the console
is byte for byte what the command writes at the same moment (docs/receipts.md).

What the proofs read is handed in as a :class:`ProofSource` (the registry is one); the
witness key and ``now`` are parameters. This module reads no file and no clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge_agent.errors import ConfigError, LineageError
from edge_agent.protocol.checkpoint import Checkpoint, origin_for, verify_checkpoint
from edge_agent.protocol.cosignature import Cosignature, verify_cosignature
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.lineage_entries import decode_entry
from edge_agent.protocol.merkle import NodeFetcher, inclusion_proof, leaf_hash, verify_inclusion
from edge_agent.protocol.receipt import build_receipt
from edge_agent.protocol.tlog_proof import format_tlog_proof
from hub.core.receipt_formats import FORMATS
from hub.registry.interface import RegistryError
from hub.registry.records import DeviceLog, DeviceRecord, StoredCheckpoint

__all__ = [
    "FORMATS",
    "CosignedCheckpoint",
    "ProofSource",
    "ProvenEntry",
    "cosigned_checkpoint",
    "hub_receipt",
    "prove_entry",
    "registered",
    "stored_entry",
]


class ProofSource(Protocol):
    """What proving a stored entry reads (:class:`hub.registry.Registry` is one)."""

    def device(self, device_id: str) -> DeviceRecord | None: ...

    def lineage_state(self, device: str) -> DeviceLog: ...

    def entries(self, device: str, start: int, stop: int) -> list[bytes]: ...

    def iter_checkpoints(self, device: str, *, min_size: int = 0) -> Iterator[StoredCheckpoint]: ...

    def tree_nodes(self, device: str) -> NodeFetcher: ...

    def bundle_data(self, digest: bytes) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class CosignedCheckpoint:
    """A stored checkpoint whose note verified: the device's signature and the witness's."""

    stored: StoredCheckpoint
    checkpoint: Checkpoint
    cosignature: Cosignature


@dataclass(frozen=True, slots=True)
class ProvenEntry:
    """A stored entry proven in the device's log: its inclusion ``path`` at the size of the
    cosigned checkpoint ``held``."""

    device: DeviceRecord
    seq: int
    entry: bytes
    path: tuple[bytes, ...]
    held: CosignedCheckpoint


def registered(source: ProofSource, device_id: str) -> DeviceRecord:
    """The registered device ``device_id``.

    Raises:
        ConfigError: it is not registered.
    """
    device = source.device(device_id)
    if device is None:
        raise ConfigError(f"device {device_id!r} is not registered")
    return device


def stored_entry(source: ProofSource, device_id: str, seq: int) -> bytes:
    """The stored bytes of ``device_id``'s entry ``seq``.

    Raises:
        ConfigError: the hub does not hold that entry (not shipped yet).
    """
    entries = source.entries(device_id, seq, seq + 1)
    if entries:
        return entries[0]
    size = source.lineage_state(device_id).size
    raise ConfigError(
        f"entry {seq} of {device_id} has not been shipped to this hub (it holds entries "
        f"0..{size - 1})"
        if size
        else f"no lineage of {device_id} has been shipped to this hub yet"
    )


def cosigned_checkpoint(
    source: ProofSource, device: DeviceRecord, witnesses: Sequence[PublicKey], seq: int
) -> CosignedCheckpoint:
    """The newest checkpoint the hub holds for ``device`` that covers entry ``seq``, is
    signed by the device's key under its origin and cosigned by one of ``witnesses``.

    Raises:
        LineageError: the hub holds no such checkpoint (yet).
        RegistryError: the registry cannot be read.
    """
    origin = origin_for(device.device_id, device.key_epoch)
    for stored in source.iter_checkpoints(device.device_id, min_size=seq + 1):
        try:
            checkpoint = verify_checkpoint(stored.note, device.public_key, origin)
            cosignature = verify_cosignature(stored.note, witnesses)
        except LineageError:
            continue
        if checkpoint.size == stored.size and checkpoint.root == stored.root:
            return CosignedCheckpoint(stored, checkpoint, cosignature)
    raise LineageError(
        f"the hub holds no checkpoint of {device.device_id} covering entry {seq} that its "
        "witness key cosigned yet: the device's next shipped batch brings one (the hub "
        "cosigns only while it holds a verifier key)",
        seq=seq,
    )


def prove_entry(
    source: ProofSource,
    device: DeviceRecord,
    seq: int,
    entry: bytes,
    witnesses: Sequence[PublicKey],
) -> ProvenEntry:
    """Prove the stored ``entry`` (``device``'s ``seq``) in the newest cosigned checkpoint
    covering it.

    Raises:
        LineageError: no cosigned checkpoint covers the entry yet.
        RegistryError: the registry cannot be read, or the entry is not the leaf its tree
            nodes hold there (the stored entry or the nodes were altered).
    """
    held = cosigned_checkpoint(source, device, witnesses, seq)
    size = held.stored.size
    path = inclusion_proof(seq, size, source.tree_nodes(device.device_id))
    try:
        verify_inclusion(leaf_hash(entry), seq, size, path, held.stored.root)
    except LineageError as exc:
        raise RegistryError(
            f"the hub's stored entry {seq} of {device.device_id} is not the leaf its tree "
            f"holds (the entry or the tree nodes are damaged): {exc}"
        ) from exc
    return ProvenEntry(device, seq, entry, tuple(path), held)


def hub_receipt(
    source: ProofSource,
    device_id: str,
    seq: int,
    *,
    witness: PrivateKey,
    witnesses: Sequence[PublicKey],
    now: int,
    fmt: str = "cose",
    include_bundle: bool = False,
) -> tuple[bytes, CosignedCheckpoint]:
    """The receipt of ``device_id``'s entry ``seq`` in format ``fmt`` (``cose``: signed by
    ``witness`` at ``now``; ``tlog-proof``: text), and the checkpoint it proves against.

    Steps: 1. the device is registered and the hub holds entry ``seq``; 2.-3. the entry
    proven in the newest cosigned checkpoint covering it (:func:`prove_entry`); 4. the
    bundle the entry names, when asked; 5. the receipt.

    Raises:
        ConfigError: unknown device, entry not shipped, no bundle to include.
        LineageError: no cosigned checkpoint covers the entry yet.
        RegistryError: the registry cannot be read, or its nodes do not prove the entry.
    """
    device = registered(source, device_id)
    proven = prove_entry(source, device, seq, stored_entry(source, device_id, seq), witnesses)
    held = proven.held
    if fmt == "tlog-proof":
        if include_bundle:
            raise ConfigError("--include-bundle needs --format cose (a tlog-proof has no room)")
        text = format_tlog_proof(
            seq=seq, path=proven.path, note=held.stored.note, entry=proven.entry
        )
        return text.encode("utf-8"), held
    bundle = _named_bundle(source, proven.entry, seq) if include_bundle else None
    data = build_receipt(
        entry=proven.entry,
        seq=seq,
        tree_size=held.stored.size,
        path=proven.path,
        note=held.stored.note,
        signer=witness,
        now=now,
        bundle=bundle,
    )
    return data, held


def _named_bundle(source: ProofSource, entry: bytes, seq: int) -> bytes:
    digest = decode_entry(entry, seq).bundle_digest
    if digest is None:
        raise ConfigError(f"entry {seq} names no bundle: leave out --include-bundle")
    data = source.bundle_data(digest)
    if data is None:
        raise ConfigError(
            f"this hub does not hold bundle sha256:{digest.hex()}, named by entry {seq}"
        )
    return data

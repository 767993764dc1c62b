"""Receipts made at the hub: the entry, its inclusion proof to the newest checkpoint the hub
cosigned as the log's witness, signed by the hub's witness key (COSE, RFC 9942) or as a C2SP
tlog-proof (docs/receipts.md).

``edge-hub lineage receipt`` and the console's decision page both build receipts here, so a
receipt downloaded from the console is byte for byte what the command writes at the same
moment. The proof is verified against the root the hub holds before it is returned: the hub
never hands out a proof that does not hold. The registry is read through its interface and
``now`` is handed in; nothing here touches a file, a clock or the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.errors import ConfigError, LineageError
from edge_agent.protocol.checkpoint import Checkpoint, origin_for, verify_checkpoint
from edge_agent.protocol.cosignature import Cosignature, verify_cosignature
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.lineage_entries import decode_entry
from edge_agent.protocol.merkle import inclusion_proof, leaf_hash, verify_inclusion
from edge_agent.protocol.receipt import build_receipt
from edge_agent.protocol.tlog_proof import format_tlog_proof
from hub.registry.interface import Registry, RegistryError
from hub.registry.records import DeviceRecord, StoredCheckpoint

__all__ = [
    "FORMATS",
    "CosignedCheckpoint",
    "cosigned_checkpoint",
    "hub_receipt",
    "registered_device",
]

FORMATS = ("cose", "tlog-proof")
"""The receipt formats: the COSE transparent statement and the C2SP tlog-proof text."""


@dataclass(frozen=True, slots=True)
class CosignedCheckpoint:
    """A stored checkpoint whose note verified: the device's signature and the witness's."""

    stored: StoredCheckpoint
    checkpoint: Checkpoint
    cosignature: Cosignature


def cosigned_checkpoint(
    registry: Registry, device: DeviceRecord, witnesses: Sequence[PublicKey], seq: int
) -> CosignedCheckpoint:
    """The newest checkpoint the hub holds for ``device`` that covers entry ``seq``, is
    signed by the device's key under its origin and cosigned by one of ``witnesses``.

    Raises:
        LineageError: the hub holds no such checkpoint (yet).
        RegistryError: the registry cannot be read.
    """
    origin = origin_for(device.device_id, device.key_epoch)
    for stored in registry.iter_checkpoints(device.device_id, min_size=seq + 1):
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


def hub_receipt(
    registry: Registry,
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

    Steps: 1. the device is registered and the hub holds entry ``seq``; 2. the newest
    cosigned checkpoint covering it (:func:`cosigned_checkpoint`); 3. the inclusion proof
    from the tree nodes, verified against that checkpoint's root; 4. the bundle the entry
    names, when asked; 5. the receipt.

    Raises:
        ConfigError: unknown device, entry not shipped, no bundle to include.
        LineageError: no cosigned checkpoint covers the entry yet.
        RegistryError: the registry cannot be read, or its nodes do not prove the entry.
    """
    device = registered_device(registry, device_id)
    entries = registry.entries(device_id, seq, seq + 1)
    if not entries:
        size = registry.lineage_state(device_id).size
        raise ConfigError(
            f"entry {seq} of {device_id} has not been shipped to this hub (it holds entries "
            f"0..{size - 1})"
            if size
            else f"no lineage of {device_id} has been shipped to this hub yet"
        )
    entry = entries[0]
    held = cosigned_checkpoint(registry, device, witnesses, seq)
    size = held.stored.size
    path = inclusion_proof(seq, size, registry.tree_nodes(device_id))
    try:
        verify_inclusion(leaf_hash(entry), seq, size, path, held.stored.root)
    except LineageError as exc:
        raise RegistryError(f"the hub's tree nodes of {device_id} are damaged: {exc}") from exc
    if fmt == "tlog-proof":
        if include_bundle:
            raise ConfigError("--include-bundle needs --format cose (a tlog-proof has no room)")
        text = format_tlog_proof(seq=seq, path=path, note=held.stored.note, entry=entry)
        return text.encode("utf-8"), held
    bundle = _named_bundle(registry, entry, seq) if include_bundle else None
    data = build_receipt(
        entry=entry,
        seq=seq,
        tree_size=size,
        path=path,
        note=held.stored.note,
        signer=witness,
        now=now,
        bundle=bundle,
    )
    return data, held


def registered_device(registry: Registry, device_id: str) -> DeviceRecord:
    """The registered device ``device_id``.

    Raises:
        ConfigError: no device ``device_id`` is registered.
    """
    device = registry.device(device_id)
    if device is None:
        raise ConfigError(f"device {device_id!r} is not registered")
    return device


def _named_bundle(registry: Registry, entry: bytes, seq: int) -> bytes:
    digest = decode_entry(entry, seq).bundle_digest
    if digest is None:
        raise ConfigError(f"entry {seq} names no bundle: leave out --include-bundle")
    data = registry.bundle_data(digest)
    if data is None:
        raise ConfigError(
            f"this hub does not hold bundle sha256:{digest.hex()}, named by entry {seq}"
        )
    return data

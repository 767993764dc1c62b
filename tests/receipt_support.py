"""A small real lineage log with real keys, for receipt, tlog-proof and edge-verify tests.

Entries are real lineage entries (decisions naming a real bundle, one trust transition),
the checkpoint is signed by a device key and cosigned by the hub's verifier (witness) key
from :class:`tests.factory.HubSim`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from edge_agent.protocol.checkpoint import Checkpoint, origin_for, sign_checkpoint
from edge_agent.protocol.cosignature import cosign_note
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import (
    GENESIS_PREV,
    Entry,
    Kind,
    encode_entry,
    entry_hash,
)
from edge_agent.protocol.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
)
from edge_agent.protocol.receipt import build_receipt
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from tests.factory import NOW, HubSim

DEVICE_KEY = PrivateKey(bytes(range(32)))
OTHER_DEVICE_KEY = PrivateKey(bytes(range(1, 33)))
STRANGER = PrivateKey(bytes(range(2, 34)))
ORIGIN = origin_for("gw-017", 1)


@dataclass
class ReceiptLog:
    """A device log of ``size`` entries naming ``bundle`` (by default one the hub signed)."""

    hub: HubSim = field(default_factory=HubSim)
    size: int = 7
    bundle: bytes = b""
    device: PrivateKey = DEVICE_KEY
    entries: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.bundle:
            self.bundle = self.hub.bundle(3)
        self.entries = []
        self.extend(self.size)

    def extend(self, size: int) -> None:
        """Append entries up to ``size`` (entry 2 is a trust transition, the rest decisions)."""
        prev = entry_hash(self.entries[-1]) if self.entries else GENESIS_PREV
        digest = hashlib.sha256(self.bundle).digest()
        for seq in range(len(self.entries), size):
            if seq == 2:
                entry = Entry(
                    seq,
                    NOW + seq,
                    prev,
                    Kind.BUNDLE_INSTALLED,
                    True,
                    "bundle_installed",
                    bundle_digest=digest,
                    bundle_version=3,
                    detail="bundle v3 installed",
                )
            else:
                entry = Entry(
                    seq,
                    NOW + seq,
                    prev,
                    Kind.DECISION,
                    seq % 3 != 1,
                    "rule",
                    rule="camera-exec",
                    bundle_digest=digest,
                    bundle_version=3,
                    request=Request("svc:camera", "exec", "/opt/camera/bin/capture"),
                )
            data = encode_entry(entry)
            self.entries.append(data)
            prev = entry_hash(data)
        self.size = size

    @property
    def witness(self) -> PrivateKey:
        return self.hub.online_keys[Role.VERIFIER][0]

    def node(self, level: int, index: int) -> bytes:
        leaves = [leaf_hash(e) for e in self.entries[index << level : (index + 1) << level]]
        return root_from_leaf_hashes(leaves)

    def root(self, size: int | None = None) -> bytes:
        return root_from_leaf_hashes([leaf_hash(e) for e in self.entries[: size or self.size]])

    def note(
        self, size: int | None = None, *, cosigned: bool = True, key: PrivateKey | None = None
    ) -> str:
        size = size or self.size
        note = sign_checkpoint(
            Checkpoint(ORIGIN, size, self.root(size)), key or self.device, ORIGIN
        )
        return cosign_note(note, self.witness, time=NOW + 10) if cosigned else note

    def path(self, seq: int, size: int | None = None) -> tuple[bytes, ...]:
        return inclusion_proof(seq, size or self.size, self.node)

    def consistency(self, old: int, new: int) -> tuple[bytes, ...]:
        return consistency_proof(old, new, self.node)

    def receipt(
        self,
        seq: int = 4,
        *,
        signer: PrivateKey | None = None,
        note: str | None = None,
        bundle: bytes | None = None,
    ) -> bytes:
        return build_receipt(
            entry=self.entries[seq],
            seq=seq,
            tree_size=self.size,
            path=self.path(seq),
            note=note or self.note(),
            signer=signer or self.device,
            now=NOW + 20,
            bundle=bundle,
        )

"""A device's lineage, simulated for hub tests: real entries, real signed batches and notes.

:class:`DeviceLogSim` holds a device key and a chain of encoded decision entries, and signs
exactly what an agent ships (``edge_agent.protocol.shipping.sign_batch`` with a checkpoint
note over the batch's end), or anything a broken or hostile device could send instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.protocol.checkpoint import Checkpoint, origin_for, sign_checkpoint
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Entry, Kind, encode_entry, entry_hash
from edge_agent.protocol.merkle import root_from_leaf_hashes
from edge_agent.protocol.request import Request
from edge_agent.protocol.shipping import LineageBatch, sign_batch

NOW = 1_800_000_000


@dataclass
class DeviceLogSim:
    device_id: str = "gw-001"
    key: PrivateKey = field(default_factory=PrivateKey.generate)
    epoch: int = 1
    entries: list[bytes] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return origin_for(self.device_id, self.epoch)

    def add(
        self, count: int, *, time: int = NOW, resource: str = "/opt/camera/bin/capture"
    ) -> None:
        """Append ``count`` decision entries, chained."""
        for _ in range(count):
            seq = len(self.entries)
            prev = entry_hash(self.entries[-1]) if self.entries else GENESIS_PREV
            entry = Entry(
                seq=seq,
                time=time + seq,
                prev=prev,
                kind=Kind.DECISION,
                allowed=seq % 3 != 0,
                reason="allowed" if seq % 3 else "policy_denied",
                rule="camera-exec" if seq % 3 else "no-shells",
                request=Request("svc:camera", "exec", resource),
            )
            self.entries.append(encode_entry(entry))

    def root(self, size: int) -> bytes:
        return root_from_leaf_hashes([entry_hash(e) for e in self.entries[:size]])

    def note(self, size: int, root: bytes | None = None, key: PrivateKey | None = None) -> str:
        """A checkpoint note over the first ``size`` entries (or over ``root``)."""
        checkpoint = Checkpoint(self.origin, size, self.root(size) if root is None else root)
        return sign_checkpoint(checkpoint, key or self.key, self.origin)

    def batch(
        self,
        start: int,
        stop: int,
        *,
        entries: list[bytes] | None = None,
        note: str | None = None,
        key: PrivateKey | None = None,
        device: str | None = None,
    ) -> bytes:
        """The signed batch of entries ``start`` to ``stop - 1`` as an agent ships it; any
        keyword replaces one part with something a broken or hostile sender would use."""
        body = self.entries[start:stop] if entries is None else entries
        return sign_batch(
            LineageBatch(
                device or self.device_id,
                start,
                tuple(body),
                self.note(stop) if note is None else note,
            ),
            key or self.key,
        )

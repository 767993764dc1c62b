"""Signed device directories and parent receipts with real keys, for the ancestry tests.

A :class:`Fleet` is a hub (:class:`tests.factory.HubSim`) with a few registered devices, each
with its own key and a real lineage log (:class:`tests.receipt_support.ReceiptLog` style), so
a test can make a real receipt on one device and verify it as a parent on another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_agent.protocol.checkpoint import Checkpoint, origin_for, sign_checkpoint
from edge_agent.protocol.directory import (
    Directory,
    DirectoryDevice,
    directory_payload,
    sign_directory,
    verify_directory,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import (
    GENESIS_PREV,
    Entry,
    Kind,
    encode_entry,
    entry_hash,
)
from edge_agent.protocol.merkle import inclusion_proof, leaf_hash, root_from_leaf_hashes
from edge_agent.protocol.receipt import build_receipt
from edge_agent.protocol.request import Parent, Request
from edge_agent.protocol.roles import Role
from tests.factory import DAY, NOW, HubSim

REGION = "eu-1"
CAMERA = "gw-cam-01"
PLC = "gw-plc-02"
OUTSIDER = "gw-other-09"
CAMERA_KEY = PrivateKey(bytes(range(40, 72)))
PLC_KEY = PrivateKey(bytes(range(80, 112)))
OUTSIDER_KEY = PrivateKey(bytes(range(120, 152)))
PARENT_REQUEST = Request("svc:vision", "model.invoke", "model://vision/v3")


def devices(epoch: int = 1) -> list[DirectoryDevice]:
    """The fleet's registered devices: a camera gateway, a PLC gateway and one outsider."""
    return [
        DirectoryDevice(CAMERA, CAMERA_KEY.public, epoch, ("cameras",)),
        DirectoryDevice(PLC, PLC_KEY.public, 1, ("plcs",)),
        DirectoryDevice(OUTSIDER, OUTSIDER_KEY.public, 1, ()),
    ]


def directory_bytes(
    hub: HubSim,
    *,
    version: int = 1,
    listed: Sequence[DirectoryDevice] | None = None,
    issued_at: int = NOW - 60,
    expires_at: int = NOW + DAY,
    region: str = REGION,
    key: PrivateKey | None = None,
) -> bytes:
    """A directory of ``listed`` (default :func:`devices`) signed by the hub's verifier key."""
    payload = directory_payload(
        region=region,
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        devices=devices() if listed is None else listed,
    )
    return sign_directory(payload, region=region, key=key or hub.online_keys[Role.VERIFIER][0])


@dataclass
class DeviceLog:
    """A device's real lineage log: entries appended one by one, receipts on demand."""

    device: str
    key: PrivateKey
    epoch: int = 1
    entries: list[bytes] = field(default_factory=list)

    def append(
        self,
        request: Request = PARENT_REQUEST,
        *,
        time: int = NOW - 5,
        allowed: bool = True,
        kind: Kind = Kind.DECISION,
        parent: Parent | None = None,
    ) -> int:
        """Log one decision (or a transition, with ``kind``); return its seq."""
        seq = len(self.entries)
        prev = entry_hash(self.entries[-1]) if self.entries else GENESIS_PREV
        if kind is Kind.DECISION:
            cited = Request(
                request.subject,
                request.action,
                request.resource,
                request.context,
                request.selectors,
                parent,
            )
            entry = Entry(
                seq,
                time,
                prev,
                kind,
                allowed,
                "allowed" if allowed else "policy_denied",
                "r1",
                bytes(32),
                1,
                cited,
            )
        else:
            entry = Entry(seq, time, prev, kind, allowed, str(kind), detail="transition")
        self.entries.append(encode_entry(entry))
        return seq

    @property
    def origin(self) -> str:
        return origin_for(self.device, self.epoch)

    def receipt(self, seq: int, *, signer: PrivateKey | None = None) -> bytes:
        """A receipt of entry ``seq`` at the log's current size, made on the device."""
        size = len(self.entries)
        leaves = [leaf_hash(e) for e in self.entries]

        def node(level: int, index: int) -> bytes:
            return root_from_leaf_hashes(leaves[index << level : (index + 1) << level])

        note = sign_checkpoint(
            Checkpoint(self.origin, size, root_from_leaf_hashes(leaves)),
            signer or self.key,
            self.origin,
        )
        return build_receipt(
            entry=self.entries[seq],
            seq=seq,
            tree_size=size,
            path=inclusion_proof(seq, size, node),
            note=note,
            signer=signer or self.key,
            now=NOW,
        )


def verified_directory(hub: HubSim, **kwargs: object) -> Directory:
    return verify_directory(
        directory_bytes(hub, **kwargs),  # type: ignore[arg-type]
        root=hub.root(),
        region=REGION,
    )

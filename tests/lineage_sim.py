"""A device's lineage, simulated for hub tests: real entries, real signed batches and notes.

:class:`DeviceLogSim` holds a device key and a chain of encoded decision entries, and signs
exactly what an agent ships (``edge_agent.protocol.shipping.sign_batch`` with a checkpoint
note over the batch's end), or anything a broken or hostile device could send instead.
:func:`store_log` stores one in a registry as the hub would; :func:`reference_nodes` and
:func:`assert_same_proofs` check a registry's tree nodes against the whole log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol.checkpoint import Checkpoint, origin_for, sign_checkpoint
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Entry, Kind, encode_entry, entry_hash
from edge_agent.protocol.merkle import (
    NodeFetcher,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_at,
    root_from_leaf_hashes,
)
from edge_agent.protocol.request import Request
from edge_agent.protocol.shipping import LineageBatch, sign_batch
from hub.core.ingest import ingest_batch
from hub.registry import Registry
from hub.registry.records import Accepted

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
        self,
        count: int,
        *,
        time: int = NOW,
        resource: str = "/opt/camera/bin/capture",
        bundle: tuple[bytes, int] | None = None,
    ) -> None:
        """Append ``count`` decision entries, chained; made under ``bundle`` (its digest and
        version) when given."""
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
                bundle_digest=None if bundle is None else bundle[0],
                bundle_version=None if bundle is None else bundle[1],
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


def accepted_batch(registry: Registry, sim: DeviceLogSim, start: int, stop: int) -> Accepted:
    """``sim``'s entries ``start`` to ``stop - 1`` verified as the hub verifies a batch
    against what ``registry`` holds (asserted accepted), not yet stored."""
    accepted = ingest_batch(
        sim.batch(start, stop),
        device=sim.device_id,
        key=sim.key.public,
        origin=sim.origin,
        log=registry.lineage_state(sim.device_id),
        stored=registry.stored_log(sim.device_id),
    )
    assert isinstance(accepted, Accepted)
    return accepted


def store_log(registry: Registry, size: int, batch: int = 200) -> DeviceLogSim:
    """A new log of ``size`` entries of ``gw-001``, ingested and stored ``batch`` at a time."""
    log = DeviceLogSim("gw-001")
    log.add(size)
    for start in range(0, size, batch):
        accepted = accepted_batch(registry, log, start, min(start + batch, size))
        assert registry.store_batch(accepted, expected_size=start, received_at=NOW)
    return log


def reference_nodes(entries: list[bytes]) -> NodeFetcher:
    """Perfect nodes straight from RFC 9162's definition over every entry."""
    leaves = [leaf_hash(e) for e in entries]

    def get_node(level: int, index: int) -> bytes:
        covered = leaves[index << level : (index + 1) << level]
        assert len(covered) == 1 << level, "a proof asked for a node past the tree"
        return root_from_leaf_hashes(covered)

    return get_node


def assert_same_proofs(nodes: NodeFetcher, reference: NodeFetcher, size: int) -> None:
    """Proofs and roots from ``nodes`` equal those from ``reference`` at the sizes around
    every power of two up to ``size``, and (hypothesis) at sizes and indexes in between."""
    edges = {s for k in range(size.bit_length()) for s in ((1 << k) - 1, 1 << k, (1 << k) + 1)}
    for tree in sorted(s for s in edges | {size} if 0 < s <= size):
        assert root_at(tree, nodes) == root_at(tree, reference)
        for index in {0, tree // 2, tree - 1}:
            assert inclusion_proof(index, tree, nodes) == inclusion_proof(index, tree, reference)
        for old in {1, tree // 2 or 1, tree - 1 or 1, tree}:
            assert consistency_proof(old, tree, nodes) == consistency_proof(old, tree, reference)

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(st.integers(1, size), st.data())
    def proofs_agree(tree: int, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, tree - 1))
        old = data.draw(st.integers(1, tree))
        assert inclusion_proof(index, tree, nodes) == inclusion_proof(index, tree, reference)
        assert consistency_proof(old, tree, nodes) == consistency_proof(old, tree, reference)

    proofs_agree()

"""Reading the Merkle tree nodes of a device log from a registry, whatever its backend.

Proofs (:func:`edge_agent.protocol.merkle.inclusion_proof`, ``consistency_proof``,
``root_at``) fetch O(log n) perfect nodes. A registry keeps the perfect nodes of level
:data:`NODE_LEVEL` and up, as ingest closes them (``store_batch`` writes them in the batch's
transaction), and :class:`NodeReader` recomputes a node below that level from the at most
``2**NODE_LEVEL`` stored entries of its block. So a proof in a log of a million entries
reads at most two blocks of entries and about thirty node rows, while ingest writes one node
row per ``2**(NODE_LEVEL - 1)`` entries. A node the registry does not hold is an error, never
a guess: no proof is built from a missing node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edge_agent.protocol.merkle import leaf_hash, node_hash
from hub.registry.interface import RegistryError
from hub.registry.records import STORED_NODE_LEVEL

__all__ = ["BLOCK_CACHE", "NODE_LEVEL", "NodeReader", "ReadRows"]

NODE_LEVEL = STORED_NODE_LEVEL
"""Lowest tree level stored: a node below it is rehashed from its block of
``2**NODE_LEVEL`` (64) entries, about 20 KiB of typical entries: small enough that a proof
rehashes little, large enough that ingest writes few node rows."""
BLOCK_CACHE = 4
"""Blocks of rehashed levels one :class:`NodeReader` keeps (a proof needs at most two)."""

ReadRows = Callable[[str, Sequence[object]], list[tuple[object, ...]]]
"""Runs one read query (the registry's ``_read``)."""


class NodeReader:
    """:data:`edge_agent.protocol.merkle.NodeFetcher` over one device's stored log.

    Perfect nodes never change once complete, so reads made at different moments agree;
    the caller asks only for nodes inside a size the hub had stored.
    """

    def __init__(
        self, read: ReadRows, device: str, where: str, *, node_sql: str, block_sql: str
    ) -> None:
        self._read = read
        self._device = device
        self._where = where
        self._node_sql = node_sql
        self._block_sql = block_sql
        self._blocks: dict[int, list[list[bytes]]] = {}

    def __call__(self, level: int, index: int) -> bytes:
        """The hash of perfect node (``level``, ``index``).

        Raises:
            RegistryError: the registry holds no such node (or not all of its entries).
        """
        if level >= NODE_LEVEL:
            rows = self._read(self._node_sql, (self._device, level, index))
            if not rows or not isinstance(rows[0][0], bytes):
                raise self._missing(level, index)
            return rows[0][0]
        block = (index << level) >> NODE_LEVEL
        levels = self._block(block)
        offset = index - (block << (NODE_LEVEL - level))
        if offset >= len(levels[level]):
            raise self._missing(level, index)
        return levels[level][offset]

    def _block(self, block: int) -> list[list[bytes]]:
        """Every perfect node of ``block`` below :data:`NODE_LEVEL`, by level, from its
        stored entries (a partial last block gives the nodes its entries complete)."""
        levels = self._blocks.get(block)
        if levels is not None:
            return levels
        start = block << NODE_LEVEL
        rows = self._read(self._block_sql, (self._device, start, start + (1 << NODE_LEVEL)))
        leaves = []
        for position, (seq, data) in enumerate(rows):
            if seq != start + position or not isinstance(data, bytes):
                break
            leaves.append(leaf_hash(data))
        levels = [leaves]
        while len(levels) < NODE_LEVEL:
            below = levels[-1]
            levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
        if len(self._blocks) >= BLOCK_CACHE:
            self._blocks.pop(next(iter(self._blocks)))
        self._blocks[block] = levels
        return levels

    def _missing(self, level: int, index: int) -> RegistryError:
        return RegistryError(
            f"the hub registry {self._where} holds no Merkle node (level {level}, index "
            f"{index}) of {self._device}'s log: its entries or tree nodes are missing"
        )

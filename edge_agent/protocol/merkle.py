"""RFC 9162 Merkle tree over the execution lineage: incremental roots, proofs, verification.

Hashing is SHA-256 with RFC 9162 domain separation: a leaf is ``H(0x00 || entry)``, an inner
node ``H(0x01 || left || right)``, the empty tree's root ``H("")``.

A *perfect node* ``(level, index)`` is the root of the full subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf hashes. Perfect nodes
never change once complete, so a store keeps them and nothing else:

- :class:`Frontier` is the right edge of the tree (the perfect nodes whose sizes add up to the
  tree size). ``append`` is O(log n): it returns the new frontier and the perfect nodes the
  leaf completed, for the caller to persist in the same transaction as the entry.
- proofs and historical roots are computed from a node-fetch callable ``get_node(level, index)``
  with O(log n) fetches, so a log of millions of entries never has to be loaded.
- verifiers take untrusted proofs and roots and raise :class:`LineageError` on any mismatch or
  malformed input, never anything else.

This module does no I/O: it does not know where nodes are stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edge_agent.errors import LineageError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "Frontier",
    "Node",
    "NodeFetcher",
    "consistency_proof",
    "inclusion_path_length",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_at",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Bytes in a SHA-256 digest: every leaf hash, node hash, root and proof element."""

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size (leaf count) accepted anywhere, as in RFC 9162's uint64 tree sizes."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the tree with no leaves."""

NodeFetcher = Callable[[int, int], bytes]
"""``get_node(level, index)``: the hash of a perfect node; level 0 gives leaf hashes."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """Hash of one log entry as a leaf: ``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an inner node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


@dataclass(frozen=True, slots=True)
class Node:
    """A completed perfect node, as :meth:`Frontier.append` hands it over for storage."""

    level: int
    index: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class Frontier:
    """The right edge of a tree of ``size`` leaves: what appending and the root need.

    ``hashes`` are the roots of the perfect subtrees the tree decomposes into, left (largest)
    to right (smallest), one per set bit of ``size``. Holding these O(log n) hashes is enough
    to append a leaf and compute the current root without touching earlier nodes.
    """

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError(f"tree size {self.size} is out of range")
        if len(self.hashes) != self.size.bit_count():
            raise ValueError(
                f"a frontier of size {self.size} has {self.size.bit_count()} hashes, "
                f"not {len(self.hashes)}"
            )
        if any(len(h) != HASH_SIZE for h in self.hashes):
            raise ValueError("every frontier hash is a 32-byte SHA-256 digest")

    @classmethod
    def load(cls, size: int, get_node: NodeFetcher) -> Frontier:
        """Rebuild the frontier of a tree of ``size`` leaves from stored perfect nodes.

        Raises:
            LineageError: ``size`` is out of range, or a fetched node is not a 32-byte hash.
        """
        _check_size(size, "tree size")
        nodes = _perfect_cover(0, size)
        return cls(size, tuple(_fetch(get_node, level, index) for level, index in nodes))

    def append(self, leaf: bytes) -> tuple[Frontier, tuple[Node, ...]]:
        """Add one leaf hash; return the new frontier and the perfect nodes it completed.

        The completed nodes are the leaf itself (level 0) and every inner node it closed,
        bottom up. O(log n); the frontier itself is not changed.

        Raises:
            ValueError: ``leaf`` is not a 32-byte hash, or the tree is full.
        """
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is a 32-byte SHA-256 digest")
        if self.size == MAX_TREE_SIZE:
            raise ValueError("the tree is full")
        hashes = list(self.hashes)
        level, index, current = 0, self.size, leaf
        completed = [Node(0, index, current)]
        while index & 1:
            current = node_hash(hashes.pop(), current)
            level, index = level + 1, index >> 1
            completed.append(Node(level, index, current))
        hashes.append(current)
        return Frontier(self.size + 1, tuple(hashes)), tuple(completed)

    def extend(self, leaves: Iterable[bytes]) -> tuple[Frontier, tuple[Node, ...]]:
        """Append several leaf hashes in order (a group commit); return as :meth:`append`.

        Raises:
            ValueError: a leaf is not a 32-byte hash, or the tree is full.
        """
        frontier, completed = self, list[Node]()
        for leaf in leaves:
            frontier, nodes = frontier.append(leaf)
            completed.extend(nodes)
        return frontier, tuple(completed)

    def root(self) -> bytes:
        """The RFC 9162 root of the tree this frontier ends."""
        if not self.hashes:
            return EMPTY_ROOT
        return _fold_right(self.hashes)


def root_from_leaf_hashes(leaves: Sequence[bytes]) -> bytes:
    """The root of a tree over ``leaves``, straight from RFC 9162's recursive definition.

    A reference implementation, independent of :class:`Frontier` and the proof code, for
    checking a whole exported log: O(n) hashes, O(log n) recursion depth.

    Raises:
        LineageError: a leaf is not a 32-byte hash.
    """
    for position, leaf in enumerate(leaves):
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise LineageError("leaf hash is not a 32-byte hash", seq=position)
    if not leaves:
        return EMPTY_ROOT
    return _mth(leaves, 0, len(leaves))


def _mth(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    count = end - start
    if count == 1:
        return leaves[start]
    split = 1 << ((count - 1).bit_length() - 1)
    return node_hash(_mth(leaves, start, start + split), _mth(leaves, start + split, end))


def root_at(size: int, get_node: NodeFetcher) -> bytes:
    """The root of the tree's first ``size`` leaves, from stored perfect nodes (O(log n)).

    Raises:
        LineageError: ``size`` is out of range, or a fetched node is not a 32-byte hash.
    """
    return Frontier.load(size, get_node).root()


def inclusion_proof(index: int, size: int, get_node: NodeFetcher) -> tuple[bytes, ...]:
    """The RFC 9162 inclusion proof (audit path) of leaf ``index`` in the tree of ``size``.

    Raises:
        ValueError: ``index`` is not a leaf of a tree of ``size`` leaves.
        LineageError: a fetched node is not a 32-byte hash.
    """
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    return _node_path(0, index, size, get_node)


def consistency_proof(size1: int, size2: int, get_node: NodeFetcher) -> tuple[bytes, ...]:
    """The RFC 9162 consistency proof from the tree of ``size1`` leaves to that of ``size2``.

    Empty when the sizes are equal.

    Raises:
        ValueError: not ``0 < size1 <= size2``; a proof from the empty tree proves nothing.
        LineageError: a fetched node is not a 32-byte hash.
    """
    if not 0 < size1 <= size2 <= MAX_TREE_SIZE:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return ()
    # The largest perfect node ending at size1 anchors the proof; when it is the whole old
    # tree (size1 a power of two) the verifier already holds it as root1, so it is left out.
    level = _trailing_zeros(size1)
    index = (size1 - 1) >> level
    anchor = (_fetch(get_node, level, index),) if index else ()
    return anchor + _node_path(level, index, size2, get_node)


def inclusion_path_length(index: int, size: int) -> int:
    """How many hashes the inclusion proof of leaf ``index`` in a tree of ``size`` holds.

    Raises:
        ValueError: ``index`` is not below ``size``.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not below tree size {size}")
    inner, border = _path_shape(index, size - 1)
    return inner + border


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    Steps: 1. sizes and hashes well formed; 2. proof length exactly what (index, size)
    needs; 3. hash up the path; 4. compare with ``root``.

    Raises:
        LineageError: malformed input (index not below size, wrong proof length, a hash not
            32 bytes) or the proof does not lead to ``root``.
    """
    _check_size(size, "tree size")
    _check_size(index, "leaf index")
    if index >= size:
        raise LineageError(f"leaf index {index} is not below tree size {size}")
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root")
    hashes = _check_proof(proof)
    inner, border = _path_shape(index, size - 1)
    if len(hashes) != inner + border:
        raise LineageError(
            f"inclusion proof has {len(hashes)} hashes; leaf {index} of a tree of {size} "
            f"needs {inner + border}"
        )
    computed = _chain_inner(leaf, hashes[:inner], index)
    computed = _chain_border_right(computed, hashes[inner:])
    _check_match(computed, root, f"inclusion proof for leaf {index} of a tree of {size}")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``size2`` with ``root2`` extends the one of ``size1``/``root1``.

    Equal sizes need an empty proof and byte-equal roots (the empty tree's root must be
    ``EMPTY_ROOT``); no hashing is involved there, so, as in the transparency-dev reference
    vectors, their length is not checked. A proof from the empty tree to a larger one is
    refused: it would prove nothing, so accepting it could only hide a missing check in the
    caller.

    Steps: 1. sizes in order and well formed; 2. proof length exactly what the sizes need;
    3. rebuild both roots from the proof; 4. compare with ``root1`` and ``root2``.

    Raises:
        LineageError: malformed input (size1 > size2, size1 = 0 < size2, wrong proof length,
            a hash not 32 bytes) or the proof does not lead to both roots.
    """
    _check_size(size1, "old tree size")
    _check_size(size2, "new tree size")
    hashes = _check_proof(proof)
    if size1 > size2:
        raise LineageError(f"old tree size {size1} is larger than new tree size {size2}")
    if size1 == size2:
        _verify_same_size(size1, root1, root2, hashes)
        return
    if size1 == 0:
        raise LineageError("a consistency proof from the empty tree proves nothing")
    _check_hash(root1, "old root")
    _check_hash(root2, "new root")
    inner, border = _path_shape(size1 - 1, size2 - 1)
    shift = _trailing_zeros(size1)
    inner -= shift
    anchored = size1 != 1 << shift
    if len(hashes) != int(anchored) + inner + border:
        raise LineageError(
            f"consistency proof has {len(hashes)} hashes; sizes {size1} to {size2} need "
            f"{int(anchored) + inner + border}"
        )
    seed, rest = (hashes[0], hashes[1:]) if anchored else (root1, hashes)
    mask = (size1 - 1) >> shift
    old = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    _check_match(old, root1, f"consistency proof from size {size1}: old root")
    new = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    _check_match(new, root2, f"consistency proof to size {size2}: new root")


def _verify_same_size(size: int, root1: bytes, root2: bytes, proof: tuple[bytes, ...]) -> None:
    if proof:
        raise LineageError(f"consistency proof between equal sizes {size} must be empty")
    if size == 0 and root1 != EMPTY_ROOT:
        raise LineageError("the root of the empty tree is not SHA-256 of the empty string")
    if root1 != root2:
        raise LineageError(f"two different roots for the same tree size {size}")


def _node_path(level: int, index: int, size: int, get_node: NodeFetcher) -> tuple[bytes, ...]:
    """Audit path from perfect node (level, index) to the root of the tree of ``size``.

    The *inner* part climbs while the node and the tree's last leaf are in different
    subtrees: siblings there are perfect, except the topmost right sibling, which may be the
    ragged right edge and is hashed from its perfect cover. The *border* part climbs the
    right edge, where only left siblings exist.
    """
    inner = (index ^ ((size - 1) >> level)).bit_length()
    path: list[bytes] = []
    for step in range(inner):
        node_level = level + step
        start = ((index >> step) ^ 1) << node_level
        end = min(start + (1 << node_level), size)
        path.append(_range_root(start, end, get_node))
    for step in range(inner, index.bit_length()):
        if (index >> step) & 1:
            path.append(_fetch(get_node, level + step, (index >> step) ^ 1))
    return tuple(path)


def _range_root(start: int, end: int, get_node: NodeFetcher) -> bytes:
    """Root of leaves [start, end) where ``start`` is aligned to the range's top power of 2."""
    return _fold_right(tuple(_fetch(get_node, lv, ix) for lv, ix in _perfect_cover(start, end)))


def _perfect_cover(start: int, end: int) -> list[tuple[int, int]]:
    """Perfect nodes covering [start, end), largest first, for an aligned ``start``."""
    cover = []
    position = start
    for level in reversed(range((end - start).bit_length())):
        if ((end - start) >> level) & 1:
            cover.append((level, position >> level))
            position += 1 << level
    return cover


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    current = hashes[-1]
    for left in reversed(hashes[:-1]):
        current = node_hash(left, current)
    return current


def _path_shape(index: int, last: int) -> tuple[int, int]:
    """(inner, border) lengths of the audit path of ``index`` when ``last`` is the last index."""
    inner = (index ^ last).bit_length()
    return inner, (index >> inner).bit_count()


# The chains below hash inner nodes as node_hash does, inline: they run on every proof a
# verifier checks (a parent receipt at decision time), where a call per node is measurable.


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for step, sibling in enumerate(proof):
        if (index >> step) & 1:
            seed = _sha256(_NODE_PREFIX + sibling + seed).digest()
        else:
            seed = _sha256(_NODE_PREFIX + seed + sibling).digest()
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for step, sibling in enumerate(proof):
        if (index >> step) & 1:
            seed = _sha256(_NODE_PREFIX + sibling + seed).digest()
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for sibling in proof:
        seed = _sha256(_NODE_PREFIX + sibling + seed).digest()
    return seed


def _trailing_zeros(value: int) -> int:
    return (value & -value).bit_length() - 1


def _fetch(get_node: NodeFetcher, level: int, index: int) -> bytes:
    value = get_node(level, index)
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise LineageError(f"stored Merkle node (level {level}, index {index}) is not a hash")
    return value


def _check_size(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TREE_SIZE:
        raise LineageError(f"{what} {value!r} is not an integer in 0..2**64-1")


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise LineageError(f"{what} is not a 32-byte SHA-256 hash")


def _check_proof(proof: Sequence[bytes]) -> tuple[bytes, ...]:
    if not isinstance(proof, (list, tuple)) or len(proof) > 2 * 64:
        raise LineageError("a proof is a list of at most 128 hashes")
    for position, element in enumerate(proof):
        if not isinstance(element, bytes) or len(element) != HASH_SIZE:
            raise LineageError(f"proof hash {position} is not a 32-byte SHA-256 hash")
    return tuple(proof)


def _check_match(computed: bytes, expected: bytes, what: str) -> None:
    if computed != expected:
        raise LineageError(
            f"{what} leads to root {computed.hex()[:16]}…, not {expected.hex()[:16]}…"
        )

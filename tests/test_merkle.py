"""Incremental Merkle tree, proof generation from stored nodes, and strict verification."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import LineageError
from edge_agent.protocol.merkle import (
    EMPTY_ROOT,
    Frontier,
    Node,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_at,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [leaf_hash(b"entry %d" % i) for i in range(70)]


def _store(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    _, nodes = Frontier().extend(leaves)
    return {(n.level, n.index): n.hash for n in nodes}


STORE = _store(LEAVES)


def get_node(level: int, index: int) -> bytes:
    return STORE[(level, index)]


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def test_hashes_are_domain_separated_as_rfc9162() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    left, right = b"a" * 32, b"b" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert Frontier().root() == EMPTY_ROOT


def test_append_returns_the_leaf_and_every_node_it_completes() -> None:
    frontier, _ = Frontier().extend(LEAVES[:7])
    frontier, completed = frontier.append(LEAVES[7])
    assert [(n.level, n.index) for n in completed] == [(0, 7), (1, 3), (2, 1), (3, 0)]
    assert completed[0] == Node(0, 7, LEAVES[7])
    assert completed[-1].hash == root_from_leaf_hashes(LEAVES[:8])
    assert frontier.size == 8 and frontier.hashes == (completed[-1].hash,)


def test_append_does_not_change_the_frontier_it_is_called_on() -> None:
    frontier, _ = Frontier().extend(LEAVES[:3])
    frontier.append(LEAVES[3])
    assert frontier.size == 3 and frontier.root() == root_from_leaf_hashes(LEAVES[:3])


def test_frontier_root_matches_reference_root_at_every_size() -> None:
    frontier = Frontier()
    for size, leaf in enumerate(LEAVES, start=1):
        frontier, _ = frontier.append(leaf)
        assert frontier.root() == root_from_leaf_hashes(LEAVES[:size])


def test_store_holds_exactly_the_perfect_nodes() -> None:
    assert len(STORE) == 2 * len(LEAVES) - bin(len(LEAVES)).count("1")


@pytest.mark.parametrize("size", range(71))
def test_frontier_loaded_from_store_matches_the_built_one(size: int) -> None:
    built, _ = Frontier().extend(LEAVES[:size])
    assert Frontier.load(size, get_node) == built
    assert root_at(size, get_node) == built.root()


@pytest.mark.parametrize(
    ("size", "hashes"),
    [(1, ()), (2, (b"x" * 32, b"y" * 32)), (3, (b"x" * 32, b"short")), (-1, ())],
)
def test_frontier_refuses_an_inconsistent_shape(size: int, hashes: tuple[bytes, ...]) -> None:
    with pytest.raises(ValueError):
        Frontier(size, hashes)


def test_append_refuses_a_leaf_that_is_not_a_hash() -> None:
    with pytest.raises(ValueError):
        Frontier().append(b"entry bytes, not their hash")


def test_root_at_refuses_a_store_returning_garbage() -> None:
    with pytest.raises(LineageError, match="level 0, index 0"):
        root_at(1, lambda level, index: b"garbage")


def test_reference_root_names_the_first_bad_leaf() -> None:
    with pytest.raises(LineageError) as caught:
        root_from_leaf_hashes([LEAVES[0], b"short"])
    assert caught.value.seq == 1 and caught.value.code == "lineage_invalid"


@pytest.mark.parametrize("size", range(1, 71))
def test_generated_inclusion_proofs_verify_for_every_leaf(size: int) -> None:
    root = root_at(size, get_node)
    for index in range(size):
        verify_inclusion(LEAVES[index], index, size, inclusion_proof(index, size, get_node), root)


@pytest.mark.parametrize("size2", range(1, 41))
def test_generated_consistency_proofs_verify_for_every_older_size(size2: int) -> None:
    root2 = root_at(size2, get_node)
    for size1 in range(1, size2 + 1):
        proof = consistency_proof(size1, size2, get_node)
        verify_consistency(size1, size2, root_at(size1, get_node), root2, proof)


def test_inclusion_proof_of_a_leaf_under_another_index_fails() -> None:
    proof = inclusion_proof(3, 10, get_node)
    with pytest.raises(LineageError):
        verify_inclusion(LEAVES[3], 2, 10, proof, root_at(10, get_node))


def test_consistency_with_a_rewritten_history_fails() -> None:
    rewritten = [*LEAVES[:5], leaf_hash(b"rewritten"), *LEAVES[6:20]]
    other = _store(rewritten)
    proof = consistency_proof(8, 20, lambda level, index: other[(level, index)])
    with pytest.raises(LineageError):
        verify_consistency(8, 20, root_at(8, get_node), root_from_leaf_hashes(rewritten), proof)


class _CountingStore:
    """Synthesises a node for any address and counts fetches: a stand-in for a huge log."""

    def __init__(self) -> None:
        self.fetches = 0

    def __call__(self, level: int, index: int) -> bytes:
        self.fetches += 1
        return hashlib.sha256(b"%d/%d" % (level, index)).digest()


@pytest.mark.parametrize("size", [1_000_000, 2**40 + 12_345])
def test_proofs_of_a_huge_log_take_logarithmic_fetches(size: int) -> None:
    depth = size.bit_length()
    for index in (0, size // 3, size - 1):
        store = _CountingStore()
        assert len(inclusion_proof(index, size, store)) <= depth
        assert store.fetches <= 2 * depth
    store = _CountingStore()
    consistency_proof(size // 3, size, store)
    assert store.fetches <= 2 * depth + 1


@pytest.mark.parametrize(
    ("index", "size"), [(1, 0), (5, 5), (-1, 3), (0, 2**64)], ids=["empty", "past", "neg", "huge"]
)
def test_inclusion_proof_refuses_an_index_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(ValueError):
        inclusion_proof(index, size, get_node)


@pytest.mark.parametrize(("size1", "size2"), [(0, 3), (4, 3), (-1, 2)])
def test_consistency_proof_refuses_sizes_out_of_order(size1: int, size2: int) -> None:
    with pytest.raises(ValueError):
        consistency_proof(size1, size2, get_node)


GOOD_PROOF = inclusion_proof(5, 9, get_node)
GOOD_ROOT = root_at(9, get_node)


@pytest.mark.parametrize(
    "args",
    [
        (LEAVES[5], True, 9, GOOD_PROOF, GOOD_ROOT),
        (LEAVES[5], 5, "9", GOOD_PROOF, GOOD_ROOT),
        (LEAVES[5], 5, 2**64, GOOD_PROOF, GOOD_ROOT),
        (LEAVES[5], 5, 9, None, GOOD_ROOT),
        (LEAVES[5], 5, 9, [*GOOD_PROOF[:-1], "text"], GOOD_ROOT),
        (LEAVES[5], 5, 9, [b"\x00" * 32] * 200, GOOD_ROOT),
        (LEAVES[5], 5, 9, GOOD_PROOF, GOOD_ROOT.hex()),
        (LEAVES[5].hex(), 5, 9, GOOD_PROOF, GOOD_ROOT),
    ],
    ids=[
        "bool-index",
        "str-size",
        "size-2^64",
        "no-proof",
        "str-hash",
        "long",
        "hex-root",
        "hex-leaf",
    ],
)
def test_inclusion_verifier_refuses_malformed_input_with_lineage_error(args: Any) -> None:
    with pytest.raises(LineageError):
        verify_inclusion(*args)


@pytest.mark.parametrize(
    "args",
    [
        (3, 2, GOOD_ROOT, GOOD_ROOT, []),
        (0, 0, b"not the empty root", b"not the empty root", []),
        (9, 9, GOOD_ROOT, GOOD_ROOT, [GOOD_ROOT]),
        (0, 9, EMPTY_ROOT, GOOD_ROOT, []),
        (4, 9, root_at(4, get_node), GOOD_ROOT, ()),
        (4, 9, "root", GOOD_ROOT, consistency_proof(4, 9, get_node)),
        (None, 9, GOOD_ROOT, GOOD_ROOT, []),
    ],
    ids=[
        "shrinking",
        "bad-empty-root",
        "equal-nonempty-proof",
        "from-empty",
        "empty",
        "str",
        "none",
    ],
)
def test_consistency_verifier_refuses_malformed_input_with_lineage_error(args: Any) -> None:
    with pytest.raises(LineageError):
        verify_consistency(*args)


def test_consistency_of_a_tree_with_itself_needs_only_equal_roots() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(9, 9, GOOD_ROOT, GOOD_ROOT, [])


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.integers(2, 70))
def test_any_flipped_bit_in_an_inclusion_proof_or_root_is_refused(
    data: st.DataObject, size: int
) -> None:
    index = data.draw(st.integers(0, size - 1))
    proof = list(inclusion_proof(index, size, get_node))
    root = root_at(size, get_node)
    target = data.draw(st.integers(0, len(proof)))
    bit = data.draw(st.integers(0, 255))
    if target == len(proof):
        root = _flip(root, bit)
    else:
        proof[target] = _flip(proof[target], bit)
    with pytest.raises(LineageError):
        verify_inclusion(LEAVES[index], index, size, proof, root)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size2=st.integers(2, 70))
def test_any_flipped_bit_in_a_consistency_proof_or_root_is_refused(
    data: st.DataObject, size2: int
) -> None:
    size1 = data.draw(st.integers(1, size2 - 1))
    proof = list(consistency_proof(size1, size2, get_node))
    roots = [root_at(size1, get_node), root_at(size2, get_node)]
    target = data.draw(st.integers(0, len(proof) + 1))
    bit = data.draw(st.integers(0, 255))
    if target < len(proof):
        proof[target] = _flip(proof[target], bit)
    else:
        roots[target - len(proof)] = _flip(roots[target - len(proof)], bit)
    with pytest.raises(LineageError):
        verify_consistency(size1, size2, roots[0], roots[1], proof)


@settings(max_examples=200, deadline=None)
@given(leaves=st.lists(st.binary(max_size=8), max_size=40))
def test_frontier_root_equals_reference_root_for_any_entries(leaves: list[bytes]) -> None:
    hashes = [leaf_hash(entry) for entry in leaves]
    frontier, _ = Frontier().extend(hashes)
    assert frontier.root() == root_from_leaf_hashes(hashes)

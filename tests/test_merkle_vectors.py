"""Oracle: the transparency-dev RFC 9162 vectors, vendored in ``tests/vectors/rfc9162-merkle``.

Roots must be reproduced three independent ways; every inclusion and consistency probe must be
accepted exactly when it is marked ``wantErr: false``. A missing vector file fails the run (the
file count is pinned); it never skips.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import LineageError
from edge_agent.protocol.merkle import (
    Frontier,
    leaf_hash,
    root_at,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parent / "vectors" / "rfc9162-merkle"
PROBE_FILES = {"inclusion": 98, "consistency": 98}


def _probes(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(f, id=str(f.relative_to(VECTORS / kind))) for f in files]


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _proof(probe: dict[str, Any]) -> list[bytes]:
    return [_b64(p) for p in probe["proof"] or []]


def _roots() -> tuple[list[bytes], list[bytes]]:
    data = json.loads((VECTORS / "roots.json").read_text())
    leaves = [leaf_hash(bytes.fromhex(x)) for x in data["leaf_inputs_hex"]]
    return leaves, [bytes.fromhex(x) for x in data["root_by_size_hex"]]


def test_every_vendored_probe_file_is_there() -> None:
    assert {kind: len(_probes(kind)) for kind in PROBE_FILES} == PROBE_FILES
    assert (VECTORS / "roots.json").is_file()


@pytest.mark.parametrize("size", range(9))
def test_frontier_reproduces_vector_root(size: int) -> None:
    leaves, roots = _roots()
    frontier, _ = Frontier().extend(leaves[:size])
    assert frontier.root() == roots[size]


@pytest.mark.parametrize("size", range(9))
def test_reference_root_reproduces_vector_root(size: int) -> None:
    leaves, roots = _roots()
    assert root_from_leaf_hashes(leaves[:size]) == roots[size]


@pytest.mark.parametrize("size", range(9))
def test_root_at_over_stored_nodes_reproduces_vector_root(size: int) -> None:
    leaves, roots = _roots()
    _, nodes = Frontier().extend(leaves)
    store = {(n.level, n.index): n.hash for n in nodes}
    assert root_at(size, lambda level, index: store[(level, index)]) == roots[size]


@pytest.mark.parametrize("path", _probes("inclusion"))
def test_inclusion_probe_accepted_exactly_when_valid(path: Path) -> None:
    probe = json.loads(path.read_text())
    args = (
        _b64(probe["leafHash"]),
        probe["leafIdx"],
        probe["treeSize"],
        _proof(probe),
        _b64(probe["root"]),
    )
    if probe["wantErr"]:
        with pytest.raises(LineageError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _probes("consistency"))
def test_consistency_probe_accepted_exactly_when_valid(path: Path) -> None:
    probe = json.loads(path.read_text())
    args = (
        probe["size1"],
        probe["size2"],
        _b64(probe["root1"]),
        _b64(probe["root2"]),
        _proof(probe),
    )
    if probe["wantErr"]:
        with pytest.raises(LineageError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)

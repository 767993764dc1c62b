"""What fuzzing found, pinned: each input that once broke a target's property, and a
readable test of the same bug.

Every file under ``tests/fuzz/regressions/<target>/`` is replayed against its target; add
the crashing input there (a short name saying what it holds) together with the fix.
"""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest

from edge_agent.protocol import dcbor
from edge_agent.protocol.root import RootError, sign_root, verify_trusted_root
from tests.fuzz.targets import by_name
from tests.fuzz.world import NOW, world

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
_FILES = sorted(p for p in REGRESSIONS.rglob("*") if p.is_file())


@pytest.mark.parametrize("path", _FILES, ids=[f"{p.parent.name}/{p.name}" for p in _FILES])
def test_an_input_fuzzing_found_holds_its_targets_property(path: Path) -> None:
    by_name(path.parent.name).check(path.read_bytes())


@pytest.mark.parametrize("alg", [[], {}, [-19]], ids=["empty-list", "map", "list"])
def test_a_pinned_root_whose_key_algorithm_is_not_a_number_is_refused(alg: object) -> None:
    """The pinned root's keys are read before its self-signature is checked (they name the
    keys that must sign it), so an unhashable ``alg`` reached a set lookup: a TypeError
    from ``edge-agent init`` instead of a refusal."""
    payload = cbor2.loads(world().hub.root_payload())
    first = next(iter(payload["keys"].values()))
    first["alg"] = alg
    data = sign_root(dcbor.encode(payload), world().hub.root_keys)
    with pytest.raises(RootError, match="unsupported algorithm"):
        verify_trusted_root(data, now=NOW)

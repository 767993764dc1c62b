"""A stored device log verifies only when its entries rebuild its chain and reach every stored
checkpoint root, its log state and its tree nodes' root (:mod:`hub.registry.stored_logs`)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge_agent.protocol.lineage_entries import entry_hash
from edge_agent.protocol.merkle import Frontier
from hub.registry.records import DeviceLog, StoredCheckpoint, StoredEntry
from hub.registry.stored_logs import check_stored_log
from tests.lineage_sim import NOW, DeviceLogSim

SIZE = 12


@pytest.fixture(scope="module")
def sim() -> DeviceLogSim:
    log = DeviceLogSim("gw-001")
    log.add(SIZE)
    return log


def _state(sim: DeviceLogSim, size: int = SIZE) -> DeviceLog:
    frontier, _ = Frontier().extend(entry_hash(e) for e in sim.entries[:size])
    return DeviceLog(size, frontier, entry_hash(sim.entries[size - 1]), sim.note(size))


def _entries(sim: DeviceLogSim) -> list[StoredEntry]:
    return [StoredEntry(seq, data) for seq, data in enumerate(sim.entries)]


def _checkpoints(sim: DeviceLogSim, *sizes: int) -> list[StoredCheckpoint]:
    return [StoredCheckpoint(s, sim.root(s), sim.note(s), NOW) for s in sorted(sizes, reverse=True)]


def test_a_log_as_stored_verifies_and_counts_the_checkpoints_reached(sim: DeviceLogSim) -> None:
    check = check_stored_log(
        "gw-001", _state(sim), _entries(sim), _checkpoints(sim, 4, 8, 12), sim.root(SIZE)
    )
    assert check.verified and check.size == SIZE and check.checkpoints == 3


def _problem(sim: DeviceLogSim, part: str) -> str:
    """The problem found in ``sim``'s stored log with ``part`` damaged."""
    entries, checkpoints = _entries(sim), _checkpoints(sim, 4, 12)
    state, node_root = _state(sim), sim.root(SIZE)
    if part == "entry bytes":
        data = entries[5].data
        entries[5] = StoredEntry(5, data[:-1] + bytes([data[-1] ^ 1]))
    elif part == "missing entry":
        del entries[5]
    elif part == "checkpoint root":
        checkpoints[1] = replace(checkpoints[1], root=bytes(32))
    elif part == "checkpoint beyond":
        checkpoints.insert(0, StoredCheckpoint(20, bytes(32), "note", NOW))
    elif part == "state size":
        state = _state(sim, SIZE - 1)
    elif part == "node root":
        node_root = bytes(32)
    check = check_stored_log("gw-001", state, entries, checkpoints, node_root)
    assert check.problem is not None
    return check.problem


@pytest.mark.parametrize(
    ("part", "problem"),
    [
        ("entry bytes", "entry 5"),
        ("missing entry", "entry 5"),
        ("checkpoint root", "checkpoint root at size 4"),
        ("checkpoint beyond", "checkpoint at size 20 is beyond the 12 stored entries"),
        ("state size", "12 entries stored, the log state says 11"),
        ("node root", "stored tree nodes do not rebuild the root at size 12"),
    ],
)
def test_any_damaged_part_of_a_stored_log_fails_it_naming_the_part(
    sim: DeviceLogSim, part: str, problem: str
) -> None:
    assert problem in _problem(sim, part)

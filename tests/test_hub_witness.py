"""The hub as witness: it cosigns a device's checkpoint only after accepting the batch that
ends in it, stores and acknowledges the cosigned note, and never cosigns a fork or anything
inconsistent with a checkpoint it cosigned before (docs/lineage.md, the hub part)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.errors import LineageError
from edge_agent.protocol.checkpoint import MAX_NOTE_BYTES, split_note, verify_checkpoint
from edge_agent.protocol.cosignature import cosign_note, verify_cosignature
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import decode_entry, encode_entry
from edge_agent.protocol.merkle import consistency_proof, verify_consistency
from edge_agent.protocol.roles import Role
from hub.cli.main import main as hub_main
from hub.core.ingest import ingest_batch
from hub.core.witness import witness_accepted
from hub.hubdir.keys import load_role_keys
from hub.registry.records import Accepted, DeviceLog
from tests.factory import NOW
from tests.hub_support import HubSetup, make_hub_dir
from tests.lineage_sim import DeviceLogSim
from tests.witness_support import LineageHub, started_hub


class _NothingStored:
    def entries(self, start: int, stop: int) -> list[bytes]:
        return []

    def checkpoint_root(self, size: int) -> bytes | None:
        return None


def test_an_accepted_batch_is_cosigned_on_the_devices_own_note() -> None:
    sim, witness = DeviceLogSim(), PrivateKey.generate()
    sim.add(12)
    accepted = ingest_batch(
        sim.batch(0, 12),
        device=sim.device_id,
        key=sim.key.public,
        origin=sim.origin,
        log=DeviceLog(),
        stored=_NothingStored(),
    )
    assert isinstance(accepted, Accepted)
    cosigned = witness_accepted(
        accepted, witness, device_key=sim.key.public, now=NOW
    ).log.checkpoint
    assert cosigned is not None and cosigned.startswith(sim.note(12))
    assert verify_checkpoint(cosigned, sim.key.public, sim.origin).root == sim.root(12)
    cosignature = verify_cosignature(cosigned, [witness.public])
    assert (cosignature.key, cosignature.time) == (witness.public, NOW)


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    hub = make_hub_dir(tmp_path / "hub")
    hub.devices["gw-001"].add(30)
    return hub


@pytest.fixture
def hub(setup: HubSetup) -> Iterator[LineageHub]:
    with started_hub(setup) as started:
        yield started


def _cosigned_at(hub: LineageHub, size: int) -> str:
    """Ship gw-001's entries up to ``size`` and return the cosigned note the ack carried."""
    (ack,) = hub.ship(hub.sim.batch(0, size))
    assert ack.acked == size and ack.checkpoint is not None
    return ack.checkpoint


def test_the_note_of_an_accepted_batch_is_stored_and_acked_cosigned(hub: LineageHub) -> None:
    cosigned = _cosigned_at(hub, 10)
    assert verify_cosignature(cosigned, [hub.witness]).key == hub.witness
    assert verify_checkpoint(cosigned, hub.sim.key.public, hub.sim.origin).size == 10
    assert hub.service.registry.lineage_state("gw-001").checkpoint == cosigned
    assert hub.stored_notes() == {10: cosigned}


def test_a_duplicate_is_reacked_with_the_stored_cosigned_note(hub: LineageHub) -> None:
    cosigned = _cosigned_at(hub, 10)
    (again,) = hub.ship(hub.sim.batch(0, 10))
    assert (again.acked, again.checkpoint) == (10, cosigned)
    assert hub.stored_notes() == {10: cosigned}


def _rewritten(sim: DeviceLogSim) -> DeviceLogSim:
    """The same device key with another history from entry 5 on (a restored state dir)."""
    other = DeviceLogSim(sim.device_id, sim.key, entries=list(sim.entries[:5]))
    other.add(25, time=NOW + 999, resource="/bin/sh")
    return other


def _tampered_entry(sim: DeviceLogSim, seq: int) -> list[bytes]:
    entries = list(sim.entries[10:20])
    entry = decode_entry(entries[seq - 10], seq)
    entries[seq - 10] = encode_entry(replace(entry, allowed=not entry.allowed))
    return entries


ATTEMPTS: list[tuple[str, Callable[[DeviceLogSim], bytes], bool]] = [
    # (name, batch sent after a cosigned checkpoint at size 10, whether it is fork evidence)
    ("same size, another root", lambda s: s.batch(0, 10, note=s.note(10, root=bytes(32))), True),
    ("rewritten history past the cosigned size", lambda s: _rewritten(s).batch(0, 20), True),
    ("rewritten history below the cosigned size", lambda s: _rewritten(s).batch(0, 8), True),
    (
        "next batch signed over another root",
        lambda s: s.batch(10, 20, note=s.note(20, bytes(32))),
        True,
    ),
    (
        "next batch with a changed entry",
        lambda s: s.batch(10, 20, entries=_tampered_entry(s, 12)),
        False,
    ),
    ("a gap after the cosigned size", lambda s: s.batch(15, 20), False),
    (
        "an earlier size signed over another root",
        lambda s: s.batch(0, 7, note=s.note(7, root=bytes(32))),
        False,
    ),
    (
        "a note by another key",
        lambda s: s.batch(10, 20, note=s.note(20, key=PrivateKey.generate())),
        False,
    ),
]


@pytest.mark.parametrize(
    ("attempt", "fork"), [row[1:] for row in ATTEMPTS], ids=[row[0] for row in ATTEMPTS]
)
def test_a_device_never_gets_a_cosignature_inconsistent_with_one_cosigned_before(
    hub: LineageHub, attempt: Callable[[DeviceLogSim], bytes], fork: bool
) -> None:
    cosigned = _cosigned_at(hub, 10)
    acks = hub.ship(attempt(hub.sim))
    assert all(a.checkpoint == cosigned and a.acked == 10 for a in acks)
    assert hub.stored_notes() == {10: cosigned}
    assert bool(hub.service.registry.forks("gw-001")) == fork
    (honest,) = hub.ship(hub.sim.batch(10, 30))
    assert honest.checkpoint is not None
    _assert_consistent(hub, cosigned, honest.checkpoint)


def _assert_consistent(hub: LineageHub, old_note: str, new_note: str) -> None:
    key, origin = hub.sim.key.public, hub.sim.origin
    old, new = (verify_checkpoint(n, key, origin) for n in (old_note, new_note))
    verify_cosignature(new_note, [hub.witness])
    proof = consistency_proof(old.size, new.size, hub.service.registry.tree_nodes("gw-001"))
    verify_consistency(old.size, new.size, old.root, new.root, proof)


def test_a_fork_is_kept_as_evidence_and_never_cosigned(hub: LineageHub) -> None:
    cosigned = _cosigned_at(hub, 10)
    assert hub.ship(_rewritten(hub.sim).batch(0, 20)) == []
    (fork,) = hub.service.registry.forks("gw-001")
    assert fork.held_note == cosigned
    with pytest.raises(LineageError, match="no cosignature"):
        verify_cosignature(fork.new_note, [hub.witness])


def test_cosigned_notes_and_tree_nodes_survive_a_restart(setup: HubSetup) -> None:
    setup.devices["gw-001"].add(570)
    sim = setup.devices["gw-001"]
    with started_hub(setup) as hub:
        # One ack per stored group: two when storing the first batch outlasted GROUP_MAX_S.
        *_, ack = hub.ship(sim.batch(0, 300), sim.batch(300, 600))
    with started_hub(setup) as hub:
        (again,) = hub.ship(sim.batch(300, 600))
        assert again.checkpoint == ack.checkpoint
        assert hub.stored_notes()[600] == ack.checkpoint
        _assert_consistent(hub, hub.stored_notes()[300], ack.checkpoint or "")


def _with_lines(note: str, count: int, name: str = "edgegov/v1/witness") -> str:
    """``note`` with ``count`` more signature lines by fresh keys (a stranger's 'witness')."""
    for index in range(count):
        note = cosign_note(note, PrivateKey.generate(), time=index, name=name)
    return note


def _near_the_size_bound(note: str) -> str:
    """``note`` padded with long-named lines to less than a cosignature line of 16 KiB."""
    while len(note.encode()) < MAX_NOTE_BYTES - 1500:
        note = _with_lines(note, 1, "x" * 1200)
    pad = MAX_NOTE_BYTES - len(note.encode()) - 121
    return _with_lines(note, 1, "y" * pad)


PADDED: list[tuple[str, Callable[[str], str]]] = [
    ("a stranger's line under the witness key name", lambda note: _with_lines(note, 1)),
    ("15 junk lines: 16 with the device's", lambda note: _with_lines(note, 15, "junk")),
    ("lines up to nearly 16 KiB", _near_the_size_bound),
]


@pytest.mark.parametrize("pad", [row[1] for row in PADDED], ids=[row[0] for row in PADDED])
def test_the_hub_keeps_only_the_devices_own_line_and_cosigns_it(
    hub: LineageHub, pad: Callable[[str], str]
) -> None:
    note = pad(hub.sim.note(10))
    (ack,) = hub.ship(hub.sim.batch(0, 10, note=note))
    assert ack.acked == 10 and ack.checkpoint is not None
    _, lines = split_note(ack.checkpoint)
    assert [line.name for line in lines] == [hub.sim.origin, "edgegov/v1/witness"]
    assert ack.checkpoint.startswith(hub.sim.note(10))
    assert verify_cosignature(ack.checkpoint, [hub.witness]).key == hub.witness
    assert hub.stored_notes() == {10: ack.checkpoint}


def test_after_a_verifier_key_rotation_the_running_hub_cosigns_with_the_new_key(
    hub: LineageHub,
) -> None:
    old_witness = hub.witness
    assert verify_cosignature(_cosigned_at(hub, 10), [old_witness]).key == old_witness
    assert hub_main(["root", "rotate", "--keys", str(hub.setup.keys), "--role", "verifier"]) == 0
    rotated = hub.service.hub_dir.load_keys().root
    new_witness = load_role_keys(hub.setup.keys, Role.VERIFIER, rotated)[0].public
    assert new_witness != old_witness
    hub.service._started.context.reread_roots()
    hub.setup.root = rotated
    cosigned = _cosigned_at(hub, 20)
    assert verify_cosignature(cosigned, [new_witness]).key == new_witness
    with pytest.raises(LineageError):
        verify_cosignature(cosigned, [old_witness])

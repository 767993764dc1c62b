"""Hub lineage ingest: what is stored, re-acknowledged, refused or kept as fork evidence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.device_key import load_device_key
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import Entry, Kind, decode_entry, encode_entry
from edge_agent.protocol.request import Request
from edge_agent.protocol.shipping import LineageBatch, sign_batch
from hub.core.ingest import Duplicate, IngestError, RejectCode, ingest_batch
from hub.registry import Registry, RegistryError, RejectionCount, RejectionTotal
from hub.registry.backends import open_registry
from hub.registry.records import Accepted, DeviceLog
from tests.factory import DEVICE, NOW, HubSim
from tests.hub_support import hub_registry
from tests.lineage_sim import DeviceLogSim


@pytest.fixture
def device() -> DeviceLogSim:
    sim = DeviceLogSim("gw-001")
    sim.add(40)
    return sim


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with open_registry(hub_registry(tmp_path)) as opened:
        yield opened


def _ingest(
    registry: Registry, device: DeviceLogSim, data: bytes, *, topic_device: str = ""
) -> Accepted | Duplicate:
    """Ingest ``data`` received on ``topic_device``'s topic (default: the sim's), and store
    it when accepted, as the service does."""
    device_id = topic_device or device.device_id
    log = registry.lineage_state(device_id)
    result = ingest_batch(
        data,
        device=device_id,
        key=device.key.public,
        origin=device.origin,
        log=log,
        stored=registry.stored_log(device_id),
    )
    if isinstance(result, Accepted):
        assert registry.store_batch(result, expected_size=log.size, received_at=NOW)
    return result


def _refused(registry: Registry, device: DeviceLogSim, data: bytes) -> IngestError:
    with pytest.raises(IngestError) as caught:
        _ingest(registry, device, data)
    return caught.value


def _tampered(entry: bytes, **changes: object) -> bytes:
    decoded = decode_entry(entry)
    fields = {name: getattr(decoded, name) for name in Entry.__slots__}
    fields.update(changes)
    return encode_entry(Entry(**fields))  # type: ignore[arg-type]


def test_a_good_batch_is_accepted_with_the_root_the_device_signed(
    registry: Registry, device: DeviceLogSim
) -> None:
    result = _ingest(registry, device, device.batch(0, 10))
    assert isinstance(result, Accepted)
    assert (result.first_seq, result.acked, len(result.entries)) == (0, 10, 10)
    assert result.log.root == device.root(10) == result.checkpoint.root
    assert registry.entries("gw-001", 0, 100) == device.entries[:10]


def test_consecutive_batches_extend_the_stored_log(
    registry: Registry, device: DeviceLogSim
) -> None:
    for start in range(0, 40, 8):
        result = _ingest(registry, device, device.batch(start, start + 8))
        assert isinstance(result, Accepted)
    state = registry.lineage_state("gw-001")
    assert (state.size, state.root) == (40, device.root(40))
    assert registry.checkpoint_root("gw-001", 24) == device.root(24)


def test_a_duplicate_batch_is_reacknowledged_and_not_stored_twice(
    registry: Registry, device: DeviceLogSim
) -> None:
    _ingest(registry, device, device.batch(0, 10))
    _ingest(registry, device, device.batch(10, 20))
    result = _ingest(registry, device, device.batch(0, 10))
    assert result == Duplicate("gw-001", 20, device.root(20))
    assert len(list(registry.iter_entries("gw-001"))) == 20


def test_a_batch_overlapping_the_stored_tail_stores_only_the_new_entries(
    registry: Registry, device: DeviceLogSim
) -> None:
    _ingest(registry, device, device.batch(0, 10))
    result = _ingest(registry, device, device.batch(5, 15))
    assert isinstance(result, Accepted)
    assert (result.first_seq, len(result.entries), result.acked) == (10, 5, 15)
    assert [e.seq for e in registry.iter_entries("gw-001")] == list(range(15))


def test_a_gap_is_refused_and_the_stored_size_reacknowledged(
    registry: Registry, device: DeviceLogSim
) -> None:
    _ingest(registry, device, device.batch(0, 10))
    error = _refused(registry, device, device.batch(12, 20))
    assert (error.reject_code, error.reack, error.seq) == (RejectCode.GAP, True, 10)
    assert registry.lineage_state("gw-001").size == 10


@pytest.mark.parametrize(
    "break_at",
    [
        pytest.param(lambda e: e.__setitem__(13, _tampered(e[13], prev=bytes(32))), id="bad-prev"),
        pytest.param(lambda e: e.__setitem__(13, e[14]), id="entry-out-of-place"),
        pytest.param(lambda e: e.__setitem__(13, e[13] + b"\x00"), id="trailing-byte"),
        pytest.param(lambda e: e.__setitem__(13, b"\xa1\x00\x00"), id="not-an-entry"),
    ],
)
def test_a_batch_that_breaks_the_chain_is_refused_and_nothing_stored(
    registry: Registry, device: DeviceLogSim, break_at: object
) -> None:
    _ingest(registry, device, device.batch(0, 10))
    entries = device.entries[10:20]
    broken = list(device.entries[:10]) + entries
    break_at(broken)  # type: ignore[operator]
    # The device signs a checkpoint over exactly what it sends: only the chain check is left.
    forged = DeviceLogSim("gw-001", device.key, entries=broken)
    error = _refused(registry, device, forged.batch(10, 20))
    assert error.reject_code == RejectCode.CHAIN_BREAK
    assert error.seq == 13 and error.reack
    assert registry.lineage_state("gw-001").size == 10


def test_a_batch_signed_by_another_devices_key_is_refused_as_impersonation(
    registry: Registry, device: DeviceLogSim
) -> None:
    intruder = PrivateKey.generate()
    error = _refused(registry, device, device.batch(0, 10, key=intruder))
    assert (error.reject_code, error.reack) == (RejectCode.IMPERSONATION, False)
    assert registry.lineage_state("gw-001").size == 0


def test_bytes_that_only_start_like_a_cose_sign1_are_malformed_not_impersonation(
    registry: Registry, device: DeviceLogSim
) -> None:
    error = _refused(registry, device, b"\xd2\x84" + b"\x9f" * 64)
    assert (error.reject_code, error.reack) == (RejectCode.MALFORMED, False)
    assert "is not a signed batch" in error.message
    assert registry.lineage_state("gw-001").size == 0


def test_a_devices_own_batch_published_on_another_devices_topic_is_refused(
    registry: Registry, device: DeviceLogSim
) -> None:
    neighbour = DeviceLogSim("gw-002")
    neighbour.add(5)
    own_batch = neighbour.batch(0, 5)
    # Received on gw-001's topic: verified as gw-001's, with gw-001's key and binding.
    with pytest.raises(IngestError) as caught:
        ingest_batch(
            own_batch,
            device="gw-001",
            key=device.key.public,
            origin=device.origin,
            log=DeviceLog(),
            stored=registry.stored_log("gw-001"),
        )
    assert caught.value.reject_code == RejectCode.IMPERSONATION
    # Naming gw-001 inside but signed by gw-002's key is no better.
    renamed = neighbour.batch(0, 5, device="gw-001")
    assert _refused(registry, device, renamed).reject_code == RejectCode.IMPERSONATION


def test_a_checkpoint_signed_by_another_key_or_for_another_size_is_refused(
    registry: Registry, device: DeviceLogSim
) -> None:
    other = PrivateKey.generate()
    error = _refused(registry, device, device.batch(0, 10, note=device.note(10, key=other)))
    assert error.reject_code == RejectCode.BAD_CHECKPOINT
    error = _refused(registry, device, device.batch(0, 10, note=device.note(9)))
    assert error.reject_code == RejectCode.BAD_CHECKPOINT
    assert registry.lineage_state("gw-001").size == 0


def test_a_signed_checkpoint_with_another_root_is_fork_evidence(
    registry: Registry, device: DeviceLogSim
) -> None:
    _ingest(registry, device, device.batch(0, 10))
    held = registry.lineage_state("gw-001").checkpoint
    forged_note = device.note(20, root=bytes(range(32)))
    data = device.batch(10, 20, note=forged_note)
    error = _refused(registry, device, data)
    assert (error.reject_code, error.reack) == (RejectCode.FORK, False)
    assert error.fork is not None
    assert (error.fork.held_note, error.fork.new_note, error.fork.batch) == (
        held,
        forged_note,
        data,
    )
    assert registry.lineage_state("gw-001").size == 10


def test_rewritten_history_under_a_new_signed_checkpoint_is_fork_evidence(
    registry: Registry, device: DeviceLogSim
) -> None:
    _ingest(registry, device, device.batch(0, 20))
    # A device restored from an old copy diverges at entry 12 and signs its new history.
    rewritten = DeviceLogSim("gw-001", device.key, entries=list(device.entries[:12]))
    rewritten.add(13, time=NOW + 500, resource="/opt/other")
    error = _refused(registry, device, rewritten.batch(10, 25))
    assert error.reject_code == RejectCode.FORK and error.fork is not None
    assert "entry 12" in error.fork.reason
    # The same positions again, only re-signed with another root for a stored size.
    error = _refused(registry, device, device.batch(0, 20, note=rewritten.note(20)))
    assert error.reject_code == RejectCode.FORK


def test_fork_evidence_is_kept_and_bounded(registry: Registry, device: DeviceLogSim) -> None:
    _ingest(registry, device, device.batch(0, 10))
    for attempt in range(12):
        error = _refused(
            registry, device, device.batch(10, 20, note=device.note(20, bytes([attempt]) * 32))
        )
        assert error.fork is not None
        registry.record_fork(error.fork, NOW)
    forks = registry.forks("gw-001")
    assert len(forks) == 8
    assert forks[0].new_note == device.note(20, bytes(32))


def test_the_registry_keeps_everything_across_reopen(tmp_path: Path, device: DeviceLogSim) -> None:
    with open_registry(hub_registry(tmp_path)) as registry:
        _ingest(registry, device, device.batch(0, 17))
        registry.add_rejections([RejectionCount("gw-001", "impersonation", 3, "bad key")], NOW)
        registry.add_rejections(
            [RejectionCount("gw-001", "impersonation", 2, "bad key again")], NOW + 1
        )
        before = registry.lineage_state("gw-001")
    with open_registry(hub_registry(tmp_path)) as registry:
        after = registry.lineage_state("gw-001")
        assert after == before
        assert registry.entries("gw-001", 0, 17) == device.entries[:17]
        assert registry.rejections("gw-001") == [
            RejectionTotal("gw-001", "impersonation", 5, NOW + 1, "bad key again")
        ]
        # Verification resumes from the reopened state: the next batch chains on.
        assert isinstance(_ingest(registry, device, device.batch(17, 30)), Accepted)


def test_a_store_raced_by_another_hub_process_stores_nothing(
    registry: Registry, device: DeviceLogSim
) -> None:
    log = registry.lineage_state("gw-001")
    result = ingest_batch(
        device.batch(0, 10),
        device="gw-001",
        key=device.key.public,
        origin=device.origin,
        log=log,
        stored=registry.stored_log("gw-001"),
    )
    assert isinstance(result, Accepted)
    _ingest(registry, device, device.batch(0, 5))
    assert not registry.store_batch(result, expected_size=0, received_at=NOW)
    assert [e.seq for e in registry.iter_entries("gw-001")] == list(range(5))


def test_a_real_agent_log_ships_and_verifies(tmp_path: Path, registry: Registry) -> None:
    sim = HubSim()
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        for i in range(25):
            agent.decide(Request("svc:camera", "exec", f"/opt/camera/bin/c{i % 4}"), NOW + i)
        assert agent.lineage is not None
        rows = agent.lineage.unacknowledged(100)
        end = rows[-1][0] + 1
        note = agent.lineage.checkpoint_note(end, NOW + 30)
    key = load_device_key(state_dir)
    device = DeviceLogSim(DEVICE.device_id, key)
    data = sign_batch(LineageBatch(DEVICE.device_id, 0, tuple(d for _, d in rows), note), key)
    result = _ingest(registry, device, data)
    assert isinstance(result, Accepted) and result.acked == end
    kinds = {decode_entry(e).kind for e in result.entries}
    assert {Kind.BUNDLE_INSTALLED, Kind.DECISION} <= kinds


def test_batches_stored_in_a_write_group_chain_on_and_are_durable_once_it_ends(
    tmp_path: Path, device: DeviceLogSim
) -> None:
    with (
        open_registry(hub_registry(tmp_path)) as registry,
        open_registry(hub_registry(tmp_path)) as peer,
    ):
        with registry.write_group():
            _ingest(registry, device, device.batch(0, 10))
            assert isinstance(_ingest(registry, device, device.batch(10, 25)), Accepted)
            assert isinstance(_ingest(registry, device, device.batch(0, 10)), Duplicate)
            assert peer.lineage_state("gw-001").size == 0
        assert peer.lineage_state("gw-001").size == 25


def test_a_failed_write_inside_a_group_undoes_only_itself(
    registry: Registry, device: DeviceLogSim
) -> None:
    with registry.write_group():
        accepted = _ingest(registry, device, device.batch(0, 10))
        assert isinstance(accepted, Accepted)
        with pytest.raises(RegistryError):
            # Passes the size check, then collides with the entries it stored already.
            registry.store_batch(accepted, expected_size=10, received_at=NOW)
        registry.add_rejections([RejectionCount("gw-001", "impersonation", 1, "bad key")], NOW)
    assert registry.lineage_state("gw-001").size == 10
    assert [e.seq for e in registry.iter_entries("gw-001")] == list(range(10))
    assert registry.rejections("gw-001")[0].count == 1


def test_an_error_out_of_a_write_group_stores_nothing_of_it(
    registry: Registry, device: DeviceLogSim
) -> None:
    with pytest.raises(RuntimeError), registry.write_group():
        _ingest(registry, device, device.batch(0, 10))
        raise RuntimeError("the connection dropped before the acks went out")
    assert registry.lineage_state("gw-001").size == 0
    assert isinstance(_ingest(registry, device, device.batch(0, 10)), Accepted)

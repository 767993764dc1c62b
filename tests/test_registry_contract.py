"""The registry contract: what every backend of :class:`hub.registry.interface.Registry`
does, as its docstrings state it.

Written against the protocol only and parametrised over backends by the ``backend``
fixture: a new backend (PostgreSQL) joins by adding one param there. What only one
backend does (its files, its schema versions) lives in that backend's own tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.protocol.attestation import Challenge
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.merkle import (
    inclusion_proof,
    root_at,
)
from edge_agent.protocol.shipping import DeviceStatus
from hub.core.ingest import ingest_batch
from hub.registry import (
    MAX_FORK_EVIDENCE,
    MAX_REJECTION_DETAIL,
    UNREGISTERED,
    AttestationRecord,
    DeviceRecord,
    IssuedDirectory,
    IssuedFreshness,
    IssuedRevocation,
    PublishedBundle,
    Registry,
    RegistryError,
    RejectionCount,
    RejectionTotal,
    StoredCheckpoint,
    StoredEntry,
)
from hub.registry.records import Accepted, DeviceLog, ForkEvidence
from hub.registry.sqlite import SqliteRegistry
from tests.factory import NOW
from tests.lineage_sim import DeviceLogSim, assert_same_proofs, reference_nodes, store_log


@dataclass(frozen=True)
class Backend:
    """A registry backend under test: ``open`` returns a new handle on one shared store (as
    two hub processes, or a hub and an ``edge-hub`` command, each hold one)."""

    name: str
    open: Callable[[], Registry]


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", lambda: SqliteRegistry.open(tmp_path / "hub.db"))
    raise AssertionError(f"no backend {request.param}")


@pytest.fixture
def registry(backend: Backend) -> Iterator[Registry]:
    with backend.open() as opened:
        yield opened


@pytest.fixture
def peer(backend: Backend) -> Iterator[Registry]:
    """A second handle on the same store."""
    with backend.open() as opened:
        yield opened


def _device(device_id: str, region: str = "eu-1", groups: tuple[str, ...] = ()) -> DeviceRecord:
    return DeviceRecord(device_id, region, groups, "generic", PrivateKey.generate().public, 1, NOW)


def _status(time: int, *, gate: str = "open", device: str = "gw-001") -> DeviceStatus:
    return DeviceStatus(device, time, True, 3, NOW + 3600, gate, 0, 0)


def _bundle(
    version: int, channel: str = "all", region: str = "eu-1", at: int = NOW
) -> PublishedBundle:
    return PublishedBundle(
        region, channel, version, bytes([version]) * 32, b"bundle %d" % version, NOW + 9, 60, at
    )


def _revocation(epoch: int, value: str, region: str = "eu-1") -> IssuedRevocation:
    return IssuedRevocation(region, epoch, "bundle_version", value, "bad", b"sig %d" % epoch, NOW)


def _freshness(channel: str, hub_time: int, region: str = "eu-1") -> IssuedFreshness:
    return IssuedFreshness(region, channel, b"token %d" % hub_time, hub_time, hub_time + 60, 2)


def _attestation(device: str, verdict: str, at: int) -> AttestationRecord:
    return AttestationRecord(
        device, verdict, "detail", b"m" * 32, b"n" * 16, at - 10, at + 60, None, 5, "{}", b"r", at
    )


def _accepted(registry: Registry, sim: DeviceLogSim, start: int, stop: int) -> Accepted:
    result = ingest_batch(
        sim.batch(start, stop),
        device=sim.device_id,
        key=sim.key.public,
        origin=sim.origin,
        log=registry.lineage_state(sim.device_id),
        stored=registry.stored_log(sim.device_id),
    )
    assert isinstance(result, Accepted)
    return result


def _store(registry: Registry, sim: DeviceLogSim, start: int, stop: int) -> Accepted:
    accepted = _accepted(registry, sim, start, stop)
    assert registry.store_batch(accepted, expected_size=start, received_at=NOW)
    return accepted


@pytest.fixture
def sim() -> DeviceLogSim:
    log = DeviceLogSim("gw-001")
    log.add(40)
    return log


# Devices.


def test_devices_are_listed_by_id_and_an_unknown_one_is_none(registry: Registry) -> None:
    b, a = _device("gw-b"), _device("gw-a")
    registry.add_device(b)
    registry.add_device(a)
    assert registry.devices() == [a, b]
    assert registry.device("gw-b") == b
    assert registry.device("gw-x") is None


@pytest.mark.parametrize(
    ("name", "second", "message"),
    [
        ("same id", lambda first: _device(first.device_id), "registered already"),
        (
            "same key",
            lambda first: replace(_device("gw-2"), public_key=first.public_key),
            "registered already to device 'gw-1'",
        ),
    ],
)
def test_a_second_device_with_a_taken_id_or_key_is_refused_and_changes_nothing(
    registry: Registry,
    name: str,
    second: Callable[[DeviceRecord], DeviceRecord],
    message: str,
) -> None:
    first = _device("gw-1")
    registry.add_device(first)
    with pytest.raises(ConfigError, match=message):
        registry.add_device(second(first))
    assert registry.devices() == [first]


def test_regions_are_those_of_devices_current_bundles_and_revocations_once_sorted(
    registry: Registry,
) -> None:
    registry.add_device(_device("gw-1", "us-2"))
    registry.add_device(_device("gw-2", "eu-1"))
    registry.record_bundle(
        bundle=_bundle(1, region="ap-3"), issued_at=NOW, target={}, channels=["all"]
    )
    registry.record_revocation(_revocation(1, "1", region="eu-1"))
    registry.record_revocation(_revocation(1, "1", region="zz-9"))
    assert registry.regions() == ["ap-3", "eu-1", "us-2", "zz-9"]


STATUS_ROWS = [
    # (name, held, new, kept, last seen after)
    ("first status", None, _status(NOW), True, NOW + 5),
    ("later status", _status(NOW), _status(NOW + 1), True, NOW + 5),
    ("same second, other bytes", _status(NOW), _status(NOW, gate="closed"), True, NOW),
    ("same bytes again", _status(NOW), _status(NOW), False, NOW),
    ("older status", _status(NOW), _status(NOW - 1, gate="closed"), False, NOW),
]


@pytest.mark.parametrize(
    ("name", "held", "new", "kept", "seen"), STATUS_ROWS, ids=[r[0] for r in STATUS_ROWS]
)
def test_a_status_is_kept_unless_older_and_only_a_later_one_counts_as_heard_from(
    registry: Registry,
    name: str,
    held: DeviceStatus | None,
    new: DeviceStatus,
    kept: bool,
    seen: int,
) -> None:
    registry.add_device(_device("gw-001"))
    if held is not None:
        assert registry.record_status(held, repr(held).encode(), NOW)
    assert registry.record_status(new, repr(new).encode(), NOW + 5) is kept
    (row,) = registry.fleet()
    assert row.gate == (new if kept else held or new).gate
    assert row.last_seen == seen


# Publications.


def test_a_recorded_bundle_is_current_on_its_channels_ordered_by_region_and_channel(
    registry: Registry,
) -> None:
    one, two = _bundle(1, at=NOW), _bundle(2, at=NOW + 10)
    other = _bundle(7, region="ap-3")
    registry.record_bundle(
        bundle=one, issued_at=NOW, target={"region": "eu-1"}, channels=["b", "a"]
    )
    registry.record_bundle(bundle=two, issued_at=NOW, target={}, channels=["b"])
    registry.record_bundle(bundle=other, issued_at=NOW, target={}, channels=["all"])
    assert registry.current_bundles("eu-1") == [
        replace(one, channel="a"),
        replace(two, channel="b"),
    ]
    assert [(b.region, b.channel) for b in registry.current_bundles()] == [
        ("ap-3", "all"),
        ("eu-1", "a"),
        ("eu-1", "b"),
    ]
    assert registry.bundle_versions("eu-1") == [1, 2]
    assert registry.bundle_data(two.digest) == two.data
    assert registry.bundle_data(b"\x00" * 32) is None


def test_a_bundle_recorded_again_keeps_its_first_record_and_moves_channels_to_it(
    registry: Registry,
) -> None:
    first = _bundle(1, "a", at=NOW)
    registry.record_bundle(bundle=first, issued_at=NOW, target={}, channels=["a"])
    registry.record_bundle(bundle=_bundle(2, "a"), issued_at=NOW, target={}, channels=["a"])
    again = replace(first, data=b"other bytes", pushed_at=NOW + 50)
    registry.record_bundle(bundle=again, issued_at=NOW, target={}, channels=["a"])
    assert registry.current_bundles("eu-1") == [replace(first, pushed_at=NOW + 50)]
    assert registry.bundle_versions("eu-1") == [1, 2]


def test_revocation_epochs_are_allocated_once_and_the_newest_per_value_is_current(
    registry: Registry,
) -> None:
    assert registry.kill_epoch("eu-1") == 0
    for revocation in (_revocation(1, "3"), _revocation(2, "4"), _revocation(3, "3")):
        registry.record_revocation(revocation)
    registry.record_revocation(_revocation(1, "3", region="ap-3"))
    with pytest.raises(ConfigError, match="run revoke again"):
        registry.record_revocation(_revocation(2, "9"))
    assert registry.kill_epoch("eu-1") == 3
    assert registry.current_revocations() == [
        _revocation(1, "3", region="ap-3"),
        _revocation(2, "4"),
        _revocation(3, "3"),
    ]


def test_the_last_freshness_token_per_channel_is_kept_and_the_later_one_given_wins(
    registry: Registry,
) -> None:
    assert registry.freshness("eu-1", "all") is None
    registry.record_freshness([_freshness("all", NOW), _freshness("group/a", NOW)])
    registry.record_freshness([_freshness("all", NOW + 1), _freshness("all", NOW + 2)])
    assert registry.freshness("eu-1", "all") == _freshness("all", NOW + 2)
    assert registry.freshness("eu-1", "group/a") == _freshness("group/a", NOW)
    assert registry.freshness("ap-3", "all") is None


def test_a_directory_is_current_only_above_the_version_held_whichever_handle_records_it(
    registry: Registry, peer: Registry
) -> None:
    assert registry.directory("eu-1") is None
    first, second = _directory(1), _directory(2)
    assert registry.record_directory(first)
    assert not peer.record_directory(replace(first, data=b"other bytes"))
    assert peer.record_directory(second)
    assert not registry.record_directory(_directory(1, issued_at=NOW + 9))
    assert registry.directory("eu-1") == second == peer.directory("eu-1")
    assert registry.directory("ap-3") is None


# Device logs.


def test_a_device_that_never_shipped_has_an_empty_log(registry: Registry) -> None:
    assert registry.lineage_state("gw-001") == DeviceLog()
    assert registry.entries("gw-001", 0, 10) == []
    assert list(registry.iter_entries("gw-001")) == []
    assert registry.checkpoint_root("gw-001", 0) is None


def test_stored_batches_are_read_back_as_entries_state_and_checkpoints(
    registry: Registry, sim: DeviceLogSim
) -> None:
    _store(registry, sim, 0, 15)
    last = _store(registry, sim, 15, 40)
    assert registry.lineage_state("gw-001") == last.log
    assert registry.entries("gw-001", 10, 20) == sim.entries[10:20]
    assert list(registry.iter_entries("gw-001", 30)) == [
        StoredEntry(seq, sim.entries[seq]) for seq in range(30, 40)
    ]
    assert registry.checkpoint_root("gw-001", 15) == sim.root(15)
    assert registry.checkpoint_root("gw-001", 40) == sim.root(40)
    assert registry.checkpoint_root("gw-001", 20) is None
    stored = registry.stored_log("gw-001")
    assert list(stored.entries(0, 40)) == sim.entries
    assert stored.checkpoint_root(40) == sim.root(40)


def test_a_batch_is_stored_once_when_two_handles_verify_it_at_once(
    registry: Registry, peer: Registry, sim: DeviceLogSim
) -> None:
    mine, theirs = _accepted(registry, sim, 0, 10), _accepted(peer, sim, 0, 10)
    assert peer.store_batch(theirs, expected_size=0, received_at=NOW)
    assert not registry.store_batch(mine, expected_size=0, received_at=NOW)
    assert [e.seq for e in registry.iter_entries("gw-001")] == list(range(10))


def test_stored_checkpoints_are_read_back_one_or_largest_size_first(
    registry: Registry, sim: DeviceLogSim
) -> None:
    for start, stop in [(0, 15), (15, 22), (22, 40)]:
        _store(registry, sim, start, stop)
    held = registry.checkpoint("gw-001", 22)
    assert held == StoredCheckpoint(22, sim.root(22), sim.note(22), NOW)
    assert registry.checkpoint("gw-001", 21) is None
    assert registry.checkpoint("gw-002", 22) is None
    assert [c.size for c in registry.iter_checkpoints("gw-001")] == [40, 22, 15]
    assert [c.size for c in registry.iter_checkpoints("gw-001", min_size=16)] == [40, 22]
    assert list(registry.iter_checkpoints("gw-002")) == []


@pytest.mark.parametrize(
    "size", [1, 2, 255, 256, 257, 511, 512, 513, 1025], ids=lambda size: f"{size}-entries"
)
def test_proofs_from_the_node_store_equal_proofs_from_every_entry(
    registry: Registry, size: int
) -> None:
    log = store_log(registry, size)
    assert_same_proofs(registry.tree_nodes("gw-001"), reference_nodes(log.entries), size)


def test_a_node_the_registry_does_not_hold_is_an_error_not_a_hash(
    registry: Registry, sim: DeviceLogSim
) -> None:
    _store(registry, sim, 0, 40)
    nodes = registry.tree_nodes("gw-001")
    with pytest.raises(RegistryError, match="no Merkle node"):
        inclusion_proof(3, 41, nodes)
    with pytest.raises(RegistryError, match="no Merkle node"):
        root_at(512, nodes)
    with pytest.raises(RegistryError, match="no Merkle node"):
        registry.tree_nodes("gw-002")(0, 0)


def test_fork_evidence_is_kept_in_order_up_to_the_bound(registry: Registry) -> None:
    for n in range(MAX_FORK_EVIDENCE + 3):
        registry.record_fork(ForkEvidence("gw-001", "fork", None, f"note {n}", b"b"), NOW + n)
    forks = registry.forks("gw-001")
    assert [f.new_note for f in forks] == [f"note {n}" for n in range(MAX_FORK_EVIDENCE)]
    assert registry.forks("gw-002") == []


# Attestation.


CHALLENGE_ROWS = [
    # (name, device, nonce, now, refusal: None when spent)
    ("issued, unexpired", "gw-001", b"n1", NOW + 5, None),
    ("another device's nonce", "gw-002", b"n1", NOW + 5, "never issued to this device"),
    ("never issued", "gw-001", b"n9", NOW + 5, "never issued to this device"),
    ("at its expiry", "gw-001", b"n1", NOW + 60, "expired 0 s ago"),
    ("after its expiry", "gw-001", b"n1", NOW + 75, "expired 15 s ago"),
]


@pytest.mark.parametrize(
    ("name", "device", "nonce", "now", "refusal"),
    CHALLENGE_ROWS,
    ids=[r[0] for r in CHALLENGE_ROWS],
)
def test_a_challenge_nonce_is_spent_only_by_its_device_before_it_expires(
    registry: Registry, name: str, device: str, nonce: bytes, now: int, refusal: str | None
) -> None:
    registry.record_challenge(Challenge("gw-001", b"n1", NOW, NOW + 60))
    spent = registry.spend_challenge(device, nonce, now)
    if refusal is None:
        assert spent is None
    else:
        assert spent is not None and refusal in spent


def test_a_nonce_is_spent_once_across_handles(registry: Registry, peer: Registry) -> None:
    registry.record_challenge(Challenge("gw-001", b"n1", NOW, NOW + 60))
    assert peer.spend_challenge("gw-001", b"n1", NOW + 1) is None
    spent = registry.spend_challenge("gw-001", b"n1", NOW + 2)
    assert spent is not None and "already used" in spent


def test_a_nonce_issued_twice_to_one_device_is_refused(registry: Registry) -> None:
    registry.record_challenge(Challenge("gw-001", b"n1", NOW, NOW + 60))
    with pytest.raises(RegistryError):
        registry.record_challenge(Challenge("gw-001", b"n1", NOW + 1, NOW + 61))


def test_pruned_challenges_are_those_expired_before_the_cut(registry: Registry) -> None:
    registry.record_challenge(Challenge("gw-001", b"old", NOW, NOW + 10))
    registry.record_challenge(Challenge("gw-001", b"new", NOW, NOW + 20))
    registry.prune_challenges(NOW + 15)
    assert "never issued" in (registry.spend_challenge("gw-001", b"old", NOW) or "")
    assert registry.spend_challenge("gw-001", b"new", NOW) is None


def test_the_last_attestation_replaces_the_held_one_and_counts_as_heard_from(
    registry: Registry,
) -> None:
    registry.add_device(_device("gw-001"))
    assert registry.attestation("gw-001") is None
    registry.record_attestation(_attestation("gw-001", "fail", NOW + 10))
    registry.record_attestation(_attestation("gw-001", "pass", NOW + 20))
    registry.record_attestation(_attestation("gw-002", "pass", NOW + 30))
    assert registry.attestation("gw-001") == _attestation("gw-001", "pass", NOW + 20)
    assert registry.attestations() == {
        "gw-001": _attestation("gw-001", "pass", NOW + 20),
        "gw-002": _attestation("gw-002", "pass", NOW + 30),
    }
    assert [row.last_seen for row in registry.fleet()] == [NOW + 20]


def test_a_tpm_attestation_key_is_set_replaced_and_removed(registry: Registry) -> None:
    assert registry.tpm_ak("gw-001") is None
    registry.set_tpm_ak("gw-001", b"first", NOW)
    registry.set_tpm_ak("gw-001", b"second", NOW + 1)
    assert registry.tpm_ak("gw-001") == b"second"
    registry.set_tpm_ak("gw-001", None, NOW + 2)
    registry.set_tpm_ak("gw-001", None, NOW + 3)
    assert registry.tpm_ak("gw-001") is None


# Rejections.


def test_rejection_counts_add_up_keep_the_last_detail_cut_and_list_by_device_and_code(
    registry: Registry,
) -> None:
    registry.add_rejections([], NOW)
    registry.add_rejections(
        [
            RejectionCount("gw-001", "oversize", 2, "first"),
            RejectionCount(UNREGISTERED, "oversize", 5, "nobody"),
            RejectionCount("gw-001", "impersonation", 1, "key"),
        ],
        NOW,
    )
    registry.add_rejections([RejectionCount("gw-001", "oversize", 3, "x" * 900)], NOW + 1)
    assert registry.rejections() == [
        RejectionTotal(UNREGISTERED, "oversize", 5, NOW, "nobody"),
        RejectionTotal("gw-001", "impersonation", 1, NOW, "key"),
        RejectionTotal("gw-001", "oversize", 5, NOW + 1, "x" * MAX_REJECTION_DETAIL),
    ]
    assert [r.code for r in registry.rejections("gw-001")] == ["impersonation", "oversize"]


# Fleet view.


def test_the_fleet_has_a_row_per_device_with_what_the_hub_holds_of_it(
    registry: Registry, sim: DeviceLogSim
) -> None:
    registry.add_device(_device("gw-002", groups=("line-b",)))
    registry.add_device(_device("gw-001", groups=("line-a", "north")))
    registry.record_status(_status(NOW), b"status", NOW + 1)
    _store(registry, sim, 0, 12)
    registry.record_fork(ForkEvidence("gw-001", "fork", None, "note", b"b"), NOW)
    registry.add_rejections([RejectionCount("gw-001", "oversize", 2, "big")], NOW)
    one, two = registry.fleet()
    assert (one.device_id, one.groups, one.online, one.bundle_version, one.gate) == (
        "gw-001",
        ("line-a", "north"),
        True,
        3,
        "open",
    )
    assert (one.status_time, one.last_seen, one.device_lineage_size) == (NOW, NOW + 1, 0)
    assert (one.lineage_size, one.forks, one.rejections) == (12, 1, {"oversize": 2})
    assert (two.device_id, two.online, two.status_time, two.last_seen) == (
        "gw-002",
        None,
        None,
        None,
    )
    assert (two.lineage_size, two.forks, two.rejections) == (0, 0, {})


# Transactions.


def test_a_write_group_is_invisible_to_other_handles_until_it_ends(
    registry: Registry, peer: Registry, sim: DeviceLogSim
) -> None:
    with registry.write_group():
        _store(registry, sim, 0, 10)
        with registry.write_group():
            registry.add_device(_device("gw-001"))
        assert registry.lineage_state("gw-001").size == 10
        assert peer.lineage_state("gw-001").size == 0 and peer.devices() == []
    assert peer.lineage_state("gw-001").size == 10 and len(peer.devices()) == 1


def test_a_write_that_fails_in_a_group_undoes_only_itself(registry: Registry) -> None:
    first = _device("gw-1")
    with registry.write_group():
        registry.add_device(first)
        with pytest.raises(ConfigError):
            registry.add_device(first)
        registry.add_device(_device("gw-2"))
    assert [d.device_id for d in registry.devices()] == ["gw-1", "gw-2"]


def test_an_exception_out_of_a_write_group_stores_none_of_it(registry: Registry) -> None:
    with pytest.raises(RuntimeError), registry.write_group():
        registry.add_device(_device("gw-1"))
        raise RuntimeError("the connection dropped before the acks went out")
    assert registry.devices() == []


def test_everything_written_is_there_when_the_registry_is_opened_again(
    backend: Backend, sim: DeviceLogSim
) -> None:
    device = _device("gw-001")
    with backend.open() as registry:
        registry.add_device(device)
        last = _store(registry, sim, 0, 20)
        registry.record_freshness([_freshness("all", NOW)])
        registry.set_tpm_ak("gw-001", b"ak", NOW)
    with backend.open() as registry:
        assert registry.devices() == [device]
        assert registry.lineage_state("gw-001") == last.log
        assert registry.checkpoint("gw-001", 20) == StoredCheckpoint(
            20, sim.root(20), sim.note(20), NOW
        )
        assert inclusion_proof(7, 20, registry.tree_nodes("gw-001")) == inclusion_proof(
            7, 20, reference_nodes(sim.entries)
        )
        assert registry.freshness("eu-1", "all") == _freshness("all", NOW)
        assert registry.tpm_ak("gw-001") == b"ak"


def test_tree_nodes_are_there_when_a_long_log_is_opened_again(backend: Backend) -> None:
    with backend.open() as registry:
        log = store_log(registry, 700, batch=300)
    with backend.open() as registry:
        assert_same_proofs(registry.tree_nodes("gw-001"), reference_nodes(log.entries), 700)


def _directory(version: int, *, issued_at: int = NOW) -> IssuedDirectory:
    return IssuedDirectory("eu-1", version, bytes([version]) * 32, b"signed", issued_at, NOW + 60)

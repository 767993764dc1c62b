"""The registry contract: what every backend of :class:`hub.registry.interface.Registry`
does, as its docstrings state it.

Written against the protocol only and parametrised over backends by the ``backend``
fixture: a new backend (PostgreSQL) joins by adding one param there. What only one
backend does (its files, its schema versions) lives in that backend's own tests.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest

from edge_agent.errors import ConfigError
from edge_agent.protocol.attestation import Challenge
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.merkle import (
    inclusion_proof,
    root_at,
)
from edge_agent.protocol.shipping import DeviceStatus
from hub.console.health import device_state, target_version
from hub.registry import (
    FLEET_EXAMPLES,
    MAX_AUDIT_PAGE,
    MAX_AUDIT_TEXT,
    MAX_FORK_EVIDENCE,
    MAX_REJECTION_DETAIL,
    MAX_STATUS_SPANS,
    STATUS_SPAN_JOIN_S,
    UNREGISTERED,
    AttestationRecord,
    AuditEntry,
    ConsoleToken,
    DeviceRecord,
    FleetCount,
    FleetSummary,
    IssuedDirectory,
    IssuedFreshness,
    IssuedRevocation,
    PublishedBundle,
    Registry,
    RegistryError,
    RejectionCount,
    RejectionTotal,
    RolloutCount,
    StatusSpan,
    StoredCheckpoint,
    StoredEntry,
)
from hub.registry.lease_sql import LEASE_SKEW_LIMIT_S
from hub.registry.lineage_records import LineageHit, LineageQuery
from hub.registry.postgres import PostgresRegistry
from hub.registry.postgres.schema import FLEET_ROW as POSTGRES_FLEET_ROW
from hub.registry.records import (
    Accepted,
    DeviceLog,
    ForkEvidence,
    ScheduleLeaseClaim,
    ScheduleLeaseHolder,
)
from hub.registry.rollout_records import LineageTally, RolloutRecord, RolloutState, StageLog
from hub.registry.sqlite import SqliteRegistry
from hub.registry.sqlite.console_fleet import _FLEET_ROW as SQLITE_FLEET_ROW
from tests.factory import NOW
from tests.lineage_search_support import add_varied, expected_hit, ship
from tests.lineage_sim import (
    DeviceLogSim,
    accepted_batch,
    assert_same_proofs,
    reference_nodes,
    store_log,
)


@dataclass(frozen=True)
class Backend:
    """A registry backend under test: ``open`` returns a new handle on one shared store (as
    two hub processes, or a hub and an ``edge-hub`` command, each hold one)."""

    name: str
    open: Callable[[], Registry]
    drop_table: Callable[[str], None]
    """Drop a table behind the registry's back (a registry from before that table)."""


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "hub.db"

        def drop_sqlite(table: str) -> None:
            with closing(sqlite3.connect(path)) as db, db:
                db.execute(f"DROP TABLE {table}")

        return Backend("sqlite", lambda: SqliteRegistry.open(path), drop_sqlite)
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")

        def drop_postgres(table: str) -> None:
            with psycopg.connect(url, autocommit=True) as db:
                db.execute(f"DROP TABLE {table}")

        return Backend("postgres", lambda: PostgresRegistry.open(url), drop_postgres)
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


def _store(registry: Registry, sim: DeviceLogSim, start: int, stop: int) -> Accepted:
    accepted = accepted_batch(registry, sim, start, stop)
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


def test_a_removed_device_loses_its_live_state_and_keeps_its_log_and_evidence(
    registry: Registry, sim: DeviceLogSim
) -> None:
    gone, kept = _device("gw-001"), _device("gw-002")
    registry.add_device(gone)
    registry.add_device(kept)
    registry.record_status(_status(NOW), b"status", NOW)
    registry.record_attestation(_attestation("gw-001", "pass", NOW + 1))
    registry.record_challenge(Challenge("gw-001", b"n1", NOW, NOW + 60))
    registry.set_tpm_ak("gw-001", b"ak", NOW)
    registry.record_fork(ForkEvidence("gw-001", "fork", None, "note", b"b"), NOW)
    registry.add_rejections([RejectionCount("gw-001", "bad_signature", 2, "x")], NOW)
    stored = _store(registry, sim, 0, 10)
    assert registry.remove_device("gw-001") == gone
    assert registry.device("gw-001") is None
    assert registry.devices() == [kept]
    assert [row.device_id for row in registry.fleet()] == ["gw-002"]
    assert registry.attestation("gw-001") is None
    assert registry.tpm_ak("gw-001") is None
    assert registry.status_history("gw-001") == []
    assert "never issued" in (registry.spend_challenge("gw-001", b"n1", NOW) or "")
    assert registry.fleet_summary(NOW, 90).states == {"never_seen": FleetCount(1, None, None)}
    assert registry.lineage_state("gw-001") == stored.log
    assert registry.entries("gw-001", 0, 10) == sim.entries[:10]
    assert [f.new_note for f in registry.forks("gw-001")] == ["note"]
    assert [r.count for r in registry.rejections("gw-001")] == [2]
    assert registry.remove_device("gw-001") is None
    registry.add_device(gone)
    assert registry.lineage_state("gw-001") == stored.log


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


def test_every_directory_version_recorded_is_kept_as_issued_and_a_refused_one_is_not(
    registry: Registry, peer: Registry
) -> None:
    first, second = _directory(1), _directory(2)
    assert registry.record_directory(first)
    assert not peer.record_directory(replace(first, data=b"other bytes"))
    assert peer.record_directory(second)
    assert registry.directory_version("eu-1", 1) == first.data
    assert peer.directory_version("eu-1", 2) == second.data
    assert registry.directory_version("eu-1", 3) is None
    assert registry.directory_version("ap-3", 1) is None


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
    mine, theirs = accepted_batch(registry, sim, 0, 10), accepted_batch(peer, sim, 0, 10)
    assert peer.store_batch(theirs, expected_size=0, received_at=NOW)
    assert not registry.store_batch(mine, expected_size=0, received_at=NOW)
    assert [e.seq for e in registry.iter_entries("gw-001")] == list(range(10))


def test_a_batch_whose_claim_fails_leaves_none_of_its_rows(registry: Registry) -> None:
    later_sim, first_sim = DeviceLogSim("gw-001"), DeviceLogSim("gw-002")
    later_sim.add(80)
    first_sim.add(80)
    _store(registry, later_sim, 0, 10)
    later = accepted_batch(registry, later_sim, 10, 80)
    first = accepted_batch(registry, first_sim, 0, 80)
    _store(registry, first_sim, 0, 10)
    # A size other than the stored one: a next batch's claim and a first batch's both fail.
    assert not registry.store_batch(later, expected_size=5, received_at=NOW)
    assert not registry.store_batch(first, expected_size=0, received_at=NOW)
    for device in ("gw-001", "gw-002"):
        assert registry.lineage_state(device).size == 10
        assert [e.seq for e in registry.iter_entries(device)] == list(range(10))
        assert registry.checkpoint(device, 80) is None
        assert registry.lineage_hit(device, 10) is None


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
    "size",
    [1, 2, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1025],
    ids=lambda size: f"{size}-entries",
)
def test_proofs_from_the_node_store_equal_proofs_from_every_entry(
    registry: Registry, size: int
) -> None:
    log = store_log(registry, size)
    assert_same_proofs(registry.tree_nodes("gw-001"), reference_nodes(log.entries), size)


def test_many_checkpoints_stream_largest_first_across_pages(registry: Registry) -> None:
    store_log(registry, 30, batch=1)
    assert [c.size for c in registry.iter_checkpoints("gw-001")] == list(range(30, 0, -1))
    assert [c.size for c in registry.iter_checkpoints("gw-001", min_size=9)] == list(
        range(30, 8, -1)
    )


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


# Operator audit log.


def test_an_action_is_pending_until_it_ends_then_keeps_its_outcome(registry: Registry) -> None:
    action = registry.begin_action(
        at=NOW, operator="alice", action="revoke", target="device gw-001", reason="stolen"
    )
    assert registry.audit_log() == [
        AuditEntry(action, NOW, "alice", "revoke", "device gw-001", "stolen", "pending", "", None)
    ]
    registry.finish_action(action, outcome="done", detail="epoch 3 published", at=NOW + 1)
    finished = AuditEntry(
        action,
        NOW,
        "alice",
        "revoke",
        "device gw-001",
        "stolen",
        "done",
        "epoch 3 published",
        NOW + 1,
    )
    assert registry.audit_log() == [finished]
    with pytest.raises(RegistryError, match="no pending operator action"):
        registry.finish_action(action, outcome="failed", detail="again", at=NOW + 2)
    with pytest.raises(RegistryError, match="no pending operator action"):
        registry.finish_action(action + 1, outcome="done", detail="", at=NOW + 2)
    with pytest.raises(ValueError, match="not 'pending'"):
        registry.finish_action(action, outcome="pending", detail="", at=NOW + 2)
    assert registry.audit_log() == [finished]


def test_the_audit_log_is_paged_newest_first_by_id_across_handles(
    registry: Registry, peer: Registry
) -> None:
    ids = [
        (registry if n % 2 else peer).begin_action(
            at=NOW + n, operator="op", action="challenge", target=f"gw-{n:03}", reason=""
        )
        for n in range(7)
    ]
    assert ids == sorted(ids) and len(set(ids)) == 7
    first = registry.audit_log(limit=3)
    assert [e.target for e in first] == ["gw-006", "gw-005", "gw-004"]
    second = registry.audit_log(before=first[-1].id, limit=3)
    assert [e.target for e in second] == ["gw-003", "gw-002", "gw-001"]
    assert [e.target for e in registry.audit_log(before=second[-1].id, limit=3)] == ["gw-000"]
    assert registry.audit_log(before=ids[0]) == []
    assert registry.audit_log(before=2**64, limit=1) == registry.audit_log(limit=1)
    for limit in (0, MAX_AUDIT_PAGE + 1):
        with pytest.raises(ValueError, match="audit page"):
            registry.audit_log(limit=limit)


def test_audit_texts_are_cut_to_the_bound(registry: Registry) -> None:
    long = "x" * (MAX_AUDIT_TEXT + 5)
    action = registry.begin_action(at=NOW, operator=long, action=long, target=long, reason=long)
    registry.finish_action(action, outcome="failed", detail=long, at=NOW)
    (entry,) = registry.audit_log()
    assert {len(entry.operator), len(entry.action), len(entry.target), len(entry.reason)} == {
        MAX_AUDIT_TEXT
    }
    assert len(entry.detail) == MAX_AUDIT_TEXT


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
        action = registry.begin_action(
            at=NOW, operator="alice", action="register", target="gw-001", reason=""
        )
    with backend.open() as registry:
        assert [e.id for e in registry.audit_log()] == [action]
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


# Lineage search.


def _search_fleet(registry: Registry) -> dict[str, DeviceLogSim]:
    """gw-001 (group line-a, 40 entries from NOW) and gw-002 (line-b, 40 from NOW + 5),
    shipped in two batches each."""
    sims = {}
    for device_id, group, start_time in (("gw-001", "line-a", NOW), ("gw-002", "line-b", NOW + 5)):
        sim = DeviceLogSim(device_id)
        registry.add_device(
            DeviceRecord(device_id, "eu-1", (group,), "generic", sim.key.public, 1, NOW)
        )
        add_varied(sim, 40, start_time=start_time)
        ship(registry, sim, 0, 25)
        ship(registry, sim, 25, 40)
        sims[device_id] = sim
    return sims


def _all_hits() -> list[LineageHit]:
    hits = [expected_hit("gw-001", seq) for seq in range(40)]
    hits += [expected_hit("gw-002", seq, NOW + 5) for seq in range(40)]
    return sorted(hits, key=lambda h: (h.time, h.device, h.seq), reverse=True)


@pytest.mark.parametrize(
    ("name", "query", "keep"),
    [
        ("nothing", LineageQuery(), lambda h: True),
        ("device", LineageQuery(device="gw-002"), lambda h: h.device == "gw-002"),
        ("group", LineageQuery(group="line-a"), lambda h: h.device == "gw-001"),
        ("since", LineageQuery(since=NOW + 200), lambda h: h.time >= NOW + 200),
        ("until", LineageQuery(until=NOW + 105), lambda h: h.time < NOW + 105),
        ("deny", LineageQuery(allowed=False), lambda h: not h.allowed),
        ("kind", LineageQuery(kind="decision"), lambda h: True),
        ("reason", LineageQuery(reason="policy_denied"), lambda h: h.reason == "policy_denied"),
        ("rule", LineageQuery(rule="rule-2"), lambda h: h.rule == "rule-2"),
        ("subject", LineageQuery(subject="user:ops"), lambda h: h.subject == "user:ops"),
        ("action", LineageQuery(action="read"), lambda h: h.action == "read"),
        (
            "resource prefix",
            LineageQuery(resource_prefix="/opt/camera/"),
            lambda h: (h.resource or "").startswith("/opt/camera/"),
        ),
        ("glob characters are literal", LineageQuery(resource_prefix="/opt/*"), lambda h: False),
        ("version", LineageQuery(bundle_version=7), lambda h: h.bundle_version == 7),
        (
            "three filters",
            LineageQuery(group="line-b", allowed=True, action="exec"),
            lambda h: h.device == "gw-002" and h.allowed and h.action == "exec",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_lineage_search_returns_exactly_the_matching_entries_newest_first(
    registry: Registry, name: str, query: LineageQuery, keep: Callable[[LineageHit], bool]
) -> None:
    _search_fleet(registry)
    assert list(registry.iter_lineage(query)) == [h for h in _all_hits() if keep(h)]


def test_lineage_pages_follow_the_cursor_without_gaps_or_repeats_while_entries_arrive(
    registry: Registry,
) -> None:
    sims = _search_fleet(registry)
    seen: list[LineageHit] = []
    page = registry.search_lineage(LineageQuery(), limit=7)
    seen.extend(page.hits)
    add_varied(sims["gw-001"], 20, start_time=NOW - 300)
    ship(registry, sims["gw-001"], 40, 60)
    while page.next is not None:
        page = registry.search_lineage(LineageQuery(), after=page.next, limit=7)
        seen.extend(page.hits)
    before = _all_hits()
    arrived = [expected_hit("gw-001", seq, NOW - 300) for seq in range(40, 60)]
    assert len(seen) == len(set(seen)) == len(before) + len(arrived)
    assert [h for h in seen if h in before] == before
    assert seen == sorted(seen, key=lambda h: (h.time, h.device, h.seq), reverse=True)


def test_a_lineage_hit_is_found_by_device_and_seq(registry: Registry) -> None:
    _search_fleet(registry)
    assert registry.lineage_hit("gw-002", 17) == expected_hit("gw-002", 17, NOW + 5)
    assert registry.lineage_hit("gw-002", 40) is None
    with pytest.raises(ValueError, match="1 to 500"):
        registry.search_lineage(LineageQuery(), limit=0)


def test_lineage_search_rows_are_rebuilt_for_a_registry_from_before_them(
    backend: Backend,
) -> None:
    with backend.open() as registry:
        _search_fleet(registry)
    backend.drop_table("lineage_search")
    with backend.open() as registry:
        assert list(registry.iter_lineage(LineageQuery())) == _all_hits()


def test_a_batch_stored_without_its_decoded_entries_is_searchable_the_same(
    registry: Registry,
) -> None:
    sim = DeviceLogSim("gw-001")
    registry.add_device(DeviceRecord("gw-001", "eu-1", (), "generic", sim.key.public, 1, NOW))
    add_varied(sim, 12)
    accepted = accepted_batch(registry, sim, 0, 12)
    assert registry.store_batch(replace(accepted, decoded=()), expected_size=0, received_at=NOW)
    assert list(registry.iter_lineage(LineageQuery())) == [
        expected_hit("gw-001", seq) for seq in reversed(range(12))
    ]


@pytest.mark.parametrize("silent", [0, 150], ids=["large group", "small group"])
def test_a_group_search_finds_its_devices_entries_whatever_the_groups_share(
    registry: Registry, silent: int
) -> None:
    _search_fleet(registry)
    with registry.write_group():
        for i in range(silent):
            registry.add_device(_device(f"quiet-{i:03d}", groups=("line-c",)))
    query = LineageQuery(group="line-b", allowed=False)
    expected = [h for h in _all_hits() if h.device == "gw-002" and not h.allowed]
    assert list(registry.iter_lineage(query)) == expected
    page = registry.search_lineage(query, limit=4)
    assert page.hits == tuple(expected[:4])
    assert registry.search_lineage(query, after=page.next, limit=4).hits == tuple(expected[4:8])


# The console (cbase, issue 18): login tokens, status history, the dashboard's fleet rows.


def test_console_tokens_are_stored_by_name_once_and_revoked_by_name(
    registry: Registry, peer: Registry
) -> None:
    alice = ConsoleToken("alice", "operator", b"a" * 32, NOW)
    registry.add_console_token(ConsoleToken("bob", "viewer", b"b" * 32, NOW))
    registry.add_console_token(alice)
    with pytest.raises(ConfigError, match="named 'alice' exists already"):
        registry.add_console_token(ConsoleToken("alice", "viewer", b"c" * 32, NOW))
    assert [t.name for t in peer.console_tokens()] == ["alice", "bob"]
    assert peer.console_tokens()[0] == alice
    assert registry.revoke_console_token("alice")
    assert not registry.revoke_console_token("alice")
    assert [t.name for t in peer.console_tokens()] == ["bob"]


def test_status_history_extends_a_span_while_heard_from_in_time_and_starts_one_otherwise(
    registry: Registry,
) -> None:
    registry.add_device(_device("gw-001"))
    for at in (NOW, NOW + 30, NOW + 60):
        registry.record_status(_status(at), b"s%d" % at, at)
    registry.record_status(_status(NOW + 90, gate="revoked"), b"r", NOW + 90)
    late = NOW + 90 + STATUS_SPAN_JOIN_S + 1
    registry.record_status(_status(late, gate="revoked"), b"late", late)
    registry.record_status(_status(late, gate="revoked"), b"late", late)
    assert registry.status_history("gw-001") == [
        StatusSpan(NOW, NOW + 60, True, "open", 3),
        StatusSpan(NOW + 90, NOW + 90, True, "revoked", 3),
        StatusSpan(late, late, True, "revoked", 3),
    ]
    assert (
        registry.status_history("gw-001", since=NOW + 61) == registry.status_history("gw-001")[1:]
    )
    assert registry.status_history("gw-404") == []


def test_a_newer_status_heard_from_before_the_last_span_began_starts_no_span_nor_moves_last_seen(
    registry: Registry,
) -> None:
    registry.add_device(_device("gw-001"))
    registry.record_status(_status(NOW), b"first", NOW + 100)
    assert registry.record_status(_status(NOW + 10, gate="revoked"), b"newer", NOW + 50)
    assert registry.status_history("gw-001") == [StatusSpan(NOW + 100, NOW + 100, True, "open", 3)]
    (row,) = registry.fleet()
    assert (row.status_time, row.gate, row.last_seen) == (NOW + 10, "revoked", NOW + 100)


def test_status_history_extends_a_span_of_a_device_running_no_bundle(registry: Registry) -> None:
    registry.add_device(_device("gw-001"))
    for at in (NOW, NOW + 30):
        sent = DeviceStatus("gw-001", at, True, None, None, "open", 0, 0)
        registry.record_status(sent, b"s%d" % at, at)
    assert registry.status_history("gw-001") == [StatusSpan(NOW, NOW + 30, True, "open", None)]


def test_status_history_keeps_the_newest_spans_only(registry: Registry) -> None:
    registry.add_device(_device("gw-001"))
    for n in range(MAX_STATUS_SPANS + 5):
        at = NOW + n * 10
        registry.record_status(_status(at, gate="open" if n % 2 else "revoked"), b"s%d" % n, at)
    spans = registry.status_history("gw-001")
    assert len(spans) == MAX_STATUS_SPANS
    assert spans[-1].since == NOW + (MAX_STATUS_SPANS + 4) * 10


def test_console_fleet_rows_join_status_activity_log_forks_and_attestation(
    registry: Registry,
) -> None:
    registry.add_device(_device("gw-002", groups=("line-a",)))
    registry.add_device(_device("gw-001"))
    registry.record_status(_status(NOW), b"s", NOW + 2)
    registry.record_attestation(_attestation("gw-001", "pass", NOW + 5))
    rows = registry.console_devices(now=NOW, stale_after_s=90, limit=10)
    assert [r.device_id for r in rows] == ["gw-001", "gw-002"]
    first, second = rows
    assert (first.online, first.gate, first.bundle_version) == (True, "open", 3)
    assert (first.status_time, first.lineage_size, first.forks) == (NOW, 0, 0)
    assert first.last_seen == NOW + 5, "a nonce-bound attestation counts as heard from"
    assert (first.attestation_verdict, first.attested_at) == ("pass", NOW + 5)
    assert second.groups == ("line-a",)
    assert (second.gate, second.last_seen, second.attestation_verdict) == (None, None, None)
    assert registry.console_device("gw-002") == second
    assert registry.console_device("gw-404") is None


def test_statuses_and_last_seen_set_in_place_keep_the_dashboard_rows_a_rewrite_makes(
    registry: Registry,
) -> None:
    for device in ("gw-001", "gw-002"):
        registry.add_device(_device(device))
    for at, online, version, gate in (
        (NOW, True, 3, "open"),
        (NOW + 30, True, 4, "open"),
        (NOW + 31, False, 4, "revoked"),
        (NOW + 20, True, 2, "open"),
    ):
        sent = DeviceStatus("gw-001", at, online, version, NOW + 3600, gate, at - NOW, 0)
        registry.record_status(sent, b"s%d" % at, at + 1)
    registry.record_status(DeviceStatus("gw-002", NOW, True, 3, None, "open", 0, 0), b"s", NOW)
    assert isinstance(registry, PostgresRegistry | SqliteRegistry)
    row_sql = POSTGRES_FLEET_ROW if isinstance(registry, PostgresRegistry) else SQLITE_FLEET_ROW
    held = registry._rows("SELECT * FROM console_fleet ORDER BY device")
    assert held == registry._rows(f"{row_sql} ORDER BY d.id")
    assert held[0][4:10] == (NOW + 32, "revoked", 0, 4, NOW + 31, 31), "the newest status held"
    states = registry.fleet_summary(NOW + 40, 90).states
    assert (states["offline"].count, states["open"].count) == (1, 1)


def test_the_fleet_summary_counts_states_rollout_attestation_lineage_forks_and_rejections(
    registry: Registry,
) -> None:
    stale_after = 90
    for device_id, groups in (
        ("gw-001", ("line-a",)),
        ("gw-002", ("line-a",)),
        ("gw-003", ("line-a",)),
        ("gw-004", ("line-b",)),
        ("gw-005", ("line-a", "line-b")),
    ):
        registry.add_device(_device(device_id, groups=groups))
    registry.record_bundle(bundle=_bundle(3), issued_at=NOW, target={}, channels=["all/_"])
    registry.record_bundle(
        bundle=_bundle(5, channel="device/gw-005"),
        issued_at=NOW,
        target={},
        channels=["device/gw-005"],
    )
    now = NOW + 1000

    def status(
        device: str,
        at: int,
        *,
        online: bool = True,
        gate: str = "open",
        version: int = 3,
        size: int = 0,
    ) -> None:
        sent = DeviceStatus(device, at, online, version, NOW + 3600, gate, size, 0)
        registry.record_status(sent, b"s" + device.encode(), at)

    status("gw-001", now - 10, size=10)
    status("gw-002", now - 500, gate="revoked")
    status("gw-004", now - 20, online=False)
    status("gw-005", now - 30, version=2)
    registry.record_attestation(_attestation("gw-001", "pass", now - 10))
    registry.record_attestation(
        replace(_attestation("gw-002", "fail", now - 500), expires_at=now - 400)
    )
    registry.record_fork(ForkEvidence("gw-004", "fork", None, "note", b"b"), now)
    registry.add_rejections(
        [
            RejectionCount("gw-002", "bad_signature", 3, "x"),
            RejectionCount("gw-003", "bad_signature", 2, "y"),
        ],
        now - 60,
    )
    summary = registry.fleet_summary(now, stale_after)
    assert summary.states == {
        "open": FleetCount(2, now - 30, now - 10),
        "stale": FleetCount(1, now - 500, now - 500),
        "never_seen": FleetCount(1, None, None),
        "offline": FleetCount(1, now - 20, now - 20),
    }
    assert summary.state_examples == {
        "open": ("gw-001", "gw-005"),
        "stale": ("gw-002",),
        "never_seen": ("gw-003",),
        "offline": ("gw-004",),
    }
    assert set(summary.rollout) == {
        RolloutCount("eu-1", "line-a", 3, 3, True, FleetCount(1, now - 10, now - 10)),
        RolloutCount("eu-1", "line-a", 3, None, False, FleetCount(2, now - 500, now - 500)),
        RolloutCount("eu-1", "line-a", 5, 2, True, FleetCount(1, now - 30, now - 30)),
        RolloutCount("eu-1", "line-b", 3, 3, True, FleetCount(1, now - 20, now - 20)),
        RolloutCount("eu-1", "line-b", 5, 2, True, FleetCount(1, now - 30, now - 30)),
    }
    assert summary.attestation == {
        "pass": FleetCount(1, now - 10, now - 10),
        "fail (expired)": FleetCount(1, now - 500, now - 500),
        "never attested": FleetCount(3, None, None),
    }
    assert summary.lineage_current == FleetCount(3, now - 500, now - 20)
    assert summary.lineage_lagging == FleetCount(1, now - 10, now - 10)
    assert (summary.lineage_waiting, summary.lineage_max_lag) == (10, ("gw-001", 10))
    assert summary.forks == FleetCount(1, None, None)
    assert summary.rejections == {"bad_signature": FleetCount(5, now - 60, now - 60)}


def test_the_fleet_summary_of_an_empty_registry_counts_nothing(registry: Registry) -> None:
    summary = registry.fleet_summary(NOW, 90)
    assert (summary.states, summary.rollout, summary.attestation) == ({}, (), {})
    assert (summary.lineage_waiting, summary.lineage_max_lag) == (0, None)
    assert summary.forks == FleetCount() and summary.rejections == {}
    assert summary.state_examples == {}


def test_the_fleet_summary_names_the_first_devices_of_each_state_by_id(
    registry: Registry,
) -> None:
    for n in range(FLEET_EXAMPLES + 3, 0, -1):
        registry.add_device(_device(f"gw-{n:03d}"))
    summary = registry.fleet_summary(NOW, 90)
    expected = tuple(f"gw-{n:03d}" for n in range(1, FLEET_EXAMPLES + 1))
    assert summary.state_examples == {"never_seen": expected}


def _summary_from_device_rows(registry: Registry, now: int, stale_after: int) -> FleetSummary:
    """The fleet summary computed the slow way, by the rules of
    :meth:`Registry.fleet_summary`, from each device's console row
    (:meth:`Registry.console_devices`) and the current bundles."""
    rows = registry.console_devices(now=now, stale_after_s=stale_after, limit=10_000)
    current = {(b.region, b.channel): b for b in registry.current_bundles()}
    states: dict[str, FleetCount] = {}
    attestation: dict[str, FleetCount] = {}
    rollout: dict[tuple[str, str, int | None, int | None, bool], FleetCount] = {}
    lineage: dict[bool, FleetCount] = {False: FleetCount(), True: FleetCount()}
    examples: dict[str, list[str]] = {}
    waiting, forks, lags = 0, 0, []

    def counted(held: FleetCount | None, at: int | None) -> FleetCount:
        held = held or FleetCount()
        times = [t for t in (held.oldest, held.newest, at) if t is not None]
        return FleetCount(held.count + 1, min(times, default=None), max(times, default=None))

    for row in rows:
        state = device_state(row, now, stale_after)
        states[state] = counted(states.get(state), row.last_seen)
        if len(examples.setdefault(state, [])) < FLEET_EXAMPLES:
            examples[state].append(row.device_id)
        verdict = row.attestation_verdict or "never attested"
        if row.attestation_verdict and (row.attestation_expires_at or 0) <= now:
            verdict += " (expired)"
        attestation[verdict] = counted(attestation.get(verdict), row.attested_at)
        known = state not in ("stale", "never_seen")
        target = target_version(row, current)
        for group in row.groups:
            key = (row.region, group, target, row.bundle_version if known else None, known)
            rollout[key] = counted(rollout.get(key), row.last_seen)
        if row.device_lineage_size is not None:
            lag = row.device_lineage_size - row.lineage_size
            lineage[lag > 0] = counted(lineage[lag > 0], row.status_time)
            if lag > 0:
                waiting += lag
                lags.append((-lag, row.device_id))
        forks += row.forks > 0
    return FleetSummary(
        states=states,
        rollout=tuple(RolloutCount(*key, count) for key, count in rollout.items()),
        attestation=attestation,
        lineage_current=lineage[False],
        lineage_lagging=lineage[True],
        lineage_waiting=waiting,
        lineage_max_lag=None if not lags else (min(lags)[1], -min(lags)[0]),
        forks=FleetCount(forks),
        rejections={},
        state_examples={state: tuple(ids) for state, ids in examples.items()},
    )


def _assert_same_summary(summary: FleetSummary, expected: FleetSummary, step: str) -> None:
    assert summary.states == expected.states, step
    assert summary.state_examples == expected.state_examples, step
    assert set(summary.rollout) == set(expected.rollout), step
    assert summary.attestation == expected.attestation, step
    assert (summary.lineage_current, summary.lineage_lagging) == (
        expected.lineage_current,
        expected.lineage_lagging,
    ), step
    assert (summary.lineage_waiting, summary.lineage_max_lag) == (
        expected.lineage_waiting,
        expected.lineage_max_lag,
    ), step
    assert summary.forks == expected.forks, step


def test_the_fleet_summary_follows_every_write_it_counts_as_the_device_rows_do(
    registry: Registry,
) -> None:
    now, stale_after = NOW + 1000, 90
    logs = {device: DeviceLogSim(device) for device in ("gw-001", "gw-002")}
    for log in logs.values():
        log.add(6)

    def status(device: str, at: int, *, online: bool = True, size: int = 0) -> None:
        sent = DeviceStatus(device, at, online, 3, NOW + 3600, "open", size, 0)
        registry.record_status(sent, b"s%d" % at + device.encode(), at)

    steps: list[tuple[str, Callable[[], object]]] = [
        ("a device", lambda: registry.add_device(_device("gw-001", groups=("line-a",)))),
        (
            "a device in two groups",
            lambda: registry.add_device(_device("gw-002", groups=("line-a", "line-b"))),
        ),
        (
            "a device of another region",
            lambda: registry.add_device(_device("gw-003", region="us-2", groups=("line-b",))),
        ),
        ("a fresh status, entries waiting", lambda: status("gw-001", now - 10, size=6)),
        ("a stale status", lambda: status("gw-002", now - 500, size=6)),
        (
            "a bundle for all",
            lambda: registry.record_bundle(
                bundle=_bundle(3), issued_at=NOW, target={}, channels=["all/_"]
            ),
        ),
        (
            "a bundle on a device's own channel",
            lambda: registry.record_bundle(
                bundle=_bundle(6, channel="device/gw-002"),
                issued_at=NOW,
                target={},
                channels=["device/gw-002"],
            ),
        ),
        (
            "a bundle for a group",
            lambda: registry.record_bundle(
                bundle=_bundle(4, channel="group/line-b", region="us-2"),
                issued_at=NOW,
                target={},
                channels=["group/line-b"],
            ),
        ),
        (
            "a newer bundle on the same channel",
            lambda: registry.record_bundle(
                bundle=_bundle(7), issued_at=NOW, target={}, channels=["all/_"]
            ),
        ),
        (
            "an attestation",
            lambda: registry.record_attestation(_attestation("gw-001", "pass", now - 10)),
        ),
        (
            "an expired attestation",
            lambda: registry.record_attestation(
                replace(_attestation("gw-003", "fail", now - 700), expires_at=now - 600)
            ),
        ),
        ("entries stored", lambda: ship(registry, logs["gw-001"], 0, 4)),
        ("all its entries stored", lambda: ship(registry, logs["gw-001"], 4, 6)),
        ("another device's entries stored", lambda: ship(registry, logs["gw-002"], 0, 2)),
        (
            "fork evidence",
            lambda: registry.record_fork(ForkEvidence("gw-003", "fork", None, "note", b"b"), now),
        ),
        ("a fresh status going offline", lambda: status("gw-002", now - 5, online=False, size=6)),
        ("a fresh status back online", lambda: status("gw-003", now - 1, size=1)),
    ]
    for step, write in steps:
        write()
        for at, window in ((now, stale_after), (now + 400, stale_after), (now, 10_000)):
            _assert_same_summary(
                registry.fleet_summary(at, window),
                _summary_from_device_rows(registry, at, window),
                f"after {step}, at now+{at - now} with a window of {window} s",
            )


def test_a_rolled_back_write_group_leaves_the_fleet_summary_as_it_was(
    registry: Registry,
) -> None:
    registry.add_device(_device("gw-001"))
    registry.record_status(_status(NOW), b"s", NOW)
    before = registry.fleet_summary(NOW, 90)
    with pytest.raises(RuntimeError), registry.write_group():
        registry.add_device(_device("gw-002"))
        registry.record_status(_status(NOW + 5, gate="revoked"), b"s2", NOW + 5)
        registry.record_attestation(_attestation("gw-001", "fail", NOW + 5))
        raise RuntimeError("undo the group")
    assert registry.fleet_summary(NOW, 90) == before


def test_console_devices_pages_by_id_and_filters_by_state_and_region(registry: Registry) -> None:
    for n in range(1, 8):
        registry.add_device(_device(f"gw-{n:03d}", region="us-2" if n == 7 else "eu-1"))
    for n in (1, 2, 3):
        registry.record_status(_status(NOW, device=f"gw-{n:03d}"), b"s%d" % n, NOW)
    registry.record_status(_status(NOW - 500, device="gw-004"), b"old", NOW - 500)

    def ids(**given: object) -> list[str]:
        rows = registry.console_devices(now=NOW + 10, stale_after_s=90, **given)  # type: ignore[arg-type]
        return [r.device_id for r in rows]

    assert ids(limit=3) == ["gw-001", "gw-002", "gw-003"]
    assert ids(limit=3, after="gw-003") == ["gw-004", "gw-005", "gw-006"]
    assert ids(limit=10, state="open") == ["gw-001", "gw-002", "gw-003"]
    assert ids(limit=10, state="open", after="gw-001") == ["gw-002", "gw-003"]
    assert ids(limit=10, state="stale") == ["gw-004"]
    assert ids(limit=10, state="never_seen") == ["gw-005", "gw-006", "gw-007"]
    assert ids(limit=10, region="us-2") == ["gw-007"]
    assert ids(limit=10, region="us-2", state="open") == []


def _directory(version: int, *, issued_at: int = NOW) -> IssuedDirectory:
    return IssuedDirectory("eu-1", version, bytes([version]) * 32, b"signed", issued_at, NOW + 60)


def _rollout(rollout_id: str = "eu-1-v8", region: str = "eu-1") -> RolloutRecord:
    return RolloutRecord(
        rollout_id=rollout_id,
        region=region,
        state=RolloutState.RUNNING,
        created_at=NOW,
        updated_at=NOW,
        candidate=b"candidate",
        candidate_version=8,
        candidate_digest=b"\x08" * 32,
        rollback=b"rollback",
        channels=("group/line-a",),
        devices=("gw-001", "gw-002"),
        stages=("10", "100"),
        soak_s=60,
        halts=("deny_rate>+2%",),
        groups=("line-a",),
    )


def test_a_rollout_is_recorded_and_read_back_whole(registry: Registry, peer: Registry) -> None:
    record = _rollout()
    registry.create_rollout(record)
    entered = replace(
        record,
        entered=0,
        stage_started_at=NOW + 5,
        paused_at=NOW + 7,
        history=(StageLog(0, NOW + 5, 1, 10, 1, NOW + 9, "halted", ("deny_rate = 50.00%",)),),
    )
    assert registry.update_rollout(entered, expected=record)
    assert peer.rollout("eu-1-v8") == entered
    assert peer.rollouts() == [entered] and peer.rollouts(active=True) == [entered]
    assert peer.rollout("eu-1-v9") is None


def test_a_region_has_one_active_rollout_and_an_id_is_used_once(registry: Registry) -> None:
    first = _rollout()
    registry.create_rollout(first)
    with pytest.raises(ConfigError, match="active in eu-1"):
        registry.create_rollout(_rollout("eu-1-v10"))
    with pytest.raises(ConfigError, match="exists already"):
        registry.create_rollout(replace(first, state=RolloutState.HALTED))
    registry.create_rollout(_rollout("us-2-v3", region="us-2"))
    halted = replace(first, state=RolloutState.HALTED, reason="deny_rate held")
    assert registry.update_rollout(halted, expected=first)
    registry.create_rollout(_rollout("eu-1-v10"))
    assert [r.rollout_id for r in registry.rollouts(active=True)] == ["eu-1-v10", "us-2-v3"]


def test_a_rollout_update_from_a_stale_read_changes_nothing(
    registry: Registry, peer: Registry
) -> None:
    record = _rollout()
    registry.create_rollout(record)
    paused = replace(record, state=RolloutState.PAUSED, paused_at=NOW + 1, updated_at=NOW + 1)
    assert peer.update_rollout(paused, expected=record)
    advanced = replace(record, stage=1, updated_at=NOW + 2)
    assert not registry.update_rollout(advanced, expected=record)
    assert registry.rollout(record.rollout_id) == paused


def test_lineage_tallies_count_the_given_devices_entries_in_the_window(
    registry: Registry,
) -> None:
    sims = {}
    for device_id in ("gw-001", "gw-002", "gw-003"):
        registry.add_device(_device(device_id))
        sims[device_id] = sim = DeviceLogSim(device_id)
        add_varied(sim, 8, start_time=NOW, step=10)
        ship(registry, sim, 0, 8)
    tallies = registry.lineage_tallies(["gw-001", "gw-002"], NOW + 10, NOW + 50)
    hits = [expected_hit(d, seq) for d in ("gw-001", "gw-002") for seq in range(1, 5)]
    expected: dict[tuple[str, bool, str, str | None, int | None], set[str]] = {}
    counts: dict[tuple[str, bool, str, str | None, int | None], int] = {}
    for hit in hits:
        key = (hit.kind, hit.allowed, hit.reason, hit.rule, hit.bundle_version)
        expected.setdefault(key, set()).add(hit.device)
        counts[key] = counts.get(key, 0) + 1
    assert {
        (t.kind, t.allowed, t.reason, t.rule, t.bundle_version): (t.count, t.devices)
        for t in tallies
    } == {key: (counts[key], len(expected[key])) for key in expected}
    assert tallies == sorted(
        tallies, key=lambda t: (t.kind, t.allowed, t.reason, t.rule or "", t.bundle_version or 0)
    )
    assert all(isinstance(t, LineageTally) for t in tallies)
    assert registry.lineage_tallies([], NOW, NOW + 1000) == []
    assert registry.devices_with_entry(["gw-001", "gw-003"], "decision", NOW + 70) == [
        "gw-001",
        "gw-003",
    ]
    assert registry.devices_with_entry(["gw-001"], "bundle_rejected", NOW) == []


def test_cleared_channels_hold_no_current_bundle(registry: Registry) -> None:
    registry.record_bundle(
        bundle=_bundle(3, channel=""),
        issued_at=NOW,
        target={},
        channels=["all", "device/gw-001", "device/gw-002"],
    )
    registry.record_freshness([_freshness("device/gw-001", NOW)])
    registry.clear_channels("eu-1", ["device/gw-001", "device/gw-002"])
    assert [b.channel for b in registry.current_bundles("eu-1")] == ["all"]
    assert registry.freshness("eu-1", "device/gw-001") is None
    assert registry.bundle_data(bytes([3]) * 32) == b"bundle 3"


def test_of_two_holders_claiming_the_schedule_lease_only_the_first_gets_it(
    registry: Registry, peer: Registry
) -> None:
    token = registry.claim_schedule_lease("hub-a", NOW, 5).token
    assert token is not None
    assert peer.claim_schedule_lease("hub-b", NOW, 5).token is None
    assert peer.claim_schedule_lease("hub-b", NOW + 4, 5).token is None


def test_a_claim_returns_the_lease_as_it_was_before_it(registry: Registry, peer: Registry) -> None:
    first = registry.claim_schedule_lease("hub-a", NOW, 5)
    assert first.token is not None and first.before is None
    held = ScheduleLeaseHolder("hub-a", first.token, NOW + 5)
    assert peer.claim_schedule_lease("hub-b", NOW + 1, 5) == ScheduleLeaseClaim(None, held)
    taken = peer.claim_schedule_lease("hub-b", NOW + 6, 5)
    assert taken == ScheduleLeaseClaim(first.token + 1, held)
    renewed = peer.claim_schedule_lease("hub-b", NOW + 7, 5)
    assert renewed.before == ScheduleLeaseHolder("hub-b", first.token + 1, NOW + 11)


def test_renewing_the_schedule_lease_keeps_its_token_even_after_it_expired(
    registry: Registry, peer: Registry
) -> None:
    token = registry.claim_schedule_lease("hub-a", NOW, 5).token
    assert registry.claim_schedule_lease("hub-a", NOW + 3, 5).token == token
    assert peer.claim_schedule_lease("hub-b", NOW + 7, 5).token is None
    assert registry.claim_schedule_lease("hub-a", NOW + 20, 5).token == token


def test_an_expired_schedule_lease_goes_to_the_next_holder_with_a_higher_token(
    registry: Registry, peer: Registry
) -> None:
    first = registry.claim_schedule_lease("hub-a", NOW, 5).token
    taken = peer.claim_schedule_lease("hub-b", NOW + 5, 5).token
    assert first is not None and taken is not None and taken > first
    assert registry.claim_schedule_lease("hub-a", NOW + 6, 5).token is None
    again = registry.claim_schedule_lease("hub-a", NOW + 10, 5).token
    assert again is not None and again > taken


def test_a_released_schedule_lease_is_taken_at_once_and_a_stale_release_changes_nothing(
    registry: Registry, peer: Registry
) -> None:
    first = registry.claim_schedule_lease("hub-a", NOW, 60).token
    peer.release_schedule_lease("hub-b")
    assert peer.claim_schedule_lease("hub-b", NOW + 1, 60).token is None
    registry.release_schedule_lease("hub-a")
    taken = peer.claim_schedule_lease("hub-b", NOW + 1, 60).token
    assert first is not None and taken is not None and taken > first
    registry.release_schedule_lease("hub-a")
    assert peer.claim_schedule_lease("hub-b", NOW + 2, 60).token == taken
    assert registry.claim_schedule_lease("hub-a", NOW + 2, 60).token is None


def test_a_schedule_lease_ending_beyond_any_correct_holders_expiry_is_taken_over(
    registry: Registry, peer: Registry
) -> None:
    years = 5 * 365 * 86400
    forged = registry.claim_schedule_lease("hub-ahead", NOW + years, 5).token
    assert forged is not None
    taken = peer.claim_schedule_lease("hub-b", NOW, 5).token
    assert taken is not None and taken > forged
    assert peer.schedule_lease() == ScheduleLeaseHolder("hub-b", taken, NOW + 5)
    assert registry.claim_schedule_lease("hub-ahead", NOW + 1, 5).token is None


def test_a_schedule_lease_within_the_skew_limit_of_a_claimants_clock_is_honoured(
    registry: Registry, peer: Registry
) -> None:
    held = registry.claim_schedule_lease("hub-a", NOW + LEASE_SKEW_LIMIT_S, 5).token
    assert held is not None
    assert peer.claim_schedule_lease("hub-b", NOW, 5).token is None
    assert peer.schedule_lease() == ScheduleLeaseHolder("hub-a", held, NOW + LEASE_SKEW_LIMIT_S + 5)
    assert registry.claim_schedule_lease("hub-a", NOW + LEASE_SKEW_LIMIT_S + 1, 5).token == held


def test_no_schedule_lease_is_read_before_any_hub_claimed_it(registry: Registry) -> None:
    assert registry.schedule_lease() is None
    token = registry.claim_schedule_lease("hub-a", NOW, 5).token
    registry.release_schedule_lease("hub-a")
    assert registry.schedule_lease() == ScheduleLeaseHolder("", token or 0, 0)


def test_a_schedule_lease_claim_needs_a_holder_and_a_positive_ttl(registry: Registry) -> None:
    with pytest.raises(ValueError, match="holder"):
        registry.claim_schedule_lease("", NOW, 5)
    with pytest.raises(ValueError, match="positive"):
        registry.claim_schedule_lease("hub-a", NOW, 0)
    assert registry.claim_schedule_lease("hub-b", NOW, 5).token is not None


def test_the_schedule_lease_is_held_across_reopening_the_registry(backend: Backend) -> None:
    with backend.open() as registry:
        token = registry.claim_schedule_lease("hub-a", NOW, 30).token
    with backend.open() as registry:
        assert registry.claim_schedule_lease("hub-b", NOW + 1, 30).token is None
        assert registry.claim_schedule_lease("hub-a", NOW + 1, 30).token == token

"""What only the PostgreSQL backend does: hub processes on separate connections racing the
same compare-and-set writes, a server restarted under an open registry, a server that
cannot be reached, and databases that are not this hub's registry. What every backend
does is in tests/test_registry_contract.py."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg
import pytest

from edge_agent.errors import ConfigError
from edge_agent.protocol.attestation import Challenge
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import DeviceStatus
from hub.registry import IssuedRevocation, Registry, RegistryError
from hub.registry.backends import open_registry
from hub.registry.postgres import PostgresRegistry
from hub.registry.postgres import schema as postgres_schema
from hub.registry.postgres.arrays import bytea_array, int8_array, register_arrays, text_array
from hub.registry.records import DeviceRecord, ScheduleLeaseClaim
from hub.registry.schema import SCHEMA_VERSION
from tests.factory import NOW
from tests.lineage_sim import DeviceLogSim, accepted_batch
from tests.postgres_support import PostgresServer, free_port

T = TypeVar("T")

RACES = 8
"""Rounds of each race: the two writers meet at a barrier, so most rounds truly overlap."""


@pytest.fixture
def hubs(postgres_url: str) -> Iterator[tuple[Registry, Registry]]:
    """Two registries on one database, as two hub processes hold them."""
    with open_registry(postgres_url) as first, open_registry(postgres_url) as second:
        yield first, second


def _race(first: Callable[[], T], second: Callable[[], T]) -> list[T | Exception]:
    """Run both at the same moment on two threads; what each returned or raised."""
    barrier = threading.Barrier(2)
    results: list[T | Exception] = [RuntimeError("did not run")] * 2

    def run(index: int, call: Callable[[], T]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_binary_arrays_reach_the_server_as_the_values_they_were_built_from(
    postgres_url: str,
) -> None:
    numbers: list[int | None] = [0, -1, 2**63 - 1, -(2**63), None, 7]
    words: list[str | None] = ["", "a b", 'qu"ote\\', "NULL", None, "é✓"]
    blobs: list[bytes | None] = [b"", b"\x00\xff", None, bytes(range(256))]
    with psycopg.connect(postgres_url, autocommit=True) as db:
        register_arrays(db)
        row = db.execute(
            "SELECT %b, %b, %b, %b, %b, %b, pg_typeof(%b)::text",
            (
                int8_array(numbers),
                text_array(words),
                bytea_array(blobs),
                int8_array(range(3)),
                int8_array([]),
                text_array([]),
                int8_array([1]),
            ),
        ).fetchone()
    assert row == (numbers, words, blobs, [0, 1, 2], [], [], "bigint[]")


def test_two_hubs_storing_the_same_batch_at_the_same_size_store_it_once(
    hubs: tuple[Registry, Registry],
) -> None:
    first, second = hubs
    for round_ in range(RACES):
        sim = DeviceLogSim(f"gw-{round_:03d}")
        sim.add(20)
        head = accepted_batch(first, sim, 0, 10)
        assert first.store_batch(head, expected_size=0, received_at=NOW)
        tail = accepted_batch(first, sim, 10, 20)
        results = _race(
            lambda b=tail: first.store_batch(b, expected_size=10, received_at=NOW),
            lambda b=tail: second.store_batch(b, expected_size=10, received_at=NOW),
        )
        assert sorted(results, key=str) == [False, True], results
        assert first.lineage_state(sim.device_id).size == 20
        assert len(first.entries(sim.device_id, 0, 100)) == 20


def test_two_hubs_storing_a_first_batch_of_one_device_store_it_once(
    hubs: tuple[Registry, Registry],
) -> None:
    first, second = hubs
    for round_ in range(RACES):
        sim = DeviceLogSim(f"gw-{round_:03d}")
        sim.add(10)
        batch = accepted_batch(first, sim, 0, 10)
        results = _race(
            lambda b=batch: first.store_batch(b, expected_size=0, received_at=NOW),
            lambda b=batch: second.store_batch(b, expected_size=0, received_at=NOW),
        )
        assert sorted(results, key=str) == [False, True], results
        assert [e.seq for e in second.iter_entries(sim.device_id)] == list(range(10))


def test_a_nonce_spent_by_two_hubs_at_once_is_spent_once(
    hubs: tuple[Registry, Registry],
) -> None:
    first, second = hubs
    for round_ in range(RACES):
        nonce = bytes([round_]) * 16
        first.record_challenge(Challenge("gw-001", nonce, NOW, NOW + 60))
        results = _race(
            lambda n=nonce: first.spend_challenge("gw-001", n, NOW + 1),
            lambda n=nonce: second.spend_challenge("gw-001", n, NOW + 1),
        )
        assert results.count(None) == 1, results
        assert "already used" in str(next(r for r in results if r is not None))


def test_a_revocation_epoch_taken_by_two_hubs_at_once_is_allocated_once(
    hubs: tuple[Registry, Registry],
) -> None:
    first, second = hubs
    for epoch in range(1, RACES + 1):
        results = _race(
            lambda e=epoch: first.record_revocation(
                IssuedRevocation("eu-1", e, "bundle_version", f"{e}", "bad", b"first", NOW)
            ),
            lambda e=epoch: second.record_revocation(
                IssuedRevocation("eu-1", e, "bundle_version", f"{e}", "bad", b"second", NOW)
            ),
        )
        assert results.count(None) == 1, results
        refused = next(r for r in results if r is not None)
        assert isinstance(refused, ConfigError), refused
        assert "run revoke again" in str(refused)
    assert first.kill_epoch("eu-1") == RACES
    assert [r.epoch for r in second.current_revocations()] == list(range(1, RACES + 1))


def test_a_server_restart_costs_an_open_registry_at_most_one_error_and_no_half_write(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    sim = DeviceLogSim("gw-001")
    sim.add(30)
    with open_registry(postgres_url) as registry:
        assert registry.store_batch(
            accepted_batch(registry, sim, 0, 10), expected_size=0, received_at=NOW
        )
        batch = accepted_batch(registry, sim, 10, 20)
        with pytest.raises(RegistryError), registry.write_group():
            assert registry.store_batch(batch, expected_size=10, received_at=NOW)
            postgres_server.restart()
        stored = _after_restart(lambda: registry.lineage_state("gw-001").size)
        assert stored == 10, "the group's batch was rolled back whole"
        assert len(registry.entries("gw-001", 0, 100)) == 10
        assert registry.store_batch(batch, expected_size=10, received_at=NOW)
        assert registry.lineage_state("gw-001").size == 20


def _after_restart(call: Callable[[], T]) -> T:
    """``call``'s result, allowing it one :class:`RegistryError` (a pooled connection the
    restart closed), never another exception."""
    try:
        return call()
    except RegistryError:
        return call()


def test_a_server_that_cannot_be_reached_is_named_without_the_password() -> None:
    port = free_port()
    with pytest.raises(RegistryError) as raised:
        open_registry(f"postgresql://hub:s3cret-pw@127.0.0.1:{port}/registry")
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "s3cret-pw" not in message
    assert isinstance(raised.value.__cause__, psycopg.Error)


def test_a_database_of_another_program_is_refused(
    postgres_server: PostgresServer,
) -> None:
    name = postgres_server.new_database(template="template0")
    try:
        with psycopg.connect(postgres_server.url(name), autocommit=True) as db:
            db.execute("CREATE TABLE invoices (id BIGINT PRIMARY KEY)")
        with pytest.raises(RegistryError, match="another program's database"):
            PostgresRegistry.open(postgres_server.url(name))
    finally:
        postgres_server.drop_database(name)


def test_a_registry_of_another_schema_version_is_refused(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            "UPDATE registry_meta SET value = %s WHERE key = 'schema_version'",
            (SCHEMA_VERSION + 1,),
        )
    with pytest.raises(RegistryError, match=f"schema {SCHEMA_VERSION + 1}"):
        PostgresRegistry.open(postgres_url)


def test_an_empty_database_becomes_a_registry_with_its_schema_version(
    postgres_server: PostgresServer,
) -> None:
    name = postgres_server.new_database(template="template0")
    try:
        PostgresRegistry.open(postgres_server.url(name)).close()
        with psycopg.connect(postgres_server.url(name)) as db:
            row = db.execute(
                "SELECT value FROM registry_meta WHERE key = 'schema_version'"
            ).fetchone()
        assert row == (SCHEMA_VERSION,)
    finally:
        postgres_server.drop_database(name)


def test_a_registry_of_schema_1_opens_upgraded_with_its_rows_and_the_schedule_lease(
    postgres_url: str,
) -> None:
    with open_registry(postgres_url) as registry:
        registry.release_schedule_lease("nobody")
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DROP TABLE schedule_lease")
        db.execute("UPDATE registry_meta SET value = 1 WHERE key = 'schema_version'")
        db.execute("INSERT INTO console_tokens VALUES ('ops', 'admin', '\\x00', 1)")
    with open_registry(postgres_url) as registry:
        assert [t.name for t in registry.console_tokens()] == ["ops"]
        assert registry.claim_schedule_lease("hub-a", NOW, 5).token is not None
    with psycopg.connect(postgres_url) as db:
        row = db.execute("SELECT value FROM registry_meta WHERE key = 'schema_version'").fetchone()
    assert row == (SCHEMA_VERSION,) == (2,)


def test_of_two_hubs_claiming_the_free_schedule_lease_at_once_one_gets_it(
    hubs: tuple[Registry, Registry],
) -> None:
    first, second = hubs
    for round_ in range(RACES):
        now = NOW + 100 * round_
        results = _race(
            functools.partial(first.claim_schedule_lease, "hub-a", now, 50),
            functools.partial(second.claim_schedule_lease, "hub-b", now, 50),
        )
        tokens = [r.token if isinstance(r, ScheduleLeaseClaim) else r for r in results]
        assert sum(isinstance(t, int) for t in tokens) == 1, results
        assert sum(t is None for t in tokens) == 1, results


def test_two_hubs_writing_for_one_device_at_once_both_commit_its_dashboard_row(
    postgres_url: str,
) -> None:
    with open_registry(postgres_url) as registry:
        registry.add_device(
            DeviceRecord("gw-x", "eu-1", (), "generic", PrivateKey.generate().public, 1, NOW)
        )
    _waits_for_a_held_rewrite(postgres_url, "SELECT console_fleet_refresh('gw-x')")
    with psycopg.connect(postgres_url) as db:
        rows = db.execute("SELECT count(*) FROM console_fleet WHERE device = 'gw-x'")
        assert rows.fetchone() == (1,)


def _waits_for_a_held_rewrite(postgres_url: str, statement: str) -> None:
    """Run ``statement`` while another session holds an uncommitted rewrite of gw-x's
    dashboard row: it waits for that commit, then commits without error."""
    with psycopg.connect(postgres_url) as first, psycopg.connect(postgres_url) as second:
        first.execute("SELECT console_fleet_refresh('gw-x')")
        outcome: list[Exception | None] = []

        def meanwhile() -> None:
            try:
                second.execute(statement)
                second.commit()
                outcome.append(None)
            except psycopg.Error as exc:
                outcome.append(exc)

        waiting = threading.Thread(target=meanwhile)
        waiting.start()
        waiting.join(timeout=1)
        assert waiting.is_alive(), f"{statement!r} did not wait for the rewrite"
        first.commit()
        waiting.join(timeout=30)
        assert outcome == [None]


def _updated_by(db: psycopg.Connection[tuple[object, ...]], table: str) -> list[str]:
    """The triggers an UPDATE of ``table`` fires (``tgtype`` bit 4: UPDATE)."""
    rows = db.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND tgtype & 16 <> 0 "
        "ORDER BY tgname",
        (table,),
    )
    return [str(row[0]) for row in rows]


def _put_back_the_rewrite_triggers(postgres_url: str) -> None:
    """Make the registry at ``postgres_url`` one from before the in-place summary updates:
    status and last seen rewrite the device's whole dashboard row."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for table in ("status", "activity"):
            db.execute(f"DROP TRIGGER console_fleet_{table}_in_place ON {table}")
            db.execute(
                f"CREATE OR REPLACE TRIGGER console_fleet_{table} AFTER INSERT OR UPDATE OR "
                f"DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION console_fleet_from_{table}()"
            )


def test_a_registry_with_the_rewrite_triggers_of_status_and_last_seen_gets_the_in_place_ones(
    postgres_url: str,
) -> None:
    with open_registry(postgres_url):
        pass
    _put_back_the_rewrite_triggers(postgres_url)
    with open_registry(postgres_url) as registry:
        registry.add_device(
            DeviceRecord("gw-x", "eu-1", (), "generic", PrivateKey.generate().public, 1, NOW)
        )
        for at in (NOW, NOW + 30):
            sent = DeviceStatus("gw-x", at, True, at - NOW, None, "open", 0, 0)
            registry.record_status(sent, b"s%d" % at, at)
    with psycopg.connect(postgres_url) as db:
        assert _updated_by(db, "status") == ["console_fleet_status_in_place"]
        assert _updated_by(db, "activity") == ["console_fleet_activity_in_place"]
        row = db.execute("SELECT seen, running, signed FROM console_fleet WHERE device = 'gw-x'")
        assert row.fetchone() == (NOW + 30, 30, NOW + 30)


def test_a_registry_with_the_sql_dashboard_rewrite_gets_the_plpgsql_one_and_keeps_its_rows(
    postgres_url: str,
) -> None:
    with open_registry(postgres_url):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            "CREATE OR REPLACE FUNCTION console_fleet_refresh(named TEXT) RETURNS void "
            "LANGUAGE sql AS $$ "
            "SELECT pg_advisory_xact_lock(hashtextextended('console_fleet:' || named, 0)); "
            "DELETE FROM console_fleet WHERE device = named; "
            f"INSERT INTO console_fleet {postgres_schema.FLEET_ROW} WHERE d.id = named; $$"
        )
        assert not postgres_schema._complete(db)
    with open_registry(postgres_url) as registry:
        registry.add_device(
            DeviceRecord("gw-x", "eu-1", (), "generic", PrivateKey.generate().public, 1, NOW)
        )
        sim = DeviceLogSim("gw-x")
        sim.add(10)
        assert registry.store_batch(
            accepted_batch(registry, sim, 0, 10), expected_size=0, received_at=NOW
        )
    with psycopg.connect(postgres_url, autocommit=True) as db:
        language = db.execute(
            "SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
            "WHERE p.proname = 'console_fleet_refresh'"
        )
        assert language.fetchall() == [("plpgsql",)]
        stored = db.execute("SELECT stored FROM console_fleet WHERE device = 'gw-x'")
        assert stored.fetchall() == [(10,)]
        assert postgres_schema._complete(db)


@pytest.mark.parametrize(
    "change",
    [
        "DROP FUNCTION record_device_status",
        "CREATE OR REPLACE FUNCTION record_device_status(s_device TEXT, s_data BYTEA, "
        "s_time BIGINT, s_online BIGINT, s_version BIGINT, s_expires BIGINT, s_gate TEXT, "
        "s_size BIGINT, s_acked BIGINT, s_received BIGINT, max_spans BIGINT, join_s BIGINT) "
        "RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RETURN false; END $$",
    ],
    ids=["without it", "another text of it"],
)
def test_a_registry_without_this_hubs_status_function_gets_it_when_opened(
    postgres_url: str, change: str
) -> None:
    with open_registry(postgres_url):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(change)
        assert not postgres_schema._complete(db)
    with open_registry(postgres_url) as registry:
        registry.add_device(
            DeviceRecord("gw-x", "eu-1", (), "generic", PrivateKey.generate().public, 1, NOW)
        )
        sent = DeviceStatus("gw-x", NOW, True, 1, None, "open", 0, 0)
        assert registry.record_status(sent, b"a", NOW)
        assert registry.fleet()[0].status_time == NOW
    with psycopg.connect(postgres_url, autocommit=True) as db:
        assert postgres_schema._complete(db)


def test_a_status_waits_for_the_status_lock_a_hub_on_the_shared_path_holds_then_decides(
    postgres_url: str,
) -> None:
    """A hub from before the status function records a status under the advisory lock
    ``status <device>`` (read, then write): the function takes that lock too, so it waits,
    then finds the newer status that hub committed and keeps nothing."""
    with open_registry(postgres_url) as registry:
        registry.add_device(
            DeviceRecord("gw-x", "eu-1", (), "generic", PrivateKey.generate().public, 1, NOW)
        )
        outcome: list[bool] = []
        with (
            psycopg.connect(postgres_url) as shared,
            psycopg.connect(postgres_url, autocommit=True) as watch,
        ):
            shared.execute("SELECT pg_advisory_xact_lock(hashtextextended('status gw-x', 0))")
            sent = DeviceStatus("gw-x", NOW + 1, True, 1, None, "open", 0, 0)
            recording = threading.Thread(
                target=lambda: outcome.append(registry.record_status(sent, b"late", NOW + 1))
            )
            recording.start()
            _until(
                lambda: (
                    watch.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    ).fetchone()
                    == (1,)
                )
            )
            shared.execute(
                "INSERT INTO status VALUES ('gw-x', 'newer', %s, 1, 2, NULL, 'open', 0, 0, %s)",
                (NOW + 5, NOW + 5),
            )
            shared.commit()
            recording.join(timeout=30)
        assert outcome == [False]
        assert registry.fleet()[0].status_time == NOW + 5


def test_a_status_set_in_place_waits_for_another_hubs_rewrite_of_the_row_and_lands_in_it(
    postgres_url: str,
) -> None:
    with open_registry(postgres_url) as registry:
        registry.add_device(
            DeviceRecord("gw-x", "eu-1", (), "generic", PrivateKey.generate().public, 1, NOW)
        )
        registry.record_status(DeviceStatus("gw-x", NOW, True, 1, None, "open", 0, 0), b"a", NOW)
    _waits_for_a_held_rewrite(
        postgres_url, "UPDATE status SET bundle_version = 2 WHERE device = 'gw-x'"
    )
    with psycopg.connect(postgres_url) as db:
        row = db.execute("SELECT running FROM console_fleet WHERE device = 'gw-x'")
        assert row.fetchone() == (2,)


def test_a_malformed_registry_url_is_refused_without_its_password() -> None:
    with pytest.raises(RegistryError) as refused:
        open_registry("postgresql://hub:s3cret-pw@[bad/edgegov")
    assert "s3cret-pw" not in str(refused.value)
    assert "postgresql://user@host:port/database" in str(refused.value)


def _waiting_on(db: psycopg.Connection[tuple[object, ...]], table: str) -> bool:
    """Whether a session waits for a lock on ``table``."""
    rows = db.execute(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass", (table,)
    )
    return rows.fetchone() != (0,)


def _until(check: Callable[[], bool]) -> None:
    for _ in range(300):
        if check():
            return
        time.sleep(0.01)
    raise AssertionError("never happened")


def test_a_status_another_hub_records_while_a_hub_upgrades_the_summary_triggers_is_kept(
    postgres_url: str,
) -> None:
    """The upgrade takes its tables in an order hub writes do not share; were it to wait
    for one while holding another, a hub's status write waiting for what it holds would
    end in a deadlock check refusing the status. It waits at most LOCK_WAIT_MS, lets go
    and tries again, so the status is recorded while the upgrade still waits."""
    with open_registry(postgres_url) as registry:
        registry.add_device(
            DeviceRecord("gw-x", "eu-1", (), "generic", PrivateKey.generate().public, 1, NOW)
        )
        registry.record_status(DeviceStatus("gw-x", NOW, True, 1, None, "open", 0, 0), b"a", NOW)
    running = open_registry(postgres_url)
    _put_back_the_rewrite_triggers(postgres_url)
    outcomes: dict[str, object] = {}

    def run(name: str, work: Callable[[], object]) -> threading.Thread:
        def target() -> None:
            try:
                outcomes[name] = work()
            except RegistryError as exc:
                outcomes[name] = exc

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    with psycopg.connect(postgres_url) as storing, psycopg.connect(postgres_url) as watch:
        # A hub storing a lineage batch meanwhile holds its search rows' table, for longer
        # than PostgreSQL's deadlock_timeout.
        storing.execute("LOCK TABLE lineage_search IN ROW EXCLUSIVE MODE")
        upgrading = run("upgrade", lambda: open_registry(postgres_url).close())
        _until(lambda: _waiting_on(watch, "lineage_search"))
        sent = DeviceStatus("gw-x", NOW + 30, True, 2, None, "open", 0, 0)
        recording = run("status", lambda: running.record_status(sent, b"b", NOW + 30))
        recording.join(timeout=30)
        assert outcomes == {"status": True}
        time.sleep(1.5)
        storing.commit()
        upgrading.join(timeout=60)
    running.close()
    assert outcomes == {"upgrade": None, "status": True}
    with psycopg.connect(postgres_url, autocommit=True) as db:
        summary = db.execute("SELECT running FROM console_fleet WHERE device = 'gw-x'")
        assert summary.fetchall() == [(2,)]
        assert postgres_schema._complete(db)


def test_a_registry_beside_another_in_the_same_database_is_complete_on_its_own(
    postgres_url: str,
) -> None:
    """Registries in two schemas of one database: each one's summary triggers are counted
    in its own schema, so opening either one again writes nothing."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE SCHEMA second")
    open_registry(postgres_url).close()
    open_registry(f"{postgres_url}?options=-csearch_path%3Dsecond").close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        assert postgres_schema._complete(db)

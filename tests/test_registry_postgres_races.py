"""Hostile tests of the PostgreSQL write paths under concurrency and schema drift: the status
function racing the shared path on one device, the function dropped or replaced under a
writing hub, batch claims of two different batches at one size, and a claim whose insert
fails."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import pytest

from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import DeviceStatus
from hub.registry import RegistryError
from hub.registry.postgres import PostgresRegistry
from hub.registry.queries.devices import DeviceTables as SharedDeviceTables
from hub.registry.records import DeviceRecord
from tests.lineage_sim import NOW, DeviceLogSim, accepted_batch


def _race(calls: list[Callable[[], object]]) -> list[object]:
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _statuses(offset: int, n: int) -> list[DeviceStatus]:
    return [
        DeviceStatus("gw-001", NOW + 2 * i + offset, i % 3 != 0, i % 2, None, "open", 0, 0)
        for i in range(n)
    ]


def test_the_function_and_the_shared_path_racing_one_device_keep_the_newest(
    postgres_url: str,
) -> None:
    with PostgresRegistry.open(postgres_url) as a, PostgresRegistry.open(postgres_url) as b:
        a.add_device(
            DeviceRecord("gw-001", "eu-1", (), "generic", PrivateKey.generate().public, 1, NOW)
        )

        def via_function() -> list[bool]:
            return [a.record_status(s, b"f%d" % s.time, s.time) for s in _statuses(0, 60)]

        def via_shared() -> list[bool]:
            return [
                SharedDeviceTables.record_status(b, s, b"s%d" % s.time, s.time)
                for s in _statuses(1, 60)
            ]

        results = _race([via_function, via_shared])
        assert not any(isinstance(r, Exception) for r in results), results
        row = a.fleet()[0]
        assert row.status_time == NOW + 119
        assert row.last_seen == NOW + 119
        spans = a.status_history("gw-001")
        assert [s.since for s in spans] == sorted(s.since for s in spans)
        assert all(s.since <= s.until for s in spans)
        assert a.console_device("gw-001").status_time == NOW + 119  # type: ignore[union-attr]


@pytest.mark.parametrize("drift", ["dropped", "replaced"])
def test_a_hub_opening_a_registry_whose_function_drifted_while_another_writes_restores_it(
    postgres_url: str, drift: str
) -> None:
    with PostgresRegistry.open(postgres_url) as writer:
        writer.add_device(
            DeviceRecord("gw-001", "eu-1", (), "generic", PrivateKey.generate().public, 1, NOW)
        )
        with psycopg.connect(postgres_url, autocommit=True) as db:
            if drift == "dropped":
                db.execute("DROP FUNCTION record_device_status")
            else:
                db.execute(
                    "CREATE OR REPLACE FUNCTION record_device_status(s_device TEXT, s_data BYTEA, "
                    "s_time BIGINT, s_online BIGINT, s_version BIGINT, s_expires BIGINT, "
                    "s_gate TEXT, s_size BIGINT, s_acked BIGINT, s_received BIGINT, "
                    "max_spans BIGINT, join_s BIGINT) RETURNS boolean LANGUAGE sql "
                    "AS $$ SELECT false $$"
                )
        stop = threading.Event()
        outcomes: list[object] = []

        def write() -> None:
            t = 0
            while not stop.is_set():
                t += 1
                s = DeviceStatus("gw-001", NOW + t, True, 3, None, "open", 0, 0)
                try:
                    outcomes.append(writer.record_status(s, b"%d" % t, NOW + t))
                except RegistryError as exc:
                    outcomes.append(exc)

        thread = threading.Thread(target=write)
        thread.start()
        try:
            PostgresRegistry.open(postgres_url).close()
            done = len(outcomes)
            while len(outcomes) < done + 5:
                threading.Event().wait(0.01)
        finally:
            stop.set()
            thread.join(30)
        assert outcomes[-3:] == [True, True, True], outcomes[-5:]
        row = writer.fleet()[0]
        assert row.status_time == row.last_seen


def test_two_different_batches_claiming_one_size_store_one_of_them_whole(
    postgres_url: str,
) -> None:
    key = PrivateKey.generate()
    with PostgresRegistry.open(postgres_url) as a, PostgresRegistry.open(postgres_url) as b:
        for round_ in range(6):
            device = f"gw-{round_:03d}"
            left = DeviceLogSim(device, key=key)
            right = DeviceLogSim(device, key=key)
            left.add(8, resource="/left")
            right.add(8, resource="/right")
            assert a.store_batch(accepted_batch(a, left, 0, 4), expected_size=0, received_at=NOW)
            right.entries[:4] = left.entries[:4]
            right.entries[4:] = []
            right.add(4, resource="/right")
            one = accepted_batch(a, left, 4, 8)
            two = accepted_batch(b, right, 4, 8)
            results = _race(
                [
                    lambda one=one: a.store_batch(one, expected_size=4, received_at=NOW),
                    lambda two=two: b.store_batch(two, expected_size=4, received_at=NOW),
                ]
            )
            assert sorted(results, key=str) == [False, True], results
            winner = left if results[0] is True else right
            assert a.entries(device, 0, 20) == winner.entries
            assert a.lineage_state(device).size == 8
            resource = "/left" if winner is left else "/right"
            hits = [a.lineage_hit(device, seq) for seq in range(4, 8)]
            assert all(h is not None and resource in repr(h) for h in hits), hits


def test_a_claim_whose_insert_fails_leaves_none_of_its_rows(postgres_url: str) -> None:
    sim = DeviceLogSim("gw-001")
    sim.add(8)
    with PostgresRegistry.open(postgres_url) as registry:
        assert registry.store_batch(
            accepted_batch(registry, sim, 0, 4), expected_size=0, received_at=NOW
        )
        tail = accepted_batch(registry, sim, 4, 8)
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute("INSERT INTO lineage_entries VALUES ('gw-001', 6, '\\x00')")
            before = [
                db.execute(f"SELECT count(*) FROM {t}").fetchone()
                for t in ("lineage_search", "lineage_nodes", "lineage_checkpoints")
            ]
            with pytest.raises(RegistryError):
                registry.store_batch(tail, expected_size=4, received_at=NOW)
            after = [
                db.execute(f"SELECT count(*) FROM {t}").fetchone()
                for t in ("lineage_search", "lineage_nodes", "lineage_checkpoints")
            ]
            entries = db.execute("SELECT seq FROM lineage_entries ORDER BY seq").fetchall()
        assert before == after
        assert [e[0] for e in entries] == [0, 1, 2, 3, 6]
        assert registry.lineage_state("gw-001").size == 4


def test_a_failed_claim_leaves_none_of_its_rows(postgres_url: str) -> None:
    sim = DeviceLogSim("gw-001")
    sim.add(8)
    with PostgresRegistry.open(postgres_url) as registry:
        assert registry.store_batch(
            accepted_batch(registry, sim, 0, 4), expected_size=0, received_at=NOW
        )
        tail = accepted_batch(registry, sim, 4, 8)
        assert not registry.store_batch(tail, expected_size=3, received_at=NOW)
        assert not registry.store_batch(tail, expected_size=0, received_at=NOW)
        with psycopg.connect(postgres_url, autocommit=True) as db:
            counts = [
                db.execute(f"SELECT count(*) FROM {t} WHERE device = 'gw-001'").fetchone()
                for t in ("lineage_entries", "lineage_search", "lineage_checkpoints")
            ]
        assert counts == [(4,), (4,), (1,)]


def test_postgresql_refuses_nul_in_bound_text_of_either_kind(postgres_url: str) -> None:
    """The NUL divergences (tests/test_registry_*_backends_agree.py) are PostgreSQL's text, not the
    rewrites': a text parameter bound the ordinary way is refused too."""
    with psycopg.connect(postgres_url, autocommit=True) as db, pytest.raises(psycopg.DataError):
        db.execute("SELECT %s::text", ("op\x00en",))

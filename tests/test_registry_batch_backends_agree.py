"""Hostile differential tests of ``store_batch``: a batch stored on a SQLite registry and on
a PostgreSQL one (the one-statement claim with binary arrays) must leave the same entries,
lineage state and search rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.registry import Registry, RegistryError
from hub.registry.lineage_records import LineageQuery
from hub.registry.postgres import PostgresRegistry
from hub.registry.sqlite import SqliteRegistry
from tests.lineage_sim import NOW, DeviceLogSim, accepted_batch


def _store(registry: Registry, sim: DeviceLogSim, start: int, stop: int) -> object:
    try:
        return registry.store_batch(
            accepted_batch(registry, sim, start, stop), expected_size=start, received_at=NOW
        )
    except RegistryError:
        return "RegistryError"


@pytest.mark.parametrize(
    "resource",
    ["/opt/é✓🛑\u202e", "", "x" * 5000, "'; DROP TABLE lineage_entries; --"],
)
def test_a_batch_of_odd_text_is_stored_alike_on_both_backends(
    tmp_path: Path, postgres_url: str, resource: str
) -> None:
    sim = DeviceLogSim("gw-odd")
    sim.add(6, resource=resource)
    with (
        SqliteRegistry.open(tmp_path / "hub.db") as lite,
        PostgresRegistry.open(postgres_url) as pg,
    ):
        for registry in (lite, pg):
            assert _store(registry, sim, 0, 3) is True
            tail = accepted_batch(registry, sim, 3, 6)
            assert registry.store_batch(tail, expected_size=3, received_at=NOW)
            assert not registry.store_batch(tail, expected_size=3, received_at=NOW)
        assert lite.entries("gw-odd", 0, 10) == pg.entries("gw-odd", 0, 10) == sim.entries
        assert lite.lineage_state("gw-odd") == pg.lineage_state("gw-odd")
        assert lite.lineage_hit("gw-odd", 4) == pg.lineage_hit("gw-odd", 4)


def test_a_batch_whose_entry_text_holds_nul_is_stored_on_both_backends(
    tmp_path: Path, postgres_url: str
) -> None:
    sim = DeviceLogSim("gw-nul")
    sim.add(3, resource="/bin/\x00sh")
    with (
        SqliteRegistry.open(tmp_path / "hub.db") as lite,
        PostgresRegistry.open(postgres_url) as pg,
    ):
        assert _store(lite, sim, 0, 3) is True
        assert _store(pg, sim, 0, 3) is True
        assert lite.entries("gw-nul", 0, 10) == pg.entries("gw-nul", 0, 10) == sim.entries
        for registry in (lite, pg):
            hit = registry.lineage_hit("gw-nul", 2)
            assert hit is not None and hit.resource == "/bin/\ufffdsh"
            found = registry.search_lineage(LineageQuery(resource_prefix="/bin/\x00"))
            assert sorted(h.seq for h in found.hits) == [0, 1, 2]


def test_a_batch_of_near_limit_entries_is_stored_byte_exact_on_both_backends(
    tmp_path: Path, postgres_url: str
) -> None:
    sim = DeviceLogSim("gw-big")
    sim.add(2, resource="é" * 480_000)
    sim.add(2, resource="\x01\x7f\u2028")
    with (
        SqliteRegistry.open(tmp_path / "hub.db") as lite,
        PostgresRegistry.open(postgres_url) as pg,
    ):
        for registry in (lite, pg):
            assert _store(registry, sim, 0, 1) is True
            assert _store(registry, sim, 1, 4) is True
        assert lite.entries("gw-big", 0, 10) == pg.entries("gw-big", 0, 10) == sim.entries
        assert [lite.lineage_hit("gw-big", s) for s in range(4)] == [
            pg.lineage_hit("gw-big", s) for s in range(4)
        ]

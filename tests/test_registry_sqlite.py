"""The SQLite backend of the registry: what only it does (its file, its schema version, a
full disk inside a write group). What every backend does is in test_registry_contract.py."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.protocol.keys import PrivateKey
from hub.registry import DeviceRecord, RegistryError, RejectionCount
from hub.registry.sqlite import SqliteRegistry
from hub.registry.sqlite.schema import SCHEMA, SCHEMA_VERSION
from tests.factory import NOW


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SqliteRegistry]:
    with SqliteRegistry.open(tmp_path / "hub.db") as opened:
        yield opened


def test_a_full_disk_inside_a_group_fails_the_rest_of_it_and_stores_none_of_it(
    registry: SqliteRegistry,
) -> None:
    pages = registry._db.execute("PRAGMA page_count").fetchone()[0]
    with pytest.raises(RegistryError, match="rolled the group back"), registry.write_group():
        registry.add_rejections([RejectionCount("early", "impersonation", 1, "stored first")], NOW)
        registry._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(RegistryError, match="full"):
            registry.add_rejections(
                [RejectionCount(f"gw-{i:04d}", "impersonation", 1, "x" * 400) for i in range(2000)],
                NOW,
            )
        registry._db.execute("PRAGMA max_page_count = 1073741823")
        with pytest.raises(RegistryError, match="rolled back this group"):
            registry.add_rejections(
                [RejectionCount("late", "impersonation", 1, "after the failure")], NOW
            )
    assert registry.rejections("early") == [] and registry.rejections("late") == []


def test_a_registry_from_before_tpm_keys_opens_with_its_rows_and_gains_the_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hub.db"
    key = PrivateKey.generate().public
    db = sqlite3.connect(path)
    db.executescript(re.sub(r"CREATE TABLE IF NOT EXISTS tpm_keys \([^;]*\);", "", SCHEMA))
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute(
        "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("gw-001", "eu-1", '["line-a"]', "generic", key.raw, 1, NOW),
    )
    db.execute("INSERT INTO rejections VALUES ('gw-001', 'oversize', 3, ?, 'big')", (NOW,))
    db.commit()
    db.close()
    with SqliteRegistry.open(path) as registry:
        assert registry.devices() == [
            DeviceRecord("gw-001", "eu-1", ("line-a",), "generic", key, 1, NOW)
        ]
        assert [(r.code, r.count) for r in registry.rejections("gw-001")] == [("oversize", 3)]
        registry.set_tpm_ak("gw-001", b"der", NOW)
        assert registry.tpm_ak("gw-001") == b"der"


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(RegistryError, match="schema 7"):
        SqliteRegistry.open(path)

"""The SQLite backend of the registry: what only it does (its file, its schema version, a
full disk inside a write group). What every backend does is in test_registry_contract.py."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import DeviceStatus
from hub.registry import DeviceRecord, RegistryError, RejectionCount
from hub.registry.records import STORED_NODE_LEVEL
from hub.registry.sqlite import SqliteRegistry
from hub.registry.sqlite.console_fleet import _FLEET_ROW
from hub.registry.sqlite.schema import SCHEMA, SCHEMA_VERSION
from tests.factory import NOW
from tests.lineage_sim import assert_same_proofs, reference_nodes, store_log


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


def test_a_registry_from_before_the_console_fleet_summary_fills_it_when_opened(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hub.db"
    with SqliteRegistry.open(path) as registry:
        for n, groups in ((1, ("line-a",)), (2, ("line-a", "line-b")), (3, ())):
            registry.add_device(
                DeviceRecord(
                    f"gw-00{n}", "eu-1", groups, "generic", PrivateKey.generate().public, 1, NOW
                )
            )
        for n, gate in ((1, "open"), (2, "revoked")):
            sent = DeviceStatus(f"gw-00{n}", NOW - n, True, 3, NOW + 3600, gate, n, 0)
            registry.record_status(sent, b"s%d" % n, NOW - n)
        expected = registry.fleet_summary(NOW, 90)
    db = sqlite3.connect(path)
    triggers = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    assert triggers, "the summary is kept by triggers"
    for trigger in triggers:
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute("DROP TABLE console_fleet")
    db.commit()
    db.close()
    with SqliteRegistry.open(path) as registry:
        assert registry.fleet_summary(NOW, 90) == expected
        sent = DeviceStatus("gw-003", NOW, True, 3, NOW + 3600, "open", 0, 0)
        registry.record_status(sent, b"s3", NOW)
        assert registry.fleet_summary(NOW, 90).states["open"].count == 2, "triggers again"


def _fleet_rows_rewritten(registry: SqliteRegistry) -> list[tuple[object, ...]]:
    """Every ``console_fleet`` row as the rewrite trigger computes it from its sources."""
    return registry._db.execute(f"{_FLEET_ROW} ORDER BY d.id").fetchall()


def test_a_registry_with_the_rewrite_triggers_of_status_and_last_seen_has_them_replaced(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hub.db"
    with SqliteRegistry.open(path):
        pass
    db = sqlite3.connect(path)
    for name in ("console_fleet_status_update", "console_fleet_activity_update"):
        db.execute(
            f"CREATE TRIGGER {name} AFTER UPDATE ON {name.split('_')[2]} BEGIN "
            "DELETE FROM console_fleet WHERE device = NEW.device; END"
        )
    db.commit()
    db.close()
    with SqliteRegistry.open(path) as registry:
        names = {
            row[0]
            for row in registry._db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
        assert "console_fleet_status_update" not in names
        assert "console_fleet_activity_update" not in names
        assert {"console_fleet_status_in_place", "console_fleet_activity_in_place"} <= names
        registry.add_device(
            DeviceRecord("gw-001", "eu-1", ("line-a",), "generic", PrivateKey.generate().public)
        )
        for at in (NOW, NOW + 30):
            sent = DeviceStatus("gw-001", at, True, 3, None, "open", 0, 0)
            registry.record_status(sent, b"s%d" % at, at)
        held = registry._db.execute("SELECT * FROM console_fleet").fetchall()
        assert held == _fleet_rows_rewritten(registry)


def _registry_from_before_tree_nodes(path: Path, size: int) -> list[bytes]:
    """A registry holding a log of ``size`` entries as one written before ``lineage_nodes``
    existed (entries and state, no nodes); return the entries."""
    with SqliteRegistry.open(path) as registry:
        entries = store_log(registry, size).entries
    db = sqlite3.connect(path)
    db.execute("DROP TABLE lineage_nodes")
    db.commit()
    db.close()
    return entries


@pytest.mark.parametrize("size", [63, 64, 65, 1100])
def test_a_registry_from_before_tree_nodes_is_backfilled_with_the_same_proofs(
    tmp_path: Path, size: int
) -> None:
    entries = _registry_from_before_tree_nodes(tmp_path / "hub.db", size)
    with SqliteRegistry.open(tmp_path / "hub.db") as registry:
        assert_same_proofs(registry.tree_nodes("gw-001"), reference_nodes(entries), size)
        stored = registry._db.execute("SELECT count(*) FROM lineage_nodes").fetchone()[0]
    levels = range(STORED_NODE_LEVEL, size.bit_length())
    assert stored == sum(size >> level for level in levels)


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE lineage_entries SET data = x'00' WHERE seq = 300",
        "DELETE FROM lineage_entries WHERE seq = 300",
        "DELETE FROM lineage_entries WHERE seq >= 1000",
    ],
    ids=["entry-changed", "entry-missing", "tail-missing"],
)
def test_a_registry_whose_entries_do_not_rebuild_its_tree_is_refused_not_backfilled(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "hub.db"
    _registry_from_before_tree_nodes(path, 1100)
    db = sqlite3.connect(path)
    db.execute(damage)
    db.commit()
    db.close()
    with pytest.raises(RegistryError, match="do not rebuild the tree"):
        SqliteRegistry.open(path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM lineage_nodes").fetchone()[0] == 0
    db.close()


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(RegistryError, match="schema 7"):
        SqliteRegistry.open(path)


def test_a_registry_of_schema_1_opens_upgraded_with_its_rows_and_the_schedule_lease(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hub.db"
    key = PrivateKey.generate().public
    db = sqlite3.connect(path)
    db.executescript(re.sub(r"CREATE TABLE IF NOT EXISTS schedule_lease \([^;]*\);", "", SCHEMA))
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("gw-001", "eu-1", "[]", "generic", key.raw, 1, NOW),
    )
    db.commit()
    db.close()
    with SqliteRegistry.open(path) as registry:
        assert [d.device_id for d in registry.devices()] == ["gw-001"]
        assert registry.claim_schedule_lease("hub-a", NOW, 5).token is not None
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()


def test_a_new_registry_whose_schema_fails_midway_is_left_without_any_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hub.db"
    broken = SCHEMA + "CREATE TABLE devices (device TEXT);\n"
    monkeypatch.setattr("hub.registry.sqlite.registry.SCHEMA", broken)
    with pytest.raises(RegistryError, match="cannot open the hub registry"):
        SqliteRegistry.open(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] == 0
    monkeypatch.undo()
    with SqliteRegistry.open(path) as opened:
        assert opened._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _with_rewrite_triggers_of_status_and_last_seen(path: Path) -> None:
    """Make the registry at ``path`` one from before the in-place summary updates: a status
    or last seen updated rewrites its device's ``console_fleet`` row."""
    db = sqlite3.connect(path)
    for table in ("status", "activity"):
        db.execute(f"DROP TRIGGER console_fleet_{table}_in_place")
        db.execute(
            f"CREATE TRIGGER console_fleet_{table}_update AFTER UPDATE ON {table} BEGIN "
            "DELETE FROM console_fleet WHERE device = NEW.device; "
            f"INSERT INTO console_fleet {_FLEET_ROW} WHERE d.id = NEW.device; END"
        )
    db.commit()
    db.close()


def test_a_status_another_process_records_while_the_summary_triggers_are_replaced_is_summarised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hub.db"
    with SqliteRegistry.open(path) as registry:
        registry.add_device(
            DeviceRecord("gw-001", "eu-1", ("line-a",), "generic", PrivateKey.generate().public)
        )
        registry.record_status(DeviceStatus("gw-001", NOW, True, 3, None, "open", 0, 0), b"s", NOW)
    _with_rewrite_triggers_of_status_and_last_seen(path)
    connect = sqlite3.connect
    writers: list[threading.Thread] = []

    def record_meanwhile() -> None:
        other = connect(path, isolation_level=None, timeout=30)
        other.execute("UPDATE status SET gate = 'revoked' WHERE device = 'gw-001'")
        other.close()

    def connect_and_meanwhile_record(*args: object, **kwargs: object) -> sqlite3.Connection:
        # A running hub (another process) records a status while this one opens the
        # registry, right before the in-place trigger of a status is created: it waits
        # (up to a second here) for the registry to let it write.
        opened = connect(*args, **kwargs)  # type: ignore[arg-type]

        def meanwhile(statement: str) -> None:
            if "TRIGGER IF NOT EXISTS console_fleet_status_in_place" in statement:
                writers.append(threading.Thread(target=record_meanwhile))
                writers[-1].start()
                writers[-1].join(timeout=1)

        opened.set_trace_callback(meanwhile)
        return opened

    monkeypatch.setattr(sqlite3, "connect", connect_and_meanwhile_record)
    with SqliteRegistry.open(path) as registry:
        registry._db.set_trace_callback(None)
        [writer] = writers
        writer.join(timeout=30)
        held = registry._db.execute("SELECT * FROM console_fleet").fetchall()
        assert held == _fleet_rows_rewritten(registry)
        assert held[0][5] == "revoked"

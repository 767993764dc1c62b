"""Hostile test of the dashboard summary beside the rewritten status path: the lineage
sizes devices report (any counter up to 2^53-1, signed by each device) summed per cell."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import DeviceStatus
from hub.registry import Registry
from hub.registry.postgres import PostgresRegistry
from hub.registry.records import DeviceRecord
from hub.registry.sqlite import SqliteRegistry
from tests.factory import NOW

MAX_COUNTER = 2**53 - 1
DEVICES = 1025
"""Enough devices claiming the largest lineage size for their lag to pass 2^63 - 1."""


def _fill(registry: Registry) -> None:
    with registry.write_group():
        for i in range(DEVICES):
            device = f"gw-{i:04d}"
            registry.add_device(
                DeviceRecord(device, "eu-1", (), "generic", PrivateKey.generate().public, 1, NOW)
            )
            status = DeviceStatus(device, NOW, True, 3, None, "open", MAX_COUNTER, 0)
            registry.record_status(status, b"s", NOW)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_devices_reporting_the_largest_lineage_size_leave_the_summary_readable(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        opened: Registry = SqliteRegistry.open(tmp_path / "hub.db")
    else:
        opened = PostgresRegistry.open(request.getfixturevalue("postgres_url"))
    with opened as registry:
        _fill(registry)
        registry.fleet_summary(NOW, 300)

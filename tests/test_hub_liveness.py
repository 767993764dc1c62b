"""Which verified statuses the registry keeps, and which of them count as hearing from the
device: a table of (held status, arriving status) against a real SQLite registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import DeviceStatus, sign_status
from hub.registry import DeviceRecord
from hub.registry.backends import open_registry
from tests.hub_support import hub_registry

KEY = PrivateKey.generate()
T = 1_800_000_000
RECEIVED = T + 2


def _status(at: int, online: bool = True, gate: str = "open") -> tuple[DeviceStatus, bytes]:
    status = DeviceStatus("gw-001", at, online, 1, None, gate, 0, 0)
    return status, sign_status(status, KEY)


@pytest.mark.parametrize(
    ("arriving", "kept", "last_seen"),
    [
        pytest.param(_status(T + 1), True, RECEIVED, id="newer-heartbeat"),
        pytest.param(_status(T + 1, online=False), True, RECEIVED, id="clean-stop"),
        pytest.param(_status(T - 30, online=False), False, T, id="stale-last-will"),
        pytest.param(_status(T - 30), False, T, id="replayed-older-status"),
        pytest.param(_status(T), False, T, id="same-status-again"),
        pytest.param(_status(T, gate="revoked"), True, T, id="same-second-trust-event"),
    ],
)
def test_a_status_is_kept_unless_older_and_only_a_later_one_counts_as_heard_from(
    tmp_path: Path, arriving: tuple[DeviceStatus, bytes], kept: bool, last_seen: int
) -> None:
    with open_registry(hub_registry(tmp_path)) as registry:
        registry.add_device(DeviceRecord("gw-001", "eu-1", (), "generic-x86_64", KEY.public))
        assert registry.record_status(*_status(T), T)
        assert registry.record_status(*arriving, RECEIVED) is kept
        row = registry.fleet()[0]
    assert row.last_seen == last_seen
    assert row.status_time == (arriving[0].time if kept else T)

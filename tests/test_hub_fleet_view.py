"""What ``edge-hub fleet`` shows of a device that has gone silent: stale, never the state
its last signed status claimed."""

from __future__ import annotations

import pytest

from hub.cli.fleet import STALE_AFTER_S, fleet_json, fleet_lines
from hub.registry import FleetRow

NOW = 1_800_000_000


def _row(online: bool | None, last_seen: int | None) -> FleetRow:
    return FleetRow(
        device_id="gw-001",
        region="eu-1",
        groups=("line-a",),
        online=online,
        bundle_version=1,
        expires_at=NOW + 3600,
        gate="open",
        status_time=last_seen,
        last_seen=last_seen,
        device_lineage_size=3,
        lineage_size=3,
        forks=0,
        rejections={},
    )


@pytest.mark.parametrize(
    ("online", "last_seen", "shown", "json_online", "stale"),
    [
        pytest.param(True, NOW - 10, "yes", True, False, id="heard-from-recently"),
        pytest.param(True, NOW - STALE_AFTER_S - 1, "stale", False, True, id="silent-online"),
        pytest.param(False, NOW - STALE_AFTER_S - 1, "no", False, True, id="silent-offline"),
        pytest.param(True, None, "stale", False, True, id="never-heard-fresh"),
        pytest.param(None, None, "-", None, True, id="no-status"),
    ],
)
def test_a_device_silent_for_several_heartbeats_is_shown_stale_not_as_its_last_state(
    online: bool | None, last_seen: int | None, shown: str, json_online: bool | None, stale: bool
) -> None:
    row = _row(online, last_seen)
    assert fleet_lines([row], {}, NOW)[1].split()[2] == shown
    (device,) = fleet_json([row], {}, NOW)["devices"]  # type: ignore[misc]
    assert (device["online"], device["reported_online"], device["stale"]) == (
        json_online,
        online,
        stale,
    )

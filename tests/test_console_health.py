"""The console's rules as pure functions: what state a device is shown in (stale/unknown
past the heartbeat window, never its last state), its timeline with gaps as unknown, the
bundle version it should run, the revocations that apply to it, its measurements."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge_agent.protocol.expectations import Expectations, ProfileExpectations
from hub.console.health import (
    NEVER_SEEN,
    OFFLINE,
    STALE,
    UNKNOWN,
    Segment,
    applying_revocations,
    device_state,
    fleet_health,
    measurement_rows,
    target_version,
    timeline,
)
from hub.registry import (
    AttestationRecord,
    ConsoleFleetRow,
    IssuedRevocation,
    PublishedBundle,
    StatusSpan,
)
from tests.factory import NOW

STALE_AFTER = 90
ROW = ConsoleFleetRow(
    "gw-001",
    "eu-1",
    ("line-a",),
    True,
    "revoked",
    3,
    NOW - 10,
    NOW - 10,
    5,
    5,
    0,
    "pass",
    NOW + 100,
    NOW - 20,
)


@pytest.mark.parametrize(
    ("changes", "state"),
    [
        ({}, "revoked"),
        ({"last_seen": NOW - STALE_AFTER}, "revoked"),
        ({"last_seen": NOW - STALE_AFTER - 1}, STALE),
        ({"last_seen": None, "gate": None, "online": None}, NEVER_SEEN),
        ({"online": False}, OFFLINE),
        ({"online": False, "last_seen": NOW - 3600}, STALE),
    ],
)
def test_a_device_is_shown_stale_past_the_heartbeat_window_never_its_last_state(
    changes: dict[str, object], state: str
) -> None:
    assert device_state(replace(ROW, **changes), NOW, STALE_AFTER) == state  # type: ignore[arg-type]


def test_the_timeline_draws_every_gap_as_unknown_and_never_stretches_a_state() -> None:
    spans = [
        StatusSpan(NOW - 1000, NOW - 900, True, "open", 3),
        StatusSpan(NOW - 850, NOW - 500, False, "open", 3),
        StatusSpan(NOW - 100, NOW - 10, True, "revoked", 4),
    ]
    assert timeline(spans, start=NOW - 1200, now=NOW, stale_after_s=STALE_AFTER) == [
        Segment(NOW - 1200, NOW - 1000, UNKNOWN),
        Segment(NOW - 1000, NOW - 850, "open", 3),
        Segment(NOW - 850, NOW - 410, OFFLINE, 3),
        Segment(NOW - 410, NOW - 100, UNKNOWN),
        Segment(NOW - 100, NOW, "revoked", 4),
    ]


def test_a_timeline_without_history_is_all_unknown_and_starts_at_its_window() -> None:
    assert timeline([], start=NOW - 60, now=NOW, stale_after_s=STALE_AFTER) == [
        Segment(NOW - 60, NOW, UNKNOWN)
    ]
    older = [StatusSpan(NOW - 500, NOW - 100, True, "open", 1)]
    assert timeline(older, start=NOW - 200, now=NOW, stale_after_s=STALE_AFTER) == [
        Segment(NOW - 200, NOW - 10, "open", 1),
        Segment(NOW - 10, NOW, UNKNOWN),
    ]


def _bundle(channel: str, version: int, region: str = "eu-1") -> PublishedBundle:
    return PublishedBundle(region, channel, version, b"d" * 32, b"b", NOW + 9, None, NOW)


@pytest.mark.parametrize(
    ("bundles", "target"),
    [
        ([], None),
        ([_bundle("all/_", 2)], 2),
        ([_bundle("all/_", 2), _bundle("group/line-a", 5)], 5),
        ([_bundle("group/line-b", 7), _bundle("device/gw-001", 4)], 4),
        ([_bundle("all/_", 9, region="us-2")], None),
    ],
)
def test_a_device_should_run_the_highest_version_on_a_channel_it_listens_on(
    bundles: list[PublishedBundle], target: int | None
) -> None:
    current = {(b.region, b.channel): b for b in bundles}
    assert target_version(ROW, current) == target


def test_the_rollout_counts_stale_devices_as_unknown_not_as_their_last_version() -> None:
    rows = [
        ROW,
        replace(ROW, device_id="gw-002", bundle_version=2),
        replace(ROW, device_id="gw-003", last_seen=NOW - 1000),
    ]
    health = fleet_health(
        rows, bundles=[_bundle("all/_", 3)], rejections=[], now=NOW, stale_after_s=STALE_AFTER
    )
    [group] = health.rollout
    assert (group.on_target.count, group.behind.count, group.unknown.count) == (1, 1, 1)
    assert group.running == {3: 1, 2: 1}
    assert health.gates["revoked"].count == 2 and health.gates[STALE].count == 1


def _revocation(kind: str, value: str, region: str = "eu-1") -> IssuedRevocation:
    return IssuedRevocation(region, 1, kind, value, "why", b"r", NOW)


def test_the_revocations_that_apply_to_a_device_are_its_own_groups_region_keys_and_bundle() -> None:
    revocations = [
        _revocation("device", "gw-001"),
        _revocation("device", "gw-002"),
        _revocation("group", "line-a"),
        _revocation("group", "line-b"),
        _revocation("region", "eu-1"),
        _revocation("region", "us-2", region="us-2"),
        _revocation("bundle", "3"),
        _revocation("bundle", "4"),
        _revocation("key", "ab" * 32),
    ]
    applying = applying_revocations(
        revocations, region="eu-1", device="gw-001", groups=("line-a",), bundle_version=3
    )
    assert [(r.kind, r.value) for r in applying] == [
        ("device", "gw-001"),
        ("group", "line-a"),
        ("region", "eu-1"),
        ("bundle", "3"),
        ("key", "ab" * 32),
    ]


def test_measurements_are_judged_one_by_one_against_the_profile_expectations() -> None:
    record = AttestationRecord(
        "gw-001",
        "fail",
        "d",
        b"m",
        b"n",
        NOW,
        NOW + 9,
        None,
        0,
        '{"kernel": "' + "aa" * 32 + '", "rootfs": "' + "bb" * 32 + '", "extra": "cc"}',
        b"r",
        NOW,
    )
    expectations = Expectations(
        {
            "generic": ProfileExpectations(
                {
                    "kernel": frozenset({bytes.fromhex("aa" * 32)}),
                    "rootfs": frozenset({bytes.fromhex("dd" * 32)}),
                    "boot": frozenset({bytes.fromhex("ee" * 32)}),
                },
                {},
            )
        }
    )
    rows = measurement_rows(record, expectations, "generic")
    assert [(r.name, r.verdict) for r in rows] == [
        ("boot", "not measured"),
        ("extra", "not expected"),
        ("kernel", "ok"),
        ("rootfs", "mismatch"),
    ]
    assert [r.verdict for r in measurement_rows(record, None, "generic")] == ["not expected"] * 3

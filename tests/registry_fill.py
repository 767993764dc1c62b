"""A registry holding something in every table, with real shipped lineage: what copying a
registry (:mod:`hub.registry.migrate`) is tested on."""

from __future__ import annotations

from edge_agent.protocol.attestation import Challenge
from edge_agent.protocol.shipping import DeviceStatus
from hub.registry import (
    AttestationRecord,
    ConsoleToken,
    DeviceRecord,
    IssuedDirectory,
    IssuedFreshness,
    IssuedRevocation,
    PublishedBundle,
    Registry,
    RejectionCount,
)
from hub.registry.records import ForkEvidence
from hub.registry.rollout_records import RolloutRecord, RolloutState
from tests.lineage_search_support import ship
from tests.lineage_sim import NOW, DeviceLogSim

__all__ = ["LOG_SIZES", "fill_registry"]

LOG_SIZES = {"gw-001": 130, "gw-002": 45, "gw-003": 7}
"""Each device's shipped log: sizes that span several stored tree-node levels and batches."""


def fill_registry(registry: Registry) -> dict[str, DeviceLogSim]:
    """Register three devices, ship each one's log in batches (a checkpoint each), and
    record a row in every other table; return the devices' logs."""
    logs = {}
    for number, (device, size) in enumerate(LOG_SIZES.items()):
        sim = DeviceLogSim(device)
        sim.add(size, time=NOW + number)
        registry.add_device(
            DeviceRecord(device, "eu-1", ("line-a",), "generic", sim.key.public, 1, NOW)
        )
        for start in range(0, size, 20):
            ship(registry, sim, start, min(start + 20, size))
        registry.record_status(
            DeviceStatus(device, NOW + 5, True, 3, NOW + 3600, "open", size, size), b"s", NOW
        )
        logs[device] = sim
    registry.record_bundle(
        bundle=PublishedBundle("eu-1", "all/_", 3, b"\x03" * 32, b"bundle 3", NOW + 9, 60, NOW),
        issued_at=NOW,
        target={},
        channels=["all/_", "device/gw-001"],
    )
    registry.record_revocation(IssuedRevocation("eu-1", 1, "bundle_version", "2", "bad", b"r", NOW))
    registry.record_freshness([IssuedFreshness("eu-1", "all/_", b"token", NOW, NOW + 60, 1)])
    registry.record_directory(IssuedDirectory("eu-1", 1, b"\x01" * 32, b"signed", NOW, NOW + 60))
    registry.record_fork(ForkEvidence("gw-002", "fork", None, "note", b"batch"), NOW)
    registry.record_challenge(Challenge("gw-001", b"n" * 16, NOW, NOW + 60))
    registry.record_attestation(
        AttestationRecord(
            "gw-001", "trusted", "ok", b"m" * 32, b"n" * 16, NOW, NOW + 60, None, 5, "{}", b"r", NOW
        )
    )
    registry.set_tpm_ak("gw-001", b"ak", NOW)
    registry.add_rejections([RejectionCount("gw-003", "gap", 2, "lost a batch")], NOW)
    action = registry.begin_action(
        at=NOW, operator="alice", action="register", target="gw-001", reason="new line"
    )
    registry.finish_action(action, outcome="done", detail="", at=NOW + 1)
    registry.add_console_token(ConsoleToken("alice", "operator", b"a" * 32, NOW))
    registry.create_rollout(
        RolloutRecord(
            rollout_id="eu-1-v3",
            region="eu-1",
            state=RolloutState.RUNNING,
            created_at=NOW,
            updated_at=NOW,
            candidate=b"candidate",
            candidate_version=3,
            candidate_digest=b"\x03" * 32,
            rollback=b"rollback",
            channels=("group/line-a",),
            devices=tuple(LOG_SIZES),
            stages=("10", "100"),
            soak_s=60,
            halts=(),
            groups=("line-a",),
        )
    )
    return logs

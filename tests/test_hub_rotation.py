"""The running hub after ``edge-hub root rotate``: what it judges evidence under.

The service's parts are wired to a real hub directory and registry as ``edge-hub serve``
wires them, without a broker: the schedule's round re-reads the keys directory, the evidence
handler judges, and what it would publish is read from the outbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.protocol.attestation import (
    NONCE_BYTES,
    AttestationResult,
    Challenge,
    Evidence,
    LineageHead,
    sign_evidence,
    verify_result,
)
from edge_agent.protocol.roles import Role
from edge_agent.protocol.topics import DeviceLeaf
from hub.cli.fabric import prepare_push
from hub.cli.operations import rotate_root
from hub.core.attestation_judging import read_evidence
from hub.hubdir.layout import HubDir
from hub.registry import Registry
from hub.service.config import HubConfig, HubStats
from hub.service.connection import Subscriptions
from hub.service.context import ServiceContext
from hub.service.evidence import EvidenceHandler
from hub.service.lease import ScheduleLease, lease_timing
from hub.service.schedule import Schedule
from tests.hub_support import HubSetup, make_bundle, make_hub_dir

DEVICE = "gw-001"


@dataclass
class RunningHub:
    """The parts of a started hub, on ``setup``'s directory."""

    setup: HubSetup
    registry: Registry
    context: ServiceContext
    schedule: Schedule
    evidence: EvidenceHandler

    def round(self) -> None:
        """One round of the schedule, not connected (the bookkeeping only)."""
        asyncio.run(self.schedule.tick(None))

    def attest(self, bundle: bytes) -> AttestationResult:
        """A nonce issued to the device, answered with evidence naming ``bundle``: the result
        the hub would publish."""
        context, device = self.context, self.context.devices.cached(DEVICE)
        assert device is not None
        now = _now()
        nonce = os.urandom(NONCE_BYTES)
        self.registry.record_challenge(Challenge(DEVICE, nonce, now, now + 60))
        digest = hashlib.sha256(bundle).digest()
        answer = Evidence(DEVICE, nonce, now, digest, {}, LineageHead(0, b"\0" * 32))
        signed = sign_evidence(answer, self.setup.devices[DEVICE].key)
        context.outbox.clear()
        self.evidence.handle(device, read_evidence(signed, device))
        (published,) = context.outbox.values()
        assert published.topic.endswith(f"/{DEVICE}/{DeviceLeaf.ATTESTATION}")
        return verify_result(published.payload, root=context.current_root, device=DEVICE)


def _now() -> int:
    return int(time.time())


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    setup = make_hub_dir(tmp_path / "hub")
    hub_dir = HubDir(setup.path, setup.url)
    config = HubConfig(setup.path, registry=setup.url)
    with hub_dir.open_registry() as registry:
        keys = hub_dir.load_keys()
        context = ServiceContext.start(config, hub_dir, registry, keys, HubStats(), None)
        lease = ScheduleLease(registry, "hub-test", lease_timing(config.freshness_interval_s))
        schedule = Schedule(context, Subscriptions(registry, context.db, context.stats), lease)
        try:
            yield RunningHub(setup, registry, context, schedule, EvidenceHandler(context))
        finally:
            context.db.close()


def _push(hub: RunningHub, version: int) -> bytes:
    data = make_bundle(hub.setup.keys, version)
    prepare_push(HubDir(hub.setup.path, hub.setup.url), data, now=_now())
    return data


def test_evidence_naming_a_bundle_signed_by_a_rotated_in_policy_key_passes_without_restart(
    hub: RunningHub,
) -> None:
    before = _push(hub, 1)
    assert hub.attest(before).passed
    rotate_root(hub.setup.keys, rotate=[Role.POLICY], now=_now(), ttl=86400)
    after = _push(hub, 2)
    hub.round()
    assert hub.context.current_root.version == 2
    result = hub.attest(after)
    assert result.passed, result.detail
    assert not hub.attest(before).passed

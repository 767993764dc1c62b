"""The signed device directory the hub issues: a new version exactly when the region's
devices change or the current one nears expiry, versions only going up (recorded in the
registry before they are published, across restarts and processes), published retained on
``edgegov/v1/<region>/trust/directory`` by the running hub."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from edge_agent.protocol import topics
from edge_agent.protocol.directory import Directory, verify_directory
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.roles import Role
from hub.cli.main import main as hub_main
from hub.core.directory import (
    PlannedDirectory,
    directory_devices,
    issue_directory,
    next_directory,
)
from hub.hubdir.keys import load_role_keys
from hub.registry import DeviceRecord, IssuedDirectory, Registry
from hub.registry.backends import open_registry
from hub.service.publish import issue_directories
from hub.service.server import HubService
from tests.brokers import amqtt_broker
from tests.hub_support import HubSetup, edit_registry, hub_config, make_hub_dir, watching

NOW = 1_800_000_000
TTL = 1000
KEY_A, KEY_B, KEY_C = (PrivateKey(bytes([n]) * 32) for n in (1, 2, 3))
DEVICES = (
    DeviceRecord("gw-a", "eu-1", ("cameras",), "generic-x86_64", KEY_A.public),
    DeviceRecord("gw-b", "eu-1", ("plcs",), "generic-x86_64", KEY_B.public),
    DeviceRecord("gw-z", "us-2", (), "generic-x86_64", KEY_C.public),
)
SIGNER = PrivateKey(bytes([9]) * 32)


def _held(devices: tuple[DeviceRecord, ...] = DEVICES, *, at: int = NOW) -> IssuedDirectory:
    planned = next_directory(None, devices, region="eu-1", now=at, ttl_s=TTL)
    assert planned is not None
    return replace(issue_directory(planned, SIGNER), version=4)


@dataclass(frozen=True)
class Due:
    name: str
    held: Callable[[], IssuedDirectory | None]
    devices: tuple[DeviceRecord, ...]
    now: int
    version: int | None
    """The version issued, ``None`` when the held one stays."""


DUE = [
    Due("none issued yet", lambda: None, DEVICES, NOW, 1),
    Due("the same devices, fresh", _held, DEVICES, NOW + 10, None),
    Due("the same devices, half its validity left", _held, DEVICES, NOW + TTL // 2, None),
    Due("the same devices, under half left", _held, DEVICES, NOW + TTL // 2 + 1, 5),
    Due("the same devices, expired", _held, DEVICES, NOW + TTL + 5, 5),
    Due(
        "a device added",
        _held,
        (*DEVICES, DeviceRecord("gw-c", "eu-1", (), "p", PrivateKey.generate().public)),
        NOW + 10,
        5,
    ),
    Due("a device removed", _held, DEVICES[1:], NOW + 10, 5),
    Due(
        "a device re-keyed (new key, next epoch)",
        _held,
        (replace(DEVICES[0], public_key=KEY_C.public, key_epoch=2), *DEVICES[1:]),
        NOW + 10,
        5,
    ),
    Due(
        "a device's groups changed",
        _held,
        (replace(DEVICES[0], groups=("cameras", "line-a")), *DEVICES[1:]),
        NOW + 10,
        5,
    ),
    Due(
        "a device of another region added",
        _held,
        (*DEVICES, DeviceRecord("gw-y", "us-2", (), "p", PrivateKey.generate().public)),
        NOW + 10,
        None,
    ),
]


@pytest.mark.parametrize("case", DUE, ids=lambda c: c.name)
def test_a_new_directory_version_is_due_exactly_when_devices_change_or_it_nears_expiry(
    case: Due,
) -> None:
    planned = next_directory(case.held(), case.devices, region="eu-1", now=case.now, ttl_s=TTL)
    if case.version is None:
        assert planned is None
        return
    assert isinstance(planned, PlannedDirectory)
    assert planned.version == case.version
    assert (planned.issued_at, planned.expires_at) == (case.now, case.now + TTL)
    assert planned.devices == directory_devices(case.devices, "eu-1")


def test_the_issued_directory_verifies_under_the_verifier_role_and_lists_the_region_sorted(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub", (("gw-2", "line-b"), ("gw-1", "line-a")))
    directory = _issue(setup, now=NOW)
    assert directory.version == 1 and directory.region == "eu-1"
    assert list(directory.devices) == ["gw-1", "gw-2"]
    listed = directory.devices["gw-1"]
    assert listed.key == setup.devices["gw-1"].key.public
    assert (listed.epoch, listed.groups) == (1, ("line-a",))


def test_versions_only_go_up_across_a_restart_and_only_when_devices_change(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub")
    assert _issue(setup, now=NOW).version == 1
    assert _issue(setup, now=NOW + 5).version == 1
    with open_registry(setup.registry) as registry:
        registry.add_device(
            DeviceRecord("gw-003", "eu-1", ("line-a",), "p", PrivateKey.generate().public)
        )
    added = _issue(setup, now=NOW + 6)
    assert added.version == 2 and "gw-003" in added.devices
    edit_registry(setup.registry, "DELETE FROM devices WHERE id = 'gw-003'")
    removed = _issue(setup, now=NOW + 7)
    assert removed.version == 3 and "gw-003" not in removed.devices
    assert _issue(setup, now=NOW + 8).version == 3


def test_a_version_another_process_recorded_first_is_never_recorded_again(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub")
    with (
        open_registry(setup.registry) as first,
        open_registry(setup.registry) as second,
    ):
        planned = next_directory(None, first.devices(), region="eu-1", now=NOW, ttl_s=TTL)
        assert planned is not None
        mine = issue_directory(planned, SIGNER)
        theirs = issue_directory(replace(planned, issued_at=NOW + 1), SIGNER)
        assert first.record_directory(mine)
        assert not second.record_directory(theirs)
        assert not second.record_directory(replace(theirs, version=0))
        assert second.directory("eu-1") == mine


class _Racing:
    """A registry whose first directory read is stale: another process recorded a version
    meanwhile, so this process's compare-and-set fails and it plans again."""

    def __init__(self, registry: Registry, stale: IssuedDirectory | None) -> None:
        self._registry = registry
        self._stale: list[IssuedDirectory | None] = [stale]

    def directory(self, region: str) -> IssuedDirectory | None:
        if self._stale:
            return self._stale.pop()
        return self._registry.directory(region)

    def __getattr__(self, name: str) -> object:
        return getattr(self._registry, name)


def test_a_process_that_loses_the_race_publishes_the_winners_version_not_its_own(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub")
    key = _verifier(setup)
    with open_registry(setup.registry) as registry:
        issue_directories(registry, key=key, now=NOW, ttl_s=TTL)
        winner = registry.directory("eu-1")
        assert winner is not None
        racing = _Racing(registry, None)
        publications = issue_directories(racing, key=key, now=NOW + 1, ttl_s=TTL)  # type: ignore[arg-type]
        assert registry.directory("eu-1") == winner
    assert [p.payload for p in publications] == [winner.data]
    assert publications[0].topic == topics.directory_topic("eu-1") and publications[0].retain


def test_edge_hub_device_add_issues_the_next_directory_version(tmp_path: Path) -> None:
    setup = make_hub_dir(tmp_path / "hub")
    assert _issue(setup, now=int(time.time())).version == 1
    pem = tmp_path / "gw-009.pub"
    pem.write_text(PrivateKey.generate().public.to_pem())
    args = [
        "device",
        "add",
        "gw-009",
        "--region",
        "eu-1",
        "--group",
        "line-a",
        "--profile",
        "generic-x86_64",
    ]
    assert hub_main([*args, "--pubkey", str(pem), "--hub-dir", str(setup.path)]) == 0
    with open_registry(setup.registry) as registry:
        held = registry.directory("eu-1")
    assert held is not None and held.version == 2
    directory = verify_directory(held.data, root=setup.root, region="eu-1")
    assert "gw-009" in directory.devices


@pytest.mark.asyncio
async def test_the_running_hub_publishes_the_directory_retained_and_a_new_version_on_changes(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub")
    topic = topics.directory_topic("eu-1")
    async with amqtt_broker() as broker:
        config = hub_config(setup, broker, freshness_interval_s=0.2, token_ttl_s=5)
        async with HubService(config) as hub:
            await hub.wait_ready()
            async with watching(broker.settings, [topic], "late-device") as device:
                first = _verified(setup, (await device.next(topic)).payload)
                with open_registry(setup.registry) as registry:
                    registry.add_device(
                        DeviceRecord("gw-003", "eu-1", (), "p", PrivateKey.generate().public)
                    )
                second = _verified(setup, (await device.next(topic)).payload)
        async with watching(broker.settings, [topic], "after-the-hub") as late:
            retained = await late.next(topic)
    assert (first.version, second.version) == (1, 2)
    assert "gw-003" in second.devices and "gw-003" not in first.devices
    assert retained.retain and _verified(setup, retained.payload).version == 2


@pytest.mark.asyncio
async def test_the_running_hub_issues_the_next_version_before_the_directory_expires(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub")
    now = int(time.time())
    with open_registry(setup.registry) as registry:
        planned = next_directory(None, registry.devices(), region="eu-1", now=now, ttl_s=600)
        assert planned is not None
        aging = issue_directory(replace(planned, issued_at=now - 590), _verifier(setup))
        assert registry.record_directory(replace(aging, expires_at=now + 10))
    topic = topics.directory_topic("eu-1")
    async with amqtt_broker() as broker:
        config = hub_config(setup, broker, token_ttl_s=5, directory_ttl_s=600)
        async with HubService(config) as hub:
            await hub.wait_ready()
            async with watching(broker.settings, [topic], "device") as device:
                renewed = _verified(setup, (await device.next(topic)).payload)
    assert renewed.version == 2
    assert renewed.expires_at >= now + 600
    assert list(renewed.devices) == ["gw-001", "gw-002"]


def _verifier(setup: HubSetup) -> PrivateKey:
    return load_role_keys(setup.keys, Role.VERIFIER, setup.root)[0]


def _issue(setup: HubSetup, *, now: int) -> Directory:
    with open_registry(setup.registry) as registry:
        publications = issue_directories(registry, key=_verifier(setup), now=now, ttl_s=TTL)
    assert [p.topic for p in publications] == [topics.directory_topic("eu-1")]
    return verify_directory(publications[0].payload, root=setup.root, region="eu-1")


def _verified(setup: HubSetup, payload: bytes) -> Directory:
    return verify_directory(payload, root=setup.root, region="eu-1")

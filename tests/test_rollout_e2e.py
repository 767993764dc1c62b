"""Staged rollouts on a real fleet: a hub service and four real agent daemons over MQTT
(the embedded amqtt broker, and Mosquitto), driven through ``edge-hub rollout``.

- A candidate that denies what the fleet does goes out to its first stage only; the stage's
  devices ship their denials, ``deny_rate>+2%`` holds, and the hub halts by itself: it
  publishes the pre-signed rollback (the previous policy as version candidate + 1) to the
  stage's devices, which install it and allow again; status says why. Devices outside the
  stage never leave the previous bundle.
- A second rollout, of a harmless candidate, completes every stage: the candidate ends up
  current on its real channel, every device runs it, the device channels are cleared.
- A hub restarted in the middle of a stage resumes the rollout where it was: the stage is
  not entered again, and its soak clock goes on from when it began.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.sync.daemon import AgentDaemon
from edge_agent.trust.gate import Reason
from hub.cli.operations import build_bundle, rotate_root
from hub.core.rollout import stage_members
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root
from hub.registry.backends import open_registry
from hub.registry.rollout_records import RolloutRecord, RolloutState
from hub.service.server import HubService
from tests.agent_fleet import AgentFleet, agent_fleet
from tests.brokers import amqtt_broker, mosquitto_broker
from tests.hub_support import HubSetup, hub_config, make_hub_dir, run_cli, wait_for

pytestmark = pytest.mark.asyncio

DEVICES = ("gw-001", "gw-002", "gw-003", "gw-004")
CAMERA = Request("svc:camera", "exec", "/opt/camera/bin/capture")
WAIT_S = 30.0
ALLOW = """\
target: {region: eu-1, groups: [line-a], profiles: [generic-x86_64]}
ttl: 24h
rules:
  - id: camera-exec
    effect: allow
    subjects: [svc:camera]
    actions: [exec]
    resources: ["/opt/camera/bin/*"]
"""
DENY_CAMERA = (
    ALLOW
    + """\
  - id: camera-freeze
    effect: deny
    subjects: [svc:camera]
    actions: [exec]
    resources: ["/opt/camera/bin/*"]
"""
)
ALLOW_MORE = (
    ALLOW
    + """\
  - id: logs-read
    effect: allow
    subjects: [svc:logger]
    actions: [read]
    resources: ["/var/log/**"]
"""
)


def _bundle(setup: HubSetup, path: Path, version: int, policy: str) -> Path:
    root = load_root(setup.keys / ROOT_FILE)
    data, _ = build_bundle(
        load_policy_source(policy),
        root=root,
        signers=load_role_keys(setup.keys, Role.POLICY, root),
        version=version,
        ttl=None,
        now=int(time.time()),
    )
    path.write_bytes(data)
    return path


def _version(daemon: AgentDaemon) -> int | None:
    bundle = daemon.agent.state.bundle
    return None if bundle is None else bundle.version


def _shadow(daemon: AgentDaemon) -> int | None:
    shadow = daemon.agent.shadow
    return None if shadow is None else shadow.version


def _rollout(setup: HubSetup, rollout_id: str) -> RolloutRecord:
    with open_registry(setup.registry) as registry:
        record = registry.rollout(rollout_id)
    assert record is not None
    return record


def _shipped(daemon: AgentDaemon) -> bool:
    lineage = daemon.agent.lineage
    assert lineage is not None
    return lineage.acknowledged == lineage.size


async def _decide(fleet: AgentFleet, devices: tuple[str, ...], times: int) -> list[Reason]:
    """``times`` camera decisions on each of ``devices``, shipped and acknowledged."""
    reasons = []
    for device_id in devices:
        daemon = fleet.daemons[device_id]
        reasons += [daemon.agent.decide(CAMERA, int(time.time())).reason for _ in range(times)]
    for device_id in devices:
        await wait_for(lambda d=fleet.daemons[device_id]: _shipped(d), WAIT_S)
    return reasons


async def _status(setup: HubSetup, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert await run_cli("rollout", "status", *args, "--hub-dir", str(setup.path)) == 0
    return capsys.readouterr().out


@contextlib.asynccontextmanager
async def _fleet_on(
    tmp_path: Path, setup: HubSetup, broker: object, settings: BrokerSettings
) -> AsyncIterator[tuple[HubService, AgentFleet]]:
    """The hub (rollout rounds every 0.2 s) and four agents of line-a running bundle v1."""
    config = hub_config(setup, broker, rollout_interval_s=0.2)
    async with (
        HubService(config) as hub,
        agent_fleet(tmp_path, setup.root.raw, settings, setup.registry) as fleet,
    ):
        await hub.wait_ready()
        for device_id in DEVICES:
            fleet.add(device_id)
        await hub.tick()
        v1 = _bundle(setup, tmp_path / "v1.cbor", 1, ALLOW)
        assert await run_cli("bundle", "push", str(v1), "--hub-dir", str(setup.path)) == 0
        for daemon in fleet.daemons.values():
            await wait_for(lambda d=daemon: _version(d) == 1, WAIT_S)
        yield hub, fleet


async def _halts_and_rolls_back(
    tmp_path: Path, setup: HubSetup, fleet: AgentFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    assert set(await _decide(fleet, DEVICES, 5)) == {Reason.ALLOWED}
    candidate = _bundle(setup, tmp_path / "v2.cbor", 2, DENY_CAMERA)
    started = await run_cli(
        "rollout", "start", str(candidate), "--stages", "50%,100%", "--soak", "1h",
        "--halt-if", "deny_rate>+2%", "--hub-dir", str(setup.path),
    )  # fmt: skip
    assert started == 0
    record = _rollout(setup, "eu-1-v2")
    stage = stage_members(record, 0)
    outside = tuple(d for d in DEVICES if d not in stage)
    assert stage and outside
    for device_id in stage:
        await wait_for(lambda d=fleet.daemons[device_id]: _version(d) == 2, WAIT_S)
    for device_id in outside:
        await wait_for(lambda d=fleet.daemons[device_id]: _shadow(d) == 2, WAIT_S)
    assert {_version(fleet.daemons[d]) for d in outside} == {1}

    assert set(await _decide(fleet, stage, 5)) == {Reason.POLICY_DENIED}
    await wait_for(lambda: _rollout(setup, "eu-1-v2").state is RolloutState.HALTED, WAIT_S)
    for device_id in stage:
        await wait_for(lambda d=fleet.daemons[device_id]: _version(d) == 3, WAIT_S)
    assert set(await _decide(fleet, stage, 1)) == {Reason.ALLOWED}
    for device_id in outside:
        await wait_for(lambda d=fleet.daemons[device_id]: _shadow(d) is None, WAIT_S)
    assert {_version(fleet.daemons[d]) for d in outside} == {1}

    status = json.loads(await _status(setup, capsys, "eu-1-v2", "--json"))["rollouts"][0]
    assert status["state"] == "halted"
    assert status["reason"].startswith("deny_rate>+2% held: deny_rate = 100.00%, baseline 0.00%")
    first = status["stages"][0]
    assert (first["outcome"], first["devices"]) == ("halted", list(stage))
    assert status["stages"][1]["outcome"] == "not started"
    text = await _status(setup, capsys, "eu-1-v2")
    assert "eu-1-v2: halted: deny_rate>+2% held" in text and "rollback v3" in text


async def _completes(
    tmp_path: Path, setup: HubSetup, fleet: AgentFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = _bundle(setup, tmp_path / "v4.cbor", 4, ALLOW_MORE)
    started = await run_cli(
        "rollout", "start", str(candidate), "--stages", "50%,100%", "--soak", "1s",
        "--halt-if", "deny_rate>+2%", "--halt-if", "install_failures>0",
        "--hub-dir", str(setup.path),
    )  # fmt: skip
    assert started == 0
    await wait_for(lambda: _rollout(setup, "eu-1-v4").state is RolloutState.COMPLETED, WAIT_S)
    for daemon in fleet.daemons.values():
        await wait_for(lambda d=daemon: _version(d) == 4, WAIT_S)
    with open_registry(setup.registry) as registry:
        current = {b.channel: b.version for b in registry.current_bundles("eu-1")}
    assert current == {"group/line-a": 4}
    status = json.loads(await _status(setup, capsys, "--json"))["rollouts"]
    assert [(r["id"], r["state"]) for r in status] == [
        ("eu-1-v2", "halted"),
        ("eu-1-v4", "completed"),
    ]
    assert [s["outcome"] for s in status[1]["stages"]] == ["soaked", "soaked"]


async def test_a_denying_stage_halts_and_rolls_back_then_a_good_rollout_completes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    async with (
        amqtt_broker() as broker,
        _fleet_on(tmp_path, setup, broker, broker.settings) as (
            _,
            fleet,
        ),
    ):
        await _halts_and_rolls_back(tmp_path, setup, fleet, capsys)
        await _completes(tmp_path, setup, fleet, capsys)


async def test_a_stage_halts_and_rolls_back_on_mosquitto(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    async with (
        mosquitto_broker() as broker,
        _fleet_on(tmp_path, setup, broker, broker.settings) as (_, fleet),
    ):
        await _halts_and_rolls_back(tmp_path, setup, fleet, capsys)


async def test_divergences_of_devices_holding_the_candidate_as_a_shadow_halt_a_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    async with (
        amqtt_broker() as broker,
        _fleet_on(tmp_path, setup, broker, broker.settings) as (
            _,
            fleet,
        ),
    ):
        assert set(await _decide(fleet, DEVICES, 2)) == {Reason.ALLOWED}
        candidate = _bundle(setup, tmp_path / "v2.cbor", 2, DENY_CAMERA)
        args = ("--stages", "50%,100%", "--soak", "1h", "--halt-if", "deny_rate>+2%")
        assert (
            await run_cli("rollout", "start", str(candidate), *args, "--hub-dir", str(setup.path))
            == 0
        )
        record = _rollout(setup, "eu-1-v2")
        outside = tuple(d for d in DEVICES if d not in stage_members(record, 0))
        for device_id in outside:
            await wait_for(lambda d=fleet.daemons[device_id]: _shadow(d) == 2, WAIT_S)
        began = _rollout(setup, "eu-1-v2").stage_started_at
        await wait_for(lambda: int(time.time()) > began, WAIT_S)

        assert set(await _decide(fleet, outside, 3)) == {Reason.ALLOWED}
        await wait_for(lambda: _rollout(setup, "eu-1-v2").state is RolloutState.HALTED, WAIT_S)
        assert _rollout(setup, "eu-1-v2").reason.startswith(
            "deny_rate>+2% held: deny_rate = 100.00%"
        )
        for device_id in outside:
            await wait_for(lambda d=fleet.daemons[device_id]: _shadow(d) is None, WAIT_S)
        assert {_version(fleet.daemons[d]) for d in outside} == {1}


async def test_an_abort_rolls_the_switched_devices_back_and_clears_the_shadows(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    async with (
        amqtt_broker() as broker,
        _fleet_on(tmp_path, setup, broker, broker.settings) as (
            _,
            fleet,
        ),
    ):
        candidate = _bundle(setup, tmp_path / "v2.cbor", 2, ALLOW_MORE)
        args = ("--stages", "50%,100%", "--soak", "1h", "--hub-dir", str(setup.path))
        assert await run_cli("rollout", "start", str(candidate), *args) == 0
        record = _rollout(setup, "eu-1-v2")
        stage = stage_members(record, 0)
        outside = tuple(d for d in DEVICES if d not in stage)
        for device_id in stage:
            await wait_for(lambda d=fleet.daemons[device_id]: _version(d) == 2, WAIT_S)
        for device_id in outside:
            await wait_for(lambda d=fleet.daemons[device_id]: _shadow(d) == 2, WAIT_S)

        hub_dir = ("--hub-dir", str(setup.path))
        assert (
            await run_cli("rollout", "abort", "eu-1-v2", "--reason", "wrong build", *hub_dir) == 0
        )
        await wait_for(lambda: _rollout(setup, "eu-1-v2").state is RolloutState.ABORTED, WAIT_S)
        for device_id in stage:
            await wait_for(lambda d=fleet.daemons[device_id]: _version(d) == 3, WAIT_S)
        for device_id in outside:
            await wait_for(lambda d=fleet.daemons[device_id]: _shadow(d) is None, WAIT_S)
        assert {_version(fleet.daemons[d]) for d in outside} == {1}
        assert _rollout(setup, "eu-1-v2").reason == "wrong build"


async def test_a_hub_restarted_mid_stage_resumes_the_rollout_where_it_was(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    async with amqtt_broker() as broker:
        async with (
            HubService(hub_config(setup, broker, rollout_interval_s=0.2)) as hub,
            agent_fleet(tmp_path, setup.root.raw, broker.settings, setup.registry) as fleet,
        ):
            await hub.wait_ready()
            for device_id in DEVICES:
                fleet.add(device_id)
            await hub.tick()
            v1 = _bundle(setup, tmp_path / "v1.cbor", 1, ALLOW)
            assert await run_cli("bundle", "push", str(v1), "--hub-dir", str(setup.path)) == 0
            candidate = _bundle(setup, tmp_path / "v2.cbor", 2, ALLOW_MORE)
            args = ("--stages", "50%,100%", "--soak", "4s", "--hub-dir", str(setup.path))
            assert await run_cli("rollout", "start", str(candidate), *args) == 0
            await wait_for(lambda: _rollout(setup, "eu-1-v2").entered == 0, WAIT_S)
            entered = _rollout(setup, "eu-1-v2")
            for device_id in stage_members(entered, 0):
                await wait_for(lambda d=fleet.daemons[device_id]: _version(d) == 2, WAIT_S)

        assert _rollout(setup, "eu-1-v2") == entered
        async with (
            HubService(hub_config(setup, broker, rollout_interval_s=0.2)) as hub,
            agent_fleet(tmp_path, setup.root.raw, broker.settings) as fleet,
        ):
            await hub.wait_ready()
            for device_id in DEVICES:
                fleet.start(device_id)
            await wait_for(_completed(setup), WAIT_S)
            for daemon in fleet.daemons.values():
                await wait_for(lambda d=daemon: _version(d) == 2, WAIT_S)
    done = _rollout(setup, "eu-1-v2")
    first = done.history[0]
    assert (first.stage, first.started_at) == (0, entered.stage_started_at)
    assert first.ended_at is not None and first.ended_at >= entered.stage_started_at + 4
    assert [log.stage for log in done.history] == [0, 1]


def _completed(setup: HubSetup) -> Callable[[], bool]:
    return lambda: _rollout(setup, "eu-1-v2").state is RolloutState.COMPLETED


async def test_a_rollout_narrowed_by_group_never_reaches_the_devices_it_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=(("gw-001", "line-a"), ("gw-003", "line-b")))
    both = ALLOW.replace("groups: [line-a]", "groups: [line-a, line-b]")
    hub_dir = ("--hub-dir", str(setup.path))
    async with (
        amqtt_broker() as broker,
        HubService(hub_config(setup, broker, rollout_interval_s=0.2)) as hub,
    ):
        await hub.wait_ready()
        v1 = _bundle(setup, tmp_path / "v1.cbor", 1, both)
        assert await run_cli("bundle", "push", str(v1), *hub_dir) == 0
        candidate = _bundle(setup, tmp_path / "v2.cbor", 2, both + ALLOW_MORE[len(ALLOW) :])
        capsys.readouterr()
        args = ("--group", "line-a", "--stages", "100%", "--soak", "1s", *hub_dir)
        assert await run_cli("rollout", "start", str(candidate), *args) == 0
        assert "completion leaves it its devices' own channels" in capsys.readouterr().out
        await wait_for(_completed(setup), WAIT_S)
    with open_registry(setup.registry) as registry:
        current = {b.channel: b.version for b in registry.current_bundles("eu-1")}
    assert current == {"group/line-a": 1, "group/line-b": 1, "device/gw-001": 2}
    assert "on its devices' own channels (narrowed by --group)" in await _status(
        setup, capsys, "eu-1-v2"
    )


async def test_a_rollout_whose_candidate_is_revoked_halts_and_rolls_back(tmp_path: Path) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=[(d, "line-a") for d in DEVICES])
    hub_dir = ("--hub-dir", str(setup.path))
    async with (
        amqtt_broker() as broker,
        HubService(hub_config(setup, broker, rollout_interval_s=0.2)) as hub,
    ):
        await hub.wait_ready()
        v1 = _bundle(setup, tmp_path / "v1.cbor", 1, ALLOW)
        assert await run_cli("bundle", "push", str(v1), *hub_dir) == 0
        candidate = _bundle(setup, tmp_path / "v2.cbor", 2, ALLOW_MORE)
        args = ("--stages", "50%,100%", "--soak", "1h", *hub_dir)
        assert await run_cli("rollout", "start", str(candidate), *args) == 0
        await wait_for(lambda: _rollout(setup, "eu-1-v2").entered == 0, WAIT_S)
        revoke = ("revoke", "--bundle", "2", "--force", "--yes", "--reason", "bad build")
        assert await run_cli(*revoke, *hub_dir) == 0
        await wait_for(lambda: _rollout(setup, "eu-1-v2").state is not RolloutState.RUNNING, WAIT_S)
    record = _rollout(setup, "eu-1-v2")
    assert record.state is RolloutState.HALTED
    assert record.reason.startswith("revocation epoch 1 (bundle 2) voids the candidate")
    with open_registry(setup.registry) as registry:
        current = {b.channel: b.version for b in registry.current_bundles("eu-1")}
    switched = {f"device/{d}": 3 for d in stage_members(record, 0)}
    assert current == {"group/line-a": 1, **switched}


async def test_a_rollout_whose_candidate_expires_halts_even_while_paused(tmp_path: Path) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=[(d, "line-a") for d in DEVICES])
    hub_dir = ("--hub-dir", str(setup.path))
    async with (
        amqtt_broker() as broker,
        HubService(hub_config(setup, broker, rollout_interval_s=0.2)) as hub,
    ):
        await hub.wait_ready()
        v1 = _bundle(setup, tmp_path / "v1.cbor", 1, ALLOW)
        assert await run_cli("bundle", "push", str(v1), *hub_dir) == 0
        brief = ALLOW_MORE.replace("ttl: 24h", "ttl: 20s")
        candidate = _bundle(setup, tmp_path / "v2.cbor", 2, brief)
        args = ("--stages", "50%,100%", "--soak", "8s", *hub_dir)
        assert await run_cli("rollout", "start", str(candidate), *args) == 0
        await wait_for(lambda: _rollout(setup, "eu-1-v2").entered == 0, WAIT_S)
        assert await run_cli("rollout", "pause", "eu-1-v2", *hub_dir) == 0
        await wait_for(lambda: _rollout(setup, "eu-1-v2").state is not RolloutState.PAUSED, WAIT_S)
    record = _rollout(setup, "eu-1-v2")
    assert record.state is RolloutState.HALTED
    assert record.reason.startswith("the candidate expired ")


async def test_a_rollout_signed_under_policy_keys_rotated_out_halts_and_says_why(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=[(d, "line-a") for d in DEVICES])
    hub_dir = ("--hub-dir", str(setup.path))
    async with (
        amqtt_broker() as broker,
        HubService(hub_config(setup, broker, rollout_interval_s=0.2)) as hub,
    ):
        await hub.wait_ready()
        v1 = _bundle(setup, tmp_path / "v1.cbor", 1, ALLOW)
        assert await run_cli("bundle", "push", str(v1), *hub_dir) == 0
        candidate = _bundle(setup, tmp_path / "v2.cbor", 2, ALLOW_MORE)
        args = ("--stages", "50%,100%", "--soak", "1h", *hub_dir)
        assert await run_cli("rollout", "start", str(candidate), *args) == 0
        await wait_for(lambda: _rollout(setup, "eu-1-v2").entered == 0, WAIT_S)
        rotate_root(setup.keys, rotate=[Role.POLICY], now=int(time.time()), ttl=86400)
        await wait_for(lambda: _rollout(setup, "eu-1-v2").state is not RolloutState.RUNNING, WAIT_S)
    record = _rollout(setup, "eu-1-v2")
    assert record.state is RolloutState.HALTED
    assert record.reason.startswith("the candidate no longer verifies under the hub's trust root")
    assert "; the rollback was not published: it no longer verifies" in record.reason
    with open_registry(setup.registry) as registry:
        current = {b.channel: b.version for b in registry.current_bundles("eu-1")}
    assert current == {"group/line-a": 1, **{f"device/{d}": 2 for d in stage_members(record, 0)}}

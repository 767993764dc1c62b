"""``edge-hub rollout`` without a running hub: what ``start`` refuses and records (the
candidate verified as ``bundle push`` does, the rollback pre-signed from the previous
policy), and what ``pause``, ``resume``, ``abort`` and ``status`` do to the record."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_agent.protocol.bundle import verify_bundle
from edge_agent.protocol.roles import Role
from hub.cli.main import main as hub_main
from hub.core.rollout import with_halted
from hub.hubdir.keys import load_role_keys
from hub.hubdir.layout import HubDir
from hub.registry import PublishedBundle
from hub.registry.backends import open_registry
from hub.registry.rollout_records import RolloutState
from hub.service.governance import prepare_push
from tests.hub_support import REGISTRY_BACKENDS, HubSetup, backend_url, make_bundle, make_hub_dir

DEVICES = (("gw-001", "line-a"), ("gw-002", "line-a"), ("gw-003", "line-b"))


@pytest.fixture(params=REGISTRY_BACKENDS)
def url(request: pytest.FixtureRequest) -> str | None:
    """The registry: the hub directory's ``hub.db`` (``None``), or a PostgreSQL database."""
    return backend_url(request)


def _hub(tmp_path: Path, url: str | None, *, pushed: bool = True) -> HubSetup:
    setup = make_hub_dir(tmp_path / "hub", devices=DEVICES, url=url)
    if pushed:
        keys = HubDir(setup.path).load_keys()
        with open_registry(setup.registry) as registry:
            prepare_push(
                registry, keys, make_bundle(setup.keys, 1), now=int(time.time()), token_ttl_s=60
            )
    return setup


def _run(setup: HubSetup, *args: str) -> int:
    return hub_main(["rollout", *args, "--hub-dir", str(setup.path), *setup.registry_args])


def _candidate(setup: HubSetup, tmp_path: Path, version: int = 2, **given: object) -> str:
    path = tmp_path / f"v{version}.cbor"
    path.write_bytes(make_bundle(setup.keys, version, **given))  # type: ignore[arg-type]
    return str(path)


def test_start_records_the_rollout_and_a_rollback_of_the_previous_policy_as_the_next_version(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    candidate = _candidate(setup, tmp_path)
    assert (
        _run(setup, "start", candidate, "--stages", "50%,100%", "--halt-if", "deny_rate>+2%") == 0
    )
    assert "rollout eu-1-v2 started" in capsys.readouterr().out
    with open_registry(setup.registry) as registry:
        record = registry.rollout("eu-1-v2")
        v1 = registry.current_bundles("eu-1")[0]
    assert record is not None
    assert (record.state, record.entered, record.devices) == (
        RolloutState.RUNNING,
        -1,
        ("gw-001", "gw-002"),
    )
    assert (record.stages, record.soak_s, record.channels) == (
        ("50", "100"),
        1800,
        ("group/line-a",),
    )
    rollback = verify_bundle(record.rollback, root=setup.root, region="eu-1")
    before = verify_bundle(v1.data, root=setup.root, region="eu-1")
    after = verify_bundle(record.candidate, root=setup.root, region="eu-1")
    assert rollback.version == 3 and rollback.policy == before.policy
    assert (rollback.issued_at, rollback.expires_at) == (after.issued_at, after.expires_at)
    assert rollback.target == before.target


@pytest.mark.parametrize(
    ("args", "error", "code"),
    [
        (("--halt-if", "deny_rate>>2%"), "^ expected a number after '>'", 2),
        (("--stages", "10%,50%"), "the last stage must be 100%", 2),
        (("--group", "line-b"), "targets no registered device in group(s) line-b", 2),
    ],
)
def test_start_refuses_bad_arguments_and_records_nothing(
    tmp_path: Path,
    url: str | None,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    error: str,
    code: int,
) -> None:
    setup = _hub(tmp_path, url)
    assert _run(setup, "start", _candidate(setup, tmp_path), *args) == code
    assert error in capsys.readouterr().err
    with open_registry(setup.registry) as registry:
        assert registry.rollouts() == []


def test_a_halt_condition_that_does_not_parse_is_one_json_error_under_json(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    candidate = _candidate(setup, tmp_path)
    assert _run(setup, "start", candidate, "--halt-if", "deny_rate>>2%", "--json") == 2
    captured = capsys.readouterr()
    error = json.loads(captured.out)
    assert (error["error"], error["code"], error["exit"]) == ("usage", "halt_syntax", 2)
    assert "column" in error["message"] and captured.err == ""


def test_start_refuses_a_candidate_bundle_push_would_refuse(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    expired = _candidate(setup, tmp_path, now=int(time.time()) - 3 * 86400)
    assert _run(setup, "start", expired) == 1
    assert "expired" in capsys.readouterr().err
    with open_registry(setup.registry) as registry:
        assert registry.rollouts() == []


def test_start_needs_a_previous_bundle_to_roll_back_to(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url, pushed=False)
    assert _run(setup, "start", _candidate(setup, tmp_path)) == 2
    assert "a rollout needs one to roll back to" in capsys.readouterr().err


def test_start_needs_the_policy_keys_to_sign_the_rollback(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    candidate = _candidate(setup, tmp_path)
    for path in (setup.keys).glob("policy*"):
        path.unlink()
    assert load_role_keys(setup.keys, Role.POLICY, setup.root) == []
    assert _run(setup, "start", candidate) == 2
    assert "pre-sign the rollback bundle" in capsys.readouterr().err


def test_start_refuses_devices_holding_different_policies_one_rollback_cannot_restore(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    own = verify_bundle(
        make_bundle(setup.keys, 2, max_offline="1h"), root=setup.root, region="eu-1"
    )
    with open_registry(setup.registry) as registry:
        registry.record_bundle(
            bundle=PublishedBundle(
                "eu-1", "", 2, own.digest, own.raw, own.expires_at, own.max_offline, own.issued_at
            ),
            issued_at=own.issued_at,
            target=own.target.as_cbor(),
            channels=["device/gw-001"],
        )
    assert _run(setup, "start", _candidate(setup, tmp_path, version=4)) == 2
    assert (
        "the devices hold different policies: gw-001 holds version 2 (on device/gw-001), "
        "gw-002 version 1 (on group/line-a)" in capsys.readouterr().err
    )
    with open_registry(setup.registry) as registry:
        assert registry.rollouts() == []


def test_start_refuses_devices_holding_no_bundle_a_rollback_cannot_take_back_to_none(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    both = _candidate(setup, tmp_path, group="line-a, line-b")
    assert _run(setup, "start", both) == 2
    assert (
        "no bundle is current for 1 of these devices (gw-003): a rollback cannot take them "
        "back to holding none" in capsys.readouterr().err
    )
    assert _run(setup, "start", both, "--group", "line-a") == 0


def test_start_refuses_a_candidate_at_the_highest_version_as_leaving_none_for_the_rollback(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    assert _run(setup, "start", _candidate(setup, tmp_path, version=2**53 - 1)) == 2
    assert "so no version is left for the rollback" in capsys.readouterr().err
    with open_registry(setup.registry) as registry:
        assert registry.rollouts() == []


def test_pause_resume_and_abort_change_the_recorded_state_in_order(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    assert _run(setup, "start", _candidate(setup, tmp_path)) == 0
    assert _run(setup, "resume", "eu-1-v2") == 2
    assert "is running: it cannot be resumed" in capsys.readouterr().err
    assert _run(setup, "pause", "eu-1-v2") == 0
    assert "eu-1-v2 paused" in capsys.readouterr().out
    assert _run(setup, "resume", "eu-1-v2") == 0
    assert "running: 30m" in capsys.readouterr().out
    assert _run(setup, "abort", "eu-1-v2", "--reason", "wrong build") == 0
    with open_registry(setup.registry) as registry:
        record = registry.rollout("eu-1-v2")
    assert record is not None
    assert (record.state, record.reason) == (RolloutState.ABORTING, "wrong build")
    assert _run(setup, "pause", "eu-1-v2") == 2
    assert _run(setup, "abort", "eu-1-v9") == 2
    assert "no rollout 'eu-1-v9' (rollouts: eu-1-v2)" in capsys.readouterr().err


def test_a_second_rollout_in_the_region_waits_for_the_first(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    assert _run(setup, "start", _candidate(setup, tmp_path)) == 0
    assert _run(setup, "start", _candidate(setup, tmp_path, version=5)) == 2
    assert "rollout eu-1-v2 is active in eu-1" in capsys.readouterr().err


def test_status_explains_a_rollout_before_the_hub_publishes_it(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    assert _run(setup, "status") == 0
    assert capsys.readouterr().out == "no rollouts\n"
    args = ("--stages", "50%,100%", "--soak", "10m", "--halt-if", "install_failures>0")
    assert _run(setup, "start", _candidate(setup, tmp_path), *args) == 0
    capsys.readouterr()
    assert _run(setup, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["format"] == "edgegov-rollout-status/1"
    (rollout,) = status["rollouts"]
    assert (rollout["id"], rollout["state"], rollout["stage"], rollout["rollback_version"]) == (
        "eu-1-v2",
        "running",
        1,
        3,
    )
    first, last = rollout["stages"]
    assert first["outcome"] == "waiting for the running hub to publish it"
    assert (first["soak_left_s"], last["outcome"]) == (600, "not started")
    assert last["devices"] == ["gw-001", "gw-002"]
    assert _run(setup, "status") == 0
    text = capsys.readouterr().out
    assert "rollout   eu-1-v2: running" in text and "halt if install_failures>0" in text


def test_a_bundle_push_waits_while_an_active_rollout_uses_its_channels_or_devices(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    assert _run(setup, "start", _candidate(setup, tmp_path)) == 0
    push = ["bundle", "push", "--hub-dir", str(setup.path), *setup.registry_args]
    line_b = _candidate(setup, tmp_path, version=4, group="line-b")
    assert hub_main([*push, line_b]) == 0
    capsys.readouterr()
    assert hub_main([*push, _candidate(setup, tmp_path, version=5)]) == 2
    assert (
        "rollout eu-1-v2 is active in eu-1 on group/line-a: let it complete or halt, or abort "
        "it ('edge-hub rollout abort eu-1-v2')" in capsys.readouterr().err
    )
    with open_registry(setup.registry) as registry:
        current = {b.channel: b.version for b in registry.current_bundles("eu-1")}
        record = registry.rollout("eu-1-v2")
        assert record is not None
        halted = with_halted(record, record.updated_at, "halted by hand", ())
        assert registry.update_rollout(halted, expected=record)
    assert current == {"group/line-a": 1, "group/line-b": 4}
    assert hub_main([*push, _candidate(setup, tmp_path, version=5)]) == 0
    capsys.readouterr()
    assert _run(setup, "start", _candidate(setup, tmp_path, version=6)) == 0
    assert _run(setup, "abort", "eu-1-v6") == 0
    assert hub_main([*push, _candidate(setup, tmp_path, version=8)]) == 2
    assert (
        "rollout eu-1-v6 is active in eu-1 on group/line-a: it is being aborted: the running "
        "'edge-hub serve' rolls it back within seconds; push after that"
    ) in capsys.readouterr().err


def test_start_refuses_a_candidate_expiring_before_its_stages_can_soak(
    tmp_path: Path, url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _hub(tmp_path, url)
    candidate = _candidate(setup, tmp_path)
    stages = ("--stages", "10%,50%,100%")
    assert _run(setup, "start", candidate, *stages, "--soak", "12h") == 2
    assert "before its 3 stages have soaked (1d 12h): build it with a longer ttl" in (
        capsys.readouterr().err
    )
    assert _run(setup, "start", candidate, *stages, "--soak", "7h") == 0

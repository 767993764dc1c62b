"""``edge-hub bundle eval``: the decision a device would make on a signed bundle file, with
no state directory. Every row is decided twice, by ``bundle eval`` and by a real LocalAgent
that installed the same bundle under the same root, and the two must agree to the decision
digest. Also ``edge-agent decide --selector``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.protocol.bundle import BundleTarget
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.request import Request
from hub.cli.main import main
from hub.registry.backends import open_registry
from hub.registry.records import DeviceRecord
from tests.factory import DAY, DEVICE, NOW, HubSim
from tests.hub_support import hub_registry


@pytest.fixture
def hub() -> HubSim:
    return HubSim()


@pytest.fixture
def files(tmp_path: Path, hub: HubSim) -> dict[str, Path]:
    paths = {
        "root": tmp_path / "root.cbor",
        "bundle": tmp_path / "bundle.cbor",
        "offline": tmp_path / "offline.cbor",
    }
    paths["root"].write_bytes(hub.root_bytes())
    paths["bundle"].write_bytes(hub.bundle(1))
    paths["offline"].write_bytes(hub.bundle(1, max_offline=3600))
    return paths


@pytest.fixture
def agent_for(tmp_path: Path, hub: HubSim) -> Iterator[dict[str, LocalAgent]]:
    """One enrolled agent per bundle file name, each with that bundle installed at NOW."""
    agents: dict[str, LocalAgent] = {}
    for name, kwargs in (("bundle", {}), ("offline", {"max_offline": 3600})):
        state = tmp_path / f"state-{name}"
        init_state_dir(state, DEVICE, hub.root_bytes(), NOW)
        agent = LocalAgent.open(state)
        agent.install_bundle(hub.bundle(1, **kwargs), NOW)  # type: ignore[arg-type]
        agents[name] = agent
    try:
        yield agents
    finally:
        for agent in agents.values():
            agent.close()


ROWS = [
    pytest.param("bundle", Request("svc:camera", "exec", "/opt/camera/bin/capture"), 0, id="allow"),
    pytest.param("bundle", Request("svc:thermo", "exec", "/opt/camera/bin/x"), 0, id="via-group"),
    pytest.param(
        "bundle",
        Request("unknown", "exec", "/opt/camera/bin/x", selectors=("uid:1001",)),
        0,
        id="via-workload-selector",
    ),
    pytest.param(
        "bundle",
        Request("svc:thermo", "read", "/data/a/b", context=(("zone", "plant-a"),)),
        0,
        id="context-holds",
    ),
    pytest.param("bundle", Request("svc:thermo", "read", "/data/a/b"), 0, id="context-missing"),
    pytest.param("bundle", Request("svc:camera", "exec", "/usr/bin/bash"), 0, id="deny-wins"),
    pytest.param("bundle", Request("svc:camera", "write", "/etc/x"), 0, id="no-rule"),
    pytest.param(
        "bundle", Request("svc:camera", "exec", "/opt/camera/bin/capture"), 2 * DAY, id="expired"
    ),
    pytest.param(
        "offline", Request("svc:camera", "exec", "/opt/camera/bin/capture"), 1800, id="fresh"
    ),
    pytest.param(
        "offline",
        Request("svc:camera", "exec", "/opt/camera/bin/capture"),
        7200,
        id="past-max-offline",
    ),
]


def _eval_args(files: dict[str, Path], name: str, request: Request, at: int) -> list[str]:
    args = [
        "bundle",
        "eval",
        str(files[name]),
        "--root",
        str(files["root"]),
        "--subject",
        request.subject,
        "--action",
        request.action,
        "--resource",
        request.resource,
        "--at",
        str(at),
        "--json",
    ]
    for selector in request.selectors:
        args += ["--selector", selector]
    for key, value in request.context:
        args += ["--context", f"{key}={value}"]
    return args


@pytest.mark.parametrize(("name", "request_", "later"), ROWS)
def test_bundle_eval_agrees_with_a_real_agent(
    files: dict[str, Path],
    agent_for: dict[str, LocalAgent],
    capsys: pytest.CaptureFixture[str],
    name: str,
    request_: Request,
    later: int,
) -> None:
    expected = agent_for[name].decide(request_, NOW + later)
    capsys.readouterr()
    code = main(_eval_args(files, name, request_, NOW + later))
    got = json.loads(capsys.readouterr().out)
    assert (got["decision"] == "allow", got["reason"], got["rule"]) == (
        expected.allowed,
        str(expected.reason),
        expected.rule_id,
    )
    assert got["message"] == expected.message
    assert got["decision_digest"] == expected.digest.hex()
    assert code == (0 if expected.allowed else 1)


def test_the_reasons_cover_the_gate_and_the_policy(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    reasons = []
    for row in ROWS:
        name, request, later = row.values
        main(_eval_args(files, name, request, NOW + later))  # type: ignore[arg-type]
        reasons.append(json.loads(capsys.readouterr().out)["reason"])
    assert set(reasons) == {
        "allowed",
        "policy_denied",
        "no_matching_rule",
        "bundle_expired",
        "freshness_expired",
    }


def test_text_output_names_the_verdict_rule_and_what_was_assumed(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = _eval_args(files, "bundle", Request("svc:camera", "exec", "/bin/sh"), NOW)
    assert main(args[:-1]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "DENY policy_denied rule=no-shells"
    assert "verified under trust root v1" in lines[2]
    assert lines[-1].startswith("  note: no revocations")


def test_a_bundle_not_signed_under_the_root_is_refused(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other-root.cbor"
    other.write_bytes(HubSim().root_bytes())
    args = _eval_args(files, "bundle", Request("svc:camera", "exec", "/x"), NOW)
    args[args.index("--root") + 1] = str(other)
    assert main(args) == 1
    document = json.loads(capsys.readouterr().out)
    assert (document["error"], document["exit"]) == ("refused", 1)
    assert document["code"].startswith("bundle_")


@pytest.mark.parametrize(
    ("change", "code", "reason"),
    [
        pytest.param("no-root", 2, "config_error", id="no-root"),
        pytest.param("garbage-bundle", 2, "bundle_format", id="not-a-bundle"),
        pytest.param("directory-bundle", 2, "config_error", id="bundle-is-a-directory"),
        pytest.param("garbage-root", 2, "config_error", id="not-a-root"),
        pytest.param("bad-at", 2, "bad_argument", id="bad-time"),
        pytest.param("context-twice", 2, "config_error", id="context-key-twice"),
    ],
)
def test_bad_inputs_are_usage_errors(
    tmp_path: Path,
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    change: str,
    code: int,
    reason: str,
) -> None:
    args = _eval_args(files, "bundle", Request("svc:camera", "exec", "/x"), NOW)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00not cbor")
    if change == "no-root":
        del args[args.index("--root") : args.index("--root") + 2]
    elif change == "garbage-bundle":
        args[2] = str(garbage)
    elif change == "directory-bundle":
        args[2] = str(tmp_path)
    elif change == "garbage-root":
        args[args.index("--root") + 1] = str(garbage)
    elif change == "context-twice":
        args += ["--context", "zone=a", "--context", "zone=b"]
    else:
        args[args.index("--at") + 1] = "yesterday"
    try:
        got = main(args)
    except SystemExit as exc:
        got = int(str(exc.code))
    assert got == code
    if change != "bad-at":
        document = json.loads(capsys.readouterr().out)
        assert (document["exit"], document["code"]) == (code, reason)


def _hub_with_device(tmp_path: Path, groups: tuple[str, ...]) -> Path:
    hub_dir = tmp_path / "hub"
    (hub_dir / "keys").mkdir(parents=True)  # a hub directory, whichever backend holds its registry
    with open_registry(hub_registry(hub_dir)) as registry:
        registry.add_device(
            DeviceRecord("gw-009", "eu-1", groups, "generic-x86_64", PrivateKey.generate().public)
        )
    return hub_dir


@pytest.mark.parametrize(
    ("groups", "code"),
    [pytest.param(("line-a",), 0, id="targeted"), pytest.param(("line-b",), 1, id="not-targeted")],
)
def test_device_decides_as_that_registered_device(
    tmp_path: Path,
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    groups: tuple[str, ...],
    code: int,
) -> None:
    hub_dir = _hub_with_device(tmp_path, groups)
    args = _eval_args(files, "bundle", Request("svc:camera", "exec", "/opt/camera/bin/x"), NOW)
    assert main([*args, "--device", "gw-009", "--hub-dir", str(hub_dir)]) == code
    document = json.loads(capsys.readouterr().out)
    if code == 0:
        assert document["device"] == "gw-009"
    else:
        assert document["code"] == "bundle_target"


@pytest.mark.sqlite_only("a hub directory without its hub.db; a PostgreSQL registry needs none")
def test_device_without_a_hub_registry_is_unavailable(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = _eval_args(files, "bundle", Request("svc:camera", "exec", "/x"), NOW)
    assert main([*args, "--device", "gw-009", "--hub-dir", str(tmp_path)]) == 3
    error = json.loads(capsys.readouterr().out)
    assert (error["error"], error["code"], error["path"]) == (
        "unavailable",
        "hub_dir_unavailable",
        str(tmp_path),
    )
    assert not (tmp_path / "hub.db").exists()


def test_a_bundle_for_other_groups_decides_as_any_device_it_targets(
    tmp_path: Path, hub: HubSim, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.cbor"
    other.write_bytes(hub.bundle(1, target=BundleTarget(region="eu-1", groups=("line-z",))))
    args = _eval_args(files, "bundle", Request("svc:camera", "exec", "/opt/camera/bin/x"), NOW)
    args[2] = str(other)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["device"] is None


@pytest.mark.parametrize(
    ("selectors", "code"),
    [
        pytest.param(["uid:1001"], 0, id="selector-acts-as-workload"),
        pytest.param([], 1, id="without-selector-no-rule"),
        pytest.param(["uid1001"], 2, id="malformed-selector"),
    ],
)
def test_agent_decide_passes_selectors(
    tmp_path: Path,
    hub: HubSim,
    capsys: pytest.CaptureFixture[str],
    selectors: list[str],
    code: int,
) -> None:
    now = int(time.time())  # decide reads the wall clock
    state = tmp_path / "state"
    init_state_dir(state, DEVICE, hub.root_bytes(issued_at=now - DAY, expires_at=now + DAY), now)
    with LocalAgent.open(state) as agent:
        agent.install_bundle(hub.bundle(1, issued_at=now - 60, expires_at=now + DAY), now)
    args = ["decide", "--state-dir", str(state), "--subject", "unknown", "--action", "exec"]
    args += ["--resource", "/opt/camera/bin/capture", "--json"]
    for selector in selectors:
        args += ["--selector", selector]
    capsys.readouterr()
    assert agent_main(args) == code
    if code != 2:
        document = json.loads(capsys.readouterr().out)
        assert document["request"]["selectors"] == selectors

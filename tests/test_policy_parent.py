"""Parent conditions (``when.parent``): compiled like every condition, table-driven, with
the ``parent_missing`` / ``parent_invalid`` reasons and real receipts through the gate."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace

import pytest

from edge_agent.errors import PolicyError
from edge_agent.policy.bundle import compile_for_device
from edge_agent.policy.compiler import CompiledPolicy, compile_policy, policy_payload
from edge_agent.policy.engine import evaluate
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.bundle import BundleTarget
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.request import Parent, ParentFacts, Request
from edge_agent.protocol.roles import Role
from edge_agent.trust.gate import Reason, decide
from edge_agent.trust.parent import verify_parent
from edge_agent.trust.state import TrustState, with_bundle
from tests.ancestry_support import CAMERA, CAMERA_KEY, DeviceLog, verified_directory
from tests.factory import DEVICE, NOW, HubSim

ONLINE = (Role.FRESHNESS, Role.VERIFIER, Role.REVOKE)

FACTS = ParentFacts(
    device="gw-cam-01",
    groups=("cameras", "line-a"),
    seq=8811,
    leaf_hash=bytes(32),
    subject="svc:vision",
    action="model.invoke",
    resource="model://vision/v3",
    time=NOW - 10,
    depth=1,
)
CHILD = Request("svc:plc-bridge", "plc.write", "plc://line-a/valve-7")
GROUPS = {"bridges": ["svc:plc-bridge"]}


def _rule(parent: dict[str, object], **fields: object) -> dict[str, object]:
    rule: dict[str, object] = {
        "id": "valve-only-from-vision",
        "effect": "allow",
        "subjects": ["group:bridges"],
        "actions": ["plc.write"],
        "resources": ["plc://line-a/*"],
        "when": {"parent": parent},
    }
    rule.update(fields)
    return rule


def _policy(*rules: dict[str, object]) -> CompiledPolicy:
    return compile_policy(policy_payload(GROUPS, {}, list(rules)))


def _with(parent: Parent | None, request: Request = CHILD) -> Request:
    return replace(request, parent=parent)


@dataclass(frozen=True)
class Row:
    name: str
    condition: dict[str, object]
    facts: ParentFacts
    allowed: bool


ROWS = [
    Row("any verified parent", {}, FACTS, True),
    Row("action listed", {"action": ["model.invoke"]}, FACTS, True),
    Row("action not listed", {"action": ["model.train"]}, FACTS, False),
    Row("resource glob matches", {"resource": ["model://vision/*"]}, FACTS, True),
    Row("resource glob misses", {"resource": ["model://audio/*"]}, FACTS, False),
    Row("resource exact", {"resource": ["model://vision/v3"]}, FACTS, True),
    Row("subject listed", {"subject": ["svc:vision"]}, FACTS, True),
    Row("subject not listed", {"subject": ["svc:other"]}, FACTS, False),
    Row("device listed by id", {"devices": ["gw-cam-01"]}, FACTS, True),
    Row("device not listed", {"devices": ["gw-cam-02"]}, FACTS, False),
    Row("device in group", {"devices": ["group:cameras"]}, FACTS, True),
    Row("device outside the group", {"devices": ["group:plcs"]}, FACTS, False),
    Row("id or group, group matches", {"devices": ["gw-x", "group:line-a"]}, FACTS, True),
    Row("within max_age", {"max_age": 10}, FACTS, True),
    Row("beyond max_age", {"max_age": 9}, FACTS, False),
    Row("default max_age 60 s: fresh", {}, replace(FACTS, time=NOW - 60), True),
    Row("default max_age 60 s: stale", {}, replace(FACTS, time=NOW - 61), False),
    Row("within max_depth", {"max_depth": 2}, replace(FACTS, depth=2), True),
    Row("beyond max_depth", {"max_depth": 2}, replace(FACTS, depth=3), False),
    Row(
        "every field at once",
        {
            "action": ["model.invoke"],
            "resource": ["model://vision/*"],
            "subject": ["svc:vision"],
            "devices": ["group:cameras"],
            "max_age": 30,
            "max_depth": 1,
        },
        FACTS,
        True,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_parent_condition_fields(row: Row) -> None:
    policy = _policy(_rule(row.condition))
    match = evaluate(policy, _with(Parent(row.facts, 4)), NOW)
    assert match.allowed is row.allowed
    expected = ("allowed", "valve-only-from-vision") if row.allowed else ("parent_invalid",)
    assert (match.reason, match.rule_id)[: len(expected)] == expected


@pytest.mark.parametrize(
    ("parent", "reason"),
    [
        (None, "parent_missing"),
        (Parent(None, 4, "parent refused: garbage"), "parent_invalid"),
        (Parent(replace(FACTS, action="model.train"), 4), "parent_invalid"),
    ],
    ids=["none given", "refused", "fails the condition"],
)
def test_a_rule_needing_a_parent_denies_with_a_parent_reason(
    parent: Parent | None, reason: str
) -> None:
    match = evaluate(_policy(_rule({"action": ["model.invoke"]})), _with(parent), NOW)
    assert (match.allowed, match.reason, match.rule_id) == (
        False,
        reason,
        "valve-only-from-vision",
    )


def test_the_parent_reason_needs_the_rest_of_the_rule_to_match() -> None:
    policy = _policy(_rule({}))
    other = Request("svc:plc-bridge", "plc.read", "plc://line-a/valve-7")
    assert evaluate(policy, other, NOW).reason == "no_matching_rule"
    stranger = Request("svc:stranger", "plc.write", "plc://line-a/valve-7")
    assert evaluate(policy, stranger, NOW).reason == "no_matching_rule"


def test_another_rule_allowing_without_parent_still_decides() -> None:
    plain = {
        "id": "plain",
        "effect": "allow",
        "subjects": ["*"],
        "actions": ["plc.write"],
        "resources": ["plc://line-a/valve-7"],
    }
    match = evaluate(_policy(_rule({}), plain), CHILD, NOW)
    assert (match.allowed, match.rule_id) == (True, "plain")


def test_a_deny_rule_can_require_a_parent() -> None:
    deny = _rule({"devices": ["group:cameras"]}, id="no-camera-chains", effect="deny")
    allow = {
        "id": "all",
        "effect": "allow",
        "subjects": ["*"],
        "actions": ["plc.write"],
        "resources": ["plc://**"],
    }
    policy = _policy(deny, allow)
    assert evaluate(policy, _with(Parent(FACTS, 1)), NOW).rule_id == "no-camera-chains"
    assert evaluate(policy, CHILD, NOW).rule_id == "all"


BAD_CONDITIONS = {
    "unknown key": {"color": ["red"]},
    "empty action list": {"action": []},
    "wildcard action": {"action": ["*"]},
    "max_age zero": {"max_age": 0},
    "max_age over a day": {"max_age": 86_401},
    "max_age as text": {"max_age": "30s"},
    "max_depth zero": {"max_depth": 0},
    "bad group ref": {"devices": ["group:"]},
    "device with a wildcard": {"devices": ["gw-*"]},
    "not a map": ["action"],
}


@pytest.mark.parametrize("condition", BAD_CONDITIONS.values(), ids=BAD_CONDITIONS.keys())
def test_malformed_parent_conditions_are_refused(condition: object) -> None:
    with pytest.raises(PolicyError) as caught:
        _policy(_rule(condition))  # type: ignore[arg-type]
    assert caught.value.rule == "valve-only-from-vision"


SOURCE = """\
target: {region: eu-1}
groups:
  bridges: [svc:plc-bridge]
rules:
  - id: valve-only-from-vision
    effect: allow
    subjects: [group:bridges]
    actions: [plc.write]
    resources: ["plc://line-a/*"]
    when:
      parent: {action: [model.invoke], resource: ["model://vision/*"],
               devices: [group:cameras], max_age: 30s, max_depth: 3}
"""


def test_the_yaml_source_reads_a_parent_condition() -> None:
    source = load_policy_source(SOURCE)
    rule = source.policy["rules"][0]  # type: ignore[index]
    assert rule["when"]["parent"] == {
        "action": ["model.invoke"],
        "resource": ["model://vision/*"],
        "devices": ["group:cameras"],
        "max_age": 30,
        "max_depth": 3,
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_age: 30", "must be text"),
        ("max_age: 2x", "duration"),
        ("max_depth: three", "whole number"),
        ("max_depth: 0x10", "whole number"),
        ("colour: [red]", "unknown key"),
    ],
)
def test_the_yaml_source_refuses_a_bad_parent_condition(text: str, fragment: str) -> None:
    bad = SOURCE.replace("max_age: 30s, max_depth: 3", text)
    with pytest.raises(PolicyError) as caught:
        load_policy_source(textwrap.dedent(bad))
    assert fragment in caught.value.message


# --- through the gate, with real receipts ---------------------------------------------------

HUB = HubSim(
    root_keys=[PrivateKey(bytes([n]) * 32) for n in (1, 2, 3)],
    policy_keys=[PrivateKey(bytes([4]) * 32)],
    online_keys={role: [PrivateKey(bytes([n]) * 32)] for n, role in enumerate(ONLINE, 5)},
)
"""Fixed keys, so the bundle (and every decision digest) is the same in every process."""


def _state() -> TrustState:
    root = HUB.root()
    payload = policy_payload(GROUPS, {}, [_rule({"devices": ["group:cameras"], "max_age": 30})])
    target = BundleTarget(region=DEVICE.region, groups=DEVICE.groups, profiles=(DEVICE.profile,))
    bundle = compile_for_device(
        HUB.bundle(1, target=target, policy=payload),
        root=root,
        device=DEVICE,
        installed=None,
        now=None,
    )
    return with_bundle(TrustState(device=DEVICE, root=root), bundle)


def _camera_receipt(time: int) -> bytes:
    log = DeviceLog(CAMERA, CAMERA_KEY)
    return log.receipt(log.append(time=time))


def test_gate_allows_with_a_fresh_real_parent_and_says_why_it_denies() -> None:
    state, directory = _state(), verified_directory(HUB)
    fresh = verify_parent(_camera_receipt(NOW - 5), directory, NOW)
    allowed = decide(state, _with(fresh), NOW)
    assert (allowed.allowed, allowed.reason) == (True, Reason.ALLOWED)
    missing = decide(state, CHILD, NOW)
    assert missing.reason is Reason.PARENT_MISSING
    assert "only with a parent receipt" in missing.message
    garbage = decide(state, _with(verify_parent(b"junk", directory, NOW)), NOW)
    assert garbage.reason is Reason.PARENT_INVALID
    assert "parent refused" in garbage.message
    stale = decide(state, _with(verify_parent(_camera_receipt(NOW - 31), directory, NOW)), NOW)
    assert stale.reason is Reason.PARENT_INVALID
    assert "age" in stale.message


def test_a_decision_without_a_parent_keeps_its_digest() -> None:
    state = _state()
    digest = decide(state, CHILD, NOW).digest
    assert digest == decide(state, _with(None), NOW).digest
    cited = decide(state, _with(Parent(None, 1, "parent refused: x")), NOW)
    assert cited.digest != digest


_CHILD_SCRIPT = """
import sys
from dataclasses import replace
from tests.test_policy_parent import CHILD, HUB, _camera_receipt, _state
from tests.ancestry_support import verified_directory
from tests.factory import NOW
from edge_agent.trust.gate import decide
from edge_agent.trust.parent import verify_parent
directory = verified_directory(HUB)
state = _state()
for time in (NOW - 5, NOW - 31, NOW + 60):
    parent = verify_parent(_camera_receipt(time), directory, NOW)
    decision = decide(state, replace(CHILD, parent=parent), NOW)
    print(decision.reason, decision.digest.hex())
"""


def test_parent_decisions_are_identical_across_processes() -> None:
    outputs = [
        subprocess.run(
            [sys.executable, "-c", _CHILD_SCRIPT],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
            cwd=str(__import__("pathlib").Path(__file__).parent.parent),
        ).stdout
        for seed in (1, 2)
    ]
    assert outputs[0] == outputs[1]
    assert outputs[0].split()[0::2] == ["allowed", "parent_invalid", "parent_invalid"]


@pytest.mark.parametrize(
    ("parent", "reason"),
    [(None, "parent_missing"), (Parent(replace(FACTS, action="model.train"), 4), "parent_invalid")],
    ids=["none given", "fails the condition"],
)
def test_the_parent_reason_names_the_allow_rule_that_needed_it_not_a_deny_rule(
    parent: Parent | None, reason: str
) -> None:
    deny = _rule({"devices": ["group:untrusted"]}, id="deny-untrusted", effect="deny")
    allow = _rule({"action": ["model.invoke"]})
    for rules in ((deny, allow), (allow, deny)):
        match = evaluate(_policy(*rules), _with(parent), NOW)
        assert (match.allowed, match.reason, match.rule_id) == (
            False,
            reason,
            "valve-only-from-vision",
        )
    only_deny = evaluate(_policy(deny), _with(parent), NOW)
    assert (only_deny.reason, only_deny.rule_id) == ("no_matching_rule", None)


@pytest.mark.parametrize("action", ["model.*", "*", "model.invok?"])
def test_a_wildcard_parent_action_is_refused_saying_how_to_accept_any(action: str) -> None:
    with pytest.raises(PolicyError) as caught:
        _policy(_rule({"action": [action]}))
    assert "with no wildcard and not '*'" in caught.value.message
    assert "leave action out to accept a parent of any action" in caught.value.message
    assert "only '*' alone" not in caught.value.message

"""``edge-hub bundle diff``: a hand-built shipped lineage re-decided under a candidate.

Three devices (gw-001, gw-002 in line-a; gw-003 in line-b) shipped decisions that bundle v1
made (below, ``V1``): each row of ``DECISIONS`` is one request, its v1 outcome, and what the
candidate (``V2``) decides, worked out by hand from the two policies. The diff must find
exactly those changes: flips both ways, the same verdict by another rule, the same verdict
for another reason, the time window, the dead rule and what only the default deny catches.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.bundle import BundleTarget, bundle_payload, sign_bundle
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Entry, Kind, encode_entry, entry_hash
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from hub.cli.main import main as hub_main
from hub.cli.operations import build_bundle
from hub.core.ingest import ingest_batch
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root
from hub.registry import PublishedBundle
from hub.registry.backends import open_registry
from hub.registry.records import Accepted
from tests.hub_support import (
    HubSetup,
    edit_registry,
    hub_registry,
    make_hub_dir,
    module_registry,
)

V1 = """\
target: {region: eu-1, groups: [line-a]}
ttl: 24h
rules:
  - {id: camera-exec, effect: allow, subjects: [svc:camera], actions: [exec],
     resources: ["/opt/camera/bin/*"]}
  - {id: logs-read, effect: allow, subjects: [svc:logger], actions: [read],
     resources: ["/var/log/**"]}
  - {id: shell-deny, effect: deny, subjects: ["*"], actions: [exec], resources: ["/bin/sh"]}
  - {id: bash-deny, effect: deny, subjects: ["*"], actions: [exec], resources: ["/usr/bin/bash"]}
  - {id: tmp-write, effect: allow, subjects: ["*"], actions: [write], resources: ["/tmp/**"]}
"""

V2 = """\
target: {region: eu-1, groups: [line-a, line-b]}
ttl: 24h
rules:
  - {id: camera-exec-v2, effect: allow, subjects: [svc:camera], actions: [exec],
     resources: ["/opt/camera/bin/*"]}
  - {id: secure-deny, effect: deny, subjects: [svc:logger], actions: [read],
     resources: ["/var/log/secure"]}
  - {id: logs-read, effect: allow, subjects: [svc:logger], actions: [read],
     resources: ["/var/log/**"]}
  - {id: shell-deny, effect: deny, subjects: ["*"], actions: [exec], resources: ["/bin/*"]}
  - {id: thermo-read, effect: allow, subjects: [svc:thermo], actions: [read],
     resources: ["/data/**"]}
  - id: night-backup
    effect: allow
    subjects: [svc:backup]
    actions: [read]
    resources: ["/srv/**"]
    when: {time_utc: "22:00-06:00"}
  - {id: unused, effect: allow, subjects: [svc:nobody], actions: [exec], resources: ["/nowhere"]}
"""

DAY = 86400
HOUR = 3600
NOON = (int(time.time()) // DAY - 1) * DAY + 12 * HOUR
"""Noon UTC yesterday: every decision below is made around it (inside ``--since 7d``)."""
MIDNIGHT = NOON + 11 * HOUR
"""23:00 UTC yesterday, inside the candidate's night window."""
OLD = NOON - 20 * DAY
"""A decision outside ``--since 7d``."""

ALLOW, DENY, DEFAULT = "allowed", "policy_denied", "no_matching_rule"


@dataclass(frozen=True)
class Decision:
    device: str
    subject: str
    action: str
    resource: str
    when: int
    reason: str
    """The v1 outcome's reason (a gate reason for decisions the gate denied)."""
    rule: str | None


DECISIONS = [
    # rule changed, verdict and reason the same: camera-exec -> camera-exec-v2
    Decision("gw-001", "svc:camera", "exec", "/opt/camera/bin/capture", NOON, ALLOW, "camera-exec"),
    Decision(
        "gw-002", "svc:camera", "exec", "/opt/camera/bin/capture", NOON + 1, ALLOW, "camera-exec"
    ),
    # flip allow -> deny: secure-deny now wins over logs-read
    Decision("gw-001", "svc:logger", "read", "/var/log/secure", NOON + 2, ALLOW, "logs-read"),
    Decision("gw-002", "svc:logger", "read", "/var/log/secure", NOON + 3, ALLOW, "logs-read"),
    Decision("gw-002", "svc:logger", "read", "/var/log/secure", NOON + 4, ALLOW, "logs-read"),
    # unchanged: allowed by logs-read in both
    Decision("gw-001", "svc:logger", "read", "/var/log/syslog", NOON + 5, ALLOW, "logs-read"),
    # unchanged: shell-deny in both
    Decision("gw-001", "svc:app", "exec", "/bin/sh", NOON + 6, DENY, "shell-deny"),
    # verdict the same, other rule: bash-deny (gone) -> default deny = other reason
    Decision("gw-002", "svc:app", "exec", "/usr/bin/bash", NOON + 7, DENY, "bash-deny"),
    # flip allow -> deny by default: tmp-write is gone
    Decision("gw-001", "svc:app", "write", "/tmp/x", NOON + 8, ALLOW, "tmp-write"),
    # flip deny -> allow: default deny in v1, thermo-read in v2
    Decision("gw-003", "svc:thermo", "read", "/data/t1", NOON + 9, DEFAULT, None),
    # time window: denied by default at noon under both; allowed at 23:00 by the candidate
    Decision("gw-003", "svc:backup", "read", "/srv/db", NOON + 10, DEFAULT, None),
    Decision("gw-003", "svc:backup", "read", "/srv/db", MIDNIGHT, DEFAULT, None),
    # denied by the gate: counted, never re-decided
    Decision("gw-001", "svc:camera", "exec", "/opt/camera/bin/capture", NOON + 11, "revoked", None),
    Decision("gw-003", "svc:app", "write", "/tmp/x", NOON + 12, "attestation_failed", None),
    # outside --since 7d: a flip allow -> deny (tmp-write is gone)
    Decision("gw-002", "svc:app", "write", "/tmp/old", OLD, ALLOW, "tmp-write"),
]


def _outcome(allowed: bool, reason: str, rule: str | None) -> dict[str, object]:
    return {"allowed": allowed, "reason": reason, "rule": rule}


ALLOWED_BY = {r: _outcome(True, ALLOW, r) for r in ("camera-exec", "camera-exec-v2", "logs-read")}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> HubSetup:
    setup = make_hub_dir(
        tmp_path_factory.mktemp("diff") / "hub",
        (("gw-001", "line-a"), ("gw-002", "line-a"), ("gw-003", "line-b")),
        url=module_registry(request),
    )
    for device in ("gw-001", "gw-002", "gw-003"):
        _ship(setup, device, [d for d in DECISIONS if d.device == device])
    (setup.path / "v2.cbor").write_bytes(_build(setup, V2, 2))
    v1 = _build(setup, V1, 1)
    (setup.path / "v1.cbor").write_bytes(v1)
    _record(setup, v1)
    return setup


def _hub_args(hub: HubSetup) -> list[str]:
    """The ``edge-hub`` options naming the module's hub and its registry."""
    return ["--hub-dir", str(hub.path), *hub.registry_args]


def _build(setup: HubSetup, source: str, version: int) -> bytes:
    root = load_root(setup.keys / ROOT_FILE)
    data, _ = build_bundle(
        load_policy_source(source),
        root=root,
        signers=load_role_keys(setup.keys, Role.POLICY, root),
        version=version,
        ttl=None,
        now=int(time.time()),
    )
    return data


def _record(setup: HubSetup, data: bytes) -> None:
    """Record ``data`` (bundle v1 for line-a) as ``bundle push`` does."""
    with open_registry(setup.registry) as registry:
        registry.record_bundle(
            bundle=PublishedBundle(
                "eu-1", "", 1, hashlib.sha256(data).digest(), data, NOON + DAY, None, NOON
            ),
            issued_at=NOON,
            target={"region": "eu-1", "groups": ["line-a"]},
            channels=["group/line-a"],
        )


def _ship(setup: HubSetup, device_id: str, decisions: list[Decision]) -> None:
    """The device's log: a bundle-installed transition, then its decisions, shipped and
    stored as the hub's ingest stores them."""
    sim = setup.devices[device_id]
    entries = [Entry(0, OLD - 1, GENESIS_PREV, Kind.BUNDLE_INSTALLED, True, "installed")]
    for d in decisions:
        request = Request(d.subject, d.action, d.resource, (("zone", "a"),), ("uid:1001",))
        entries.append(
            Entry(0, d.when, GENESIS_PREV, Kind.DECISION, d.reason == ALLOW, d.reason, d.rule,
                  bytes(32), 1, request, "as decided")
        )  # fmt: skip
    for seq, entry in enumerate(entries):
        prev = entry_hash(sim.entries[-1]) if sim.entries else GENESIS_PREV
        sim.entries.append(
            encode_entry(
                Entry(seq, entry.time, prev, entry.kind, entry.allowed, entry.reason, entry.rule,
                      entry.bundle_digest, entry.bundle_version, entry.request, entry.detail)
            )
        )  # fmt: skip
    with open_registry(setup.registry) as registry:
        result = ingest_batch(
            sim.batch(0, len(sim.entries)),
            device=device_id,
            key=sim.key.public,
            origin=sim.origin,
            log=registry.lineage_state(device_id),
            stored=registry.stored_log(device_id),
        )
        assert isinstance(result, Accepted)
        assert registry.store_batch(result, expected_size=0, received_at=NOON)


def _diff(
    hub: HubSetup, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, object]]:
    code = hub_main(["bundle", "diff", *args, "--json", *_hub_args(hub)])
    return code, json.loads(capsys.readouterr().out)


def _groups(report: dict[str, object], section: str) -> list[tuple[object, ...]]:
    groups = report[section]
    assert isinstance(groups, list)
    return [
        (g["subject"], g["action"], g["device_groups"], g["before"], g["after"], g["count"])
        for g in groups
    ]


def test_the_diff_finds_exactly_the_hand_worked_changes(
    hub: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _diff(hub, capsys, str(hub.path / "v2.cbor"), "--since", "7d")
    assert code == 1
    assert report["counts"] == {
        "decisions": 14,
        "redecided": 12,
        "unchanged": 3,
        "flips": 6,
        "reason_changed": 1,
        "rule_changed": 2,
        "default_deny_only": 3,
        "untracked": 0,
    }
    assert report["gated"] == {"attestation_failed": 1, "revoked": 1}
    assert _groups(report, "flips") == [
        ("svc:logger", "read", "line-a", ALLOWED_BY["logs-read"],
         _outcome(False, DENY, "secure-deny"), 3),
        ("svc:app", "write", "line-a", _outcome(True, ALLOW, "tmp-write"),
         _outcome(False, DEFAULT, None), 1),
        ("svc:backup", "read", "line-b", _outcome(False, DEFAULT, None),
         _outcome(True, ALLOW, "night-backup"), 1),
        ("svc:thermo", "read", "line-b", _outcome(False, DEFAULT, None),
         _outcome(True, ALLOW, "thermo-read"), 1),
    ]  # fmt: skip
    assert _groups(report, "reason_changed") == [
        ("svc:app", "exec", "line-a", _outcome(False, DENY, "bash-deny"),
         _outcome(False, DEFAULT, None), 1),
    ]  # fmt: skip
    assert _groups(report, "rule_changed") == [
        ("svc:camera", "exec", "line-a", ALLOWED_BY["camera-exec"],
         ALLOWED_BY["camera-exec-v2"], 2),
    ]  # fmt: skip
    assert report["dead_rules"] == ["unused"]
    default_deny = report["default_deny_only"]
    assert isinstance(default_deny, list)
    assert [(g["subject"], g["action"], g["resource"], g["count"]) for g in default_deny] == [
        ("svc:app", "exec", "/usr/bin/bash", 1),
        ("svc:app", "write", "/tmp/x", 1),
        ("svc:backup", "read", "/srv/db", 1),
    ]


def test_a_group_names_its_examples_and_first_and_last_seen(
    hub: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    _, report = _diff(hub, capsys, str(hub.path / "v2.cbor"))
    flips = report["flips"]
    assert isinstance(flips, list)
    secure = flips[0]
    assert (secure["first_seen"], secure["last_seen"]) == (NOON + 2, NOON + 4)
    # Each device's log starts with the bundle-installed entry (seq 0), then its decisions.
    assert secure["examples"] == [
        {"device": "gw-001", "seq": 2, "time": NOON + 2},
        {"device": "gw-002", "seq": 2, "time": NOON + 3},
        {"device": "gw-002", "seq": 3, "time": NOON + 4},
    ]


def test_without_a_window_old_decisions_count_too(
    hub: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    _, report = _diff(hub, capsys, str(hub.path / "v2.cbor"))
    counts = report["counts"]
    assert isinstance(counts, dict)
    assert (counts["decisions"], counts["flips"]) == (15, 7)


@pytest.mark.parametrize(
    ("args", "devices", "flips"),
    [
        (["--group", "line-b"], ["gw-003"], 2),
        (["--device", "gw-002"], ["gw-002"], 2),
        (["--group", "line-a", "--device", "gw-001"], ["gw-001"], 2),
        (["--group", "line-a", "--group", "line-b"], ["gw-001", "gw-002", "gw-003"], 6),
    ],
    ids=["group", "device", "group and device", "two groups"],
)
def test_group_and_device_filters_narrow_the_devices(
    hub: HubSetup,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    devices: list[str],
    flips: int,
) -> None:
    _, report = _diff(hub, capsys, str(hub.path / "v2.cbor"), "--since", "7d", *args)
    counts = report["counts"]
    assert isinstance(counts, dict)
    assert (report["devices"], counts["flips"]) == (devices, flips)


def test_against_the_version_that_decided_them_the_diff_equals_the_recorded_one(
    hub: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = str(hub.path / "v2.cbor")
    _, recorded = _diff(hub, capsys, candidate, "--group", "line-a")
    code, against = _diff(hub, capsys, candidate, "--against-version", "1")
    assert code == 1
    assert against["baseline"] == {
        "kind": "bundle",
        "version": 1,
        "digests": [against["baseline"]["digests"][0]],  # type: ignore[index]
    }
    # v1 targets line-a only: gw-003 is left out, and what remains is the recorded diff.
    assert against["devices_outside_baseline"] == ["gw-003"]
    for section in ("counts", "gated", "flips", "reason_changed", "rule_changed", "dead_rules"):
        assert against[section] == recorded[section], section


def test_a_candidate_equal_to_the_baseline_exits_0(
    hub: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _diff(hub, capsys, str(hub.path / "v1.cbor"), "--against-version", "1")
    counts = report["counts"]
    assert isinstance(counts, dict)
    assert code == 0
    assert (counts["flips"], counts["reason_changed"], counts["rule_changed"]) == (0, 0, 0)
    assert counts["unchanged"] == counts["redecided"] > 0


def _signed(hub: HubSetup, **changes: object) -> bytes:
    """A bundle for line-a signed with the hub's policy key, with ``changes`` to its payload
    fields or, as ``scope``/``signers``, to its signature."""
    root = load_root(hub.keys / ROOT_FILE)
    now = int(time.time())
    fields: dict[str, object] = {
        "version": 3,
        "issued_at": now - 60,
        "expires_at": now + DAY,
        "target": BundleTarget("eu-1", ("line-a",)),
        "policy": load_policy_source(V1).policy,
        "attestation": None,
        "max_offline": None,
    }
    scope = str(changes.pop("scope", "eu-1"))
    signers = changes.pop("signers", None) or load_role_keys(hub.keys, Role.POLICY, root)
    fields.update(changes)
    return sign_bundle(bundle_payload(**fields), region=scope, signers=signers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"signers": [PrivateKey.generate()]}, "refused, not diffed"),
        ({"scope": "us-1"}, "refused, not diffed"),
        ({"issued_at": NOON - 3 * DAY, "expires_at": NOON - 2 * DAY}, "expired"),
        (
            {"target": BundleTarget("us-1", ("line-a",)), "scope": "us-1"},
            "no registered device is targeted",
        ),
    ],
    ids=["bad signature", "signed for another region", "expired", "for another region"],
)
def test_a_candidate_that_fails_verification_is_refused_and_never_diffed(
    hub: HubSetup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, object],
    says: str,
) -> None:
    candidate = tmp_path / "candidate.cbor"
    candidate.write_bytes(_signed(hub, **changes))
    code = hub_main(["bundle", "diff", str(candidate), *_hub_args(hub)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert says in err


def test_a_correctly_signed_candidate_of_the_same_shape_is_diffed(
    hub: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = tmp_path / "candidate.cbor"
    candidate.write_bytes(_signed(hub))
    code, _ = _diff(hub, capsys, str(candidate))
    assert code == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--against-version", "9"], "no bundle version 9 was pushed"),
        (["--device", "gw-404"], "not registered"),
        (["--device", "gw-003", "--group", "line-a"], "nothing to diff"),
        (["--since", "soon"], "argument --since"),
    ],
    ids=["unknown version", "unknown device", "empty scope", "bad duration"],
)
def test_bad_input_exits_2_with_one_sentence(
    hub: HubSetup, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    argv = ["bundle", "diff", str(hub.path / "v2.cbor"), *args, *_hub_args(hub)]
    try:
        code = hub_main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 2
    assert says in capsys.readouterr().err


def test_a_device_the_candidate_does_not_target_is_refused_by_name(
    hub: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = str(hub.path / "v1.cbor")
    assert hub_main(["bundle", "diff", v1, "--device", "gw-003", *_hub_args(hub)]) == 2
    assert "does not target device gw-003" in capsys.readouterr().err


def test_the_text_report_reads_in_a_terminal(
    hub: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    code = hub_main(["bundle", "diff", str(hub.path / "v2.cbor"), "--since", "7d", *_hub_args(hub)])
    out = capsys.readouterr().out
    assert code == 1
    assert "FLIPS  6 decisions whose verdict changes, in 4 groups" in out
    assert "allow by logs-read -> deny by secure-deny" in out
    assert "svc:logger read, devices in line-a" in out
    assert "DEAD RULES  1 of 7 candidate rules decide none of these decisions\n  unused" in out
    assert "denied by the gate (not re-decided): attestation_failed 1, revoked 1" in out
    assert out.rstrip().endswith("result     6 decisions flip (exit 1)")
    assert max(len(line) for line in out.splitlines()) <= 120


@pytest.mark.parametrize("output", ["--json", "--text"])
def test_output_is_byte_identical_across_processes(hub: HubSetup, output: str) -> None:
    argv = [
        sys.executable, "-m", "hub.cli.main", "bundle", "diff", str(hub.path / "v2.cbor"),
        *_hub_args(hub), *([output] if output == "--json" else []),
    ]  # fmt: skip
    runs = [
        subprocess.run(
            argv,
            capture_output=True,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=Path(__file__).resolve().parents[1],
        )
        for seed in ("1", "2")
    ]
    assert [r.returncode for r in runs] == [1, 1], runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    assert b"secure-deny" in runs[0].stdout


def test_the_registry_lists_every_bundle_of_a_version_in_a_region(tmp_path: Path) -> None:
    with open_registry(hub_registry(tmp_path)) as registry:
        for region, version, data in (("eu-1", 4, b"b"), ("eu-1", 4, b"a"), ("eu-1", 5, b"c"),
                                      ("us-1", 4, b"d")):  # fmt: skip
            digest = hashlib.sha256(data).digest()
            registry.record_bundle(
                bundle=PublishedBundle(region, "", version, digest, data, NOON + DAY, None, NOON),
                issued_at=NOON,
                target={"region": region},
                channels=[],
            )
        by_digest = sorted([b"a", b"b"], key=lambda d: hashlib.sha256(d).digest())
        assert registry.bundles_of_version("eu-1", 4) == by_digest
        assert registry.bundles_of_version("eu-1", 6) == []


def test_a_damaged_registry_row_stops_the_diff_naming_device_and_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = make_hub_dir(tmp_path / "hub", (("gw-001", "line-a"),))
    _ship(setup, "gw-001", DECISIONS[:3])
    candidate = setup.path / "v2.cbor"
    candidate.write_bytes(_build(setup, V2, 2))
    edit_registry(setup.registry, "UPDATE lineage_entries SET data = ? WHERE seq = 2", b"\xa0")
    assert hub_main(["bundle", "diff", str(candidate), "--hub-dir", str(setup.path)]) == 2
    err = capsys.readouterr().err
    assert "entry 2: " in err and "gw-001" in err

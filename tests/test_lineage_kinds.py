"""Trust transitions as lineage entries: every kind round-trips through the log, the CLI,
exports and the hub's offline verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.lineage.log import LineageLog
from edge_agent.protocol.lineage_entries import (
    GENESIS_PREV,
    Entry,
    Kind,
    decode_entry,
    encode_entry,
)
from edge_agent.protocol.request import Request
from edge_agent.support.cli import ellipsize
from hub.cli.main import main as hub_main
from tests.factory import DEVICE, NOW, HubSim

TRANSITIONS: dict[Kind, tuple[bool, str, str]] = {
    Kind.BUNDLE_INSTALLED: (True, "bundle_installed", "bundle version 2 installed"),
    Kind.BUNDLE_REJECTED: (False, "bundle_rollback", "bundle version 1 is older than 2"),
    Kind.ROOT_ROTATED: (True, "root_rotated", "trust root version 2"),
    Kind.ROOT_REJECTED: (False, "root_rejected", "root version 4 skips version 3"),
    Kind.REVOCATION_APPLIED: (True, "revoked", "revocation epoch 3: device gw-001"),
    Kind.REVOCATION_REJECTED: (False, "revocation_rejected", "not signed by the revoke role"),
    Kind.FRESHNESS_REJECTED: (False, "freshness_rejected", "token expired 40 s ago"),
    Kind.CLOCK_UNTRUSTED: (True, "clock_untrusted", "wall clock 1970-01-01 is below the floor"),
    Kind.CLOCK_RESTORED: (True, "clock_restored", "wall clock is above the floor again"),
    Kind.ATTESTATION_PASSED: (True, "attestation_passed", "8 measurements match"),
    Kind.ATTESTATION_FAILED: (False, "attestation_failed", "/usr/bin/agent digest differs"),
    Kind.ATTESTATION_STALE: (False, "attestation_stale", "last verdict is 2 h old"),
    Kind.SEGMENT_START: (True, "lineage_break_acknowledged", "new segment after a break"),
    Kind.LINEAGE_PRUNED: (True, "retention", "entries 0 to 999 pruned"),
    Kind.SHADOW_REJECTED: (False, "bundle_target", "bundle is not for this device"),
    Kind.SHADOW_DIVERGENCE: (
        True,
        "allowed",
        f"shadow_version=3 shadow_digest={'ab' * 32} shadow_allowed=false "
        "shadow_reason=policy_denied shadow_rule=no-shells",
    ),
}


def test_every_kind_but_decision_is_covered() -> None:
    assert set(TRANSITIONS) == set(Kind) - {Kind.DECISION}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sim = HubSim()
    state_dir = tmp_path_factory.mktemp("kinds") / "state"
    init_state_dir(state_dir, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        agent.decide(Request("svc:camera", "exec", "/opt/camera/bin/capture"), NOW + 1)
        assert agent.lineage is not None
        for offset, (kind, (applied, reason, detail)) in enumerate(TRANSITIONS.items()):
            seq = agent.lineage.record_transition(
                kind, time=NOW + 10 + offset, applied=applied, reason=reason, detail=detail
            )
            assert seq is not None
        agent.decide(Request("svc:x", "exec", "/bin/sh"), NOW + 100)
    return state_dir


@pytest.mark.parametrize("kind", list(TRANSITIONS), ids=str)
def test_a_transition_entry_encodes_and_decodes_to_itself(kind: Kind) -> None:
    applied, reason, detail = TRANSITIONS[kind]
    entry = Entry(7, NOW, GENESIS_PREV, kind, applied, reason, detail=detail)
    assert decode_entry(encode_entry(entry), 7) == entry


@pytest.mark.parametrize("kind", list(TRANSITIONS), ids=str)
def test_log_show_json_finds_each_kind(
    state: Path, kind: Kind, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        agent_main(["log", "show", "--state-dir", str(state), "--json", "--kind", str(kind)]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == (2 if kind is Kind.BUNDLE_INSTALLED else 1)
    shown = json.loads(lines[-1])
    applied, reason, detail = TRANSITIONS[kind]
    assert shown["kind"] == str(kind) and shown["reason"] == reason and shown["detail"] == detail
    assert shown["decision"] == ("allow" if applied else "deny") and shown["request"] is None


def test_log_show_table_names_each_kind_in_80_columns(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert agent_main(["log", "show", "--state-dir", str(state), "--limit", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    body = "\n".join(lines)
    for kind in TRANSITIONS:
        assert f"trust {ellipsize(TRANSITIONS[kind][1], 16)}" in body
        assert f"{kind}: " in body


def test_log_replay_skips_transitions_and_finds_no_divergence(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert agent_main(["log", "replay", "--state-dir", str(state)]) == 0
    assert "replayed 2 decisions, skipped 0, 0 divergent" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["cbor", "jsonl"])
def test_exports_carry_every_kind_and_the_hub_verifies_them(
    state: Path, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"export.{fmt}"
    args = ["log", "export", "--state-dir", str(state), "--out", str(out), "--format", fmt]
    assert agent_main(args) == 0
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()[1:]]
        assert {row["kind"] for row in rows} == {str(k) for k in Kind}
        return
    assert agent_main(["pubkey", "--state-dir", str(state)]) == 0
    key = tmp_path / "pub.pem"
    key.write_text(capsys.readouterr().out)
    assert hub_main(["lineage", "verify", str(out), "--device-key", str(key)]) == 0
    assert "verify" in capsys.readouterr().out


def test_a_decision_cannot_be_recorded_as_a_transition(tmp_path: Path) -> None:
    state = tmp_path / "state"
    init_state_dir(state, DEVICE, HubSim().root_bytes(), NOW)
    log = LineageLog.open(state, DEVICE.device_id)
    with pytest.raises(ValueError):
        log.record_transition(Kind.DECISION, time=NOW, applied=True, reason="x", detail="")

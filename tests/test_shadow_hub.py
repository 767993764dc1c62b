"""Shadow entries at the hub, without a broker: ``bundle diff`` never re-decides a
divergence (only decisions), and the lineage search indexes one under its own kind with its
request (the end-to-end run is tests/test_shadow_e2e.py)."""

from __future__ import annotations

from dataclasses import replace

from edge_agent.lineage.decisions import decision_entry, divergence_entry
from edge_agent.protocol.lineage_entries import Kind, ShadowOutcome, decode_entry, encode_entry
from edge_agent.protocol.request import Request
from edge_agent.trust.gate import Decision, Reason
from hub.core.diff import _EntryReader
from hub.registry.records import StoredEntry
from hub.registry.rows import entry_row, search_row

REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture", (("zone", "a"),), ("uid:1",))
DECISION = Decision(True, Reason.ALLOWED, "ok", "camera-exec", 2, bytes(32), REQUEST, 1_000)
OUTCOME = ShadowOutcome(3, bytes(range(32)), False, "policy_denied", "no-camera")


def _placed(entry_seq: int, shadow: bool) -> bytes:
    entry = divergence_entry(DECISION, OUTCOME) if shadow else decision_entry(DECISION)
    return encode_entry(replace(entry, seq=entry_seq))


def test_bundle_diff_reads_a_divergence_as_no_decision_on_either_path() -> None:
    reader = _EntryReader()
    assert reader.read(StoredEntry(0, _placed(0, shadow=False))) is not None
    for seq in (1, 2):
        assert reader.read(StoredEntry(seq, _placed(seq, shadow=True))) is None


def test_the_lineage_search_indexes_a_divergence_under_its_kind_with_its_request() -> None:
    data = _placed(5, shadow=True)
    row = search_row("gw-001", 5, data)
    assert row == entry_row("gw-001", decode_entry(data))
    assert row == (
        1_000,
        "gw-001",
        5,
        str(Kind.SHADOW_DIVERGENCE),
        1,
        "allowed",
        "camera-exec",
        "svc:camera",
        "exec",
        "/opt/camera/bin/capture",
        2,
    )

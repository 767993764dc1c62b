"""The pure part of ``bundle diff`` (:mod:`hub.core.diff`): entries read exactly as the
strict decoder reads them, decisions cached only where that is exact, and bounded groups."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge_agent.errors import LineageError
from edge_agent.policy.compiler import CompiledPolicy, compile_policy, policy_payload
from edge_agent.policy.engine import Match, evaluate
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.lineage_entries import (
    GENESIS_PREV,
    Entry,
    Kind,
    decode_entry,
    encode_entry,
)
from edge_agent.protocol.request import Parent, ParentFacts, Request
from hub.core import diff
from hub.core.diff import DeviceScope, Shadow, _EntryReader, diff_decisions
from hub.registry.records import StoredEntry

REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture", (("zone", "a"),), ("uid:1",))
POLICY = compile_policy(
    policy_payload(
        groups={},
        workloads={},
        rules=[
            {
                "id": "day-exec",
                "effect": "allow",
                "subjects": ["svc:camera"],
                "actions": ["exec"],
                "resources": ["/opt/camera/bin/*"],
                "when": {"time_utc": "06:00-22:00"},
            },
            {
                "id": "never",
                "effect": "deny",
                "subjects": ["svc:nobody"],
                "actions": ["exec"],
                "resources": ["/**"],
            },
        ],
    )
)


def _entry(seq: int, time: int, reason: str = "allowed", kind: Kind = Kind.DECISION) -> bytes:
    request = REQUEST if kind is Kind.DECISION else None
    rule = "day-exec" if reason == "allowed" else None
    return encode_entry(
        Entry(seq, time, GENESIS_PREV, kind, reason == "allowed", reason, rule, None, 1, request)
    )


# Every shortest-form width of seq and time: 0-23 in the head byte, then 1, 2, 4, 8 bytes.
EDGES = [0, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, MAX_COUNTER]


@pytest.mark.parametrize("value", EDGES)
def test_the_fast_path_reads_what_the_strict_decoder_reads(value: int) -> None:
    reader = _EntryReader()
    reader.read(StoredEntry(5, _entry(5, 1000)))  # the body is now known
    data = _entry(value, value)
    read = reader.read(StoredEntry(value, data))
    strict = decode_entry(data, value)
    assert read is not None and strict.request is not None
    assert (read.time, read.body.request) == (strict.time, strict.request)
    assert read.body.recorded == Match(strict.allowed, strict.reason, strict.rule)


def test_an_entry_stored_at_another_seq_is_refused_on_both_paths() -> None:
    reader = _EntryReader()
    with pytest.raises(LineageError, match="says it is entry 7"):
        reader.read(StoredEntry(8, _entry(7, 100)))
    reader.read(StoredEntry(7, _entry(7, 100)))
    with pytest.raises(LineageError, match="says it is entry 9"):
        reader.read(StoredEntry(10, _entry(9, 100)))


def test_a_head_in_a_longer_form_goes_to_the_strict_decoder_and_is_refused() -> None:
    reader = _EntryReader()
    reader.read(StoredEntry(1, _entry(1, 100)))
    canonical = _entry(2, 100)
    longer = canonical[:2] + b"\x18\x02" + canonical[3:]  # seq 2 in two bytes instead of one
    with pytest.raises(LineageError, match="canonical"):
        reader.read(StoredEntry(2, longer))


@pytest.mark.parametrize("cut", [2, 39, 60], ids=["head only", "under 40 bytes", "body cut"])
def test_an_entry_cut_short_is_refused_even_when_its_body_is_known(cut: int) -> None:
    reader = _EntryReader()
    reader.read(StoredEntry(1, _entry(1, 100)))
    with pytest.raises(LineageError):
        reader.read(StoredEntry(2, _entry(2, 100)[:cut]))


def test_a_damaged_body_is_refused() -> None:
    data = bytearray(_entry(1, 100))
    data[-3] ^= 0xFF
    with pytest.raises(LineageError):
        _EntryReader().read(StoredEntry(1, bytes(data)))


def test_a_trust_transition_is_not_a_decision_on_either_path() -> None:
    reader = _EntryReader()
    assert reader.read(StoredEntry(0, _entry(0, 100, "installed", Kind.BUNDLE_INSTALLED))) is None
    assert reader.read(StoredEntry(1, _entry(1, 100, "installed", Kind.BUNDLE_INSTALLED))) is None


WINDOWED = compile_policy(
    policy_payload(
        groups={},
        workloads={},
        rules=[
            {
                "id": f"w{n}",
                "effect": effect,
                "subjects": ["svc:camera"],
                "actions": ["exec"],
                "resources": ["/opt/camera/bin/*"],
                "when": {"time_utc": window},
            }
            for n, (effect, window) in enumerate(
                [("deny", "23:30-00:30"), ("allow", "06:00-22:00"), ("allow", "21:59-06:01")]
            )
        ],
    )
)


@pytest.mark.parametrize("policy", [POLICY, WINDOWED], ids=["one window", "wrapping windows"])
def test_a_time_window_is_decided_at_each_decisions_own_minute(policy: CompiledPolicy) -> None:
    shadow = Shadow(policy, max_cached=50)
    for now in range(0, 2 * 86400, 60):
        assert shadow.decide(REQUEST, now) == evaluate(policy, REQUEST, now), now


PARENTED = compile_policy(
    policy_payload(
        groups={},
        workloads={},
        rules=[
            {
                "id": f"from-vision-{max_age}",
                "effect": effect,
                "subjects": ["svc:plc-bridge"],
                "actions": ["plc.write"],
                "resources": ["plc://line-a/*"],
                "when": {"parent": {"action": ["model.invoke"], "max_age": max_age}},
            }
            for effect, max_age in (("allow", 30), ("allow", 90))
        ],
    )
)
PARENT_TIME = 1_700_000_000
CITING = Request(
    "svc:plc-bridge",
    "plc.write",
    "plc://line-a/valve-7",
    parent=Parent(
        ParentFacts(
            "gw-cam-01",
            ("cameras",),
            41,
            bytes(32),
            "svc:vision",
            "model.invoke",
            "model://vision/v3",
            PARENT_TIME,
            1,
        ),
        4,
    ),
)


def test_one_request_citing_one_parent_is_decided_at_each_age_of_that_parent() -> None:
    """The same request (same parent) is allowed at 10 s and denied at 100 s, past every
    max_age: the parent's age enters the cache key."""
    shadow = Shadow(PARENTED, max_cached=50)
    young = shadow.decide(CITING, PARENT_TIME + 10)
    old = shadow.decide(CITING, PARENT_TIME + 100)
    assert young == Match(True, "allowed", "from-vision-30")
    assert old == Match(False, "parent_invalid", "from-vision-30")
    for age in (-5, 0, 29, 30, 31, 89, 90, 91, 3600, 10, 40, 100):
        now = PARENT_TIME + age
        assert shadow.decide(CITING, now) == evaluate(PARENTED, CITING, now), age


def test_a_refused_or_missing_parent_is_decided_as_the_engine_does() -> None:
    refused = replace(CITING, parent=Parent(None, 4, "parent refused: expired directory"))
    shadow = Shadow(PARENTED, max_cached=50)
    for request in (refused, replace(CITING, parent=None)):
        for age in (0, 40, 100):
            now = PARENT_TIME + age
            assert shadow.decide(request, now) == evaluate(PARENTED, request, now)


def test_the_diff_reports_dead_rules_in_precedence_order_and_gated_decisions_apart() -> None:
    entries = [
        StoredEntry(0, _entry(0, 12 * 3600)),
        StoredEntry(1, _entry(1, 23 * 3600)),
        StoredEntry(2, _entry(2, 12 * 3600, "revoked")),
    ]
    report = diff_decisions(Shadow(POLICY), [(DeviceScope("gw-1", "a"), entries)])
    assert (report.decisions, report.redecided, report.unchanged) == (3, 2, 1)
    assert report.gated == (("revoked", 1),)
    assert report.flip_count == 1 and report.flips[0].after == Match(
        False, "no_matching_rule", None
    )
    assert report.dead_rules == ("never",)


def test_groups_past_the_limit_are_counted_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diff, "MAX_GROUPS", 2)
    night = 23 * 3600
    devices = [
        (DeviceScope(f"gw-{n}", f"line-{n}"), [StoredEntry(0, _entry(0, night))]) for n in range(5)
    ]
    report = diff_decisions(Shadow(POLICY), devices)
    assert report.flip_count == 5
    assert [g.groups for g in report.flips] == ["line-0", "line-1"]
    assert report.untracked == 3

"""``edge-hub bundle diff``: what a candidate bundle would change in shipped decisions.

Steps: 1. verify the candidate as a device of its target would (signatures under the hub's
trust root, payload, expiry at the hub's clock, policy compiles:
:func:`hub.core.bundles.verify_operator_bundle`); a candidate that fails is refused, never
diffed; 2. choose the devices: registered, targeted by the candidate, narrowed by
``--group`` and ``--device``; 3. the baseline: each decision as recorded, or with
``--against-version N`` what the recorded bundle N (verified under the same root) decides on
the devices it targets; 4. stream each device's shipped entries from the registry through
:func:`hub.core.diff.diff_decisions`; 5. print the report, sorted (text, or ``--json``:
docs/rollout.md describes the format).

Exit codes, as diff(1), so the command can gate a policy repository's CI: 0 nothing flips,
1 some decision flips, 2 the diff could not be made (usage, an unreadable file, a candidate
that fails verification, a baseline version never pushed, a damaged registry). A refused
candidate is 2 rather than the hub's usual 1 for a refusal: 1 means only "it flips".
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import BundleError, ConfigError, EdgeGovError
from edge_agent.policy.bundle import CompiledBundle, compile_bundle_policy
from edge_agent.policy.engine import Match
from edge_agent.protocol.bundle import DeviceIdentity, verify_bundle
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.root import TrustRoot
from edge_agent.support.cli import (
    EXIT_UNAVAILABLE,
    fail,
    read_bounded,
    utc_text,
    wall_clock,
)
from hub.cli.exits import counted, exit_code
from hub.cli.hub_dir import hub_dir_of
from hub.cli.parsers.bundle_diff import EXIT_FLIPS, EXIT_SAME, EXIT_TROUBLE
from hub.core.bundles import verify_operator_bundle
from hub.core.diff import (
    ChangeGroup,
    DeviceScope,
    DiffReport,
    Example,
    RequestGroup,
    Shadow,
    diff_decisions,
)
from hub.hubdir.keys import ROOT_FILE, load_root
from hub.registry import DeviceRecord, Registry

__all__ = ["EXIT_FLIPS", "EXIT_SAME", "EXIT_TROUBLE", "JSON_FORMAT", "cmd_diff"]

PROG = "edge-hub"
JSON_FORMAT = "edgegov-bundle-diff/1"
"""The ``format`` member of ``--json`` output; changes only with a new number."""
_TIME = "%Y-%m-%dT%H:%M:%SZ"
_SHOWN_DEVICES = 10


@dataclass(frozen=True, slots=True)
class _Setting:
    """What a report was made of, for its header."""

    candidate: CompiledBundle
    baseline: tuple[CompiledBundle, ...] | None
    devices: tuple[str, ...]
    outside_baseline: tuple[str, ...]
    since: int | None


def cmd_diff(args: argparse.Namespace) -> int:
    try:
        setting, report = _diff(args)
    except EdgeGovError as exc:
        code = EXIT_UNAVAILABLE if exit_code(exc) == EXIT_UNAVAILABLE else EXIT_TROUBLE
        return fail(PROG, exc, args.verbose, code, as_json=args.json)
    if args.json:
        print(json.dumps(_report_json(setting, report), sort_keys=True))
    else:
        _print_report(setting, report, args.limit)
    return EXIT_FLIPS if report.flip_count else EXIT_SAME


def _diff(args: argparse.Namespace) -> tuple[_Setting, DiffReport]:
    hub = hub_dir_of(args)
    root = _root(args.keys or hub.keys)
    data = read_bounded(args.candidate, MAX_BUNDLE_BYTES, "candidate bundle")
    now = wall_clock()
    try:
        candidate = verify_operator_bundle(data, root=root, now=now)
    except BundleError as exc:
        raise BundleError(
            f"candidate {args.candidate} refused, not diffed: {exc.message}", code=exc.code
        ) from exc
    since = None if args.since is None else now - args.since
    with hub.open_registry(create=False) as registry:
        devices = _devices(registry.devices(), candidate, args.group, args.device)
        baseline = None
        if args.against_version is not None:
            baseline = _baseline(registry, root, candidate.target.region, args.against_version)
        scopes, outside = _scopes(devices, baseline)
        report = diff_decisions(
            Shadow(candidate.policy),
            ((scope, registry.iter_entries(scope.device_id)) for scope in scopes),
            since=since,
        )
    setting = _Setting(
        candidate, baseline, tuple(s.device_id for s in scopes), tuple(outside), since
    )
    return setting, report


def _root(keys: Path) -> TrustRoot:
    if not (keys / ROOT_FILE).exists():
        raise ConfigError(f"no trust root in {keys}: run 'edge-hub keys init --out {keys}'")
    return load_root(keys / ROOT_FILE)


def _identity(record: DeviceRecord) -> DeviceIdentity:
    return DeviceIdentity(record.device_id, record.region, record.groups, record.profile)


def _devices(
    records: Sequence[DeviceRecord],
    candidate: CompiledBundle,
    groups: Sequence[str],
    named: Sequence[str],
) -> list[DeviceRecord]:
    """The registered devices the candidate targets, narrowed by ``groups`` (in any) and
    ``named``, by id.

    Raises:
        ConfigError: a named device is not registered or not targeted, or none is left.
    """
    by_id = {r.device_id: r for r in records}
    for device_id in sorted(set(named)):
        record = by_id.get(device_id)
        if record is None:
            raise ConfigError(f"device {device_id} is not registered at this hub")
        why = candidate.target.mismatch(_identity(record))
        if why is not None:
            raise ConfigError(f"the candidate does not target device {device_id}: {why}")
    chosen = [
        r
        for r in sorted(records, key=lambda r: r.device_id)
        if candidate.target.mismatch(_identity(r)) is None
        and (not named or r.device_id in named)
        and (not groups or set(groups) & set(r.groups))
    ]
    if not chosen:
        raise ConfigError(
            "no registered device is targeted by the candidate"
            + (" in the groups and devices given" if groups or named else "")
            + ": nothing to diff"
        )
    return chosen


def _baseline(
    registry: Registry, root: TrustRoot, region: str, version: int
) -> tuple[CompiledBundle, ...]:
    """Every recorded bundle of ``region`` with ``version``, verified under ``root`` (no
    expiry: it is history) and compiled.

    Raises:
        ConfigError: none was recorded.
        BundleError: one no longer verifies under ``root``.
    """
    recorded = registry.bundles_of_version(region, version)
    if not recorded:
        known = ", ".join(map(str, registry.bundle_versions(region))) or "none"
        raise ConfigError(
            f"no bundle version {version} was pushed for region {region} (versions: {known})"
        )
    bundles = []
    for data in recorded:
        try:
            bundles.append(compile_bundle_policy(verify_bundle(data, root=root, region=region)))
        except BundleError as exc:
            raise BundleError(
                f"recorded bundle version {version} does not verify under trust root version "
                f"{root.version}: {exc.message}",
                code=exc.code,
            ) from exc
    return tuple(bundles)


def _scopes(
    devices: Sequence[DeviceRecord], baseline: tuple[CompiledBundle, ...] | None
) -> tuple[list[DeviceScope], list[str]]:
    """A scope per device, with its baseline; and the devices no baseline bundle targets.

    Raises:
        ConfigError: two baseline bundles target one device.
    """
    if baseline is None:
        return [DeviceScope(d.device_id, _groups_label(d)) for d in devices], []
    shadows = {b.digest: Shadow(b.policy) for b in baseline}
    scopes, outside = [], []
    for device in devices:
        targeting = [b for b in baseline if b.target.mismatch(_identity(device)) is None]
        if not targeting:
            outside.append(device.device_id)
            continue
        if len(targeting) > 1:
            raise ConfigError(
                f"{len(targeting)} recorded bundles of version {targeting[0].version} target "
                f"device {device.device_id}; compare with the recorded decisions instead"
            )
        scopes.append(
            DeviceScope(device.device_id, _groups_label(device), shadows[targeting[0].digest])
        )
    if not scopes:
        raise ConfigError(
            f"bundle version {baseline[0].version} targets none of the devices to diff"
        )
    return scopes, outside


def _groups_label(device: DeviceRecord) -> str:
    return ",".join(sorted(device.groups)) or "-"


def _notes(candidate: CompiledBundle) -> list[str]:
    notes = []
    if candidate.attestation is not None:
        notes.append(
            "the candidate requires attestation: a device whose measured state does not "
            "match its expectations denies every request (attestation_failed); measurements "
            "are not judged here"
        )
    if candidate.max_offline is not None:
        notes.append(
            f"the candidate sets max_offline {candidate.max_offline} s: a device without a "
            "freshness token for that long denies every request (freshness_expired); not "
            "re-decided here"
        )
    return notes


def _outcome_json(match: Match) -> dict[str, object]:
    return {"allowed": match.allowed, "reason": match.reason, "rule": match.rule_id}


def _examples_json(examples: tuple[Example, ...]) -> list[dict[str, object]]:
    return [{"device": e.device, "seq": e.seq, "time": e.time} for e in examples]


def _change_json(group: ChangeGroup) -> dict[str, object]:
    return {
        "subject": group.subject,
        "action": group.action,
        "device_groups": group.groups,
        "before": _outcome_json(group.before),
        "after": _outcome_json(group.after),
        "count": group.count,
        "first_seen": group.first_seen,
        "last_seen": group.last_seen,
        "examples": _examples_json(group.examples),
    }


def _request_json(group: RequestGroup) -> dict[str, object]:
    return {
        "subject": group.subject,
        "action": group.action,
        "resource": group.resource,
        "count": group.count,
        "first_seen": group.first_seen,
        "last_seen": group.last_seen,
        "examples": _examples_json(group.examples),
    }


def _report_json(setting: _Setting, report: DiffReport) -> dict[str, object]:
    candidate = setting.candidate
    baseline: dict[str, object] = {"kind": "recorded"}
    if setting.baseline is not None:
        baseline = {
            "kind": "bundle",
            "version": setting.baseline[0].version,
            "digests": sorted(b.digest.hex() for b in setting.baseline),
        }
    return {
        "format": JSON_FORMAT,
        "candidate": {
            "version": candidate.version,
            "digest": candidate.digest.hex(),
            "region": candidate.target.region,
            "rules": candidate.policy.rule_count,
        },
        "baseline": baseline,
        "since": setting.since,
        "devices": list(setting.devices),
        "devices_outside_baseline": list(setting.outside_baseline),
        "counts": {
            "decisions": report.decisions,
            "redecided": report.redecided,
            "unchanged": report.unchanged,
            "flips": report.flip_count,
            "reason_changed": report.reason_changed_count,
            "rule_changed": report.rule_changed_count,
            "default_deny_only": report.default_deny_count,
            "untracked": report.untracked,
        },
        "gated": dict(report.gated),
        "flips": [_change_json(g) for g in report.flips],
        "reason_changed": [_change_json(g) for g in report.reason_changed],
        "rule_changed": [_change_json(g) for g in report.rule_changed],
        "dead_rules": list(report.dead_rules),
        "default_deny_only": [_request_json(g) for g in report.default_deny_only],
        "notes": _notes(candidate),
    }


def _outcome_text(match: Match) -> str:
    if match.rule_id is None:
        return "deny by default"
    return f"{'allow' if match.allowed else 'deny'} by {match.rule_id}"


def _when(seconds: int) -> str:
    return utc_text(seconds, _TIME)


def _examples_text(examples: tuple[Example, ...]) -> str:
    return ", ".join(f"{e.device} #{e.seq} {_when(e.time)}" for e in examples)


def _print_report(setting: _Setting, report: DiffReport, limit: int) -> None:
    candidate = setting.candidate
    print(
        f"candidate  bundle v{candidate.version} sha256:{candidate.digest.hex()[:16]}, region "
        f"{candidate.target.region}, {counted(candidate.policy.rule_count, 'rule')}"
    )
    if setting.baseline is None:
        print("baseline   the decisions as recorded")
    else:
        digests = ", ".join(f"sha256:{b.digest.hex()[:16]}" for b in setting.baseline)
        print(f"baseline   bundle v{setting.baseline[0].version} ({digests})")
    shown = ", ".join(setting.devices[:_SHOWN_DEVICES])
    more = len(setting.devices) - _SHOWN_DEVICES
    print(f"devices    {len(setting.devices)}: {shown}" + (f" and {more} more" if more > 0 else ""))
    if setting.outside_baseline:
        print(f"           not targeted by the baseline: {', '.join(setting.outside_baseline)}")
    window = "every shipped decision" if setting.since is None else f"since {_when(setting.since)}"
    print(f"window     {window}")
    gated = ", ".join(f"{reason} {count:,}" for reason, count in report.gated)
    print(
        f"decisions  {report.decisions:,}: {report.redecided:,} re-decided, "
        f"{report.decisions - report.redecided:,} denied by the gate (not re-decided)"
        + (f": {gated}" if gated else "")
    )
    _print_changes("FLIPS", "verdict changes", report.flip_count, report.flips, limit)
    _print_changes(
        "SAME VERDICT, OTHER REASON",
        "reason changes",
        report.reason_changed_count,
        report.reason_changed,
        limit,
    )
    _print_changes(
        "SAME VERDICT, OTHER RULE",
        "deciding rule changes",
        report.rule_changed_count,
        report.rule_changed,
        limit,
    )
    print(
        f"\nDEAD RULES  {len(report.dead_rules):,} of {candidate.policy.rule_count:,} candidate "
        "rules decide none of these decisions"
    )
    for rule in report.dead_rules[:limit]:
        print(f"  {rule}")
    _more(len(report.dead_rules), limit, "rules")
    print(
        f"\nDEFAULT DENY ONLY  {report.default_deny_count:,} decisions that no candidate rule "
        "matches"
    )
    for request in report.default_deny_only[:limit]:
        print(f"  {request.count:>7,}  {request.subject} {request.action} {request.resource}")
        print(f"           first {_when(request.first_seen)}  last {_when(request.last_seen)}")
        print(f"           e.g. {_examples_text(request.examples)}")
    _more(len(report.default_deny_only), limit, "requests")
    if report.untracked:
        print(f"\n{report.untracked:,} changed decisions fall in groups past the report's limit")
    for note in _notes(candidate):
        print(f"\nnote: {note}")
    verdict = (
        f"{report.flip_count:,} decisions flip (exit {EXIT_FLIPS})"
        if report.flip_count
        else f"nothing flips (exit {EXIT_SAME})"
    )
    print(f"\nresult     {verdict}")


def _print_changes(
    title: str, what: str, count: int, groups: tuple[ChangeGroup, ...], limit: int
) -> None:
    print(f"\n{title}  {count:,} decisions whose {what}, in {len(groups):,} groups")
    for group in groups[:limit]:
        print(f"  {group.count:>7,}  {_outcome_text(group.before)} -> {_outcome_text(group.after)}")
        print(f"           {group.subject} {group.action}, devices in {group.groups}")
        print(f"           first {_when(group.first_seen)}  last {_when(group.last_seen)}")
        print(f"           e.g. {_examples_text(group.examples)}")
    _more(len(groups), limit, "groups")


def _more(total: int, limit: int, what: str) -> None:
    if total > limit:
        print(f"  ... and {total - limit:,} more {what} (--limit, or --json for all)")

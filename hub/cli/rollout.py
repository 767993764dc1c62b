"""``edge-hub rollout start|status|pause|resume|abort``: staged rollouts (docs/rollout.md).

``start`` verifies the candidate as ``bundle push`` does, signs the rollback bundle with
the policy keys of the keys directory (as ``bundle build`` reads them) and records the
rollout; the running ``edge-hub serve`` then publishes its stages, soaks them, judges them
and halts or completes it (:mod:`hub.service.rollout`). ``pause``, ``resume`` and
``abort`` change the recorded state (compare-and-set against the hub's own writes; an
abort is carried out, rolled back, by the running hub). ``status`` explains each stage.

Exit codes as every ``edge-hub`` command: 0 done, 1 refused (the candidate fails
verification), 2 a usage or input error (a halt condition that does not parse is shown
with a caret under the bad token).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge_agent.errors import ConfigError
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.roles import Role
from edge_agent.support.cli import format_duration, read_bounded, utc_text, wall_clock
from hub.cli.exits import counted
from hub.cli.hub_dir import hub_dir_of
from hub.core.halt import HaltSyntaxError
from hub.core.rollout import (
    judge,
    soak_left,
    stage_members,
    with_abort_requested,
    with_paused,
    with_resumed,
)
from hub.hubdir.keys import load_role_keys
from hub.registry import Registry
from hub.registry.rollout_records import RolloutRecord, RolloutState, StageLog
from hub.service.rollout import prepare_rollout, stage_counters_now

__all__ = ["STATUS_FORMAT", "cmd_change", "cmd_start", "cmd_status"]

STATUS_FORMAT = "edgegov-rollout-status/1"
SHOWN_DEVICES = 10
"""Device ids the text status names per stage (the JSON has them all)."""
_CAS_ATTEMPTS = 5
_NARROWED = "its devices' own channels (narrowed by --group)"


def cmd_start(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    keys_dir = args.keys or hub.keys
    keys = hub.load_keys(keys_dir)
    signers = load_role_keys(keys_dir, Role.POLICY, keys.root)
    threshold = keys.root.role(Role.POLICY).threshold
    if len(signers) < threshold:
        raise ConfigError(
            f"found {len(signers)} policy key(s) in {keys_dir}; {threshold} are needed to "
            "pre-sign the rollback bundle"
        )
    data = read_bounded(args.candidate, MAX_BUNDLE_BYTES, "candidate bundle")
    with hub.open_registry(create=False) as registry:
        try:
            record = prepare_rollout(
                registry,
                keys,
                signers,
                data,
                stages=args.stages,
                soak_s=args.soak,
                halts=args.halt_if,
                groups=args.group,
                now=wall_clock(),
            )
        except HaltSyntaxError as exc:
            if args.json:
                raise
            print(exc.pointer(), file=sys.stderr)
            return 2
    if args.json:
        with hub.open_registry(create=False) as registry:
            described = _describe(registry, record, wall_clock())
        print(json.dumps({"format": STATUS_FORMAT, "rollouts": [described]}, sort_keys=True))
        return 0
    sizes = ", ".join(
        f"{share}% {len(stage_members(record, k))}" for k, share in enumerate(record.stages)
    )
    print(
        f"rollout {record.rollout_id} started: bundle v{record.candidate_version} "
        f"sha256:{record.candidate_digest.hex()[:16]} to {counted(len(record.devices), 'device')} "
        f"in {counted(len(record.stages), 'stage')} ({sizes} devices), soak "
        f"{format_duration(record.soak_s)}"
    )
    print(f"halt if   {'; '.join(record.halts) or '(no condition: only pause/abort stop it)'}")
    print(
        f"rollback  v{record.candidate_version + 1} signed (the previous policy): published "
        "to the switched devices on a halt or abort"
    )
    if not record.channels:
        print(
            f"completion leaves it {_NARROWED}: --group leaves out devices it targets; push it "
            "to its channels when they should have it too"
        )
    print("the running 'edge-hub serve' publishes stage 1 within seconds")
    return 0


def cmd_change(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    with hub.open_registry(create=False) as registry:
        for _ in range(_CAS_ATTEMPTS):
            record = _one(registry, args.rollout)
            now = wall_clock()
            if args.change == "pause":
                changed = with_paused(record, now)
            elif args.change == "resume":
                changed = with_resumed(record, now)
            else:
                changed = with_abort_requested(record, now, args.reason)
            if registry.update_rollout(changed, expected=record):
                break
        else:
            raise ConfigError(f"rollout {args.rollout} keeps changing; try again")
    done = {
        "pause": "paused: no stage starts and the soak clock stops; halts are still watched",
        "resume": f"running: {format_duration(soak_left(changed, now))} of soak left",
        "abort": "aborting: the running hub rolls the switched devices back within seconds",
    }
    if args.json:
        print(
            json.dumps(
                {
                    "id": changed.rollout_id,
                    "state": str(changed.state),
                    "message": done[args.change],
                },
                sort_keys=True,
            )
        )
        return 0
    print(f"rollout {changed.rollout_id} {done[args.change]}")
    return 0


def _one(registry: Registry, rollout: str) -> RolloutRecord:
    record = registry.rollout(rollout)
    if record is None:
        known = ", ".join(r.rollout_id for r in registry.rollouts()) or "none"
        raise ConfigError(f"no rollout {rollout!r} (rollouts: {known})")
    return record


def cmd_status(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    now = wall_clock()
    with hub.open_registry(create=False) as registry:
        records = [_one(registry, args.rollout)] if args.rollout else registry.rollouts()
        described = [_describe(registry, r, now) for r in records]
    if args.json:
        print(json.dumps({"format": STATUS_FORMAT, "rollouts": described}, sort_keys=True))
        return 0
    if not described:
        print("no rollouts")
    for index, rollout in enumerate(described):
        if index:
            print()
        _print(rollout)
    return 0


def _describe(registry: Registry, record: RolloutRecord, now: int) -> dict[str, Any]:
    """One rollout as the JSON status holds it (docs/rollout.md, section 3.5)."""
    current = None
    if record.state.active and record.entered == record.stage:
        view = stage_counters_now(registry, record)
        counters = view.counters
        current = {
            "decisions": counters.decisions,
            "switched_decisions": view.switched,
            "shadow_decisions": view.shadowed,
            "divergences": view.divergences,
            "denied": counters.denied,
            "by_reason": dict(sorted(counters.by_reason.items())),
            "by_rule": dict(sorted(counters.by_rule.items())),
            "install_failures": counters.install_failures,
            "baseline_decisions": counters.baseline_decisions,
            "baseline_denied": counters.baseline_denied,
            "observed": list(judge(record.halts, counters).observed),
        }
    logs = {log.stage: log for log in record.history}
    stages = []
    for k, share in enumerate(record.stages):
        log = logs.get(k)
        stage: dict[str, Any] = {
            "stage": k + 1,
            "share": f"{share}%",
            "devices": list(stage_members(record, k)),
            "started_at": None if log is None else log.started_at,
            "ended_at": None if log is None else log.ended_at,
            "outcome": _outcome(record, k, log),
            "observed": [] if log is None else list(log.observed),
            "baseline": None
            if log is None
            else {"decisions": log.baseline_decisions, "denied": log.baseline_denied},
        }
        if k == record.stage and record.state.active:
            stage["soak_left_s"] = soak_left(record, now)
            stage["counters"] = current
        stages.append(stage)
    return {
        "id": record.rollout_id,
        "region": record.region,
        "state": str(record.state),
        "reason": record.reason,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "candidate": {
            "version": record.candidate_version,
            "digest": record.candidate_digest.hex(),
        },
        "rollback_version": record.candidate_version + 1,
        "channels": list(record.channels),
        "groups": list(record.groups),
        "soak_s": record.soak_s,
        "halts": list(record.halts),
        "stage": record.stage + 1,
        "stages": stages,
    }


def _outcome(record: RolloutRecord, k: int, log: StageLog | None) -> str:
    if log is not None:
        return log.outcome or ("paused" if record.state is RolloutState.PAUSED else "running")
    if k == record.stage and record.state is RolloutState.RUNNING:
        return "waiting for the running hub to publish it"
    return "not started"


def _print(rollout: dict[str, Any]) -> None:
    candidate = rollout["candidate"]
    reason = f": {rollout['reason']}" if rollout["reason"] else ""
    print(f"rollout   {rollout['id']}: {rollout['state']}{reason}")
    print(
        f"candidate bundle v{candidate['version']} sha256:{candidate['digest'][:16]} on "
        f"{', '.join(rollout['channels']) or _NARROWED}; "
        f"rollback v{rollout['rollback_version']}"
    )
    print(
        f"soak      {format_duration(rollout['soak_s'])} per stage; halt if "
        f"{'; '.join(rollout['halts']) or '(none)'}"
    )
    for stage in rollout["stages"]:
        devices = stage["devices"]
        shown = ", ".join(devices[:SHOWN_DEVICES]) + (
            ", ..." if len(devices) > SHOWN_DEVICES else ""
        )
        print(
            f"stage {stage['stage']}   {stage['share']:>6} {len(devices)} device(s): "
            f"{shown or '(none)'}"
        )
        line = f"          {stage['outcome']}"
        if stage["started_at"] is not None:
            line += f", started {_when(stage['started_at'])}"
        if stage["ended_at"] is not None:
            line += f", ended {_when(stage['ended_at'])}"
        if "soak_left_s" in stage and stage["started_at"] is not None:
            line += f", soak left {format_duration(stage['soak_left_s'])}"
        print(line)
        counters = stage.get("counters")
        if counters:
            print(
                f"          {counters['decisions']} decisions ({counters['switched_decisions']} "
                f"under the candidate, {counters['shadow_decisions']} as shadow with "
                f"{counters['divergences']} divergence(s)), {counters['denied']} denied, "
                f"{counters['install_failures']} install failure(s); baseline "
                f"{counters['baseline_denied']}/{counters['baseline_decisions']} denied"
            )
            for observed in counters["observed"]:
                print(f"          {observed}")
        else:
            for observed in stage["observed"]:
                print(f"          {observed}")


def _when(seconds: int) -> str:
    return utc_text(seconds, "%Y-%m-%dT%H:%M:%SZ")

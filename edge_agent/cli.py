"""``edge-agent``: the device's command line (enrol, install, decide, status).

Exit codes (also in ``--help``): see :data:`EXIT_CODES`. No option or variable can change
the agent's notion of "now": every command reads the wall clock once and the trust core
judges it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_agent import __version__
from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.attest import cli as attest_cli
from edge_agent.device_key import load_device_key
from edge_agent.errors import ConfigError, EdgeGovError, StateError
from edge_agent.fanotify import cli as fanotify_cli
from edge_agent.lineage import cli as lineage_cli
from edge_agent.protocol._schema import check_name
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES, MAX_ROOT_BYTES
from edge_agent.protocol.request import Request
from edge_agent.protocol.topics import check_topic_name
from edge_agent.socket import cli as socket_cli
from edge_agent.support.cli import (
    configure_logging,
    fail,
    format_duration,
    output_gone,
    read_bounded,
    read_offered,
    wall_clock,
)
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.sync import cli as sync_cli
from edge_agent.trust.gate import GATE_OPEN, Decision, Reason, gate_state
from edge_agent.trust.state import TrustState

__all__ = ["main"]

PROG = "edge-agent"
DEFAULT_STATE_DIR = "/var/lib/edge-agent"
MAX_REQUEST_FIELD_CHARS = 4096
MAX_CONTEXT_ITEMS = 64


EXIT_CODES = (
    "exit codes: 0 success (decide: allow); 1 refused or denied (decide: deny, whatever the "
    "reason, including a state database that cannot be read); 2 a usage or input error, "
    "including a state directory that cannot be used (missing, not initialised, state.db "
    "not a file); 141 stdout's reader went away (| head -1: the rest of the output is "
    "dropped)."
)


class _UsageError(Exception):
    """A command-line argument is malformed (exit 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError as exc:
        return output_gone(PROG, exc)


def _run(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.log_format)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()
        return code
    except (_UsageError, ConfigError) as exc:
        return fail(PROG, exc, args.verbose, 2)
    except StateError as exc:
        problem = None if args.handler is _cmd_init else _unusable_state_dir(args.state_dir)
        if problem is not None:
            return fail(PROG, ConfigError(problem), args.verbose, 2)
        return fail(PROG, exc, args.verbose, 1)
    except EdgeGovError as exc:
        return fail(PROG, exc, args.verbose, 1)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("EDGE_AGENT_STATE_DIR") or DEFAULT_STATE_DIR),
        help="agent state directory (default: $EDGE_AGENT_STATE_DIR or %(default)s)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr log lines: key=value text (journald) or JSON objects (default: text)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG, description="edgegov edge agent", epilog=EXIT_CODES, parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", parents=[common], help="enrol this device")
    init.add_argument("--device-id", required=True)
    init.add_argument("--root", required=True, help="the trust root file (root.cbor) to pin")
    init.add_argument("--region", required=True)
    init.add_argument("--group", action="append", default=[], help="a device group (repeat)")
    init.add_argument("--profile", required=True, help="firmware profile name")
    init.add_argument("--broker", help="the hub's broker, mqtt://host:1883 or mqtts://host:8883")
    init.add_argument("--broker-username", help="MQTT username (default: the device id)")
    init.add_argument("--broker-password-file", help="file holding the MQTT password")
    init.add_argument("--broker-ca", help="CA bundle (PEM) to verify an mqtts:// broker")
    init.add_argument("--broker-cert", help="client certificate (PEM) for mqtts://")
    init.add_argument("--broker-key", help="client certificate key (PEM) for mqtts://")
    init.set_defaults(handler=_cmd_init)

    bundle = commands.add_parser("bundle", help="policy bundles").add_subparsers(
        dest="bundle_command", required=True, metavar="COMMAND"
    )
    install = bundle.add_parser("install", parents=[common], help="verify and install a bundle")
    install.add_argument("file", help="bundle file (- for stdin)")
    install.set_defaults(handler=_cmd_bundle_install)

    root = commands.add_parser("root", help="trust roots").add_subparsers(
        dest="root_command", required=True, metavar="COMMAND"
    )
    root_install = root.add_parser(
        "install", parents=[common], help="rotate to the next root(s), in version order"
    )
    root_install.add_argument("file", nargs="+", help="root files, oldest version first")
    root_install.set_defaults(handler=_cmd_root_install)

    decide = commands.add_parser("decide", parents=[common], help="decide one request")
    decide.add_argument("--subject", required=True)
    decide.add_argument("--action", required=True)
    decide.add_argument("--resource", required=True)
    decide.add_argument("--context", action="append", default=[], metavar="KEY=VALUE")
    decide.add_argument("--json", action="store_true", help="print one JSON object")
    decide.set_defaults(handler=_cmd_decide)

    status = commands.add_parser("status", parents=[common], help="trust state at a glance")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_cmd_status)

    pubkey = commands.add_parser("pubkey", parents=[common], help="print the device public key")
    pubkey.set_defaults(handler=_cmd_pubkey)
    lineage_cli.register(commands, common)
    sync_cli.register(commands, common)
    socket_cli.register(commands, common)
    attest_cli.register(commands, common, _trust_state)
    fanotify_cli.register(commands, common)
    return parser


build_parser = _parser


def _trust_state(state_dir: Path) -> TrustState:
    """The trust state of the agent in ``state_dir``, read and closed again."""
    with LocalAgent.open(state_dir) as agent:
        return agent.state


def _cmd_init(args: argparse.Namespace) -> int:
    identity = DeviceIdentity(
        device_id=_name(args.device_id, "--device-id"),
        region=_name(args.region, "--region"),
        groups=tuple(_name(g, "--group") for g in args.group),
        profile=_name(args.profile, "--profile"),
    )
    for value, option in [(identity.device_id, "--device-id"), (identity.region, "--region")] + [
        (g, "--group") for g in identity.groups
    ]:
        try:
            check_topic_name(value, option)
        except ValueError as exc:
            raise _UsageError(str(exc)) from exc
    settings = _broker_settings(args)
    root = read_bounded(args.root, MAX_ROOT_BYTES, "trust root")
    public = init_state_dir(args.state_dir, identity, root, wall_clock(), settings)
    print(f"enrolled {identity.device_id} in {args.state_dir}")
    print(f"device key id: {public.key_id.hex()}")
    print("register this public key with the hub ('edge-agent pubkey' prints it again):")
    print(public.to_pem(), end="")
    return 0


def _broker_settings(args: argparse.Namespace) -> dict[str, str]:
    """The broker options given to ``init``, checked and keyed as ``run`` reads them."""
    given = {
        "url": args.broker,
        "username": args.broker_username,
        "password_file": args.broker_password_file,
        "ca_file": args.broker_ca,
        "cert_file": args.broker_cert,
        "key_file": args.broker_key,
    }
    settings = {f"broker.{k}": v for k, v in given.items() if v is not None}
    if settings and args.broker is None:
        raise _UsageError("the --broker-* options need --broker URL")
    if args.broker is not None:
        BrokerSettings.from_url(args.broker)
    return settings


def _cmd_bundle_install(args: argparse.Namespace) -> int:
    data = read_offered(args.file, MAX_BUNDLE_BYTES, "bundle")
    with LocalAgent.open(args.state_dir) as agent:
        result = agent.install_bundle(data, wall_clock())
    bundle = result.bundle
    verb = "already installed" if result.unchanged else "installed"
    print(
        f"bundle version {bundle.version} {verb} "
        f"(sha256:{bundle.digest.hex()[:16]}, {bundle.policy.rule_count} rules, "
        f"expires in {format_duration(bundle.expires_at - wall_clock())})"
    )
    return 0


def _cmd_root_install(args: argparse.Namespace) -> int:
    """Install the roots given, all or none: a file identical to the current root is a
    no-op, and the rest must be the next versions in order, every link verified before the
    first is installed (an older root than the current one is a rollback, refused). An
    expired root is a valid link (TUF), but if the last one installed has expired the device
    denies ``root_expired`` until a newer one is."""
    files = [read_offered(f, MAX_ROOT_BYTES, "trust root") for f in args.file]
    with LocalAgent.open(args.state_dir) as agent:
        current = agent.state.root
        chain = [data for data in files if data != current.raw]
        if len(chain) < len(files):
            print(f"trust root version {current.version} already installed (no change)")
        for root in agent.install_roots(chain, wall_clock()):
            print(f"trust root version {root.version} installed")
        root = agent.state.root
        now = agent.earliest_now(wall_clock())
    if now >= root.expires_at:
        print(
            f"warning: trust root version {root.version} has expired; every decision denies "
            f"(root_expired) until trust root version {root.version + 1} or later is installed",
            file=sys.stderr,
        )
    return 0


def _cmd_decide(args: argparse.Namespace) -> int:
    request = Request(
        subject=_field(args.subject, "--subject"),
        action=_field(args.action, "--action"),
        resource=_field(args.resource, "--resource"),
        context=_context(args.context),
    )
    now = wall_clock()
    try:
        with LocalAgent.open(args.state_dir) as agent:
            decision = agent.decide(request, now)
    except StateError as exc:
        if _unusable_state_dir(args.state_dir) is not None:
            raise
        decision = Decision(False, Reason.INTERNAL_ERROR, str(exc), None, None, None, request, now)
    _print_decision(decision, args.json)
    return 0 if decision.allowed else 1


def _print_decision(decision: Decision, as_json: bool) -> None:
    digest = decision.bundle_digest.hex() if decision.bundle_digest else None
    if as_json:
        print(
            json.dumps(
                {
                    "decision": "allow" if decision.allowed else "deny",
                    "reason": str(decision.reason),
                    "message": decision.message,
                    "rule": decision.rule_id,
                    "bundle_version": decision.bundle_version,
                    "bundle_digest": digest,
                    "time": decision.time,
                    "request": {
                        "subject": decision.request.subject,
                        "action": decision.request.action,
                        "resource": decision.request.resource,
                        "context": dict(decision.request.context),
                    },
                    "decision_digest": decision.digest.hex(),
                },
                sort_keys=True,
            )
        )
        return
    verdict = "ALLOW" if decision.allowed else "DENY"
    bundle = f"bundle v{decision.bundle_version} sha256:{digest[:16]}" if digest else "no bundle"
    print(f"{verdict} {decision.reason} rule={decision.rule_id or '-'} {bundle}")
    print(f"  {decision.message}")


def _cmd_status(args: argparse.Namespace) -> int:
    now = wall_clock()
    with LocalAgent.open(args.state_dir, record_lineage_breaks=False) as agent:
        state = agent.state
        checks = agent.checks(now)
        lineage = agent.lineage_problem()
        gate = gate_state(checks, lineage)
        summary = agent.lineage.summary() if agent.lineage else None
        broker = agent.store.get_setting("broker.url")
    bundle = state.bundle
    fresh = None if bundle is None else max(bundle.issued_at, state.fresh_time or 0)
    report: dict[str, object] = {
        "device": {
            "id": state.device.device_id,
            "region": state.device.region,
            "groups": list(state.device.groups),
            "profile": state.device.profile,
        },
        "root": {"version": state.root.version, "expires_at": state.root.expires_at},
        "bundle": None
        if bundle is None
        else {
            "version": bundle.version,
            "digest": bundle.digest.hex(),
            "signers": sorted(k.hex() for k in bundle.signer_ids),
            "issued_at": bundle.issued_at,
            "expires_at": bundle.expires_at,
            "expires_in_s": bundle.expires_at - now,
            "rules": bundle.policy.rule_count,
        },
        "time": {"now": now, "trusted_floor": state.floor.seconds},
        "gate": "open" if gate == GATE_OPEN else "closed",
        "lineage": {
            "available": lineage is None,
            "problem": lineage,
            "base": summary.base if summary else None,
            "size": summary.size if summary else None,
            "acknowledged": summary.acknowledged if summary else None,
        },
        "sync": {
            "broker": broker,
            "last_freshness": fresh,
            "max_offline": bundle.max_offline if bundle else None,
            "revocation_epoch_seen": state.seen_epoch,
            "revocations_applied": len(state.revocations),
        },
        "attestation": attest_cli.attestation_status(state, now),
        "checks": [
            {"check": c.name, "passed": c.passed, "reason": c.reason, "message": c.message}
            for c in checks
        ],
    }
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    print(
        f"device   {state.device.device_id} (region {state.device.region}, "
        f"groups {', '.join(state.device.groups) or '-'}, profile {state.device.profile})"
    )
    print(
        f"root     version {state.root.version}, expires in "
        f"{format_duration(state.root.expires_at - now)}"
    )
    if bundle is None:
        print("bundle   none installed")
    else:
        signers = ", ".join(sorted(k.hex()[:16] for k in bundle.signer_ids))
        print(
            f"bundle   version {bundle.version} sha256:{bundle.digest.hex()[:16]}, "
            f"{bundle.policy.rule_count} rules, signed by {signers}"
        )
        left = bundle.expires_at - now
        print(f"expires  {'in ' if left > 0 else ''}{format_duration(left)}")
    if bundle is not None and bundle.max_offline is not None and fresh is not None:
        print(
            f"fresh    last hub freshness {format_duration(now - fresh)} ago, "
            f"max_offline {format_duration(bundle.max_offline)}"
        )
    print(
        f"sync     broker {broker or 'not configured'}; revocations: "
        f"{len(state.revocations)} applied, epoch {state.seen_epoch} seen"
    )
    print(attest_cli.attestation_line(state, now))
    if summary is not None:
        print(
            f"lineage  entries {summary.base}..{max(summary.size - 1, summary.base)}, "
            f"{summary.acknowledged} acknowledged by the hub, {summary.unacknowledged} waiting"
        )
    print(f"gate     {str(report['gate']).upper()}")
    if lineage is not None:
        print(f"  [FAIL] lineage  lineage_unavailable: {lineage}")
    for check in checks:
        mark = "ok  " if check.passed else "FAIL"
        detail = "" if check.passed else f"  {check.reason}: {check.message}"
        print(f"  [{mark}] {check.name}{detail}")
    return 0


def _cmd_pubkey(args: argparse.Namespace) -> int:
    print(load_device_key(args.state_dir).public.to_pem(), end="")
    return 0


def _unusable_state_dir(state_dir: Path) -> str | None:
    """Why ``state_dir`` cannot hold agent state at all (a setup fault, exit 2), or ``None``
    when its ``state.db`` is a file (then a read failure is the state's own: ``decide``
    denies ``internal_error``, other commands exit 1)."""
    database = state_dir / "state.db"
    if database.is_file():
        return None
    if database.exists():
        return (
            f"{database} is not a file, so {state_dir} is not a usable agent state directory: "
            f"move it aside and run 'edge-agent init --state-dir {state_dir} ...'"
        )
    return f"no agent state in {state_dir}: run 'edge-agent init --state-dir {state_dir} ...' first"


def _name(value: str, option: str) -> str:
    try:
        return check_name(value, option, ConfigError)
    except ConfigError as exc:
        raise _UsageError(str(exc)) from exc


def _field(value: str, option: str) -> str:
    if not value or len(value) > MAX_REQUEST_FIELD_CHARS or not value.isprintable():
        raise _UsageError(
            f"{option} must be non-empty printable text of at most {MAX_REQUEST_FIELD_CHARS} chars"
        )
    return value


def _context(items: list[str]) -> tuple[tuple[str, str], ...]:
    if len(items) > MAX_CONTEXT_ITEMS:
        raise _UsageError(f"at most {MAX_CONTEXT_ITEMS} --context items")
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _UsageError(f"--context {item!r} must be KEY=VALUE")
        if key in pairs:
            raise _UsageError(f"--context key {key!r} given twice")
        pairs[_field(key, "--context key")] = _field(value, "--context value")
    return tuple(sorted(pairs.items()))


if __name__ == "__main__":
    sys.exit(main())

"""``edge-agent``: the device's command line (enrol, install, decide, status).

Exit codes (also in ``--help``): see :data:`EXIT_CODES` and docs/cli.md. Global options
(``--state-dir``, ``--read-only``, ``--json``, ``-v``/``-vv``, ``-q``, ``--log-format``) work
before or after the subcommand; with ``--json`` a result, and an error, is JSON on stdout.
No option or variable can change the agent's notion of "now": every command reads the wall
clock once and the trust core judges it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import textwrap
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
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_STDOUT_GONE,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliParser,
    Stopped,
    add_verbosity,
    configure_logging,
    epilog,
    expiry_text,
    fail,
    format_duration,
    global_options,
    output_gone,
    path_error,
    printable_output,
    read_bounded,
    read_offered,
    stop_on_signals,
    terminal_width,
    wall_clock,
)
from edge_agent.support.mqtt import BrokerSettings
from edge_agent.support.readonly import is_read_only, read_only_inspection
from edge_agent.sync import cli as sync_cli
from edge_agent.trust.gate import GATE_OPEN, Decision, Reason, gate_state
from edge_agent.trust.state import TrustState

__all__ = ["main"]

PROG = "edge-agent"
DEFAULT_STATE_DIR = "/var/lib/edge-agent"
MAX_REQUEST_FIELD_CHARS = 4096
MAX_CONTEXT_ITEMS = 64


EXIT_CODES = epilog(
    [
        (EXIT_OK, "success (decide: allow; status: the gate is open)"),
        (EXIT_REFUSED, "refused or denied (decide: deny; status: the gate is closed)"),
        (EXIT_USAGE, "a usage or input error (a bad argument, an unreadable input file)"),
        (EXIT_UNAVAILABLE, "no usable agent state in --state-dir (missing, not initialised)"),
        (EXIT_INTERNAL, "an internal error (a fault of ours: please report it)"),
        (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
        (EXIT_STDOUT_GONE, "stdout's reader went away (| head -1): the rest is dropped"),
    ],
    "edge-agent --state-dir /var/lib/edge-agent status",
    "With --json a result is JSON on stdout, and so is an error: one object with error, "
    "code, message, exit, and path or field when one is at fault (docs/cli.md).",
)
"""The top-level ``--help`` epilog: every command's exit codes."""

STATE_EXITS = (
    (EXIT_OK, "done"),
    (EXIT_REFUSED, "refused (the state or input does not verify)"),
    (EXIT_USAGE, "a bad argument or an input file that cannot be read"),
    (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
)
"""The exit codes of a command that acts on the state directory, for its ``--help``."""


class _UsageError(Exception):
    """A command-line argument is malformed (exit 2)."""


class _Unavailable(StateError):
    """The state directory cannot hold agent state at all (exit 3)."""

    code = "state_missing"


def main(argv: Sequence[str] | None = None) -> int:
    printable_output()
    try:
        return _run(argv)
    except BrokenPipeError as exc:
        return output_gone(PROG, exc)


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.verbose, args.log_format, quiet=args.quiet)
    as_json = bool(getattr(args, "json", False))
    try:
        with contextlib.ExitStack() as stack:
            if args.read_only:
                stack.enter_context(read_only_inspection())
            if getattr(args, "reads_only", False):
                stack.enter_context(stop_on_signals())
                _say_read_only(args)
            elif args.handler is not _cmd_init and not getattr(args, "state_free", False):
                _require_writable(args)
            code = int(args.handler(args))
        sys.stdout.flush()
        return code
    except (_UsageError, ConfigError) as exc:
        return fail(PROG, exc, args.verbose, EXIT_USAGE, as_json=as_json)
    except _ReadOnly as exc:
        return fail(PROG, exc, args.verbose, EXIT_UNAVAILABLE, as_json=as_json, path=args.state_dir)
    except StateError as exc:
        problem = None if args.handler is _cmd_init else _unusable_state_dir(args.state_dir)
        if problem is not None:
            return fail(
                PROG,
                _Unavailable(problem),
                args.verbose,
                EXIT_UNAVAILABLE,
                as_json=as_json,
                path=args.state_dir,
            )
        return fail(PROG, exc, args.verbose, EXIT_REFUSED, as_json=as_json)
    except EdgeGovError as exc:
        return fail(PROG, exc, args.verbose, EXIT_REFUSED, as_json=as_json)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Stopped as stopped:
        return 128 + stopped.signum
    except BrokenPipeError:
        raise
    except OSError as exc:
        refused = path_error(exc)
        if refused is None:
            return _internal(exc, args.verbose, as_json)
        # A state directory the system refuses (too long a path, no permission to look) is
        # unavailable, as a missing one; any other path given is an input error.
        state_dir = getattr(args, "state_dir", None)
        at_fault = Path(refused.path)
        if state_dir is not None and (at_fault == state_dir or state_dir in at_fault.parents):
            return fail(
                PROG,
                refused,
                args.verbose,
                EXIT_UNAVAILABLE,
                as_json=as_json,
                reason="state_unusable",
            )
        return fail(PROG, refused, args.verbose, EXIT_USAGE, as_json=as_json)
    except Exception as exc:
        return _internal(exc, args.verbose, as_json)


def _internal(exc: Exception, verbose: int, as_json: bool) -> int:
    """Report a fault of ours: one line (the traceback with ``-v``), exit 70."""
    internal = RuntimeError(f"internal error: {exc} (-v shows where; please report it)")
    internal.__cause__ = exc
    return fail(PROG, internal, verbose, EXIT_INTERNAL, as_json=as_json)


def _require_writable(args: argparse.Namespace) -> None:
    """Refuse a command that writes the agent state (installs, decides: every decision is
    logged) before it starts, when the state directory is to be read only: a usage error
    with ``--read-only``, unavailable (exit 3) when the directory cannot be written.

    Raises:
        _UsageError: ``--read-only`` was given.
        _ReadOnly: the state directory cannot be written here.
    """
    if args.read_only:
        raise _UsageError(
            f"'{args.command}' writes the agent state, so it cannot run with --read-only "
            "(which only the reading commands take: status, log show, log verify, ...)"
        )
    database = args.state_dir / "state.db"
    if database.is_file() and is_read_only(database):
        raise _ReadOnly(
            f"{args.state_dir} cannot be written here (a read-only mount?), and "
            f"'{args.command}' writes the agent state: run it where the state is writable"
        )


class _ReadOnly(StateError):
    """The state directory cannot be written, and the command writes it (exit 3)."""

    code = "state_read_only"


def _say_read_only(args: argparse.Namespace) -> None:
    """Say once, on stderr, that a reading command opens the state directory read-only
    (asked with ``--read-only``, or the directory cannot be written); not under ``-q``, nor
    ``--json`` (whose reader takes stdout alone, and an error there leaves stderr empty)."""
    database = args.state_dir / "state.db"
    quiet = args.quiet or getattr(args, "json", False)
    if quiet or not database.is_file() or not is_read_only(database):
        return
    why = "--read-only" if args.read_only else "the directory cannot be written"
    print(
        f"{PROG}: reading {args.state_dir} read-only ({why}): nothing there is changed",
        file=sys.stderr,
    )


def _globals(parser: argparse.ArgumentParser) -> None:
    """The options every command takes, before or after its name."""
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("EDGE_AGENT_STATE_DIR") or DEFAULT_STATE_DIR),
        help="agent state directory (default: $EDGE_AGENT_STATE_DIR or %(default)s)",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="open the state directory read-only: nothing is written or created there "
        "(forensic inspection; automatic when the directory cannot be written)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON (one object, or one per line for log show), and an "
        "error as one JSON object on stdout",
    )
    add_verbosity(parser)
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr log lines: key=value text (journald) or JSON objects (default: text)",
    )


def _parser() -> argparse.ArgumentParser:
    top, common = global_options(_globals)
    parser: argparse.ArgumentParser = CliParser(
        prog=PROG,
        description="edgegov edge agent: enrol the device, install bundles and roots, decide, "
        "inspect its state and lineage, run the agent.",
        epilog=EXIT_CODES,
        parents=[top],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser(
        "init",
        parents=[common],
        help="enrol this device",
        description="Create the agent state in --state-dir: pin the trust root, make the "
        "device key, record the identity and broker settings.",
        epilog=epilog(
            [(EXIT_OK, "enrolled"), (EXIT_USAGE, "a bad argument or unreadable root file")],
            "edge-agent init --device-id gw-001 --region eu-1 --group line-a "
            "--profile generic-x86_64 --root root.cbor",
        ),
    )
    init.add_argument("--device-id", required=True, help="this device's id (as the hub knows it)")
    init.add_argument("--root", required=True, help="the trust root file (root.cbor) to pin")
    init.add_argument("--region", required=True, help="the region whose bundles this device takes")
    init.add_argument("--group", action="append", default=[], help="a device group (repeat)")
    init.add_argument("--profile", required=True, help="firmware profile name")
    init.add_argument("--broker", help="the hub's broker, mqtt://host:1883 or mqtts://host:8883")
    init.add_argument("--broker-username", help="MQTT username (default: the device id)")
    init.add_argument("--broker-password-file", help="file holding the MQTT password")
    init.add_argument("--broker-ca", help="CA bundle (PEM) to verify an mqtts:// broker")
    init.add_argument("--broker-cert", help="client certificate (PEM) for mqtts://")
    init.add_argument("--broker-key", help="client certificate key (PEM) for mqtts://")
    init.set_defaults(handler=_cmd_init)

    bundle = commands.add_parser(
        "bundle",
        help="policy bundles",
        epilog=epilog(STATE_EXITS, "edge-agent bundle install bundle.cbor"),
    ).add_subparsers(dest="bundle_command", required=True, metavar="COMMAND")
    install = bundle.add_parser(
        "install",
        parents=[common],
        help="verify and install a bundle",
        epilog=epilog(STATE_EXITS, "edge-agent bundle install bundle.cbor --json"),
    )
    install.add_argument("file", help="bundle file (- for stdin)")
    install.set_defaults(handler=_cmd_bundle_install)

    root = commands.add_parser(
        "root",
        help="trust roots",
        epilog=epilog(STATE_EXITS, "edge-agent root install root-v2.cbor"),
    ).add_subparsers(dest="root_command", required=True, metavar="COMMAND")
    root_install = root.add_parser(
        "install",
        parents=[common],
        help="rotate to the next root(s), in version order",
        epilog=epilog(STATE_EXITS, "edge-agent root install root-v2.cbor root-v3.cbor"),
    )
    root_install.add_argument("file", nargs="+", help="root files, oldest version first")
    root_install.set_defaults(handler=_cmd_root_install)

    decide = commands.add_parser(
        "decide",
        parents=[common],
        help="decide one request",
        epilog=epilog(
            [
                (EXIT_OK, "allow"),
                (EXIT_REFUSED, "deny, whatever the reason (an unreadable state too)"),
                (EXIT_USAGE, "a bad argument"),
                (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
            ],
            "edge-agent decide --subject svc:camera --action exec --resource /usr/bin/cam",
        ),
    )
    decide.add_argument("--subject", required=True, help="who asks (svc:NAME, uid:N, ...)")
    decide.add_argument("--action", required=True, help="what is asked (exec, read, ...)")
    decide.add_argument("--resource", required=True, help="what it is asked on (a path, a topic)")
    decide.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a request context item the policy may test (repeat)",
    )
    decide.add_argument(
        "--selector",
        action="append",
        default=[],
        metavar="KIND:VALUE",
        help="a kernel-vouched identity of the caller, e.g. uid:1001 (repeat)",
    )
    decide.set_defaults(handler=_cmd_decide)

    status = commands.add_parser(
        "status",
        parents=[common],
        help="trust state at a glance",
        description="The device, root, bundle, sync, attestation and lineage state, and "
        "whether the gate is open (systemctl is-active: non-zero when not serving).",
        epilog=epilog(
            [
                (EXIT_OK, "the gate is open"),
                (EXIT_REFUSED, "the gate is closed (a failed check is shown)"),
                (EXIT_USAGE, "a bad argument"),
                (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
            ],
            "edge-agent --state-dir /mnt/card/var/lib/edge-agent status --json",
        ),
    )
    status.set_defaults(handler=_cmd_status, reads_only=True)

    pubkey = commands.add_parser(
        "pubkey",
        parents=[common],
        help="print the device public key",
        epilog=epilog(
            [(EXIT_OK, "printed"), (EXIT_UNAVAILABLE, "no usable agent state in --state-dir")],
            "edge-agent pubkey > gw-001.pem",
        ),
    )
    pubkey.set_defaults(handler=_cmd_pubkey, reads_only=True)
    lineage_cli.register(commands, common)
    sync_cli.register(commands, common)
    socket_cli.register(commands, common)
    attest_cli.register(commands, common, _trust_state)
    fanotify_cli.register(commands, common)
    return parser


build_parser = _parser


def _trust_state(state_dir: Path) -> TrustState:
    """The trust state of the agent in ``state_dir``, read and closed again (as a reading
    command: a lineage break found is reported, never recorded)."""
    with LocalAgent.open(state_dir, record_lineage_breaks=False) as agent:
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
    if args.json:
        _print_json(
            {
                "device": identity.device_id,
                "state_dir": str(args.state_dir),
                "key_id": public.key_id.hex(),
                "public_key": public.to_pem(),
            }
        )
        return EXIT_OK
    print(f"enrolled {identity.device_id} in {args.state_dir}")
    print(f"device key id: {public.key_id.hex()}")
    print("register this public key with the hub ('edge-agent pubkey' prints it again):")
    print(public.to_pem(), end="")
    return EXIT_OK


def _print_json(document: object) -> None:
    """A command's result as one JSON object on one line (keys sorted)."""
    print(json.dumps(document, sort_keys=True))


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
    now = wall_clock()
    if args.json:
        _print_json(
            {
                "version": bundle.version,
                "digest": bundle.digest.hex(),
                "installed": not result.unchanged,
                "rules": bundle.policy.rule_count,
                "expires_at": bundle.expires_at,
                "expires_in_s": bundle.expires_at - now,
            }
        )
        return EXIT_OK
    verb = "already installed" if result.unchanged else "installed"
    print(
        f"bundle version {bundle.version} {verb} "
        f"(sha256:{bundle.digest.hex()[:16]}, {_count(bundle.policy.rule_count, 'rule')}, "
        f"{expiry_text(bundle.expires_at - now)})"
    )
    return EXIT_OK


def _count(number: int, noun: str) -> str:
    """``1 rule``, ``3 rules``, ``0 rules``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


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
        unchanged = len(chain) < len(files)
        installed = [root.version for root in agent.install_roots(chain, wall_clock())]
        root = agent.state.root
        now = agent.earliest_now(wall_clock())
    if args.json:
        _print_json(
            {
                "installed": installed,
                "version": root.version,
                "expires_at": root.expires_at,
                "expired": now >= root.expires_at,
            }
        )
        return EXIT_OK
    if unchanged:
        print(f"trust root version {current.version} already installed (no change)")
    for version in installed:
        print(f"trust root version {version} installed")
    if now >= root.expires_at:
        print(
            f"warning: trust root version {root.version} has expired; every decision denies "
            f"(root_expired) until trust root version {root.version + 1} or later is installed",
            file=sys.stderr,
        )
    return EXIT_OK


def _cmd_decide(args: argparse.Namespace) -> int:
    request = Request(
        subject=_field(args.subject, "--subject"),
        action=_field(args.action, "--action"),
        resource=_field(args.resource, "--resource"),
        context=_context(args.context),
        selectors=_selectors(args.selector),
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
                        "selectors": list(decision.request.selectors),
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
    verdict = EXIT_OK if gate == GATE_OPEN else EXIT_REFUSED
    if args.json:
        _print_json(report)
        return verdict
    lines = [
        f"device   {state.device.device_id} (region {state.device.region}, "
        f"groups {', '.join(state.device.groups) or '-'}, profile {state.device.profile})",
        f"root     version {state.root.version}, {expiry_text(state.root.expires_at - now)}",
    ]
    if bundle is None:
        lines.append("bundle   none installed")
    else:
        signers = ", ".join(sorted(k.hex()[:16] for k in bundle.signer_ids))
        lines.append(
            f"bundle   version {bundle.version} sha256:{bundle.digest.hex()[:16]}, "
            f"{_count(bundle.policy.rule_count, 'rule')}, "
            f"{expiry_text(bundle.expires_at - now)}, signed by {signers}"
        )
    if bundle is not None and bundle.max_offline is not None and fresh is not None:
        lines.append(
            f"fresh    last hub freshness {format_duration(now - fresh)} ago, "
            f"max_offline {format_duration(bundle.max_offline)}"
        )
    lines.append(
        f"sync     broker {broker or 'not configured'}; revocations: "
        f"{len(state.revocations)} applied, epoch {state.seen_epoch} seen"
    )
    lines.append(attest_cli.attestation_line(state, now))
    if summary is not None:
        held = (
            f"entries {summary.base} to {summary.size - 1}"
            if summary.size > summary.base
            else "no entries yet"
        )
        lines.append(
            f"lineage  {held}, {summary.acknowledged} acknowledged by the hub, "
            f"{summary.unacknowledged} waiting"
        )
    lines.append(f"gate     {str(report['gate']).upper()}")
    if lineage is not None:
        lines.append(f"  [FAIL] lineage  lineage_unavailable: {lineage}")
    for check in checks:
        mark = "ok  " if check.passed else "FAIL"
        detail = "" if check.passed else f"  {check.reason}: {check.message}"
        lines.append(f"  [{mark}] {check.name}{detail}")
    width = terminal_width()
    for line in lines:
        print(_wrapped(line, width))
    return verdict


def _wrapped(line: str, width: int) -> str:
    """``line`` folded to ``width`` columns, continuation lines indented under its value
    (column 9, or past a check's ``[FAIL]`` mark), so a narrow terminal reads it whole."""
    indent = " " * (11 if line.startswith("  [") else 9)
    return "\n".join(textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False))


def _cmd_pubkey(args: argparse.Namespace) -> int:
    public = load_device_key(args.state_dir).public
    if args.json:
        _print_json({"key_id": public.key_id.hex(), "public_key": public.to_pem()})
    else:
        print(public.to_pem(), end="")
    return EXIT_OK


def _unusable_state_dir(state_dir: Path) -> str | None:
    """Why ``state_dir`` cannot hold agent state at all (a setup fault, exit 2), or ``None``
    when its ``state.db`` is a file (then a read failure is the state's own: ``decide``
    denies ``internal_error``, other commands exit 1)."""
    database = state_dir / "state.db"
    try:
        if database.is_file():
            return None
        exists = database.exists()
    except OSError as exc:
        refused = path_error(exc)
        return str(refused) if refused is not None else f"cannot use {state_dir}: {exc}"
    if exists:
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


def _selectors(items: list[str]) -> tuple[str, ...]:
    if len(items) > MAX_CONTEXT_ITEMS:
        raise _UsageError(f"at most {MAX_CONTEXT_ITEMS} --selector items")
    for item in items:
        kind, colon, value = _field(item, "--selector").partition(":")
        if not colon or not kind or not value or " " in item:
            raise _UsageError(f"--selector {item!r} must be KIND:VALUE, e.g. uid:1001")
    return tuple(dict.fromkeys(items))


if __name__ == "__main__":
    sys.exit(main())

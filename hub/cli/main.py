"""``edge-hub``: the hub operator's command line.

Keys, bundles and trust-root rotation work on files; ``serve``, ``device``, ``bundle push``,
``revoke``, ``fleet`` and ``lineage show`` work on a hub directory (``--hub-dir``, default
``$EDGE_HUB_DIR`` or the current directory; see :mod:`hub.hubdir.layout`). ``bundle push`` and
``revoke`` record in the registry, then publish at once to the broker of the running
``edge-hub serve`` (or ``--broker``); without one, ``serve`` publishes them when it starts.

Exit codes (:mod:`hub.cli.exits`): 0 success, 1 refused (an object failed verification),
2 a usage or input error, 3 unavailable (no hub directory or registry, an unreachable
broker), 130 interrupted, 141 stdout's reader went away (``| head -1``: the rest of the
output is dropped, no traceback). Errors are one sentence on stderr, or with ``--json`` one
JSON object on stdout (:func:`edge_agent.support.cli.fail`); ``-v`` adds the traceback. The
global options (``--hub-dir``, ``-v``/``-vv``, ``-q``, ``--log-format``, and ``--json`` for
the commands with JSON output) go before or after the command.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_agent import __version__
from edge_agent.errors import ConfigError, EdgeGovError
from edge_agent.policy.source import load_policy_source, parse_duration
from edge_agent.protocol.expectations import Expectations
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.roles import HUB_ROLES, Role
from edge_agent.protocol.root import RoleKeys
from edge_agent.support.cli import (
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    EXIT_USAGE,
    CliParser,
    add_verbosity,
    configure_logging,
    counter_arg,
    expiry_text,
    fail,
    global_options,
    output_gone,
    read_bounded,
    wall_clock,
    wants_json,
)
from hub.cli import ancestry as ancestry_cli
from hub.cli import bundle_diff, lineage
from hub.cli import console as console_cli
from hub.cli import fabric as fabric_cli
from hub.cli import policy as policy_cli
from hub.cli import receipts as receipts_cli
from hub.cli import rollout as rollout_cli
from hub.cli.bundle_view import summary_json, summary_lines, terminal_width
from hub.cli.exits import NO_HUB, REFUSED, exit_code, help_epilog, path_arg
from hub.cli.operations import (
    DEFAULT_ROOT_TTL_S,
    build_bundle,
    init_keys,
    inspect_bundle,
    rotate_root,
)
from hub.cli.out import write_hub_out
from hub.core.bundles import with_expectations
from hub.core.expectations import expectations_from_json
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root

__all__ = ["main"]

PROG = "edge-hub"
MAX_POLICY_SOURCE_BYTES = 16 * 1024 * 1024
MAX_EXPECTATIONS_BYTES = 4 * 1024 * 1024
JSON = "--json"


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            # A file name that is not UTF-8 (its bytes kept as surrogates) is printed
            # escaped, never a UnicodeEncodeError after the command did its work.
            stream.reconfigure(errors="backslashreplace")
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError as exc:
        return output_gone(PROG, exc)


def _run(argv: list[str]) -> int:
    parser = _parser()
    given = _json_last(_negative_values_joined(argv))
    args, unknown = parser.parse_known_args(given)
    as_json = wants_json(argv)
    if unknown == [JSON]:
        return fail(
            PROG,
            ConfigError(f"'{PROG} {_command(parser, args)}' has no JSON output: leave out {JSON}"),
            args.verbose,
            EXIT_USAGE,
            as_json=True,
            reason="bad_argument",
            field=JSON,
        )
    if unknown:
        parser.parse_args(given)
    configure_logging(args.verbose, args.log_format, quiet=args.quiet)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()
        return code
    except EdgeGovError as exc:
        return fail(PROG, exc, args.verbose, exit_code(exc), as_json=as_json)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:
        return fail(
            PROG,
            RuntimeError(f"internal error ({type(exc).__name__}: {exc}); -v shows the traceback"),
            args.verbose,
            EXIT_REFUSED,
            as_json=as_json,
            reason="internal_error",
        )


def _json_last(argv: list[str]) -> list[str]:
    """``argv`` with every ``--json`` among its options moved to their end (before a
    ``--``): a global option, given before or between the command's names (``edge-hub
    --json fleet``), reaches the command's own parser, which takes it after its name."""
    end = argv.index("--") if "--" in argv else len(argv)
    options = [arg for arg in argv[:end] if arg != JSON]
    return [*options, *argv[:end].count(JSON) * [JSON], *argv[end:]]


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command ``args`` was parsed for, by name (``device remove``)."""
    names: list[str] = []
    while True:
        chosen = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, chosen[0].dest, None) if chosen else None
        if name is None:
            return " ".join(names)
        names.append(name)
        parser = chosen[0].choices[name]


def _negative_values_joined(argv: list[str]) -> list[str]:
    """``argv`` with a long option and a following value that looks negative (``--ttl
    -1h``) joined into one argument (``--ttl=-1h``): argparse would read ``-1h`` as an
    unknown option and say the option "expected one argument", where the value's own
    check says what is wrong with it."""
    joined: list[str] = []
    for arg in argv:
        if (
            joined
            and joined[-1].startswith("--")
            and joined[-1] != "--"
            and "=" not in joined[-1]
            and len(arg) > 1
            and arg[0] == "-"
            and arg[1].isdigit()
        ):
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def _duration(text: str) -> int:
    """A duration argument (``30s``, ``5m``, ``24h``, ``7d``); a negative one is refused
    with a sentence (``--ttl=-1h`` reaches here as a value: an expiry in the past is never
    what an operator means)."""
    if text.startswith("-"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is negative: give a duration of 1s or more (such as 30s, 5m, 24h, 7d)"
        )
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _global(parser: argparse.ArgumentParser) -> None:
    """The options every ``edge-hub`` command takes, before or after its name."""
    add_verbosity(parser)
    parser.add_argument(
        "--hub-dir",
        type=path_arg,
        metavar="DIR",
        help="hub directory (default: $EDGE_HUB_DIR, else the current directory)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr log lines: key=value text (journald) or JSON objects (default: text)",
    )


def _parser() -> argparse.ArgumentParser:
    top, common = global_options(_global)
    parser: argparse.ArgumentParser = CliParser(
        prog=PROG,
        description="edgegov hub: keys, bundles, devices, revocations, lineage and the "
        "MQTT service",
        parents=[top],
        epilog=help_epilog("edge-hub fleet --hub-dir /var/lib/edge-hub", REFUSED, NO_HUB),
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="print the version"
    )
    parser.add_argument(
        JSON,
        action="store_true",
        help="print the result, or an error, as JSON (before or after the command; a "
        "command without JSON output refuses it)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys = commands.add_parser(
        "keys",
        parents=[common],
        help="signing keys",
        epilog=help_epilog("edge-hub keys init --out /var/lib/edge-hub/keys"),
    ).add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    keys_init = keys.add_parser(
        "init",
        parents=[common],
        help="create keys and root v1",
        epilog=help_epilog("edge-hub keys init --out /var/lib/edge-hub/keys --ttl 365d"),
    )
    keys_init.add_argument("--out", type=path_arg, required=True, help="key directory to create")
    keys_init.add_argument(
        "--root-keys", type=int, default=3, help="root keys to create (default 3)"
    )
    keys_init.add_argument(
        "--root-threshold",
        type=int,
        default=2,
        help="root signatures a new trust root needs (default 2)",
    )
    keys_init.add_argument(
        "--ttl",
        type=_duration,
        default=DEFAULT_ROOT_TTL_S,
        metavar="DURATION",
        help="the trust root is valid this long (default 365d)",
    )
    keys_init.add_argument("--json", action="store_true", help="print the result as JSON")
    keys_init.set_defaults(handler=_cmd_keys_init)

    bundle = commands.add_parser(
        "bundle",
        parents=[common],
        help="policy bundles",
        epilog=help_epilog("edge-hub bundle inspect bundle.cbor --root keys/root.cbor"),
    ).add_subparsers(dest="bundle_command", required=True, metavar="COMMAND")
    build = bundle.add_parser(
        "build",
        parents=[common],
        help="compile and sign a policy",
        epilog=help_epilog(
            "edge-hub bundle build policy.yaml --keys keys/ --version 2 --out bundle.cbor",
            REFUSED,
        ),
    )
    build.add_argument("policy", type=path_arg, help="policy source (YAML)")
    build.add_argument("--keys", type=path_arg, help="key directory (policy keys and root.cbor)")
    build.add_argument(
        "--key",
        type=path_arg,
        action="append",
        default=[],
        metavar="FILE",
        help="a policy key PEM (repeat; instead of, or with, --keys)",
    )
    build.add_argument("--root", type=path_arg, help="trust root (default: KEYS/root.cbor)")
    build.add_argument(
        "--version",
        dest="bundle_version",
        type=counter_arg(1),
        required=True,
        help="bundle version: above every version devices hold",
    )
    build.add_argument(
        "--ttl",
        type=_duration,
        metavar="DURATION",
        help="the bundle is valid this long (overrides the policy's ttl)",
    )
    build.add_argument(
        "--out", type=path_arg, required=True, help="bundle file to write (a new file)"
    )
    build.add_argument(
        "--force", action="store_true", help="replace --out if it is an existing file"
    )
    build.add_argument(
        "--attestation",
        type=path_arg,
        metavar="FILE",
        help="attestation expectations (JSON from 'edge-hub attest expect')",
    )
    build.add_argument("--json", action="store_true", help="print the result as JSON")
    build.set_defaults(handler=_cmd_bundle_build)

    inspect = bundle.add_parser(
        "inspect",
        parents=[common],
        help="show what a bundle holds: every field that changes a decision",
        epilog=help_epilog(
            "edge-hub bundle inspect bundle.cbor --root keys/root.cbor",
            (EXIT_REFUSED, "the signatures do not verify under --root"),
        ),
    )
    inspect.add_argument("file", type=path_arg, help="bundle file (- for stdin)")
    inspect.add_argument(
        "--root", type=path_arg, help="verify signatures against this trust root file"
    )
    inspect.add_argument("--json", action="store_true", help="print the bundle as JSON")
    inspect.set_defaults(handler=_cmd_bundle_inspect)

    root = commands.add_parser(
        "root",
        parents=[common],
        help="trust roots",
        epilog=help_epilog("edge-hub root rotate --keys keys/"),
    ).add_subparsers(dest="root_command", required=True, metavar="COMMAND")
    rotate = root.add_parser(
        "rotate",
        parents=[common],
        help="make the next trust root",
        epilog=help_epilog("edge-hub root rotate --keys keys/ --role policy", REFUSED),
    )
    rotate.add_argument("--keys", type=path_arg, required=True, help="key directory")
    rotate.add_argument(
        "--role",
        action="append",
        choices=[str(r) for r in HUB_ROLES],
        help="role whose keys to replace (repeat; default: root)",
    )
    rotate.add_argument(
        "--ttl",
        type=_duration,
        default=DEFAULT_ROOT_TTL_S,
        metavar="DURATION",
        help="the new trust root is valid this long (default 365d)",
    )
    rotate.add_argument("--json", action="store_true", help="print the result as JSON")
    rotate.set_defaults(handler=_cmd_root_rotate)
    lineage_commands = lineage.register(commands, common)
    fabric_cli.register(commands, bundle, lineage_commands, common, _duration)
    receipts_cli.register(keys, lineage_commands, common)
    ancestry_cli.register(lineage_commands, common)
    bundle_diff.register(bundle, common, _duration)
    rollout_cli.register(commands, common, _duration)
    console_cli.register(commands, common)
    policy_cli.register(commands, bundle, [common])
    return parser


build_parser = _parser


def _cmd_keys_init(args: argparse.Namespace) -> int:
    root = init_keys(
        args.out,
        root_keys=args.root_keys,
        root_threshold=args.root_threshold,
        now=wall_clock(),
        ttl=args.ttl,
    )
    roles = {str(r): _threshold(root.role(r)) for r in HUB_ROLES}
    if args.json:
        report = {"keys": str(args.out), "root": str(args.out / ROOT_FILE)}
        print(json.dumps(report | {"root_version": root.version, "roles": roles}, sort_keys=True))
        return 0
    print(f"keys written to {args.out}/ (private keys mode 0600)")
    for role, threshold in roles.items():
        print(f"  {role:<10} {threshold}")
    print(f"trust root version {root.version}: {args.out / ROOT_FILE} (pin it on devices)")
    return 0


def _threshold(role_keys: RoleKeys) -> str:
    return f"{role_keys.threshold}-of-{len(role_keys.keys)}"


def _cmd_bundle_build(args: argparse.Namespace) -> int:
    if args.keys is None and not args.key:
        raise ConfigError("give the signing keys: --keys DIR or --key FILE")
    root_path = args.root or (args.keys / ROOT_FILE if args.keys else None)
    if root_path is None:
        raise ConfigError("give the trust root: --root FILE (or --keys DIR holding root.cbor)")
    root = load_root(root_path)
    signers = load_role_keys(args.keys, Role.POLICY, root, args.key)
    text = read_bounded(args.policy, MAX_POLICY_SOURCE_BYTES, "policy file")
    try:
        source = load_policy_source(text.decode("utf-8"), str(args.policy))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{args.policy} is not UTF-8 text") from exc
    now = wall_clock()
    data, bundle = build_bundle(
        source, root=root, signers=signers, version=args.bundle_version, ttl=args.ttl, now=now
    )
    if args.attestation is not None:
        expectations = _expectations(args.attestation)
        data, bundle = with_expectations(
            bundle, source.policy, expectations, root=root, signers=signers
        )
    write_hub_out(
        args.out,
        data,
        hub_dir=args.hub_dir,
        force=args.force,
        mode=0o644,
        key_dirs=[args.keys],
        inputs=[root_path, args.policy, args.attestation, *args.key],
    )
    count = bundle.policy.rule_count
    if args.json:
        report = {
            "out": str(args.out),
            "version": bundle.version,
            "rules": count,
            "region": bundle.target.region,
            "expires_at": bundle.expires_at,
            "digest": bundle.digest.hex(),
            "size": len(data),
        }
        print(json.dumps(report, sort_keys=True))
        return 0
    print(
        f"bundle version {bundle.version} written to {args.out}: {count} "
        f"rule{'' if count == 1 else 's'}, region {bundle.target.region}, "
        f"{expiry_text(bundle.expires_at - now)}, sha256:{bundle.digest.hex()}"
    )
    return 0


def _expectations(path: Path) -> Expectations:
    text = read_bounded(path, MAX_EXPECTATIONS_BYTES, "attestation expectations")
    try:
        return expectations_from_json(json.loads(text))
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON expectations: {exc}") from exc
    except EdgeGovError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _cmd_bundle_inspect(args: argparse.Namespace) -> int:
    data = read_bounded(args.file, MAX_BUNDLE_BYTES, "bundle")
    root = load_root(args.root) if args.root else None
    summary = inspect_bundle(data, root)
    if args.json:
        print(json.dumps(summary_json(summary), sort_keys=True))
    else:
        for line in summary_lines(summary, wall_clock(), terminal_width()):
            print(line)
    return EXIT_REFUSED if summary.verify_error else 0


def _cmd_root_rotate(args: argparse.Namespace) -> int:
    roles = [Role(r) for r in (args.role or [str(Role.ROOT)])]
    root = rotate_root(args.keys, rotate=roles, now=wall_clock(), ttl=args.ttl)
    path = args.keys / ROOT_FILE
    if args.json:
        rotated = sorted(map(str, roles))
        report = {"root": str(path), "root_version": root.version, "rotated": rotated}
        print(json.dumps(report, sort_keys=True))
        return 0
    print(
        f"trust root version {root.version} written to {path}; install it on "
        f"devices with 'edge-agent root install'"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

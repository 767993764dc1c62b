"""``edge-hub``: the hub operator's command line.

Keys, bundles and trust-root rotation work on files; ``serve``, ``device``, ``bundle push``,
``revoke``, ``fleet`` and ``lineage show`` work on a hub directory (``--hub-dir``, default
``$EDGE_HUB_DIR`` or the current directory; see :mod:`hub.hubdir.layout`). ``bundle push`` and
``revoke`` record in the registry, then publish at once to the broker of the running
``edge-hub serve`` (or ``--broker``); without one, ``serve`` publishes them when it starts.

Exit codes: 0 success, 1 refused (an object failed verification, or the broker could not be
reached), 2 a usage or input error, 141 stdout's reader went away (``| head -1``: the rest
of the output is dropped, no traceback). Errors are one sentence on stderr; ``--verbose``
adds the traceback.
"""

from __future__ import annotations

import argparse
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
from edge_agent.support.cli import (
    configure_logging,
    counter_arg,
    fail,
    format_duration,
    output_gone,
    read_bounded,
    utc_text,
    wall_clock,
    write_out,
)
from hub.cli import ancestry as ancestry_cli
from hub.cli import bundle_diff, lineage
from hub.cli import console as console_cli
from hub.cli import fabric as fabric_cli
from hub.cli import receipts as receipts_cli
from hub.cli import rollout as rollout_cli
from hub.cli.operations import (
    DEFAULT_ROOT_TTL_S,
    BundleSummary,
    build_bundle,
    init_keys,
    inspect_bundle,
    rotate_root,
)
from hub.core.bundles import with_expectations
from hub.core.expectations import expectations_from_json
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root

__all__ = ["main"]

PROG = "edge-hub"
MAX_POLICY_SOURCE_BYTES = 16 * 1024 * 1024
MAX_EXPECTATIONS_BYTES = 4 * 1024 * 1024


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError as exc:
        return output_gone(PROG, exc)


def _run(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()
        return code
    except ConfigError as exc:
        return fail(PROG, exc, args.verbose, 2)
    except EdgeGovError as exc:
        return fail(PROG, exc, args.verbose, 1)
    except KeyboardInterrupt:
        return 130


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true")
    parser = argparse.ArgumentParser(prog=PROG, description="edgegov hub", parents=[common])
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys = commands.add_parser("keys", help="signing keys").add_subparsers(
        dest="keys_command", required=True, metavar="COMMAND"
    )
    keys_init = keys.add_parser("init", parents=[common], help="create keys and root v1")
    keys_init.add_argument("--out", type=Path, required=True, help="key directory to create")
    keys_init.add_argument("--root-keys", type=int, default=3)
    keys_init.add_argument("--root-threshold", type=int, default=2)
    keys_init.add_argument("--ttl", type=_duration, default=DEFAULT_ROOT_TTL_S)
    keys_init.set_defaults(handler=_cmd_keys_init)

    bundle = commands.add_parser("bundle", help="policy bundles").add_subparsers(
        dest="bundle_command", required=True, metavar="COMMAND"
    )
    build = bundle.add_parser("build", parents=[common], help="compile and sign a policy")
    build.add_argument("policy", type=Path, help="policy source (YAML)")
    build.add_argument("--keys", type=Path, help="key directory (policy keys and root.cbor)")
    build.add_argument("--key", type=Path, action="append", default=[], help="a policy key PEM")
    build.add_argument("--root", type=Path, help="trust root (default: KEYS/root.cbor)")
    build.add_argument("--version", dest="bundle_version", type=counter_arg(1), required=True)
    build.add_argument("--ttl", type=_duration, help="overrides the policy's ttl")
    build.add_argument("--out", type=Path, required=True)
    build.add_argument(
        "--attestation",
        type=Path,
        metavar="FILE",
        help="attestation expectations (JSON from 'edge-hub attest expect')",
    )
    build.set_defaults(handler=_cmd_bundle_build)

    inspect = bundle.add_parser("inspect", parents=[common], help="show what a bundle holds")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--root", type=Path, help="verify signatures against this root")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=_cmd_bundle_inspect)

    root = commands.add_parser("root", help="trust roots").add_subparsers(
        dest="root_command", required=True, metavar="COMMAND"
    )
    rotate = root.add_parser("rotate", parents=[common], help="make the next trust root")
    rotate.add_argument("--keys", type=Path, required=True)
    rotate.add_argument(
        "--role",
        action="append",
        choices=[str(r) for r in HUB_ROLES],
        help="role whose keys to replace (repeat; default: root)",
    )
    rotate.add_argument("--ttl", type=_duration, default=DEFAULT_ROOT_TTL_S)
    rotate.set_defaults(handler=_cmd_root_rotate)
    lineage_commands = lineage.register(commands, common)
    fabric_cli.register(commands, bundle, lineage_commands, common, _duration)
    receipts_cli.register(keys, lineage_commands, common)
    ancestry_cli.register(lineage_commands, common)
    bundle_diff.register(bundle, common, _duration)
    rollout_cli.register(commands, common, _duration)
    console_cli.register(commands, common)
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
    print(f"keys written to {args.out}/ (private keys mode 0600)")
    for role in HUB_ROLES:
        role_keys = root.role(role)
        print(f"  {role:<10} {role_keys.threshold}-of-{len(role_keys.keys)}")
    print(f"trust root version {root.version}: {args.out / ROOT_FILE} (pin it on devices)")
    return 0


def _cmd_bundle_build(args: argparse.Namespace) -> int:
    if args.keys is None and not args.key:
        raise ConfigError("give the signing keys: --keys DIR or --key FILE")
    root_path = args.root or (args.keys / ROOT_FILE if args.keys else None)
    if root_path is None:
        raise ConfigError("give the trust root: --root FILE (or --keys DIR holding root.cbor)")
    if args.bundle_version < 1:
        raise ConfigError("--version must be 1 or more")
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
    write_out(args.out, data, mode=0o644, force=True)
    print(
        f"bundle version {bundle.version} written to {args.out}: {bundle.policy.rule_count} "
        f"rules, region {bundle.target.region}, expires in "
        f"{format_duration(bundle.expires_at - now)}, sha256:{bundle.digest.hex()}"
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
        print(json.dumps(_summary_json(summary), sort_keys=True))
    else:
        _print_summary(summary, wall_clock())
    return 1 if summary.verify_error else 0


def _summary_json(summary: BundleSummary) -> dict[str, object]:
    payload = summary.payload
    return {
        "version": payload.get("version"),
        "issued_at": payload.get("issued_at"),
        "expires_at": payload.get("expires_at"),
        "max_offline": payload.get("max_offline"),
        "target": payload.get("target"),
        "digest": summary.digest.hex(),
        "size": summary.size,
        "signer_key_ids": list(summary.signer_hints),
        "verified_signers": summary.verified_signers,
        "verify_error": summary.verify_error,
        "rules": _rules(payload),
    }


def _rules(payload: dict[str, object]) -> list[dict[str, object]]:
    policy = payload.get("policy")
    rules = policy.get("rules") if isinstance(policy, dict) else None
    if not isinstance(rules, list):
        return []
    return [r for r in rules if isinstance(r, dict)]


def _print_summary(summary: BundleSummary, now: int) -> None:
    payload = summary.payload
    expires = payload.get("expires_at")
    print(f"bundle    version {payload.get('version')}, {summary.size} bytes")
    print(f"digest    sha256:{summary.digest.hex()}")
    print(f"target    {json.dumps(payload.get('target'), sort_keys=True)}")
    if isinstance(expires, int):
        when = utc_text(expires, "%Y-%m-%dT%H:%M:%S+00:00")
        print(f"expires   {when} (in {format_duration(expires - now)})")
    print(f"signers   {', '.join(h[:16] for h in summary.signer_hints)} (key id hints)")
    if summary.verified_signers is not None:
        print(f"verified  {len(summary.verified_signers)} signature(s) valid under the root")
    elif summary.verify_error:
        print(f"verified  NO: {summary.verify_error}")
    else:
        print("verified  not checked (pass --root to verify signatures)")
    rules = _rules(payload)
    print(f"rules     {len(rules)}")
    for rule in rules:
        print(
            f"  {rule.get('effect', '?'):<5} {rule.get('id')}: {_joined(rule.get('subjects'))} "
            f"{_joined(rule.get('actions'))} {_joined(rule.get('resources'))}"
        )


def _joined(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else "?"


def _cmd_root_rotate(args: argparse.Namespace) -> int:
    roles = [Role(r) for r in (args.role or [str(Role.ROOT)])]
    root = rotate_root(args.keys, rotate=roles, now=wall_clock(), ttl=args.ttl)
    print(
        f"trust root version {root.version} written to {args.keys / ROOT_FILE}; install it on "
        f"devices with 'edge-agent root install'"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

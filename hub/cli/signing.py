"""The commands that work on key, root and bundle files: ``keys init``, ``bundle build``,
``bundle inspect`` and ``root rotate`` (parsers: :mod:`hub.cli.parsers.signing`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_agent.errors import ConfigError, EdgeGovError
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.allocation import paused_gc
from edge_agent.protocol.expectations import Expectations
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.roles import HUB_ROLES, Role
from edge_agent.protocol.root import RoleKeys
from edge_agent.support.cli import EXIT_REFUSED, expiry_text, read_bounded, wall_clock
from hub.cli.bundle_view import summary_json, summary_lines, terminal_width
from hub.cli.operations import build_bundle, init_keys, inspect_bundle, rotate_root
from hub.cli.out import write_hub_out
from hub.core.bundles import with_expectations
from hub.core.expectations import expectations_from_json
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root

__all__ = ["cmd_bundle_build", "cmd_bundle_inspect", "cmd_keys_init", "cmd_root_rotate"]

MAX_POLICY_SOURCE_BYTES = 16 * 1024 * 1024
MAX_EXPECTATIONS_BYTES = 4 * 1024 * 1024


def cmd_keys_init(args: argparse.Namespace) -> int:
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


def cmd_bundle_build(args: argparse.Namespace) -> int:
    """Build, sign, verify and write one bundle, with the cyclic collector paused
    throughout: the source's values, the payload, the signed bytes decoded again and the
    compiled policy (~10 objects per YAML line, all acyclic and alive until the command
    ends) would otherwise be scanned by every collection between the steps that pause it
    themselves. Reference counting frees them all when the command returns."""
    with paused_gc():
        return _bundle_build(args)


def _bundle_build(args: argparse.Namespace) -> int:
    if args.keys is None and not args.key:
        raise ConfigError("give the signing keys: --keys DIR or --key FILE")
    root_path = args.root or (args.keys / ROOT_FILE if args.keys else None)
    if root_path is None:
        raise ConfigError("give the trust root: --root FILE (or --keys DIR holding root.cbor)")
    root = load_root(root_path)
    signers = load_role_keys(args.keys, Role.POLICY, root, args.key)
    raw = read_bounded(args.policy, MAX_POLICY_SOURCE_BYTES, "policy file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{args.policy} is not UTF-8 text") from exc
    path = str(args.policy)
    source = load_policy_source(text, path, compiles=False)
    now = wall_clock()
    try:
        data, bundle = build_bundle(
            source, root=root, signers=signers, version=args.bundle_version, ttl=args.ttl, now=now
        )
    except EdgeGovError:
        # The source was read without its compile: the verification compiles the signed
        # policy. Whatever stopped the build, a policy that does not compile is reported as
        # reading it reports it (file, line and rule), as when the reader compiled first.
        load_policy_source(text, path)
        raise
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


def cmd_bundle_inspect(args: argparse.Namespace) -> int:
    data = read_bounded(args.file, MAX_BUNDLE_BYTES, "bundle")
    root = load_root(args.root) if args.root else None
    summary = inspect_bundle(data, root)
    if args.json:
        print(json.dumps(summary_json(summary), sort_keys=True))
    else:
        for line in summary_lines(summary, wall_clock(), terminal_width()):
            print(line)
    return EXIT_REFUSED if summary.verify_error else 0


def cmd_root_rotate(args: argparse.Namespace) -> int:
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

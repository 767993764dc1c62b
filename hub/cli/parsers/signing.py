"""The parsers of ``keys init``, ``bundle build|inspect`` and ``root rotate``: the commands
that work on key, root and bundle files (handlers: :mod:`hub.cli.signing`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from edge_agent.protocol.roles import HUB_ROLES
from edge_agent.support.cli import EXIT_REFUSED, counter_arg
from hub.cli.exits import REFUSED, help_epilog, path_arg
from hub.cli.lazy import Handler

__all__ = ["DEFAULT_ROOT_TTL_S", "register"]

DEFAULT_ROOT_TTL_S = 365 * 86400


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    duration: Callable[[str], int],
) -> tuple[
    argparse._SubParsersAction[argparse.ArgumentParser],
    argparse._SubParsersAction[argparse.ArgumentParser],
]:
    """Add ``keys init``, ``bundle build|inspect`` and ``root rotate`` to the ``edge-hub``
    parser; return the ``keys`` and ``bundle`` sub-commands so other modules can add theirs."""
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
        type=duration,
        default=DEFAULT_ROOT_TTL_S,
        metavar="DURATION",
        help="the trust root is valid this long (default 365d)",
    )
    keys_init.add_argument("--json", action="store_true", help="print the result as JSON")
    keys_init.set_defaults(handler=Handler("hub.cli.signing", "cmd_keys_init"))

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
        type=duration,
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
    build.set_defaults(handler=Handler("hub.cli.signing", "cmd_bundle_build"))

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
    inspect.set_defaults(handler=Handler("hub.cli.signing", "cmd_bundle_inspect"))

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
        type=duration,
        default=DEFAULT_ROOT_TTL_S,
        metavar="DURATION",
        help="the new trust root is valid this long (default 365d)",
    )
    rotate.add_argument("--json", action="store_true", help="print the result as JSON")
    rotate.set_defaults(handler=Handler("hub.cli.signing", "cmd_root_rotate"))
    return keys, bundle

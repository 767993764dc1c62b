"""``edge-hub console token add|list|revoke``: the governance console's login tokens.

``add NAME --role viewer|operator`` prints a new token once; the registry keeps only its
SHA-256 digest (:mod:`hub.console.auth`), so a lost token is revoked and a new one added.
``revoke`` deletes it: the sessions it opened end at their next request.
"""

from __future__ import annotations

import argparse
import json

from edge_agent.errors import ConfigError
from edge_agent.support.cli import utc_text, wall_clock
from hub.cli.exits import NO_HUB, help_epilog, name_arg
from hub.console.tokens import TOKEN_NAME, Role, new_token, token_digest
from hub.hubdir.layout import HubDir
from hub.registry import ConsoleToken

__all__ = ["register"]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``console token add|list|revoke`` to the ``edge-hub`` parser."""
    hub_dir = common
    console = commands.add_parser(
        "console",
        parents=[common],
        help="the governance console",
        epilog=help_epilog("edge-hub console token list"),
    ).add_subparsers(dest="console_command", required=True, metavar="COMMAND")
    token = console.add_parser(
        "token",
        parents=[common],
        help="console login tokens",
        epilog=help_epilog("edge-hub console token add alice --role operator"),
    ).add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    add = token.add_parser(
        "add",
        parents=[hub_dir],
        help="make a login token (printed once)",
        epilog=help_epilog("edge-hub console token add alice --role operator", NO_HUB),
    )
    add.add_argument("name", type=name_arg, metavar="NAME", help="who or what the token is for")
    add.add_argument(
        "--role",
        choices=[str(r) for r in Role],
        required=True,
        help="viewer: reads only; operator: may push, revoke, challenge and register",
    )
    add.add_argument("--json", action="store_true", help="print the result as JSON")
    add.set_defaults(handler=_cmd_add)
    listing = token.add_parser(
        "list",
        parents=[hub_dir],
        help="the tokens (names and roles)",
        epilog=help_epilog("edge-hub console token list", NO_HUB),
    )
    listing.add_argument("--json", action="store_true", help="print the tokens as JSON")
    listing.set_defaults(handler=_cmd_list)
    revoke = token.add_parser(
        "revoke",
        parents=[hub_dir],
        help="delete a token",
        epilog=help_epilog("edge-hub console token revoke alice", NO_HUB),
    )
    revoke.add_argument("name", type=name_arg, metavar="NAME", help="the token's name")
    revoke.add_argument("--json", action="store_true", help="print the result as JSON")
    revoke.set_defaults(handler=_cmd_revoke)


def _cmd_add(args: argparse.Namespace) -> int:
    if not TOKEN_NAME.fullmatch(args.name):
        raise ConfigError(
            f"token name {args.name!r}: use 1 to 64 letters, digits and . _ @ - "
            "(starting with a letter or digit)"
        )
    token = new_token()
    with HubDir.resolve(args.hub_dir).open_registry(create=False) as registry:
        registry.add_console_token(
            ConsoleToken(args.name, args.role, token_digest(token), wall_clock())
        )
    if args.json:
        print(json.dumps({"name": args.name, "role": args.role, "token": token}, sort_keys=True))
        return 0
    print(f"console token for {args.name} ({args.role}); shown once, keep it secret:")
    print(token)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    with HubDir.resolve(args.hub_dir).open_registry(create=False) as registry:
        tokens = registry.console_tokens()
    if args.json:
        listed = [{"name": t.name, "role": t.role, "created_at": t.created_at} for t in tokens]
        print(json.dumps({"tokens": listed}, sort_keys=True))
        return 0
    if not tokens:
        print("no console tokens: add one with 'edge-hub console token add NAME --role viewer'")
    for token in tokens:
        added = utc_text(token.created_at, "%Y-%m-%d %H:%M UTC")
        print(f"{token.name:<24} {token.role:<9} added {added}")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    with HubDir.resolve(args.hub_dir).open_registry(create=False) as registry:
        if not registry.revoke_console_token(args.name):
            raise ConfigError(f"no console token named {args.name!r} (see 'console token list')")
    if args.json:
        print(json.dumps({"name": args.name, "revoked": True}, sort_keys=True))
        return 0
    print(f"console token {args.name} revoked; its sessions end at their next request")
    return 0

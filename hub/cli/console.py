"""``edge-hub console token add|list|revoke``: the governance console's login tokens.

``add NAME --role viewer|operator`` prints a new token once; the registry keeps only its
SHA-256 digest (:mod:`hub.console.auth`), so a lost token is revoked and a new one added.
``revoke`` deletes it: the sessions it opened end at their next request.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.support.cli import utc_text, wall_clock
from hub.console.auth import TOKEN_NAME, Role, new_token, token_digest
from hub.hubdir.layout import HubDir
from hub.registry import ConsoleToken

__all__ = ["register"]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``console token add|list|revoke`` to the ``edge-hub`` parser."""
    hub_dir = argparse.ArgumentParser(add_help=False, parents=[common])
    hub_dir.add_argument("--hub-dir", type=Path, help="hub directory (default: $EDGE_HUB_DIR or .)")
    console = commands.add_parser("console", help="the governance console").add_subparsers(
        dest="console_command", required=True, metavar="COMMAND"
    )
    token = console.add_parser("token", help="console login tokens").add_subparsers(
        dest="token_command", required=True, metavar="COMMAND"
    )
    add = token.add_parser("add", parents=[hub_dir], help="make a login token (printed once)")
    add.add_argument("name", metavar="NAME", help="who or what the token is for")
    add.add_argument("--role", choices=[str(r) for r in Role], required=True)
    add.set_defaults(handler=_cmd_add)
    listing = token.add_parser("list", parents=[hub_dir], help="the tokens (names and roles)")
    listing.set_defaults(handler=_cmd_list)
    revoke = token.add_parser("revoke", parents=[hub_dir], help="delete a token")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(handler=_cmd_revoke)


def _cmd_add(args: argparse.Namespace) -> int:
    if not TOKEN_NAME.fullmatch(args.name):
        raise ConfigError(
            f"token name {args.name!r}: use 1 to 64 letters, digits and . _ @ - "
            "(starting with a letter or digit)"
        )
    token = new_token()
    with HubDir.resolve(args.hub_dir).open_registry() as registry:
        registry.add_console_token(
            ConsoleToken(args.name, args.role, token_digest(token), wall_clock())
        )
    print(f"console token for {args.name} ({args.role}); shown once, keep it secret:")
    print(token)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    with HubDir.resolve(args.hub_dir).open_registry() as registry:
        tokens = registry.console_tokens()
    if not tokens:
        print("no console tokens: add one with 'edge-hub console token add NAME --role viewer'")
    for token in tokens:
        added = utc_text(token.created_at, "%Y-%m-%d %H:%M UTC")
        print(f"{token.name:<24} {token.role:<9} added {added}")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    with HubDir.resolve(args.hub_dir).open_registry() as registry:
        if not registry.revoke_console_token(args.name):
            raise ConfigError(f"no console token named {args.name!r} (see 'console token list')")
    print(f"console token {args.name} revoked; its sessions end at their next request")
    return 0

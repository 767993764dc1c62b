"""The parsers of ``console token add|list|revoke`` (handlers: :mod:`hub.cli.console`)."""

from __future__ import annotations

import argparse

from hub.cli.exits import NO_HUB, help_epilog, name_arg
from hub.cli.lazy import Handler
from hub.console.tokens import Role

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
    add.set_defaults(handler=Handler("hub.cli.console", "cmd_add"))
    listing = token.add_parser(
        "list",
        parents=[hub_dir],
        help="the tokens (names and roles)",
        epilog=help_epilog("edge-hub console token list", NO_HUB),
    )
    listing.add_argument("--json", action="store_true", help="print the tokens as JSON")
    listing.set_defaults(handler=Handler("hub.cli.console", "cmd_list"))
    revoke = token.add_parser(
        "revoke",
        parents=[hub_dir],
        help="delete a token",
        epilog=help_epilog("edge-hub console token revoke alice", NO_HUB),
    )
    revoke.add_argument("name", type=name_arg, metavar="NAME", help="the token's name")
    revoke.add_argument("--json", action="store_true", help="print the result as JSON")
    revoke.set_defaults(handler=Handler("hub.cli.console", "cmd_revoke"))

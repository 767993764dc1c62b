"""The parser of ``break-glass`` (handler: :mod:`hub.cli.breakglass`)."""

from __future__ import annotations

import argparse

from edge_agent.protocol.limits import MAX_BREAK_GLASS_WINDOW_S
from hub.cli.exits import NO_HUB, help_epilog, name_arg, path_arg
from hub.cli.lazy import Handler

__all__ = ["register"]


def register(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    hub_dir: argparse.ArgumentParser,
    keys: argparse.ArgumentParser,
) -> None:
    """Add ``break-glass`` to the ``edge-hub`` parser."""
    command = commands.add_parser(
        "break-glass",
        parents=[hub_dir, keys],
        help="sign a recovery token that puts one device's exec enforcement in audit mode",
        epilog=help_epilog(
            "edge-hub break-glass --device gw-001 --minutes 30 --reason 'INC-42' "
            "--out gw-001.breakglass",
            NO_HUB,
        ),
    )
    command.add_argument(
        "--device", type=name_arg, required=True, help="the device the token is bound to"
    )
    command.add_argument(
        "--minutes",
        type=int,
        required=True,
        help=f"window length (1 to {MAX_BREAK_GLASS_WINDOW_S // 60})",
    )
    command.add_argument("--reason", required=True, help="why (logged on the device)")
    command.add_argument("--out", type=path_arg, required=True, help="token file to write")
    command.add_argument("--force", action="store_true", help="replace --out if it is a file")
    command.add_argument("--json", action="store_true", help="print the result as JSON")
    command.set_defaults(handler=Handler("hub.cli.breakglass", "cmd_break_glass"))

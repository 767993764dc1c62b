"""The parsers of ``lineage`` and ``lineage verify`` (handler: :mod:`hub.cli.lineage`)."""

from __future__ import annotations

import argparse

from edge_agent.support.cli import EXIT_REFUSED
from hub.cli.exits import help_epilog, path_arg
from hub.cli.lazy import Handler

__all__ = ["register"]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add ``lineage verify`` to the ``edge-hub`` parser; return the ``lineage`` sub-commands
    so other modules can add theirs."""
    lineage = commands.add_parser(
        "lineage",
        parents=[common],
        help="device execution lineage",
        epilog=help_epilog("edge-hub lineage show gw-001 --limit 50"),
    ).add_subparsers(dest="lineage_command", required=True, metavar="COMMAND")
    verify = lineage.add_parser(
        "verify",
        parents=[common],
        help="verify an exported log",
        epilog=help_epilog(
            "edge-hub lineage verify gw-001.lineage --device-key gw-001.pub --json",
            (EXIT_REFUSED, "the export does not verify, or two exports show a fork"),
        ),
    )
    verify.add_argument("file", type=path_arg, help="the export ('edge-agent log export')")
    verify.add_argument("--device-key", type=path_arg, required=True, help="device public key PEM")
    verify.add_argument(
        "--checkpoint",
        type=path_arg,
        action="append",
        default=[],
        help="another export or checkpoint note of this device (repeat)",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(handler=Handler("hub.cli.lineage", "cmd_verify"))
    return lineage

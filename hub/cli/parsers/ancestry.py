"""The parser of ``lineage ancestry`` (handler: :mod:`hub.cli.ancestry`)."""

from __future__ import annotations

import argparse

from edge_agent.support.cli import EXIT_REFUSED
from hub.cli.exits import NO_HUB, help_epilog, name_arg, path_arg
from hub.cli.lazy import Handler

__all__ = ["register"]


def register(
    lineage_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``lineage ancestry`` to ``edge-hub``."""
    ancestry = lineage_commands.add_parser(
        "ancestry",
        parents=[common],
        help="a decision's chain of parents across devices, each link verified",
        epilog=help_epilog(
            "edge-hub lineage ancestry gw-002 41 --json",
            (EXIT_REFUSED, "a link of the chain does not verify"),
            NO_HUB,
        ),
    )
    ancestry.add_argument(
        "device_id", type=name_arg, metavar="DEVICE", help="the child decision's device id"
    )
    ancestry.add_argument("seq", metavar="SEQ", help="the child decision's entry seq")
    ancestry.add_argument("--keys", type=path_arg, help="key directory (default: HUB_DIR/keys)")
    ancestry.add_argument("--json", action="store_true", help="print one JSON object")
    ancestry.add_argument(
        "--export",
        type=path_arg,
        metavar="FILE",
        help="write the chain file edge-verify chain reads",
    )
    ancestry.add_argument(
        "--force", action="store_true", help="replace --export if it is an existing file"
    )
    ancestry.set_defaults(handler=Handler("hub.cli.ancestry", "cmd_ancestry"))

"""The parser of ``bundle diff`` (handler: :mod:`hub.cli.bundle_diff`) and its exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from edge_agent.support.cli import counter_arg
from hub.cli.exits import NO_HUB, help_epilog, name_arg, path_arg
from hub.cli.lazy import Handler

__all__ = ["EXIT_FLIPS", "EXIT_SAME", "EXIT_TROUBLE", "register"]

EXIT_SAME = 0
EXIT_FLIPS = 1
EXIT_TROUBLE = 2
DEFAULT_LIMIT = 20


def register(
    bundle: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    duration: Callable[[str], int],
) -> None:
    """Add ``bundle diff`` to the ``edge-hub bundle`` sub-commands."""
    diff = bundle.add_parser(
        "diff",
        parents=[common],
        help="re-decide shipped decisions under a candidate bundle",
        description="Re-decide every shipped decision of the devices a candidate bundle "
        "targets under it, and report what would change. Exit 0: nothing flips; 1: some "
        "decision flips; 2: the diff could not be made (usage, unreadable input, a "
        "candidate that fails verification); 3: the hub directory is missing.",
        epilog=help_epilog(
            "edge-hub bundle diff candidate.cbor --since 7d --json",
            (EXIT_FLIPS, "some decision flips"),
            NO_HUB,
        ),
    )
    diff.add_argument("candidate", type=path_arg, help="the candidate bundle (signed CBOR)")
    diff.add_argument("--keys", type=path_arg, help="key directory (default: HUB_DIR/keys)")
    diff.add_argument(
        "--against-version",
        type=counter_arg(1),
        metavar="N",
        help="compare with what recorded bundle version N decides (default: as recorded)",
    )
    diff.add_argument(
        "--since", type=duration, metavar="DURATION", help="only decisions this recent (7d, 12h)"
    )
    diff.add_argument(
        "--group", action="append", default=[], help="only devices in this group (repeat)"
    )
    diff.add_argument(
        "--device", type=name_arg, action="append", default=[], help="only this device (repeat)"
    )
    diff.add_argument("--json", action="store_true", help="machine-readable (docs/rollout.md)")
    diff.add_argument(
        "--limit",
        type=counter_arg(1),
        default=DEFAULT_LIMIT,
        help=f"groups shown per section in text output (default {DEFAULT_LIMIT}; --json: all)",
    )
    diff.set_defaults(handler=Handler("hub.cli.bundle_diff", "cmd_diff"))

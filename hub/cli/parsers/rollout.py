"""The parsers of ``rollout start|status|pause|resume|abort`` (handlers:
:mod:`hub.cli.rollout`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from hub.cli.exits import NO_HUB, REFUSED, help_epilog, name_arg, path_arg
from hub.cli.lazy import Handler

__all__ = ["register"]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    duration: Callable[[str], int],
) -> None:
    """Add ``edge-hub rollout``."""
    rollout = commands.add_parser(
        "rollout",
        parents=[common],
        help="staged rollouts",
        epilog=help_epilog("edge-hub rollout status --json"),
    ).add_subparsers(dest="rollout_command", required=True, metavar="COMMAND")

    start = rollout.add_parser(
        "start",
        parents=[common],
        help="roll a signed bundle out in stages",
        epilog=help_epilog(
            "edge-hub rollout start candidate.cbor --stages 10%,100% --soak 1h "
            "--halt-if 'deny_rate > 0.05'",
            REFUSED,
            NO_HUB,
        ),
    )
    start.add_argument("candidate", type=path_arg, help="the candidate bundle (signed CBOR)")
    start.add_argument("--keys", type=path_arg, help="key directory (default: HUB_DIR/keys)")
    start.add_argument(
        "--stages", default="1%,10%,50%,100%", help="shares of the devices (default %(default)s)"
    )
    start.add_argument(
        "--soak",
        type=duration,
        default=1800,
        metavar="DURATION",
        help="how long each stage runs before the next (default 30m)",
    )
    start.add_argument(
        "--halt-if",
        action="append",
        default=[],
        metavar="CONDITION",
        help="halt and roll back when it holds (repeat; docs/rollout.md)",
    )
    start.add_argument(
        "--group", type=name_arg, action="append", default=[], help="only devices in it (repeat)"
    )
    start.add_argument("--json", action="store_true", help="print the rollout as JSON")
    start.set_defaults(handler=Handler("hub.cli.rollout", "cmd_start"))

    status = rollout.add_parser(
        "status",
        parents=[common],
        help="explain rollouts",
        epilog=help_epilog("edge-hub rollout status --json", NO_HUB),
    )
    status.add_argument("rollout", type=name_arg, nargs="?", help="one rollout (default: all)")
    status.add_argument("--json", action="store_true", help="print the rollouts as JSON")
    status.set_defaults(handler=Handler("hub.cli.rollout", "cmd_status"))

    for name, helptext in (
        ("pause", "stop the soak clock and further stages (halts are still watched)"),
        ("resume", "go on where a paused rollout stopped"),
        ("abort", "roll the switched devices back and end the rollout"),
    ):
        command = rollout.add_parser(
            name,
            parents=[common],
            help=helptext,
            epilog=help_epilog(f"edge-hub rollout {name} eu-1-v7", REFUSED, NO_HUB),
        )
        command.add_argument(
            "rollout", type=name_arg, help="the rollout's id ('edge-hub rollout status')"
        )
        if name == "abort":
            command.add_argument(
                "--reason", default="aborted by the operator", help="why (kept with the rollout)"
            )
        command.add_argument("--json", action="store_true", help="print the result as JSON")
        command.set_defaults(handler=Handler("hub.cli.rollout", "cmd_change"), change=name)

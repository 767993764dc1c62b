"""The parsers of ``attest expect|challenge|tpm-ak`` (handlers: :mod:`hub.cli.attest`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from edge_agent.support.cli import EXIT_REFUSED
from hub.cli.exits import BROKER, NO_HUB, help_epilog, name_arg, path_arg
from hub.cli.lazy import Handler

__all__ = ["register"]

DEFAULT_PROFILE_DIR = Path("firmware_profiles")


def register(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    hub_dir: argparse.ArgumentParser,
    keys: argparse.ArgumentParser,
    broker: argparse.ArgumentParser,
    duration: Callable[[str], int],
) -> None:
    """Add ``attest expect`` and ``attest challenge`` to the ``edge-hub`` parser."""
    attest = commands.add_parser(
        "attest",
        parents=[hub_dir],
        help="device attestation",
        epilog=help_epilog("edge-hub attest challenge gw-001 --wait 30s"),
    ).add_subparsers(dest="attest_command", required=True, metavar="COMMAND")
    expect = attest.add_parser(
        "expect",
        parents=[hub_dir],
        help="bundle expectations from device reports",
        epilog=help_epilog(
            "edge-hub attest expect --profile generic-x86_64 --from-device gw-001 gw-002 "
            "--out expect.json",
            NO_HUB,
        ),
    )
    expect.add_argument(
        "--profile", required=True, help="profile name (in --profile-dir) or a profile file"
    )
    expect.add_argument(
        "--profile-dir",
        type=path_arg,
        default=DEFAULT_PROFILE_DIR,
        metavar="DIR",
        help=f"where --profile NAME is looked up (default {DEFAULT_PROFILE_DIR}/)",
    )
    source = expect.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from-device-report",
        type=path_arg,
        nargs="+",
        metavar="FILE",
        help="reports of 'edge-agent attest --json'",
    )
    source.add_argument(
        "--from-device",
        nargs="+",
        metavar="ID",
        help="registered devices: their last evidence verified by this hub",
    )
    expect.add_argument(
        "--out", type=path_arg, help="write the expectations here (default: stdout)"
    )
    expect.add_argument("--force", action="store_true", help="replace --out if it is a file")
    expect.set_defaults(handler=Handler("hub.cli.attest", "cmd_expect"))

    challenge = attest.add_parser(
        "challenge",
        parents=[hub_dir, keys, broker],
        help="challenge a device now",
        epilog=help_epilog(
            "edge-hub attest challenge gw-001 --wait 30s",
            (EXIT_REFUSED, "the device's evidence failed"),
            BROKER,
        ),
    )
    challenge.add_argument("device_id", type=name_arg, metavar="ID", help="device id")
    challenge.add_argument(
        "--wait", type=duration, metavar="DURATION", help="wait this long for the verdict"
    )
    challenge.add_argument("--json", action="store_true", help="print the result as JSON")
    challenge.set_defaults(handler=Handler("hub.cli.attest", "cmd_challenge"))

    tpm_ak = attest.add_parser(
        "tpm-ak",
        parents=[hub_dir],
        help="register a device's TPM attestation key",
        epilog=help_epilog("edge-hub attest tpm-ak gw-001 tpm-ak.pem", NO_HUB),
    )
    tpm_ak.add_argument("device_id", type=name_arg, metavar="ID", help="device id")
    ak_source = tpm_ak.add_mutually_exclusive_group(required=True)
    ak_source.add_argument(
        "ak_file",
        metavar="FILE",
        type=path_arg,
        nargs="?",
        help="the PEM public key 'edge-agent attest tpm-enroll' wrote",
    )
    ak_source.add_argument(
        "--remove", action="store_true", help="forget the key: no quote is required any more"
    )
    tpm_ak.add_argument("--json", action="store_true", help="print the result as JSON")
    tpm_ak.set_defaults(handler=Handler("hub.cli.attest", "cmd_tpm_ak"))

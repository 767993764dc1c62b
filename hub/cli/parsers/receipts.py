"""The parsers of ``lineage receipt|checkpoint|consistency`` and ``keys export``
(handlers: :mod:`hub.cli.receipts`)."""

from __future__ import annotations

import argparse

from edge_agent.support.cli import counter_arg
from hub.cli.exits import NO_HUB, help_epilog, name_arg, path_arg
from hub.cli.lazy import Handler
from hub.core.receipt_formats import FORMATS

__all__ = ["register"]


def register(
    keys_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    lineage_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``lineage receipt|checkpoint|consistency`` and ``keys export`` to ``edge-hub``."""
    hub_dir = argparse.ArgumentParser(add_help=False, parents=[common])
    hub_dir.add_argument("--keys", type=path_arg, help="key directory (default: HUB_DIR/keys)")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", type=path_arg, required=True, help="file to write")
    out.add_argument("--force", action="store_true", help="replace --out if it is a file")
    out.add_argument("--json", action="store_true", help="print the result as JSON")

    receipt = lineage_commands.add_parser(
        "receipt",
        parents=[hub_dir, out],
        help="a receipt for one entry, cosigned by the hub",
        epilog=help_epilog("edge-hub lineage receipt gw-001 41 --out gw-001-41.cose", NO_HUB),
    )
    receipt.add_argument("device_id", type=name_arg, metavar="DEVICE", help="device id")
    receipt.add_argument("seq", type=counter_arg(0), metavar="SEQ", help="the entry's seq")
    receipt.add_argument(
        "--format",
        choices=FORMATS,
        default="cose",
        help="cose: a COSE receipt (edge-verify receipt); tlog-proof: a text proof",
    )
    receipt.add_argument(
        "--include-bundle", action="store_true", help="embed the bundle the entry names (cose)"
    )
    receipt.set_defaults(handler=Handler("hub.cli.receipts", "cmd_receipt"))

    checkpoint = lineage_commands.add_parser(
        "checkpoint",
        parents=[hub_dir, out],
        help="the checkpoint note the hub holds",
        epilog=help_epilog("edge-hub lineage checkpoint gw-001 --out gw-001.note", NO_HUB),
    )
    checkpoint.add_argument("device_id", type=name_arg, metavar="DEVICE", help="device id")
    checkpoint.add_argument("--size", type=counter_arg(1), help="tree size (default: latest)")
    checkpoint.set_defaults(handler=Handler("hub.cli.receipts", "cmd_checkpoint"))

    consistency = lineage_commands.add_parser(
        "consistency",
        parents=[hub_dir, out],
        help="a consistency proof between two sizes",
        epilog=help_epilog(
            "edge-hub lineage consistency gw-001 100 250 --out gw-001-100-250.proof", NO_HUB
        ),
    )
    consistency.add_argument("device_id", type=name_arg, metavar="DEVICE", help="device id")
    consistency.add_argument("old", type=counter_arg(1), metavar="OLD", help="the older size")
    consistency.add_argument("new", type=counter_arg(1), metavar="NEW", help="the newer size")
    consistency.set_defaults(handler=Handler("hub.cli.receipts", "cmd_consistency"))

    export = keys_commands.add_parser(
        "export",
        parents=[hub_dir, out],
        help="export a public key the hub signs with",
        epilog=help_epilog("edge-hub keys export witness --out witness.pub", NO_HUB),
    )
    export.add_argument("which", choices=["witness"], help="witness: the cosigning key")
    export.set_defaults(handler=Handler("hub.cli.receipts", "cmd_export"))

"""The parsers of ``registry migrate`` and ``registry check`` (handlers:
:mod:`hub.cli.registry_cmd`). The row bounds are said here as well as in
:mod:`hub.registry.migrate` (a test pins them equal): building the parser imports no
registry."""

from __future__ import annotations

import argparse

from edge_agent.support.cli import EXIT_UNAVAILABLE
from hub.cli.exits import REFUSED, help_epilog, path_arg
from hub.cli.lazy import Handler

__all__ = ["DEFAULT_CHUNK_ROWS", "MAX_CHUNK_ROWS", "chunk_arg", "register", "sample_arg"]

DEFAULT_CHUNK_ROWS = 500
"""Rows copied per destination transaction unless told otherwise."""
MAX_CHUNK_ROWS = 10_000
"""Most rows one destination transaction copies (a chunk is held in memory)."""
MAX_SAMPLE_LOGS = 1_000_000_000
"""Most device logs ``--sample`` may name (far more than any registry holds)."""

MIGRATE_EXAMPLE = (
    "edge-hub registry migrate --to postgresql://hub@db.example/edgegov --from /var/lib/edge-hub"
)
CHECK_EXAMPLE = "edge-hub registry check --registry postgresql://hub@db.example/edgegov"
UNAVAILABLE = (
    EXIT_UNAVAILABLE,
    "the hub directory, or a registry, is missing or cannot be reached",
)


def chunk_arg(text: str) -> int:
    """An argparse ``type`` for ``--chunk``: 1 to :data:`MAX_CHUNK_ROWS` rows."""
    return _count(text, MAX_CHUNK_ROWS, "row count")


def sample_arg(text: str) -> int:
    """An argparse ``type`` for ``--sample``: 1 device log or more."""
    return _count(text, MAX_SAMPLE_LOGS, "device log count")


def _count(text: str, most: int, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= most:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {what} from 1 to {most}")
    return int(text)


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``registry migrate|check`` to the ``edge-hub`` parser."""
    registry = commands.add_parser(
        "registry",
        parents=[common],
        help="move a registry to PostgreSQL, and check one",
        epilog=help_epilog(MIGRATE_EXAMPLE),
    ).add_subparsers(dest="registry_command", required=True, metavar="COMMAND")
    migrate = registry.add_parser(
        "migrate",
        parents=[common],
        help="copy a stopped hub's hub.db to PostgreSQL (or another hub.db), then check it",
        description="Copy every table of the hub directory's hub.db to the registry --to "
        "names, in chunks, then check the copy (as 'registry check'). Stop every hub using "
        "the registry first. A second run writes nothing; an interrupted one resumes; a "
        "destination holding anything else is refused with nothing written.",
        epilog=help_epilog(MIGRATE_EXAMPLE, REFUSED, UNAVAILABLE),
    )
    migrate.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the destination: a postgresql:// URL (an empty database, or one this command "
        "already copied to) or a hub.db path",
    )
    migrate.add_argument(
        "--from",
        dest="source_dir",
        type=path_arg,
        metavar="HUB_DIR",
        help="the hub directory whose hub.db is copied (default: --hub-dir, else "
        "$EDGE_HUB_DIR, else the current directory)",
    )
    migrate.add_argument(
        "--chunk",
        type=chunk_arg,
        default=DEFAULT_CHUNK_ROWS,
        metavar="N",
        help=f"rows per destination transaction (default {DEFAULT_CHUNK_ROWS}, at most "
        f"{MAX_CHUNK_ROWS:,})",
    )
    migrate.add_argument("--json", action="store_true", help="print the report as JSON")
    migrate.set_defaults(handler=Handler("hub.cli.registry_cmd", "cmd_registry_migrate"))
    check = registry.add_parser(
        "check",
        parents=[common],
        help="verify a registry: its schema, table counts and every device log",
        description="Check the registry --registry names (else $EDGEGOV_REGISTRY, else the "
        "hub directory's hub.db): its schema version, each table's row count, and that every "
        "device log's stored entries, checkpoints and tree nodes agree.",
        epilog=help_epilog(CHECK_EXAMPLE, REFUSED, UNAVAILABLE),
    )
    check.add_argument(
        "--from",
        dest="source_dir",
        type=path_arg,
        metavar="HUB_DIR",
        help="the hub directory whose hub.db is checked when no registry is named (default: "
        "--hub-dir, else $EDGE_HUB_DIR, else the current directory)",
    )
    check.add_argument(
        "--sample",
        type=sample_arg,
        metavar="N",
        help="check N device logs drawn at random (default: every one)",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=Handler("hub.cli.registry_cmd", "cmd_registry_check"))

"""The parsers of ``registry migrate``, ``registry check`` and ``registry prune-search``
(handlers: :mod:`hub.cli.registry_cmd`). The row and day bounds are said here as well as in
:mod:`hub.registry.migrate` and :mod:`hub.registry.search_months` (a test pins them equal):
building the parser imports no registry."""

from __future__ import annotations

import argparse

from edge_agent.support.cli import EXIT_UNAVAILABLE
from hub.cli.exits import REFUSED, help_epilog, path_arg
from hub.cli.lazy import Handler

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "MAX_CHUNK_ROWS",
    "MAX_RETENTION_DAYS",
    "MIN_RETENTION_DAYS",
    "chunk_arg",
    "days_arg",
    "register",
    "sample_arg",
]

DEFAULT_CHUNK_ROWS = 500
"""Rows copied per destination transaction unless told otherwise."""
MAX_CHUNK_ROWS = 10_000
"""Most rows one destination transaction copies (a chunk is held in memory)."""
MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 36_500
"""The days ``prune-search --older-than`` accepts (a day to a hundred years)."""
MAX_SAMPLE_LOGS = 1_000_000_000
"""Most device logs ``--sample`` may name (far more than any registry holds)."""

MIGRATE_EXAMPLE = (
    "edge-hub registry migrate --to postgresql://hub@db.example/edgegov --from /var/lib/edge-hub"
)
CHECK_EXAMPLE = "edge-hub registry check --registry postgresql://hub@db.example/edgegov"
PRUNE_EXAMPLE = (
    "edge-hub registry prune-search --older-than 90 --registry postgresql://hub@db.example/edgegov"
)
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


def days_arg(text: str) -> int:
    """An argparse ``type`` for ``--older-than``: :data:`MIN_RETENTION_DAYS` to
    :data:`MAX_RETENTION_DAYS` days."""
    return _count(text, MAX_RETENTION_DAYS, "number of days", least=MIN_RETENTION_DAYS)


def _count(text: str, most: int, what: str, *, least: int = 1) -> int:
    if not (text.isascii() and text.isdigit()) or not least <= int(text) <= most:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {what} from {least} to {most}")
    return int(text)


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``registry migrate|check|prune-search`` to the ``edge-hub`` parser."""
    registry = commands.add_parser(
        "registry",
        parents=[common],
        help="move a registry to PostgreSQL, check one, prune its lineage search",
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
    prune = registry.add_parser(
        "prune-search",
        parents=[common],
        help="drop the lineage search rows of old months (device logs are kept whole)",
        description="Drop the lineage search's rows of every month entirely older than "
        "--older-than DAYS (the month holding that instant is kept whole), from the registry "
        "--registry names (else $EDGEGOV_REGISTRY, else the hub directory's hub.db): on a "
        "partitioned PostgreSQL registry whole month partitions, elsewhere in bounded "
        "chunks. Without --yes it only counts what would go. The lineage entries, "
        "checkpoints and tree nodes are never touched; a search reaching before the cut "
        "says it is past retention.",
        epilog=help_epilog(PRUNE_EXAMPLE, REFUSED, UNAVAILABLE),
    )
    prune.add_argument(
        "--older-than",
        type=days_arg,
        required=True,
        metavar="DAYS",
        help=f"drop the months entirely older than DAYS days ({MIN_RETENTION_DAYS} to "
        f"{MAX_RETENTION_DAYS:,})",
    )
    prune.add_argument(
        "--yes", action="store_true", help="prune (without it: only count what would go)"
    )
    prune.add_argument("--json", action="store_true", help="print the report as JSON")
    prune.set_defaults(
        source_dir=None, handler=Handler("hub.cli.registry_cmd", "cmd_registry_prune_search")
    )

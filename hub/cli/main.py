"""``edge-hub``: the hub operator's command line.

Keys, bundles and trust-root rotation work on files; ``serve``, ``device``, ``bundle push``,
``revoke``, ``fleet`` and ``lineage show`` work on a hub directory (``--hub-dir``, default
``$EDGE_HUB_DIR`` or the current directory; see :mod:`hub.hubdir.layout`). ``bundle push`` and
``revoke`` record in the registry, then publish at once to the broker of the running
``edge-hub serve`` (or ``--broker``); without one, ``serve`` publishes them when it starts.

Exit codes (:mod:`hub.cli.exits`): 0 success, 1 refused (an object failed verification),
2 a usage or input error, 3 unavailable (no hub directory or registry, an unreachable
broker), 130 interrupted, 141 stdout's reader went away (``| head -1``: the rest of the
output is dropped, no traceback). Errors are one sentence on stderr, or with ``--json`` one
JSON object on stdout (:func:`edge_agent.support.cli.fail`); ``-v`` adds the traceback. The
global options (``--hub-dir``, ``--registry``, ``-v``/``-vv``, ``-q``, ``--log-format``, and
``--json`` for the commands with JSON output) go before or after the command. ``--registry``
(else ``$EDGEGOV_REGISTRY``) names a PostgreSQL registry (a ``postgresql://`` URL) or another
``hub.db`` file; every command then works on it.

Every command builds the parser (:mod:`hub.cli.parsers`), which imports none of the
commands' code: each names its handler (:class:`hub.cli.lazy.Handler`), whose module is
imported only when that command runs. A command line that starts with one of the signing
commands (``bundle build``, ``keys init``, ...: the first the parser adds) builds only those:
the rest of the parser (its modules imported then) is ~9-12 ms of every build, and a
command's own parser, its help and its errors do not depend on the commands beside it.
"""

from __future__ import annotations

import argparse
import gc
import io
import sys
from collections.abc import Sequence

from edge_agent import __version__
from edge_agent.errors import ConfigError, EdgeGovError
from edge_agent.policy.durations import parse_duration
from edge_agent.support.cli import (
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    EXIT_USAGE,
    CliParser,
    add_verbosity,
    configure_logging,
    fail,
    global_options,
    output_gone,
    wants_json,
)
from hub.cli.exits import NO_HUB, REFUSED, exit_code, help_epilog, path_arg
from hub.cli.parsers import signing as signing_cli

__all__ = ["main"]

PROG = "edge-hub"
JSON = "--json"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (the process's arguments when ``None``); its exit code.

    Run as the program (``argv`` ``None``: the ``edge-hub`` console script), the objects
    still alive when the command ends are frozen out of the cyclic collector: the process
    exits next, and the interpreter's final collections would otherwise walk every module,
    the parser and whatever the command kept only to free nothing (~10-20 ms of CPU per
    command; docs/performance-profile.md, "Session 14: start-up and exit"). An in-process
    caller (``argv`` given) keeps its collector as it was.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            # A file name that is not UTF-8 (its bytes kept as surrogates) is printed
            # escaped, never a UnicodeEncodeError after the command did its work.
            stream.reconfigure(errors="backslashreplace")
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError as exc:
        return output_gone(PROG, exc)
    finally:
        if argv is None:
            gc.freeze()


def _run(argv: list[str]) -> int:
    given = _json_last(_negative_values_joined(argv))
    parser = _parser(given)
    args, unknown = parser.parse_known_args(given)
    as_json = wants_json(argv)
    if unknown == [JSON]:
        return fail(
            PROG,
            ConfigError(f"'{PROG} {_command(parser, args)}' has no JSON output: leave out {JSON}"),
            args.verbose,
            EXIT_USAGE,
            as_json=True,
            reason="bad_argument",
            field=JSON,
        )
    if unknown:
        parser.parse_args(given)
    configure_logging(args.verbose, args.log_format, quiet=args.quiet)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()
        return code
    except EdgeGovError as exc:
        return fail(PROG, exc, args.verbose, exit_code(exc), as_json=as_json)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:
        return fail(
            PROG,
            RuntimeError(f"internal error ({type(exc).__name__}: {exc}); -v shows the traceback"),
            args.verbose,
            EXIT_REFUSED,
            as_json=as_json,
            reason="internal_error",
        )


def _json_last(argv: list[str]) -> list[str]:
    """``argv`` with every ``--json`` among its options moved to their end (before a
    ``--``): a global option, given before or between the command's names (``edge-hub
    --json fleet``), reaches the command's own parser, which takes it after its name."""
    end = argv.index("--") if "--" in argv else len(argv)
    options = [arg for arg in argv[:end] if arg != JSON]
    return [*options, *argv[:end].count(JSON) * [JSON], *argv[end:]]


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command ``args`` was parsed for, by name (``device remove``)."""
    names: list[str] = []
    while True:
        chosen = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, chosen[0].dest, None) if chosen else None
        if name is None:
            return " ".join(names)
        names.append(name)
        parser = chosen[0].choices[name]


def _negative_values_joined(argv: list[str]) -> list[str]:
    """``argv`` with a long option and a following value that looks negative (``--ttl
    -1h``) joined into one argument (``--ttl=-1h``): argparse would read ``-1h`` as an
    unknown option and say the option "expected one argument", where the value's own
    check says what is wrong with it."""
    joined: list[str] = []
    for arg in argv:
        if (
            joined
            and joined[-1].startswith("--")
            and joined[-1] != "--"
            and "=" not in joined[-1]
            and len(arg) > 1
            and arg[0] == "-"
            and arg[1].isdigit()
        ):
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def _duration(text: str) -> int:
    """A duration argument (``30s``, ``5m``, ``24h``, ``7d``); a negative one is refused
    with a sentence (``--ttl=-1h`` reaches here as a value: an expiry in the past is never
    what an operator means)."""
    if text.startswith("-"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is negative: give a duration of 1s or more (such as 30s, 5m, 24h, 7d)"
        )
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _global(parser: argparse.ArgumentParser) -> None:
    """The options every ``edge-hub`` command takes, before or after its name."""
    add_verbosity(parser)
    parser.add_argument(
        "--hub-dir",
        type=path_arg,
        metavar="DIR",
        help="hub directory (default: $EDGE_HUB_DIR, else the current directory)",
    )
    parser.add_argument(
        "--registry",
        metavar="URL",
        help="the hub registry: a PostgreSQL database (postgresql://user@host/db, shared by "
        "hubs on several hosts) or a hub.db file (default: $EDGEGOV_REGISTRY, else the hub "
        "directory's hub.db)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr log lines: key=value text (journald) or JSON objects (default: text)",
    )


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``edge-hub`` parser, whole; or, when the command line ``argv`` starts with the
    names of a command :mod:`hub.cli.parsers.signing` adds, the parser as far as those: that
    command's parser is the same, and its arguments never reach another's."""
    top, common = global_options(_global)
    parser: argparse.ArgumentParser = CliParser(
        prog=PROG,
        description="edgegov hub: keys, bundles, devices, revocations, lineage and the "
        "MQTT service",
        parents=[top],
        epilog=help_epilog("edge-hub fleet --hub-dir /var/lib/edge-hub", REFUSED, NO_HUB),
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="print the version"
    )
    parser.add_argument(
        JSON,
        action="store_true",
        help="print the result, or an error, as JSON (before or after the command; a "
        "command without JSON output refuses it)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys, bundle = signing_cli.register(commands, common, _duration)
    if argv is not None and _names_a_command(parser, argv):
        return parser
    # The other commands' parser modules, imported only when the parser is built whole.
    from hub.cli.parsers import ancestry as ancestry_cli
    from hub.cli.parsers import bundle_diff, lineage
    from hub.cli.parsers import console as console_cli
    from hub.cli.parsers import fabric as fabric_cli
    from hub.cli.parsers import policy as policy_cli
    from hub.cli.parsers import receipts as receipts_cli
    from hub.cli.parsers import registry as registry_cli
    from hub.cli.parsers import rollout as rollout_cli

    lineage_commands = lineage.register(commands, common)
    fabric_cli.register(commands, bundle, lineage_commands, common, _duration)
    receipts_cli.register(keys, lineage_commands, common)
    ancestry_cli.register(lineage_commands, common)
    bundle_diff.register(bundle, common, _duration)
    rollout_cli.register(commands, common, _duration)
    console_cli.register(commands, common)
    policy_cli.register(commands, bundle, [common])
    registry_cli.register(commands, common)
    return parser


def _names_a_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> bool:
    """Whether ``argv`` starts with the names of one of ``parser``'s commands, down to one
    that has no subcommands (options before the names do not count)."""
    names = iter(argv)
    while True:
        chosen = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not chosen:
            return True
        name = next(names, None)
        if name not in chosen[0].choices:
            return False
        parser = chosen[0].choices[name]


def build_parser() -> argparse.ArgumentParser:
    """The whole ``edge-hub`` parser (help pages, completion, man pages)."""
    return _parser()


if __name__ == "__main__":
    sys.exit(main())

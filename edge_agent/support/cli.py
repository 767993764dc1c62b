"""What the command-line tools (``edge-agent``, ``edge-hub``, ``edge-verify``) share: exit
codes, the argument parser, global options, verbosity, error reporting, bounded file reads,
durations and counters.

Exit codes are the same for every command (docs/cli.md): :data:`EXIT_OK`,
:data:`EXIT_REFUSED`, :data:`EXIT_USAGE`, :data:`EXIT_UNAVAILABLE`, :data:`EXIT_INTERRUPTED`
and :data:`EXIT_STDOUT_GONE`. The CLIs turn our errors into one clear sentence on stderr
(``PROG: error: SENTENCE``), or with ``--json`` one JSON object on stdout and nothing on
stderr; the traceback appears only under ``--verbose``. :class:`CliParser` does the same
for argparse's usage errors. A stdout whose reader has gone (``| head -1``) ends the command
quietly with :data:`EXIT_STDOUT_GONE`, as a shell tool killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import datetime
import json
import logging
import os
import re
import select
import shutil
import signal
import stat
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from edge_agent.errors import ConfigError, EdgeGovError
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.support.files import NotRegularFileError, file_kind, read_regular_file
from edge_agent.support.logging_setup import configure

__all__ = [
    "ERROR_KINDS",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_STDOUT_GONE",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "LIBRARY_LOGGERS",
    "MAX_SHOWN_PATH_CHARS",
    "MIN_WIDTH",
    "CliParser",
    "PathError",
    "Stopped",
    "add_verbosity",
    "configure_logging",
    "counter_arg",
    "ellipsize",
    "epilog",
    "error_document",
    "expiry_text",
    "fail",
    "format_duration",
    "global_options",
    "one_line",
    "out_stream",
    "output_gone",
    "path_error",
    "printable_output",
    "read_bounded",
    "read_offered",
    "read_regular",
    "stop_on_signals",
    "terminal_width",
    "text_arg",
    "utc_text",
    "wall_clock",
    "wants_json",
    "write_atomic",
    "write_out",
]

EXIT_OK = 0
"""Success: the command did what it was asked; ``decide`` allowed; the gate is open."""
EXIT_REFUSED = 1
"""Refused: a denial, a closed gate, a verification that failed, an operation refused."""
EXIT_USAGE = 2
"""A usage or input error: a bad argument, an unreadable input file, a value of the wrong type."""
EXIT_UNAVAILABLE = 3
"""Unavailable: the state or hub directory is missing or not initialised, a broker or hub
cannot be reached."""
EXIT_INTERNAL = 70
"""An internal error (sysexits' EX_SOFTWARE): a fault of ours, reported as one line (the
traceback with ``-v``) rather than a crash."""
EXIT_INTERRUPTED = 130
"""128 + SIGINT: the command was interrupted (Ctrl-C)."""
EXIT_STDOUT_GONE = 141
"""128 + SIGPIPE: what a shell reports for a command whose output pipe was closed."""

ERROR_KINDS = {EXIT_REFUSED: "refused", EXIT_USAGE: "usage", EXIT_UNAVAILABLE: "unavailable"}
"""The ``error`` member of a JSON error by exit code; any other code is ``internal``."""
_DEFAULT_REASONS = {
    "refused": "refused",
    "usage": "bad_argument",
    "unavailable": "unavailable",
    "internal": "internal_error",
}
LIBRARY_LOGGERS = ("amqtt", "aiomqtt", "paho", "transitions", "uvicorn", "websockets", "asyncio")
"""Loggers of the libraries we run on: their debug output only with ``-vv``."""


MIN_WIDTH = 40
"""The narrowest layout the tables are drawn for; a narrower terminal wraps them."""


def terminal_width() -> int:
    """The width tables are drawn to: ``$COLUMNS``, else the terminal's, else 80 (output to
    a pipe or file), never below :data:`MIN_WIDTH`."""
    return max(MIN_WIDTH, shutil.get_terminal_size((80, 24)).columns)


def ellipsize(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut shown by a final ``…``."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"


def wall_clock() -> int:
    """The wall clock in whole Unix seconds: read once per command, passed down."""
    return int(time.time())


def read_bounded(path: str | Path, max_bytes: int, what: str) -> bytes:
    """Read at most ``max_bytes`` of ``path`` (``-`` is stdin), refusing anything larger.

    Raises:
        ConfigError: the file cannot be read or is over the limit.
    """
    data = read_offered(path, max_bytes, what)
    if len(data) > max_bytes:
        raise ConfigError(f"{what} {path} is larger than the {max_bytes}-byte limit")
    return data


def read_offered(path: str | Path, max_bytes: int, what: str) -> bytes:
    """Read ``path`` (``-`` is stdin) up to one byte past ``max_bytes``, for a signed object
    the verifier refuses itself: a larger file reads as ``max_bytes + 1`` bytes, so the
    verifier's own size cap refuses it (recorded like any other refusal of that object)
    without the rest ever being read.

    Raises:
        ConfigError: the file cannot be read.
    """
    try:
        if str(path) == "-":
            return sys.stdin.buffer.read(max_bytes + 1)
        with open(path, "rb") as handle:
            return handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def read_regular(path: str | Path, max_bytes: int, what: str, *, offered: bool = False) -> bytes:
    """Read ``path`` as :func:`read_bounded` (with ``offered``, as :func:`read_offered`), but
    only a regular file (or ``-``, stdin): a FIFO, device, socket or directory is refused
    without blocking. The file is opened non-blocking (a FIFO with no writer would hang a
    blocking open) and judged by ``fstat`` of what was opened, so nothing can be swapped in
    between the check and the read.

    Raises:
        ConfigError: the file cannot be read, is not a regular file, or is over the limit.
    """
    if str(path) == "-":
        return (
            read_offered(path, max_bytes, what) if offered else read_bounded(path, max_bytes, what)
        )
    try:
        data = read_regular_file(path, max_bytes + 1)
    except NotRegularFileError as exc:
        raise ConfigError(f"{what} {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if not offered and len(data) > max_bytes:
        raise ConfigError(f"{what} {path} is larger than the {max_bytes}-byte limit")
    return data


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory, fsync, rename.

    Raises:
        ConfigError: the file cannot be written.
    """
    with _through_temp(path, mode, lambda: None) as handle:
        handle.write(data)


def write_out(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o600,
    force: bool = False,
    state_dir: Path | None = None,
) -> None:
    """Write ``data`` to a command's ``--out`` file, as :func:`out_stream` allows it.

    Raises:
        ConfigError: the path is refused or the file cannot be written.
    """
    with out_stream(path, mode=mode, force=force, state_dir=state_dir) as handle:
        handle.write(data)


@contextlib.contextmanager
def out_stream(
    path: Path,
    *,
    mode: int = 0o600,
    force: bool = False,
    state_dir: Path | None = None,
) -> Iterator[IO[bytes]]:
    """A handle on a command's new ``--out`` file, written as :func:`write_atomic` (a temp
    file renamed onto ``path`` when the block ends without an error), only where that
    replaces nothing but a file the user meant to replace.

    The atomic rename would turn whatever is at ``path`` into a regular file, so an
    existing path that is not a regular file (a device such as /dev/full, a FIFO, a socket,
    a directory, a symlink) is always refused, and an existing regular file unless
    ``force`` (the command's ``--force``). The check is on the path itself (``lstat``): a
    rename replaces a symlink, it never writes through one. A directory that takes no new
    file (``/proc``) is said to, before any ``--force`` is suggested. A path inside
    ``state_dir`` (the agent's own files: its key, its databases) is refused even with
    ``force``: writing there would destroy the device's identity or its log.

    Raises:
        ConfigError: the path is refused or the file cannot be written.
    """
    if state_dir is not None and _inside(path, state_dir):
        raise ConfigError(
            f"refusing to write {path}: it is inside the agent's state directory {state_dir}, "
            "whose files are the agent's own (--force does not change this): write it elsewhere",
            code="out_in_state_dir",
        )
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        status = None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise ConfigError(
            f"refusing to write {path}: it is {file_kind(status.st_mode)}, not a "
            "regular file (--out writes a new file or replaces a regular one)"
        )

    def may_replace() -> None:
        if status is not None and not force:
            raise ConfigError(f"refusing to replace {path}: it exists (add --force to replace it)")

    with _through_temp(path, mode, may_replace) as handle:
        yield handle


def _inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` names ``directory`` or anything under it, symlinks in its parent
    directories followed (the last component is not: a rename never writes through it)."""
    try:
        parent = Path(os.path.realpath(path.parent if str(path.parent) else "."))
        root = Path(os.path.realpath(directory))
    except OSError:
        return False
    target = parent / path.name
    return target == root or root in target.parents


@contextlib.contextmanager
def _through_temp(path: Path, mode: int, before_write: Callable[[], None]) -> Iterator[IO[bytes]]:
    """Create a temp file beside ``path``, call ``before_write`` (which may refuse), yield
    it (``mode``) for the caller to write, then fsync and rename it onto ``path``; the temp
    file never stays, whatever ends the block."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: no new file can be created in {directory} "
            f"({exc.strerror or exc})"
        ) from exc
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                before_write()
                os.fchmod(handle.fileno(), mode)
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def counter_arg(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for a version, epoch or count: a plain decimal integer from
    ``minimum`` to ``MAX_COUNTER``, the bound every signed object enforces when decoded, so a
    value no device would accept is refused before anything is signed."""

    def counter(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or not minimum <= int(text) <= MAX_COUNTER:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number from {minimum} to {MAX_COUNTER} (2^53-1)"
            )
        return int(text)

    return counter


def text_arg(max_chars: int) -> Callable[[str], str]:
    """An argparse ``type`` for a free-text value (a subject, an action, a note): non-empty
    printable text of at most ``max_chars`` characters. Bytes that are not UTF-8 (which
    reach Python as lone surrogates) are refused here, before they could reach a database
    or a terminal."""

    def text(value: str) -> str:
        if not value:
            raise argparse.ArgumentTypeError("an empty value")
        if len(value) > max_chars:
            raise argparse.ArgumentTypeError(f"longer than {max_chars} characters")
        if not value.isprintable() or any("\ud800" <= c <= "\udfff" for c in value):
            raise argparse.ArgumentTypeError(
                f"{ascii(value)[:60]} is not printable UTF-8 text (control characters or "
                "bytes that are not UTF-8)"
            )
        return value

    return text


def utc_text(seconds: int, fmt: str) -> str:
    """Unix ``seconds`` as UTC text in ``fmt`` (strftime), or ``@seconds`` for a time past
    year 9999: a valid counter reaches 2^53-1 s (285 million years), which ``datetime``
    cannot hold, and showing a signed or shipped value must not crash the command."""
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(fmt)
    except (OverflowError, ValueError, OSError):
        return f"@{seconds}"


def format_duration(seconds: int) -> str:
    """A short human duration, the one format of every command: ``3d 4h``, ``1d``,
    ``5h 12m``, ``2h``, ``4m 10s``, ``42s`` (a zero second unit is left out); negative
    means ago (``5m ago``)."""
    if seconds < 0:
        return f"{format_duration(-seconds)} ago"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    for big, big_unit, small, small_unit in (
        (days, "d", hours, "h"),
        (hours, "h", minutes, "m"),
        (minutes, "m", secs, "s"),
    ):
        if big:
            return f"{big}{big_unit} {small}{small_unit}" if small else f"{big}{big_unit}"
    return f"{secs}s"


def expiry_text(seconds_left: int) -> str:
    """``expires in 23h 59m`` or ``expired 5m ago``: how every command says what time a
    signed object has left."""
    if seconds_left > 0:
        return f"expires in {format_duration(seconds_left)}"
    return f"expired {format_duration(-seconds_left)} ago"


def configure_logging(
    verbose: int | bool, log_format: str = "text", level: str = "error", *, quiet: bool = False
) -> None:
    """Log to stderr, one event per line (``text``) or one JSON object per line (``json``).

    ``level`` is the default threshold (errors only for one-shot commands; a daemon's
    configured level). ``verbose`` counts ``-v``: 1 shows edgegov's debug logs while the
    libraries (:data:`LIBRARY_LOGGERS`) stay at warnings, 2 or more adds the libraries'
    debug; ``quiet`` (``-q``) shows errors only. ``-v`` wins over ``-q``.
    """
    threshold = "debug" if verbose else ("error" if quiet else level)
    configure(threshold, "json" if log_format == "json" else "text")
    library_level = logging.NOTSET if int(verbose) >= 2 else logging.WARNING
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """Add ``-v/--verbose`` (a count: ``-v`` edgegov's debug, ``-vv`` the libraries' too)
    and ``-q/--quiet`` (errors only) to ``parser``; read them with :func:`configure_logging`
    as ``args.verbose`` and ``args.quiet``."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log details to stderr: -v edgegov's debug logs and a traceback on error, "
        "-vv the libraries' too",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="log errors only (no status lines)"
    )


def global_options(
    define: Callable[[argparse.ArgumentParser], None],
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Two parents holding the options ``define`` adds, so they work before or after the
    subcommand: the first for the top-level parser (with the real defaults), the second for
    every subcommand parser, its defaults :data:`argparse.SUPPRESS`, so a subcommand that
    is not given an option leaves the top-level value (or default) in place rather than
    overwriting it with its own default (``edge-agent --state-dir X status``)."""
    top = CliParser(add_help=False)
    define(top)
    sub = CliParser(add_help=False)
    define(sub)
    for action in sub._actions:
        # argparse drops a SUPPRESS default from what help may name: name the real one.
        if action.help and "%(default)s" in action.help:
            action.help = action.help.replace("%(default)s", str(action.default))
        action.default = argparse.SUPPRESS
    return top, sub


def epilog(exit_codes: Sequence[tuple[int, str]], example: str, *more: str) -> str:
    """A command's ``--help`` epilog: its exit codes, one a line, any ``more`` paragraphs,
    and last an example (``example: edge-agent status --json``), kept as written by
    :class:`CliParser`'s formatter."""
    lines = ["exit codes:"]
    lines += [f"  {code:<3} {meaning}" for code, meaning in exit_codes]
    paragraphs = ["\n".join(lines), *more, f"example: {example}"]
    return "\n\n".join(paragraphs)


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog on its own: a long sentence is filled to
    the terminal, while line breaks, indented lines (an exit-code table) and the example
    (a command to copy whole) stay as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if line.startswith((" ", "example: ")) or len(line) <= width:
                lines.append(indent + line)
            else:
                lines.extend(
                    textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n".join(lines)


_json_errors: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "edgegov_json_errors", default=None
)


class CliParser(argparse.ArgumentParser):
    """The argument parser of every edgegov command (its subcommand parsers too).

    A usage error is one line on stderr, ``PROG: error: SENTENCE``, or, when ``--json`` is
    among the arguments (before or after the subcommand), one JSON object on stdout
    (:func:`error_document`) and nothing on stderr; either way the exit code is
    :data:`EXIT_USAGE` (``SystemExit(2)``, as argparse). Help keeps the line breaks of a
    description or epilog (:func:`epilog`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        with _errors_as_json(argv):
            return super().parse_args(argv, namespace)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        with _errors_as_json(argv):
            return super().parse_known_args(argv, namespace)

    def error(self, message: str) -> NoReturn:
        if _json_errors.get():
            field = _ARGUMENT.match(message)
            document = error_document(
                EXIT_USAGE, "bad_argument", message, field=field[1] if field else None
            )
            print(json.dumps(document, sort_keys=True), flush=True)
        else:
            print(f"{self.prog}: error: {one_line(message)}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


@contextlib.contextmanager
def _errors_as_json(argv: Sequence[str]) -> Iterator[None]:
    """Within the outermost parse, usage errors print as JSON when ``argv`` holds
    ``--json``: a subcommand's parser sees only the arguments after its name."""
    token = _json_errors.set(wants_json(argv)) if _json_errors.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _json_errors.reset(token)


_ARGUMENT = re.compile(r"argument ([^:\s]+(?:/[^:\s]+)*): ")


def wants_json(argv: Sequence[str]) -> bool:
    """Whether ``--json`` is among the options in ``argv`` (those before a ``--``)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined by a space, blank ones dropped, and any byte
    that was not UTF-8 (a lone surrogate) shown as a ``\\udcff`` escape, so the line can
    be printed wherever it goes."""
    joined = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return joined.encode("utf-8", "backslashreplace").decode("utf-8")


def error_document(
    exit_code: int,
    code: str,
    message: str,
    *,
    path: str | None = None,
    field: str | None = None,
) -> dict[str, object]:
    """The JSON object an error prints with ``--json``: ``error`` (the kind: ``usage``,
    ``refused``, ``unavailable`` or ``internal``, from ``exit_code``), ``code`` (the reason
    code), ``message`` (one sentence), ``exit`` (the exit code), and ``path`` and ``field``
    when a file or an option is at fault."""
    document: dict[str, object] = {
        "error": ERROR_KINDS.get(exit_code, "internal"),
        "code": code,
        "message": one_line(message),
        "exit": exit_code,
    }
    if path is not None:
        document["path"] = path
    if field is not None:
        document["field"] = field
    return document


def fail(
    prog: str,
    exc: BaseException,
    verbose: int | bool,
    code: int,
    *,
    as_json: bool = False,
    reason: str | None = None,
    path: str | Path | None = None,
    field: str | None = None,
) -> int:
    """Report ``exc`` and return ``code`` (the exit code): one sentence on stderr, or with
    ``as_json`` one JSON object on stdout (:func:`error_document`); the traceback under
    ``--verbose``.

    ``reason`` is the JSON ``code``: by default the error's own (``EdgeGovError.code``),
    else the kind's (``bad_argument``, ``refused``, ``unavailable``, ``internal_error``).
    ``path`` and ``field`` default to the error's ``path`` and ``field`` attributes.
    """
    if verbose:
        logging.getLogger(prog).exception("%s failed", prog)
    message = str(exc) or type(exc).__name__
    if as_json:
        own = exc.code if isinstance(exc, EdgeGovError) and exc.code != "error" else None
        kind = ERROR_KINDS.get(code, "internal")
        given_path = path if path is not None else getattr(exc, "path", None)
        given_field = field if field is not None else getattr(exc, "field", None)
        document = error_document(
            code,
            reason or own or _DEFAULT_REASONS[kind],
            message,
            path=None if given_path is None else str(given_path),
            field=given_field if isinstance(given_field, str) else None,
        )
        _print_to(sys.stdout, json.dumps(document, sort_keys=True))
    else:
        _print_to(sys.stderr, f"{prog}: error: {one_line(message)}")
    return code


MAX_SHOWN_PATH_CHARS = 120
"""The most of a path an error sentence shows (the JSON ``path`` carries all of it)."""


class PathError(ConfigError):
    """A path given on the command line cannot be used at all (too long, a loop of
    symlinks, no permission to look, a disk that is full): an input error, never a fault of
    ours. ``path`` is the path at fault, whole."""

    code = "bad_path"

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def path_error(exc: OSError) -> PathError | None:
    """``exc`` as the input error it is when the operating system refused a path (it names
    one: ``exc.filename``), with one sentence showing at most
    :data:`MAX_SHOWN_PATH_CHARS` of it; ``None`` for an ``OSError`` that names no path
    (then it is not the user's input at fault)."""
    if exc.filename is None:
        return None
    path = os.fsdecode(exc.filename) if isinstance(exc.filename, bytes) else str(exc.filename)
    why = exc.strerror or type(exc).__name__
    return PathError(f"cannot use {ellipsize(path, MAX_SHOWN_PATH_CHARS)}: {why}", path)


class Stopped(BaseException):
    """SIGTERM or SIGHUP (``timeout``, systemd, a dropped ssh session) ended the command:
    raised where it runs, so everything it opened is cleaned up on the way out, as after
    Ctrl-C; the exit code is 128 + :attr:`signum`."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Stopped` instead of ending the
    process where it stands (which would skip every cleanup, such as removing a read-only
    inspection's private copy of the log). A signal ignored on entry (``nohup``) stays
    ignored; outside the main thread nothing changes (only it can handle signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _print_to(stream: IO[str], line: str) -> None:
    """Print ``line`` and flush, so the report is out before the process exits."""
    print(line, file=stream, flush=True)


def printable_output() -> None:
    """Let stdout and stderr print any text: a path or value given as bytes that are not UTF-8 (lone
    surrogates in Python) is shown as ``\\udcff`` escapes instead of ending the command
    with a ``UnicodeEncodeError`` after its work is done."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def output_gone(prog: str, exc: BrokenPipeError) -> int:
    """End a command whose write failed with ``exc``: quietly with :data:`EXIT_STDOUT_GONE`
    when it was stdout's reader that went away (the rest of the output is unwanted; stdout
    is pointed at /dev/null so the interpreter's last flush stays silent), else as any
    other failure (a pipe or socket the command itself writes to).
    """
    if not _stdout_closed():
        return fail(prog, exc, False, EXIT_REFUSED)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_STDOUT_GONE


def _stdout_closed() -> bool:
    """Whether stdout is a pipe or socket with no reader left (poll reports an error or
    hang-up on its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError):
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events)

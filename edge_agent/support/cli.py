"""What both command-line tools share: bounded file reads, durations, counters, and error
reporting.

The CLIs turn our errors into one clear sentence on stderr and a non-zero exit; the
traceback appears only under ``--verbose``. A stdout whose reader has gone (``| head -1``)
ends the command quietly with :data:`EXIT_STDOUT_GONE`, as a shell tool killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import select
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.support.files import NotRegularFileError, file_kind, read_regular_file
from edge_agent.support.logging_setup import configure

__all__ = [
    "EXIT_STDOUT_GONE",
    "configure_logging",
    "counter_arg",
    "fail",
    "format_duration",
    "output_gone",
    "read_bounded",
    "read_offered",
    "read_regular",
    "utc_text",
    "wall_clock",
    "write_atomic",
    "write_out",
]

EXIT_STDOUT_GONE = 141
"""128 + SIGPIPE: what a shell reports for a command whose output pipe was closed."""


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
    _write_through_temp(path, data, mode, lambda: None)


def write_out(path: Path, data: bytes, *, mode: int = 0o600, force: bool = False) -> None:
    """Write a command's ``--out`` file, as :func:`write_atomic`, only where that replaces
    nothing but a file the user meant to replace.

    The atomic rename would turn whatever is at ``path`` into a regular file, so an
    existing path that is not a regular file (a device such as /dev/full, a FIFO, a socket,
    a directory, a symlink) is always refused, and an existing regular file unless
    ``force`` (the command's ``--force``). The check is on the path itself (``lstat``): a
    rename replaces a symlink, it never writes through one. A directory that takes no new
    file (``/proc``) is said to, before any ``--force`` is suggested.

    Raises:
        ConfigError: the path is refused or the file cannot be written.
    """
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

    _write_through_temp(path, data, mode, may_replace)


def _write_through_temp(
    path: Path, data: bytes, mode: int, before_rename: Callable[[], None]
) -> None:
    """Create a temp file beside ``path``, call ``before_rename`` (which may refuse), write
    ``data`` with ``mode``, fsync and rename it onto ``path``; the temp file never stays."""
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
                before_rename()
                os.fchmod(handle.fileno(), mode)
                handle.write(data)
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


def utc_text(seconds: int, fmt: str) -> str:
    """Unix ``seconds`` as UTC text in ``fmt`` (strftime), or ``@seconds`` for a time past
    year 9999: a valid counter reaches 2^53-1 s (285 million years), which ``datetime``
    cannot hold, and showing a signed or shipped value must not crash the command."""
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(fmt)
    except (OverflowError, ValueError, OSError):
        return f"@{seconds}"


def format_duration(seconds: int) -> str:
    """A short human duration: ``3d 4h``, ``5h 12m``, ``42s``; negative means ago."""
    if seconds < 0:
        return f"{format_duration(-seconds)} ago"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def configure_logging(verbose: bool, log_format: str = "text", level: str = "error") -> None:
    """Log to stderr, one event per line (``text``) or one JSON object per line (``json``):
    errors only for one-shot commands, ``level`` for daemons, everything with ``verbose``."""
    configure("debug" if verbose else level, "json" if log_format == "json" else "text")


def fail(prog: str, exc: BaseException, verbose: bool, code: int) -> int:
    """Report ``exc`` as one sentence (with the traceback under ``--verbose``)."""
    if verbose:
        logging.getLogger(prog).exception("%s failed", prog)
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return code


def output_gone(prog: str, exc: BrokenPipeError) -> int:
    """End a command whose write failed with ``exc``: quietly with :data:`EXIT_STDOUT_GONE`
    when it was stdout's reader that went away (the rest of the output is unwanted; stdout
    is pointed at /dev/null so the interpreter's last flush stays silent), else as any
    other failure (a pipe or socket the command itself writes to).
    """
    if not _stdout_closed():
        return fail(prog, exc, False, 1)
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

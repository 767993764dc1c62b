"""``edge-agent exec``: ask the agent, then execute exactly the file the decision was about.

Steps (each failure ends here with exit 126, or 127 when the command is not found, and one
sentence on stderr; nothing is executed):

1. resolve the command to a path (``PATH`` lookup when it has no ``/``);
2. open that file once (``O_RDONLY | O_CLOEXEC``) and take its canonical path from the
   open descriptor (``/proc/self/fd/N``): symlinks resolved by the kernel, no window between
   resolving and opening;
3. hash the open file (SHA-256);
4. ask the agent: action ``exec`` (or ``--action``), resource the canonical path, context
   ``sha256`` = the digest (plus any ``--context``);
5. on allow, check the open file is unchanged (same size and mtime, and the same digest
   re-read from the descriptor: an in-place rewrite after the decision is caught here; a
   file renamed over the path is not even looked at, the descriptor still holds the
   decided one);
6. ``execve`` the open descriptor itself (``fexecve``): a path swapped after step 2 is
   never looked at again.

Fail closed: a deny, an unreachable or slow agent, an error answer, a changed binary or a
refused ``execve`` all exit 126 with the reason. On allow this process *becomes* the
program: its exit status is the program's.

Exit codes: the program's own status on allow; 126 not run (denied, agent unreachable or
refusing, binary changed or unreadable, execve failed); 127 command not found; 2 usage.

Scripts (``#!``): the kernel runs the interpreter on ``/dev/fd/N``, the same open file, so
the descriptor is left open across ``execve`` for them (only for them). The decision
covers the script; its interpreter is whatever the ``#!`` line names.

What remains: between the final check of step 5 and ``execve`` (microseconds), a process
with write access to the binary could still rewrite it in place. Gated binaries should not
be writable by the workloads being gated.

Start-up is on the gated program's critical path, so this module imports only what the
blocking client needs: the options are read without :mod:`argparse` unless help or an error
is wanted (:func:`_plain_options`), files up to :data:`BUILTIN_HASH_MAX_BYTES` are hashed
without loading OpenSSL, and the signal dispositions are reset through ``_signal`` rather than
:mod:`signal`. ``bench/decision_socket.py`` measures the overhead.
"""

from __future__ import annotations

import os
import stat
import sys

from edge_agent.socket.blocking import DEFAULT_TIMEOUT_S, Client
from edge_agent.socket.errors import SocketError

TYPE_CHECKING = False
"""Not :data:`typing.TYPE_CHECKING`: importing :mod:`typing` costs the gate milliseconds."""
if TYPE_CHECKING:
    import argparse
    import signal as _signal  # typeshed has no stub for the C module; its API is the same
    from _hashlib import HASH as _Sha256
    from collections.abc import Mapping, Sequence
else:
    # The C module behind :mod:`signal`, which at import turns its constants into three
    # enums (scanning its namespace): about 0.5 ms of start-up, measured in-process.
    import _signal

__all__ = [
    "DIGEST_CONTEXT_KEY",
    "EXIT_NOT_FOUND",
    "EXIT_REFUSED",
    "add_arguments",
    "main",
    "program_environment",
    "run",
]

_BUNDLE_DIR: str | None = getattr(sys, "_MEIPASS", None) if getattr(sys, "frozen", False) else None
"""The PyInstaller build's library directory when running from it (its start-up changes the
environment), else None."""

EXIT_REFUSED = 126
"""Not run: denied, agent unreachable or refusing, binary changed, or execve failed."""

EXIT_NOT_FOUND = 127
"""The command was not found."""

DIGEST_CONTEXT_KEY = "sha256"
"""Context key carrying the hex SHA-256 of the binary the decision is about."""

MAX_BINARY_BYTES = 512 * 1024 * 1024
"""Largest file the gate hashes, in bytes."""

BUILTIN_HASH_MAX_BYTES = 256 * 1024
"""Files up to this size (bytes) are hashed with CPython's built-in SHA-256 rather than
:mod:`hashlib`'s OpenSSL one. Loading OpenSSL costs the gate about 2.5 ms of start-up; the
built-in code is about 7x slower per byte, which costs as much only at about 330 KiB (the
file is hashed twice)."""

_BUILTIN_SHA256_MODULES = ("_sha2", "_sha256")
"""Where CPython keeps it: ``_sha2`` from 3.12, ``_sha256`` in 3.11."""
_CHUNK_BYTES = 1024 * 1024
_SIGNALS_PYTHON_IGNORES = ("SIGPIPE", "SIGXFSZ")
PROG = "edge-agent exec"
EPILOG = (
    "exit codes:\n"
    "  N   the program's own\n"
    "  126 not run (denied, agent unreachable, binary changed)\n"
    "  127 not found\n"
    "\n"
    "example: edge-agent exec -- /opt/app/bin/run --port 8080"
)
"""The end of ``edge-agent exec --help``: its exit codes and an example."""


class _NotRun(Exception):
    """The program is not executed; ``exit_code`` and the message say why."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Target:
    """The opened file: descriptor, canonical path, digest and the stat that identifies it."""

    __slots__ = ("digest", "fd", "path", "stat_key")

    def __init__(self, fd: int, path: str, digest: str, stat_key: tuple[int, int, int, int]):
        self.fd = fd
        self.path = path
        self.digest = digest
        self.stat_key = stat_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``edge-agent exec`` (shared by the CLI and :func:`main`)."""
    import argparse  # the caller has it loaded already: this costs nothing

    parser.add_argument("--action", default="exec", help="action to ask about (default: exec)")
    parser.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra request context (repeatable); 'sha256' is set by the gate",
    )
    parser.add_argument(
        "--socket",
        default=None,
        metavar="PATH",
        help="agent socket (default: $EDGE_AGENT_SOCKET or /run/edge-agent/agent.sock)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for the agent before refusing (default: %(default)s)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")


def run(
    command: Sequence[str],
    *,
    action: str = "exec",
    context: Sequence[str] = (),
    socket_path: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Ask, then execute ``command``; returns only when it is not run (the exit code).

    ``command`` may start with ``--`` (as argparse leaves it). ``context`` holds
    ``KEY=VALUE`` strings.
    """
    argv = list(command[1:] if command and command[0] == "--" else command)
    try:
        if not argv:
            raise _NotRun("no command given: edge-agent exec [OPTIONS] -- COMMAND [ARGS...]", 2)
        pairs = _context(context)
        if timeout <= 0:
            raise _NotRun("--timeout must be positive", 2)
        target = _open(_resolve(argv[0]))
        _ask(target, action, pairs, socket_path, timeout, argv[0])
        _recheck(target)
        _execute(target, argv)
    except _NotRun as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    raise AssertionError("execve returned")


def _context(items: Sequence[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _NotRun(f"--context {item!r} must be KEY=VALUE", 2)
        if key == DIGEST_CONTEXT_KEY:
            raise _NotRun(f"--context may not set {DIGEST_CONTEXT_KEY!r}: the gate sets it", 2)
        if key in pairs:
            raise _NotRun(f"--context key {key!r} given twice", 2)
        pairs[key] = value
    return pairs


def _resolve(command: str) -> str:
    if "/" in command:
        return os.path.abspath(command)
    for directory in (os.environ.get("PATH") or os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    raise _NotRun(f"{command}: command not found", EXIT_NOT_FOUND)


def _open(path: str) -> _Target:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _NotRun(f"{path}: no such file", EXIT_NOT_FOUND) from None
    except OSError as exc:
        raise _NotRun(f"cannot open {path} to hash it: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _NotRun(f"{path} is not a regular file")
        canonical = os.readlink(f"/proc/self/fd/{fd}")
        if canonical.endswith(" (deleted)") or not canonical.startswith("/"):
            raise _NotRun(f"{path} was removed while it was opened")
        key = _stat_key(info)
        return _Target(fd, canonical, _digest(fd, key[2], path), key)
    except BaseException:
        os.close(fd)
        raise


def _stat_key(info: os.stat_result) -> tuple[int, int, int, int]:
    # Not ctime: renaming another file over the path changes the open file's link count,
    # hence its ctime, without changing a byte of it; the re-hash is what proves the content.
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _digest(fd: int, size: int, path: str) -> str:
    if size > MAX_BINARY_BYTES:
        raise _NotRun(f"{path} is {size} bytes, over the {MAX_BINARY_BYTES}-byte hashing limit")
    sha = _new_sha256(size)
    offset = 0
    try:
        while chunk := os.pread(fd, _CHUNK_BYTES, offset):
            sha.update(chunk)
            offset += len(chunk)
            if offset > MAX_BINARY_BYTES:
                raise _NotRun(f"{path} grew while it was hashed")
    except OSError as exc:
        raise _NotRun(f"cannot read {path} to hash it: {exc.strerror}") from exc
    return sha.hexdigest()


def _new_sha256(size: int) -> _Sha256:
    """A SHA-256 object suited to hashing ``size`` bytes at the least total cost."""
    if size <= BUILTIN_HASH_MAX_BYTES:
        for module in _BUILTIN_SHA256_MODULES:
            try:
                builtin: _Sha256 = __import__(module).sha256()
            except ImportError:
                continue
            return builtin
    import hashlib

    return hashlib.sha256()


def _ask(
    target: _Target,
    action: str,
    context: dict[str, str],
    socket_path: str | None,
    timeout: float,
    shown: str,
) -> None:
    context = {**context, DIGEST_CONTEXT_KEY: target.digest}
    try:
        with Client(socket_path, timeout=timeout) as client:
            result = client.decide(action, target.path, context)
    except (SocketError, ValueError) as exc:
        raise _NotRun(f"not running {shown}: {exc} (fail closed)") from exc
    if not result.allowed:
        raise _NotRun(f"denied: {target.path}: {result.message} ({result.reason})")


def _recheck(target: _Target) -> None:
    try:
        unchanged = _stat_key(os.fstat(target.fd)) == target.stat_key
    except OSError:
        unchanged = False
    if not unchanged or _digest(target.fd, target.stat_key[2], target.path) != target.digest:
        raise _NotRun(
            f"{target.path} changed on disk after it was hashed; not running what was not "
            "decided on"
        )


def _execute(target: _Target, argv: list[str]) -> None:
    if os.pread(target.fd, 2, 0) == b"#!":
        os.set_inheritable(target.fd, True)
    # Python starts with SIGPIPE and SIGXFSZ ignored, and an ignored signal stays ignored
    # across execve: give the program the dispositions it would have had without the gate.
    for name in _SIGNALS_PYTHON_IGNORES:
        if hasattr(_signal, name):
            _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(target.fd, argv, program_environment(os.environ, bundle_dir=_BUNDLE_DIR))
    except OSError as exc:
        raise _NotRun(f"cannot execute {target.path}: {exc.strerror}") from exc


def program_environment(environ: Mapping[str, str], *, bundle_dir: str | None) -> dict[str, str]:
    """The environment the program gets: the caller's, as it would have been without the gate.

    A PyInstaller build (the .deb's ``edge-agent-exec``, ``bundle_dir`` its ``_internal``
    directory) starts with that directory put first on ``LD_LIBRARY_PATH`` (a caller's
    non-empty value also copied to ``LD_LIBRARY_PATH_ORIG``) and its own ``_PYI_*``
    variables; handed on, they would make the program load the agent's copies of libssl,
    libz or libsqlite3 instead of its own. Outside a build (``bundle_dir`` None) nothing
    changes.
    """
    program = dict(environ)
    if bundle_dir is None:
        return program
    for name in [n for n in program if n.startswith("_PYI_")]:
        del program[name]
    path = program.get("LD_LIBRARY_PATH")
    if path is None:
        return program
    if path == bundle_dir:
        del program["LD_LIBRARY_PATH"]
    elif path.startswith(bundle_dir + ":"):
        program["LD_LIBRARY_PATH"] = path[len(bundle_dir) + 1 :]
        if program.get("LD_LIBRARY_PATH_ORIG") == program["LD_LIBRARY_PATH"]:
            del program["LD_LIBRARY_PATH_ORIG"]
    return program


class _Options:
    """What :func:`main` passes to :func:`run`."""

    __slots__ = ("action", "command", "context", "socket", "timeout")

    def __init__(self) -> None:
        self.action = "exec"
        self.context: list[str] = []
        self.socket: str | None = None
        self.timeout = DEFAULT_TIMEOUT_S
        self.command: list[str] = []


_VALUED_OPTIONS = frozenset({"--action", "--context", "--socket", "--timeout"})


def _plain_options(argv: Sequence[str]) -> _Options | None:
    """The options as :func:`add_arguments` defines them, read without argparse when they
    are written out in full (``--name value`` or ``--name=value``), followed by the command.

    Returns ``None`` for anything else (help, an abbreviation, an unknown option, a missing
    or dash-led value, a malformed timeout): argparse then parses the same arguments and
    gives its usage and errors. For what is returned, argparse would give the same values.
    """
    options = _Options()
    position = 0
    while position < len(argv):
        argument = argv[position]
        if argument == "--" or not argument.startswith("-"):
            options.command = list(argv[position:])
            return options
        name, equals, value = argument.partition("=")
        if name not in _VALUED_OPTIONS:
            return None
        if not equals:
            position += 1
            if position == len(argv) or argv[position].startswith("-"):
                return None
            value = argv[position]
        position += 1
        if name == "--timeout":
            try:
                options.timeout = float(value)
            except ValueError:
                return None
        elif name == "--context":
            options.context.append(value)
        elif name == "--action":
            options.action = value
        else:
            options.socket = value
    return options


def _parsed_options(argv: Sequence[str]) -> _Options:
    import argparse

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="ask the agent, then run a program",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    options = _Options()
    parser.parse_args(argv, namespace=options)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge_agent.socket.exec_gate [OPTIONS] -- COMMAND [ARGS...]``: the same
    gate without the full ``edge-agent`` command line (which imports much more at start)."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    options = _plain_options(arguments) or _parsed_options(arguments)
    return run(
        options.command,
        action=options.action,
        context=options.context,
        socket_path=options.socket,
        timeout=options.timeout,
    )


if __name__ == "__main__":
    sys.exit(main())

"""Logging for the agent's long-running commands: one event per line on stderr, no secrets.

Two formats, chosen with ``--log-format``:

- ``text`` (default), logfmt as journald and ``journalctl`` show it well::

      level=info logger=edge_agent.sync.daemon msg="bundle installed" version=3

- ``json``, one object per line for log shippers::

      {"ts": "2025-01-01T00:00:00.000Z", "level": "info", "logger": "...", "msg": "...", ...}

Fields passed with ``extra={...}`` become ``key=value`` pairs (or JSON members). A traceback is
folded into the one line (``exc="..."`` with ``\\n`` escapes), so an event is never split
across journal entries. When stderr is the journal (``$JOURNAL_STREAM`` names it), each line
starts with a ``<N>`` priority prefix that journald strips and turns into the entry's priority,
so ``journalctl -p warning`` works. The text format carries no timestamp: journald adds one.

Secrets never reach the log: :class:`RedactSecrets` blanks fields whose name looks like a
secret (password, token, private key...) and passwords in URLs and ``password=...`` pairs in
messages. It cannot recognise a secret passed anonymously as a message argument; code must not
log key material at all, and this filter is the second line.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
from typing import Literal, TextIO

__all__ = [
    "JsonFormatter",
    "LogfmtFormatter",
    "RedactSecrets",
    "configure",
    "is_secret_name",
    "redact_text",
]

LogFormat = Literal["text", "json"]
REDACTED = "[redacted]"

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
_SECRET_NAME = re.compile(
    r"passw|passphrase|secret|token|credential|private|seed|psk|(^|[_.-])key($|[_.-])",
    re.IGNORECASE,
)
_NOT_SECRET_NAME = re.compile(r"^pub|public|^kid$|[_.-](ids?|file|path|dir)$", re.IGNORECASE)
_HEADER_FIELDS = frozenset({"ts", "level", "logger", "msg"})
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", re.IGNORECASE)
# ``name=value`` for any secret-looking name; ``name: value`` only for passwords, because
# "freshness token: signature invalid" is a label, not a secret.
_PAIR_SECRET = re.compile(
    r"(?P<head>\b[\w.-]*(?:(?:passw\w*|passphrase|secret|token|private_key|psk)\s*="
    r"|(?:passw\w*|passphrase)\s*:)\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|\S+)",
    re.IGNORECASE,
)
_BARE_VALUE = re.compile(r"[^\s=\"\\\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# sd-daemon(3) priorities, highest level first.
_SYSLOG_PRIORITY = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)


_HANDLER_NAME = "edgegov-stderr"


def configure(
    level: int | str = logging.INFO,
    log_format: LogFormat = "text",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``log_format``.

    Replaces the handler an earlier call installed, so calling it again reconfigures rather
    than duplicates; handlers others added (a test's log capture) are left alone. Returns
    the handler (tests read what it wrote).

    Raises:
        ValueError: an unknown format or level name.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"unknown log format {log_format!r}: use text or json")
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    journal = _is_journal(out)
    formatter = JsonFormatter(journal) if log_format == "json" else LogfmtFormatter(journal)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets())
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    threshold = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(threshold, int):
        raise ValueError(f"unknown log level {level!r}")
    handler.setLevel(threshold)
    # The handler filters; the root level only ever goes down, so records other handlers
    # (a test's log capture, an embedding program's) want are still created.
    root.setLevel(min(root.level or logging.WARNING, threshold))
    logging.captureWarnings(True)
    return handler


class RedactSecrets(logging.Filter):
    """Blank secret-looking ``extra=`` fields and the secrets inside message text.

    A field is secret when its name mentions a password, passphrase, secret, token,
    credential, private key, seed or pre-shared key, or is ``key`` / ``*_key`` -- unless it
    names something public (``key_id``, ``kid``, ``public_key``, ``pubkey``) or a location
    (``*_file``, ``*_path``, ``*_dir``: a path is not the secret). In the message,
    ``scheme://user:PASSWORD@host`` and ``password=VALUE``-style pairs are blanked. The record
    is changed in place, so every handler after this filter sees the redacted form.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        for name, value in list(vars(record).items()):
            if name in _STANDARD_ATTRS:
                continue
            if is_secret_name(name):
                setattr(record, name, REDACTED)
            elif isinstance(value, str):
                setattr(record, name, redact_text(value))
        return True


def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` may hold a secret (see :class:`RedactSecrets`)."""
    return bool(_SECRET_NAME.search(name)) and not _NOT_SECRET_NAME.search(name)


def redact_text(text: str) -> str:
    """``text`` with URL passwords and ``password=...``-style values blanked."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    return _PAIR_SECRET.sub(lambda m: f"{m['head']}{REDACTED}", text)


class LogfmtFormatter(logging.Formatter):
    """``level=... logger=... msg="..." key=value``: one line per event, whatever it holds."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        pairs: list[tuple[str, object]] = [
            ("level", record.levelname.lower()),
            ("logger", record.name),
            ("msg", record.getMessage()),
        ]
        pairs.extend(_extra_fields(record))
        exc = _exception_text(self, record)
        if exc:
            pairs.append(("exc", exc))
        line = " ".join(f"{_key(k)}={_logfmt_value(v)}" for k, v in pairs)
        return _prefix(record, self._journal) + line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ms), ``level``, ``logger``, ``msg``, fields."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        event: dict[str, object] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in _extra_fields(record):
            event[name] = _json_value(value)
        exc = _exception_text(self, record)
        if exc:
            event["exc"] = exc
        return _prefix(record, self._journal) + json.dumps(event, default=str)


def _extra_fields(record: logging.LogRecord) -> list[tuple[str, object]]:
    return sorted(
        (name, value)
        for name, value in vars(record).items()
        if name not in _STANDARD_ATTRS and name not in _HEADER_FIELDS
    )


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return redact_text("\n".join(parts))


def _key(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name) or "_"


def _logfmt_value(value: object) -> str:
    text = _plain(value)
    if text and _BARE_VALUE.fullmatch(text):
        return text
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{_CONTROL.sub(_escape_control, escaped)}"'


def _escape_control(match: re.Match[str]) -> str:
    """A control character as ``\\xNN`` (or ``\\uNNNN``): a value from a signed object or a
    request (a revocation reason, a resource) can never move the terminal a field technician
    reads the log in, nor start a line of its own."""
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _plain(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return str(value)


def _json_value(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return value


def _prefix(record: logging.LogRecord, journal: bool) -> str:
    if not journal:
        return ""
    priority = next((p for level, p in _SYSLOG_PRIORITY if record.levelno >= level), 7)
    return f"<{priority}>"


def _is_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal's stream socket, as ``$JOURNAL_STREAM`` names it."""
    dev_inode = os.environ.get("JOURNAL_STREAM", "")
    if not dev_inode:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return dev_inode == f"{info.st_dev}:{info.st_ino}"

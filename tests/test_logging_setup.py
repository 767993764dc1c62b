"""Agent logging: one event per line, logfmt or JSON, journald priorities, no secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import warnings
from collections.abc import Iterator

import pytest

from edge_agent.support.logging_setup import configure, is_secret_name, redact_text

LOGGER = "edge_agent.sync.daemon"


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def _emit(log_format: str, *args: object, level: int = logging.INFO, **extra: object) -> str:
    out = io.StringIO()
    configure("debug", log_format, out)  # type: ignore[arg-type]
    logging.getLogger(LOGGER).log(level, *args, extra=extra)  # type: ignore[arg-type]
    return out.getvalue()


def test_text_is_one_logfmt_line_with_fields() -> None:
    line = _emit("text", "bundle %d installed", 3, version=3, digest=b"\xab\xcd", fresh=True)
    assert line == (
        f'level=info logger={LOGGER} msg="bundle 3 installed" digest=abcd fresh=true version=3\n'
    )


def test_text_quotes_and_escapes_values_that_need_it() -> None:
    line = _emit("text", "ok", reason='say "no"\nnow', empty="", path="/opt/a b", none=None)
    assert line.count("\n") == 1
    assert 'empty="" ' in line
    assert "none=null " in line
    assert 'path="/opt/a b" ' in line
    assert 'reason="say \\"no\\"\\nnow"' in line


def test_text_escapes_every_control_character_so_a_value_cannot_drive_the_terminal() -> None:
    reason = "maint\x1b[2J\x1b]0;owned\x07\tnext\x85line\u2028end\x00"
    line = _emit("text", "revocation applied", reason=reason, bare="a\x1bb")
    assert line.count("\n") == 1
    assert not any(c in line[:-1] for c in "\x1b\x07\t\x85\u2028\x00")
    assert 'reason="maint\\x1b[2J\\x1b]0;owned\\x07\\x09next\\x85line\\u2028end\\x00"' in line
    assert 'bare="a\\x1bb"' in line


def test_traceback_stays_on_the_event_line() -> None:
    out = io.StringIO()
    configure("info", "text", out)
    try:
        raise RuntimeError("lineage unavailable")
    except RuntimeError:
        logging.getLogger(LOGGER).exception("decision failed")
    text = out.getvalue()
    assert text.count("\n") == 1
    assert text.startswith(f'level=error logger={LOGGER} msg="decision failed" exc="Traceback')
    assert "RuntimeError: lineage unavailable" in text


def test_json_is_one_object_per_line_with_utc_timestamp() -> None:
    out = _emit("json", "gate %s", "closed", level=logging.WARNING, reason="bundle_expired", n=2)
    assert out.count("\n") == 1
    event = json.loads(out)
    assert event["ts"].endswith("Z")
    assert {k: v for k, v in event.items() if k != "ts"} == {
        "level": "warning",
        "logger": LOGGER,
        "msg": "gate closed",
        "reason": "bundle_expired",
        "n": 2,
    }


def test_json_carries_the_traceback_in_one_field() -> None:
    out = io.StringIO()
    configure("info", "json", out)
    try:
        raise ValueError("bad frame")
    except ValueError:
        logging.getLogger(LOGGER).exception("socket request refused")
    event = json.loads(out.getvalue())
    assert "ValueError: bad frame" in event["exc"]


def test_level_filters_and_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure("info", "text", first)
    configure("warning", "json", second)
    log = logging.getLogger(LOGGER)
    log.info("hidden")
    log.warning("shown")
    assert first.getvalue() == ""
    assert [json.loads(line)["msg"] for line in second.getvalue().splitlines()] == ["shown"]


def test_python_warnings_are_logged_as_events() -> None:
    out = io.StringIO()
    configure("info", "text", out)
    warnings.warn("old setting", DeprecationWarning, stacklevel=1)
    assert out.getvalue().startswith("level=warning logger=py.warnings ")


@pytest.mark.parametrize(("fmt", "level"), [("nope", "info"), ("text", "LOUD")])
def test_unknown_format_or_level_is_refused(fmt: str, level: str) -> None:
    with pytest.raises(ValueError):
        configure(level, fmt, io.StringIO())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.DEBUG, "<7>"),
        (logging.INFO, "<6>"),
        (logging.WARNING, "<4>"),
        (logging.ERROR, "<3>"),
        (logging.CRITICAL, "<2>"),
    ],
)
def test_journal_stream_gets_syslog_priority_prefixes(
    level: int, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, reader = socket.socketpair()
    with journal, reader:
        stream = journal.makefile("w")
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        configure("debug", "text", stream)
        logging.getLogger(LOGGER).log(level, "event")
        stream.flush()
        assert reader.recv(4096).decode().startswith(f"{prefix}level=")
        stream.close()


def test_no_priority_prefix_when_stderr_is_not_the_journal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert _emit("text", "event").startswith("level=info ")


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "broker_password",
        "passphrase",
        "secret",
        "client_secret",
        "token",
        "freshness_token",
        "credentials",
        "private_key",
        "device_key",
        "key",
        "seed",
        "psk",
        "PASSWORD",
    ],
)
def test_secret_looking_field_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "key_id",
        "kid",
        "public_key",
        "pubkey",
        "signer_key_ids",
        "password_file",
        "key_path",
        "keys_dir",
        "monkey",
        "version",
        "digest",
        "keyword",
    ],
)
def test_public_or_location_field_names_are_kept(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secret_fields_never_reach_the_output(log_format: str) -> None:
    out = _emit(
        log_format,
        "connected",
        password="hunter2",
        device_key="c2VlZA==",
        token="eyJhbGci",
        key_id="c8e85dcb",
    )
    for secret in ("hunter2", "c2VlZA==", "eyJhbGci"):
        assert secret not in out
    assert "c8e85dcb" in out
    assert out.count("[redacted]") == 3


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_inside_the_message_are_redacted(log_format: str) -> None:
    out = _emit(
        log_format,
        "connecting to %s with password=%s and token=%s",
        "mqtts://gw-001:hunter2@hub.example:8883",
        "s3cret",
        "'abc def'",
        note="retry mqtt://u:pw@h:1883/x",
    )
    for secret in ("hunter2", "s3cret", "abc def", ":pw@"):
        assert secret not in out
    assert "hub.example:8883" in out
    assert "gw-001" in out


def test_secrets_in_a_traceback_are_redacted() -> None:
    out = io.StringIO()
    configure("info", "text", out)
    try:
        raise ConnectionError("refused by mqtts://gw:hunter2@hub:8883")
    except ConnectionError:
        logging.getLogger(LOGGER).exception("broker down")
    assert "hunter2" not in out.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no secrets here", "no secrets here"),
        ("password file /etc/x unreadable", "password file /etc/x unreadable"),
        ("mqtt://hub:1883", "mqtt://hub:1883"),
        ("mqtt://user@hub:1883", "mqtt://user@hub:1883"),
        ("mqtt://user:pw@hub:1883", "mqtt://user:[redacted]@hub:1883"),
        ('secret="a b" rest', "secret=[redacted] rest"),
        ("PASSWORD: x", "PASSWORD: [redacted]"),
        ("freshness token: signature invalid", "freshness token: signature invalid"),
        ("token=abc next", "token=[redacted] next"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected

"""The command-line support every edgegov tool shares: exit codes, one-line and JSON errors,
usage errors from the shared parser, global options before or after a subcommand, -v/-q
levels, help epilogs and the one duration format."""

from __future__ import annotations

import argparse
import json
import logging

import pytest

from edge_agent.errors import ConfigError, StateError
from edge_agent.support.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliParser,
    add_verbosity,
    configure_logging,
    epilog,
    expiry_text,
    fail,
    format_duration,
    global_options,
)


def test_exit_codes_are_the_documented_numbers() -> None:
    assert (EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE) == (0, 1, 2, 3)


# --- fail: one line on stderr, or one JSON object on stdout -----------------------------------


def test_an_error_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code = fail("edge-x", ConfigError("first line\nsecond line"), 0, EXIT_USAGE)

    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    assert err == "edge-x: error: first line second line\n"


@pytest.mark.parametrize(
    ("exc", "exit_code", "kwargs", "expected"),
    [
        (
            ConfigError("bad --limit"),
            EXIT_USAGE,
            {"field": "--limit"},
            {"error": "usage", "code": "config_error", "field": "--limit"},
        ),
        (
            StateError("no agent state in /x", code="state_missing"),
            EXIT_UNAVAILABLE,
            {"path": "/x"},
            {"error": "unavailable", "code": "state_missing", "path": "/x"},
        ),
        (
            StateError("closed"),
            EXIT_REFUSED,
            {"reason": "gate_closed"},
            {"error": "refused", "code": "gate_closed"},
        ),
        (ValueError("odd"), EXIT_USAGE, {}, {"error": "usage", "code": "bad_argument"}),
        (RuntimeError("boom"), 70, {}, {"error": "internal", "code": "internal_error"}),
    ],
    ids=["usage with field", "unavailable with path", "refused reason", "plain", "internal"],
)
def test_an_error_with_json_is_one_object_on_stdout_and_nothing_on_stderr(
    capsys: pytest.CaptureFixture[str],
    exc: Exception,
    exit_code: int,
    kwargs: dict[str, str],
    expected: dict[str, str],
) -> None:
    code = fail("edge-x", exc, 0, exit_code, as_json=True, **kwargs)

    out, err = capsys.readouterr()
    assert code == exit_code and err == ""
    assert out.count("\n") == 1
    assert json.loads(out) == expected | {"message": str(exc), "exit": exit_code}


# --- the shared parser: usage errors ---------------------------------------------------------


def _parser() -> CliParser:
    top, sub = global_options(_globals)
    parser = CliParser(prog="edge-x", parents=[top])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", parents=[sub])
    show.add_argument("--limit", type=int, default=50)
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return parser


def _globals(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", default="/default", help="where (default: %(default)s)")
    add_verbosity(parser)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["show", "--limit", "many"], "--limit"),
        (["show", "--bogus"], None),
        ([], None),
        (["nope"], "command"),
    ],
    ids=["wrong type", "unknown option", "missing command", "unknown command"],
)
def test_a_usage_error_is_one_line_exit_2_or_one_json_object(
    capsys: pytest.CaptureFixture[str], argv: list[str], field: str | None
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(argv)
    out, err = capsys.readouterr()
    assert exited.value.code == EXIT_USAGE and out == ""
    assert err.count("\n") == 1 and err.startswith("edge-x") and ": error: " in err

    for placed in (["--json", *argv], [*argv, "--json"]):
        with pytest.raises(SystemExit) as exited:
            _parser().parse_args(placed)
        out, err = capsys.readouterr()
        assert exited.value.code == EXIT_USAGE and err == ""
        document = json.loads(out)
        assert document["error"] == "usage" and document["code"] == "bad_argument"
        assert document["exit"] == EXIT_USAGE and document.get("field") == field


def test_json_after_a_double_dash_is_an_operand_not_the_option() -> None:
    from edge_agent.support.cli import wants_json

    assert wants_json(["show", "--json"]) and not wants_json(["show", "--", "--json"])


# --- global options before or after the subcommand -------------------------------------------


@pytest.mark.parametrize(
    ("argv", "state_dir", "verbose"),
    [
        (["show"], "/default", 0),
        (["--state-dir", "/a", "show"], "/a", 0),
        (["show", "--state-dir", "/b"], "/b", 0),
        (["-v", "show"], "/default", 1),
        (["show", "-vv"], "/default", 2),
        (["--state-dir", "/a", "-v", "show", "--limit", "3"], "/a", 1),
    ],
    ids=["defaults", "before", "after", "-v before", "-vv after", "mixed"],
)
def test_global_options_work_before_or_after_the_subcommand(
    argv: list[str], state_dir: str, verbose: int
) -> None:
    args = _parser().parse_args(argv)

    assert (args.state_dir, args.verbose, args.quiet) == (state_dir, verbose, False)


def test_a_subcommand_help_names_the_global_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["show", "--help"])

    assert exited.value.code == 0
    assert "where (default: /default)" in capsys.readouterr().out


# --- -v / -vv / -q ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verbose", "quiet", "ours", "library"),
    [
        (0, False, logging.ERROR, logging.WARNING),
        (0, True, logging.ERROR, logging.WARNING),
        (1, False, logging.DEBUG, logging.WARNING),
        (2, False, logging.DEBUG, logging.DEBUG),
    ],
    ids=["default", "-q", "-v", "-vv"],
)
def test_verbosity_levels_show_our_debug_then_the_libraries(
    verbose: int, quiet: bool, ours: int, library: int
) -> None:
    configure_logging(verbose, "text", "error", quiet=quiet)

    assert logging.getLogger("edge_agent.x").getEffectiveLevel() <= ours
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == "edgegov-stderr")
    assert handler.level == ours
    assert logging.getLogger("amqtt.broker").getEffectiveLevel() == library
    configure_logging(0)


def test_quiet_leaves_a_daemon_errors_only() -> None:
    configure_logging(0, "text", "info", quiet=True)
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == "edgegov-stderr")
    assert handler.level == logging.ERROR
    configure_logging(0)


# --- help: exit codes and an example, kept as written ----------------------------------------


def test_help_ends_with_the_exit_codes_and_an_example(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    parser = CliParser(
        prog="edge-x",
        description="A long description " * 12,
        epilog=epilog([(0, "shown"), (3, "no state")], "edge-x show --json"),
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])

    help_text = capsys.readouterr().out
    assert help_text.rstrip().endswith("example: edge-x show --json")
    assert "exit codes:\n  0   shown\n  3   no state" in help_text
    assert max(len(line) for line in help_text.splitlines()) <= 80


# --- one duration format ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (86400, "1d"),
        (86399, "23h 59m"),
        (90000, "1d 1h"),
        (7200, "2h"),
        (250, "4m 10s"),
        (60, "1m"),
        (42, "42s"),
        (0, "0s"),
        (-300, "5m ago"),
    ],
)
def test_durations_have_one_format_without_a_zero_second_unit(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


def test_expiry_reads_the_same_before_and_after() -> None:
    assert expiry_text(86400) == "expires in 1d"
    assert expiry_text(-60) == "expired 1m ago"
    assert expiry_text(0) == "expired 0s ago"

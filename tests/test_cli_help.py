"""Every option of every command of edge-agent, edge-hub and edge-verify says what it is for,
and every command's ``--help`` ends with an example of that command (issue 22: options such as
``--keys``, ``--ttl``, ``--since`` had no help text, and no ``--help`` showed an example).

The ``--help`` checked is the one a user gets: each tool's console-script entry point run with
the command and ``--help`` (``edge-agent exec`` goes through the launcher to the lean gate's own
parser), at 80 columns.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import pytest

from edge_agent import launcher
from edge_agent.verify import cli as verify_cli
from hub.cli import main as hub_cli
from tests.cli_parsers import TOOLS, Command, commands, options

ENTRY_POINTS: dict[str, Callable[[Sequence[str]], int]] = {
    "edge-agent": launcher.main,
    "edge-hub": hub_cli.main,
    "edge-verify": verify_cli.main,
}
HELP_COLUMNS = "80"

COMMANDS = [command for tool in TOOLS for command in commands(tool)]
PARSERS = [(tool, build()) for tool, build in TOOLS.items()] + COMMANDS


def _ids(commands: list[Command]) -> list[str]:
    return [name for name, _ in commands]


def _help_of(name: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``NAME --help`` prints, run through the tool's entry point."""
    tool, *words = name.split()
    try:
        ENTRY_POINTS[tool]([*words, "--help"])
    except SystemExit as exc:
        assert exc.code in (0, None), f"{name} --help exited {exc.code}"
    return capsys.readouterr().out


@pytest.mark.parametrize(("name", "parser"), PARSERS, ids=_ids(PARSERS))
def test_every_option_has_help_text(name: str, parser: argparse.ArgumentParser) -> None:
    silent = [o.option_strings[-1] for o in options(parser) if not (o.help or "").strip()]
    assert silent == [], f"{name}: options without help text: {', '.join(silent)}"


@pytest.mark.parametrize(("name", "parser"), COMMANDS, ids=_ids(COMMANDS))
def test_every_commands_help_ends_with_an_example_of_it(
    name: str,
    parser: argparse.ArgumentParser,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", HELP_COLUMNS)
    text = _help_of(name, capsys)
    assert text.startswith("usage: "), f"{name} --help printed {text[:200]!r}"
    last = text.strip().split("\n\n")[-1].strip()
    assert last.startswith("example: "), f"{name} --help does not end with an example line"
    assert name in " ".join(last.split()), f"{name} --help ends with an example of another command"

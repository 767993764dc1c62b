"""Every ``edge-hub`` command explains itself: each option has help text, and each
command's ``--help`` lists its exit codes and ends with an example."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from hub.cli.main import _parser
from hub.cli.main import main as hub_main


def _commands() -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    def walk(
        parser: argparse.ArgumentParser, prefix: list[str]
    ) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
        yield prefix, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*prefix, name])

    yield from walk(_parser(), [])


COMMANDS = [pytest.param(c, p, id=" ".join(c) or "edge-hub") for c, p in _commands()]


@pytest.mark.parametrize(("command", "parser"), COMMANDS)
def test_every_option_has_help_and_the_help_ends_with_an_example(
    command: list[str], parser: argparse.ArgumentParser
) -> None:
    silent = [
        action.option_strings[0] if action.option_strings else action.dest
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert silent == []
    text = parser.format_help()
    assert "exit codes:" in text
    assert text.rstrip().split("\n\n")[-1].startswith("example: edge-hub")


def test_help_prints_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        hub_main(["device", "remove", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "fork evidence and rejection counters stay as evidence" in out
    assert "Removal is not revocation" in out
    assert out.endswith("example: edge-hub device remove gw-001")

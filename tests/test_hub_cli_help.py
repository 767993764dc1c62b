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


def _leaves(parser: argparse.ArgumentParser, prefix: list[str]) -> Iterator[list[str]]:
    chosen = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not chosen:
        yield prefix
    for action in chosen:
        for name, sub in action.choices.items():
            yield from _leaves(sub, [*prefix, name])


def _command_parser(parser: argparse.ArgumentParser, names: list[str]) -> argparse.ArgumentParser:
    for name in names:
        chosen = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = chosen[0].choices[name]
    return parser


def test_a_signing_command_line_builds_only_the_signing_commands() -> None:
    """``bundle build`` and its neighbours build the parser only as far as their own module's
    commands (the rest is ~9 ms of every build); a command line of any other command, or one
    that names no command, builds it whole."""
    built = _parser(["bundle", "build", "policy.yaml"])
    assert sorted(built._subparsers._group_actions[0].choices) == ["bundle", "keys", "root"]  # type: ignore[union-attr]
    for argv in (["fleet"], ["bundle"], ["--hub-dir", "x", "bundle", "build"], []):
        assert "fleet" in _parser(argv)._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def test_a_signing_command_has_the_same_parser_when_built_alone() -> None:
    """Its help (usage, options, epilog) and its parse of a command line do not change when
    the other commands are left out: what the command prints is byte-identical."""
    whole = _parser()
    leaves = list(_leaves(_parser(["bundle", "build"]), []))
    assert ["bundle", "build"] in leaves
    for names in leaves:
        alone = _command_parser(_parser(names), names)
        assert alone.format_help() == _command_parser(whole, names).format_help(), names
        assert alone.format_usage() == _command_parser(whole, names).format_usage(), names
    argv = ["bundle", "build", "p.yaml", "--keys", "k", "--version", "3", "--out", "b.cbor"]
    assert vars(_parser(argv).parse_args(argv)) == vars(whole.parse_args(argv))

"""The parsers of edge-agent, edge-hub and edge-verify and every command in them, for the tests
that hold all three command lines to the same rules (help texts, completion, man pages).

Each parser comes fresh from its CLI's ``build_parser()``, which has no side effect.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

from edge_agent import cli as agent_cli
from edge_agent.verify import cli as verify_cli
from hub.cli import main as hub_cli

__all__ = ["TOOLS", "Command", "commands", "options"]

TOOLS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "edge-agent": agent_cli.build_parser,
    "edge-hub": hub_cli.build_parser,
    "edge-verify": verify_cli.build_parser,
}

Command = tuple[str, argparse.ArgumentParser]
"""A command's full name (``edge-hub bundle build``) and its parser."""


def commands(tool: str) -> Iterator[Command]:
    """Every command of ``tool`` that runs something (no subcommands of its own)."""
    yield from _leaves(tool, TOOLS[tool]())


def _leaves(name: str, parser: argparse.ArgumentParser) -> Iterator[Command]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield name, parser
    for action in subparsers:
        for choice in action._choices_actions:
            if choice.help != argparse.SUPPRESS:
                yield from _leaves(f"{name} {choice.dest}", action.choices[choice.dest])


def options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """The options of ``parser`` (flags, not positionals), but for argparse's own --help."""
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            yield action

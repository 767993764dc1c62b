"""Shell completion and man pages for edge-agent, edge-hub and edge-verify, generated from the
real argument parsers: what they offer is what the commands accept, never a copy kept by hand.

Writes under OUT (default ``build/cli-docs``), laid out as under ``/usr/share``:

    bash-completion/completions/TOOL      bash (shtab)
    zsh/vendor-completions/_TOOL          zsh (shtab)
    fish/vendor_completions.d/TOOL.fish   fish (shtab)
    man/man1/TOOL.1                       the manual page (roff, written here)

Completion: shtab walks the parser; before that, each argument that names a file or a directory
(by its type, metavar or help text, see :func:`_path_kind`) is marked so the shells offer paths
there. Man pages: written here from the parser rather than by argparse-manpage, which drops
every subcommand's epilog (the exit codes and the example), fills the usage lines' indentation
into the text and leaves a wrapped help line starting with ``'`` or ``.`` to be read as a roff
request. Each page: NAME, SYNOPSIS, DESCRIPTION (the description and epilog), OPTIONS, one
subsection per command (its help, usage, description, arguments, options and epilog), SEE ALSO.
A command's options shared with the top level (the same flags for the same value: the global
options) are named once in a line rather than repeated under every command.

The page date is ``SOURCE_DATE_EPOCH`` when set (reproducible builds), else today (UTC).
Defaults that read the environment (``$EDGE_AGENT_STATE_DIR``, ``$EDGE_HUB_DIR``) are built
with those variables unset, so the pages show the shipped defaults. The parsers come from each
CLI's ``build_parser()``, which has no side effect; only the tools asked for are imported (the
.deb build has the agent's runtime set only, not the hub's).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import shtab

from edge_agent import __version__

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "cli-docs"
ENVIRONMENT_DEFAULTS = ("EDGE_AGENT_STATE_DIR", "EDGE_HUB_DIR")
MAX_INLINE_CHOICES_CHARS = 40
"""Longer ``{a,b,...}`` lists are named by a metavar and listed in the help text instead, so
no unbreakable word overflows a man page line."""

TOOLS = {
    "edge-agent": ("edge_agent.cli", "enforce signed policy bundles on a device, fail closed"),
    "edge-hub": ("hub.cli.main", "build, sign and publish policy bundles; watch the fleet"),
    "edge-verify": ("edge_agent.verify.cli", "verify receipts and checkpoints from files alone"),
}
COMPLETION_PATHS = {
    "bash": "bash-completion/completions/{tool}",
    "zsh": "zsh/vendor-completions/_{tool}",
    "fish": "fish/vendor_completions.d/{tool}.fish",
}
MAN_PATH = "man/man1/{tool}.1"
GLOBAL_OPTIONS = "[\\fIglobal options\\fR]"
_FILE_WORDS = re.compile(r"\bfile\b|\bpath\b|\bPEM\b|\.cbor\b|\.toml\b|\.ya?ml\b|- for stdin", re.I)
_DIRECTORY_WORDS = re.compile(r"\bdirector(y|ies)\b", re.I)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tools", nargs="*", metavar="TOOL", help=f"any of {', '.join(TOOLS)}")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tools) - set(TOOLS))
    if unknown:
        parser.error(f"unknown tool {', '.join(unknown)}: give any of {', '.join(TOOLS)}")
    for name in ENVIRONMENT_DEFAULTS:
        os.environ.pop(name, None)
    for tool in args.tools or TOOLS:
        for path in write_tool(tool, args.out):
            print(path)
    return 0


def build_parser(tool: str) -> argparse.ArgumentParser:
    """A fresh parser of ``tool``, as its command line builds it."""
    parser: argparse.ArgumentParser = importlib.import_module(TOOLS[tool][0]).build_parser()
    return parser


def write_tool(tool: str, out: Path) -> list[Path]:
    """Write ``tool``'s completion scripts and man page under ``out``; the paths written."""
    written = []
    for shell, relative in COMPLETION_PATHS.items():
        parser = build_parser(tool)
        _mark_paths(parser)
        written.append(_write(out / relative.format(tool=tool), shtab.complete(parser, shell)))
    page = man_page(build_parser(tool), TOOLS[tool][1])
    written.append(_write(out / MAN_PATH.format(tool=tool), page))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- completion ----------------------------------------------------------------------------


def _path_kind(action: argparse.Action) -> shtab.CompleteType | None:
    """shtab's FILE or DIRECTORY when ``action`` takes a path, else None."""
    if action.nargs == 0 or action.choices is not None:
        return None
    words = " ".join(str(w) for w in (action.help, action.metavar, action.dest) if w)
    if action.dest.endswith("_dir") or _DIRECTORY_WORDS.search(words):
        return shtab.DIRECTORY
    if action.type is Path or _FILE_WORDS.search(words) or action.metavar in ("FILE", "PATH"):
        return shtab.FILE
    return None


def _mark_paths(parser: argparse.ArgumentParser) -> None:
    for sub in _parsers(parser):
        for action in sub._actions:
            kind = _path_kind(action)
            if kind is not None:
                action.complete = kind  # type: ignore[attr-defined]


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every parser below it."""
    yield parser
    for _, _, sub in _commands(parser):
        yield from _parsers(sub)


def _commands(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, str | None, argparse.ArgumentParser]]:
    """The visible subcommands of ``parser``: (name, help, parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.help != argparse.SUPPRESS:
                    yield choice.dest, choice.help, action.choices[choice.dest]


# --- man page ------------------------------------------------------------------------------


def man_page(parser: argparse.ArgumentParser, summary: str) -> str:
    """The roff source of ``parser``'s manual page, section 1."""
    prog = parser.prog
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    date = time.strftime("%Y-%m-%d", time.gmtime(int(epoch) if epoch else None))
    lines = [
        f'.TH "{prog.upper()}" "1" "{date}" "edgegov {__version__}" "edgegov manual"',
        ".SH NAME",
        f"{_escape(prog)} \\- {_escape(summary)}",
        ".SH SYNOPSIS",
        *_synopsis(parser, prog),
        ".SH DESCRIPTION",
        *_text(parser, parser.description),
        *_text(parser, parser.epilog),
        ".SH OPTIONS",
        *_arguments(parser, shared=()),
    ]
    shared = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]
    commands = list(_leaf_commands(parser, prog))
    if commands:
        lines.append(".SH COMMANDS")
    for title, help_text, sub in commands:
        lines += _command(title, help_text, sub, shared)
    others = sorted(t for t in TOOLS if t != prog)
    lines += [".SH SEE ALSO", ", ".join(f"\\fB{_escape(t)}\\fR(1)" for t in others)]
    return "\n".join(lines) + "\n"


def _leaf_commands(
    parser: argparse.ArgumentParser, prefix: str
) -> Iterator[tuple[str, str | None, argparse.ArgumentParser]]:
    """(title, help, parser) of every command below ``parser`` that runs something (has no
    subcommands of its own), in parser order."""
    for name, help_text, sub in _commands(parser):
        title = f"{prefix} {name}"
        if any(True for _ in _commands(sub)):
            yield from _leaf_commands(sub, title)
        else:
            yield title, help_text, sub


def _command(
    title: str,
    help_text: str | None,
    parser: argparse.ArgumentParser,
    shared: list[argparse.Action],
) -> list[str]:
    lines = [f'.SS "{_escape(title)}"']
    if help_text:
        lines.append(_escape(_one_line(help_text)))
    lines += _synopsis(parser, title, shared)
    lines += _text(parser, parser.description)
    lines += _arguments(parser, shared)
    lines += _text(parser, parser.epilog)
    return lines


def _synopsis(
    parser: argparse.ArgumentParser, title: str, shared: Sequence[argparse.Action] = ()
) -> list[str]:
    """The usage line as argparse orders it (options, then positionals), left-aligned and not
    hyphenated; the ``shared`` (global) options are one ``[global options]`` there."""
    shown = [
        a
        for a in parser._actions
        if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    ]
    ordered = [a for a in shown if a.option_strings] + [a for a in shown if not a.option_strings]
    words = [f"\\fB{_escape(title)}\\fR"]
    for action in ordered:
        if not any(_same_option(action, s) for s in shared):
            words.append(_usage_word(parser, action))
        elif GLOBAL_OPTIONS not in words:
            words.append(GLOBAL_OPTIONS)
    return [".PP", ".ad l", ".nh", " ".join(words), ".hy", ".ad"]


def _usage_word(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if isinstance(action, argparse._SubParsersAction):
        return "\\fICOMMAND\\fR \\fI...\\fR"
    if not action.option_strings:
        word = f"\\fI{_escape(_metavar(parser, action))}\\fR"
        if action.nargs in ("+", "*", argparse.REMAINDER):
            word += "\\~..."
        return f"[{word}]" if action.nargs in ("?", "*") else word
    word = f"\\fB{_escape(action.option_strings[0])}\\fR"
    if action.nargs != 0:
        word += f"\\~\\fI{_escape(_metavar(parser, action))}\\fR"
    return word if action.required else f"[{word}]"


def _metavar(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The value's name as --help shows it, or the option's name in capitals where that would
    be a choice list too long for one line (:func:`_help` lists the choices then)."""
    if _choices_listed(parser, action):
        return action.dest.upper()
    return _argparse_metavar(parser, action)


def _argparse_metavar(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    default = action.dest if not action.option_strings else action.dest.upper()
    return parser._get_formatter()._format_args(action, default)


def _choices_listed(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    return (
        action.choices is not None
        and action.metavar is None
        and len(_argparse_metavar(parser, action)) > MAX_INLINE_CHOICES_CHARS
    )


def _arguments(parser: argparse.ArgumentParser, shared: Sequence[argparse.Action]) -> list[str]:
    lines: list[str] = []
    also: list[str] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(
            action, argparse._HelpAction | argparse._SubParsersAction
        ):
            continue
        if any(_same_option(action, s) for s in shared):
            also.append(action.option_strings[-1])
            continue
        lines += [".TP", _invocation(parser, action), *_help(parser, action)]
    if also:
        named = ", ".join(f"\\fB{_escape(o)}\\fR" for o in also)
        lines += [".PP", f"Also the global options {named}, as under OPTIONS."]
    return lines


def _same_option(action: argparse.Action, shared: argparse.Action) -> bool:
    """The same option as one at the top level: the same flags for the same value (not, say,
    ``bundle build --version``, which is the bundle's)."""
    return action.option_strings == shared.option_strings and action.dest == shared.dest


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.option_strings:
        return f"\\fI{_escape(_metavar(parser, action))}\\fR"
    value = "" if action.nargs == 0 else f" \\fI{_escape(_metavar(parser, action))}\\fR"
    return ", ".join(f"\\fB{_escape(o)}\\fR{value}" for o in action.option_strings)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> list[str]:
    text = _one_line(parser._get_formatter()._expand_help(action)) if action.help else ""
    if _choices_listed(parser, action):
        listed = ", ".join(str(c) for c in action.choices or ())
        text = f"{text} (one of: {listed})".strip()
    return [_escape(text)] if text else []


def _text(parser: argparse.ArgumentParser, text: str | None) -> list[str]:
    """A description or epilog as its --help shows it. Where the parser's formatter keeps line
    breaks (argparse's raw formatters, edgegov's own), each line stays a line, an indented one
    (an exit-code table) exactly as written, and blank lines part paragraphs; where it fills
    (argparse's default), the whole text is one paragraph."""
    if not text:
        return []
    text = text % {"prog": parser.prog} if "%(prog)" in text else text
    if "\n" not in parser._get_formatter()._fill_text("a\nb", 80, ""):
        return [".PP", _escape(_one_line(text))]
    lines = []
    for paragraph in re.split(r"\n\s*\n", text.strip("\n")):
        lines.append(".PP")
        for row in paragraph.splitlines():
            if row[:1].isspace():
                lines += [".nf", _escape(row.rstrip()), ".fi"]
            else:
                lines += [_escape(row.strip()), ".br"]
    return lines


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _escape(text: str) -> str:
    """``text`` as roff input: backslashes and hyphens escaped, and a leading ``.`` or ``'``
    made text (it would start a request)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


if __name__ == "__main__":
    sys.exit(main())

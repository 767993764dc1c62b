"""Shell completion and man pages generated from the real parsers (scripts/gen_cli_docs.py):
every script parses in its shell, completion offers the commands and files the parsers take,
every man page renders with ``man -l`` without a single warning from groff and documents every
command with its epilog.

The module fixture runs the script as ``make cli-docs`` does, once, with
``$EDGE_AGENT_STATE_DIR`` and ``$EDGE_HUB_DIR`` set and from the output directory, to show that
neither a builder's environment nor working directory leaks into what is shipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.cli_parsers import TOOLS, commands, options
from tests.system_tools import require

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_cli_docs.py"
RUN_TIMEOUT_S = 120
BUILDER_STATE_DIR = "/builder/private/state"
BUILDER_HUB_DIR = "/builder/private/hub"
SOURCE_DATE_EPOCH = "1767225600"  # 2026-01-01


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_script()


def _generate(out: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EDGE_AGENT_STATE_DIR": BUILDER_STATE_DIR,
        "EDGE_HUB_DIR": BUILDER_HUB_DIR,
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-docs")
    _generate(out)
    return out


def _completion(docs: Path, shell: str, tool: str) -> Path:
    return docs / gen.COMPLETION_PATHS[shell].format(tool=tool)


def _man(docs: Path, tool: str) -> Path:
    return docs / gen.MAN_PATH.format(tool=tool)


def _rendered(page: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``man -l page`` at 80 columns; ``--nh --nj`` (no hyphenation, no justification) makes
    the text comparable word for word."""
    man = require("man", "man-db")
    require("groff", "groff-base")
    env = {**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat", "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        [man, *options, "-l", str(page)],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def _bash_completions(script: Path, words: list[str], cwd: Path | None = None) -> list[str]:
    """What bash offers for the last of ``words``, through the function that ``script``
    registers for the command (``complete -p`` names it)."""
    bash = require("bash", "bash")
    program = (
        'source "$1"; shift\n'
        'function=$(complete -p "$1" | sed -n "s/.*-F \\([^ ]*\\) .*/\\1/p")\n'
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))\n'
        'COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
        '"$function" "$1" "${@: -1}" "${@: -2:1}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        [bash, "--norc", "-c", program, "bash", str(script), *words],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


# --- what is generated ---------------------------------------------------------------------


def test_every_tool_gets_three_completion_scripts_and_a_man_page(docs: Path) -> None:
    expected = {
        str(path.relative_to(docs))
        for tool in TOOLS
        for path in (*(_completion(docs, s, tool) for s in gen.COMPLETION_PATHS), _man(docs, tool))
    }
    written = {str(p.relative_to(docs)) for p in docs.rglob("*") if p.is_file()}
    assert written == expected
    assert all((docs / p).stat().st_size > 0 for p in written)
    assert "bash-completion/completions/edge-agent" in written
    assert "zsh/vendor-completions/_edge-hub" in written


def test_generating_twice_gives_the_same_bytes(docs: Path, tmp_path: Path) -> None:
    _generate(tmp_path)
    for path in docs.rglob("*"):
        if path.is_file():
            again = tmp_path / path.relative_to(docs)
            assert again.read_bytes() == path.read_bytes(), path.relative_to(docs)


def test_the_builders_environment_does_not_leak_into_the_pages(docs: Path) -> None:
    shipped = "".join(p.read_text() for p in docs.rglob("*") if p.is_file())
    assert BUILDER_STATE_DIR not in shipped and BUILDER_HUB_DIR not in shipped
    assert str(docs) not in shipped, "a default taken from the builder's working directory"
    assert "/var/lib/edge\\-agent" in _man(docs, "edge-agent").read_text()


# --- completion ----------------------------------------------------------------------------


@pytest.mark.parametrize("tool", TOOLS)
def test_bash_completion_parses(docs: Path, tool: str) -> None:
    bash = require("bash", "bash")
    subprocess.run([bash, "-n", str(_completion(docs, "bash", tool))], check=True)


@pytest.mark.parametrize("tool", TOOLS)
def test_zsh_completion_parses(docs: Path, tool: str) -> None:
    zsh = require("zsh", "zsh")
    subprocess.run([zsh, "-n", str(_completion(docs, "zsh", tool))], check=True)


def test_zsh_compinit_registers_each_tool_from_the_vendor_directory(docs: Path) -> None:
    zsh = require("zsh", "zsh")
    directory = _completion(docs, "zsh", "edge-agent").parent
    program = (
        'fpath=("$1" $fpath); autoload -Uz compinit && compinit -u -D\n'
        "print -r -- ${_comps[edge-agent]} ${_comps[edge-hub]} ${_comps[edge-verify]}"
    )
    result = subprocess.run(
        [zsh, "-f", "-c", program, "zsh", str(directory)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=True,
    )
    assert result.stdout.split() == ["_edge-agent", "_edge-hub", "_edge-verify"], result.stderr


@pytest.mark.parametrize("tool", TOOLS)
def test_fish_completion_parses(docs: Path, tool: str) -> None:
    fish = require("fish", "fish")
    subprocess.run([fish, "-n", str(_completion(docs, "fish", tool))], check=True)


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (["edge-agent", "sta"], ["status"]),
        (["edge-agent", "log", "s"], ["show", "status"]),
        (["edge-agent", "log", "show", "--kind", "bundle_r"], ["bundle_rejected"]),
        (["edge-hub", "bundle", "ins"], ["inspect"]),
        (["edge-verify", "cons"], ["consistency"]),
    ],
    ids=["agent-command", "agent-subcommand", "agent-choice", "hub-subcommand", "verify-command"],
)
def test_bash_completes_commands_and_choices(
    docs: Path, words: list[str], offered: list[str]
) -> None:
    assert _bash_completions(_completion(docs, "bash", words[0]), words) == offered


def test_bash_completes_a_file_where_the_argument_is_a_file(docs: Path, tmp_path: Path) -> None:
    (tmp_path / "bundle.cbor").write_bytes(b"")
    (tmp_path / "bundle-notes").mkdir()
    script = _completion(docs, "bash", "edge-agent")
    offered = _bash_completions(script, ["edge-agent", "bundle", "install", "bun"], tmp_path)
    assert "bundle.cbor" in offered


def test_fish_completes_a_command_with_its_help(docs: Path) -> None:
    fish = require("fish", "fish")
    script = _completion(docs, "fish", "edge-agent")
    result = subprocess.run(
        [fish, "--no-config", "-c", f"source {script}; complete -C 'edge-agent sta'"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=True,
    )
    offered = [line.split("\t") for line in result.stdout.splitlines()]
    assert [name for name, *_ in offered] == ["status"]
    assert len(offered[0]) == 2 and offered[0][1].strip(), "fish shows what status does"


# --- man pages -----------------------------------------------------------------------------


@pytest.mark.parametrize("tool", TOOLS)
def test_man_page_renders_without_warnings(docs: Path, tool: str) -> None:
    result = _rendered(_man(docs, tool))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = result.stdout
    assert text.startswith(f"{tool.upper()}(1)")
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "SEE ALSO"):
        assert f"\n{section}\n" in text, section
    assert f"{tool} - " in text
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("tool", TOOLS)
def test_man_page_has_every_command_with_its_options_and_epilog(docs: Path, tool: str) -> None:
    text = " ".join(_rendered(_man(docs, tool), "--nh", "--nj").stdout.split())
    for name, parser in commands(tool):
        assert f" {name} " in text, name
        for action in options(parser):
            if action.help != argparse.SUPPRESS:
                assert action.option_strings[-1] in text, (name, action.option_strings)
        for line in (parser.epilog or "").splitlines():
            assert " ".join(line.split()) in text, (name, line)


def test_man_page_text_that_looks_like_roff_stays_text(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description=".TH looks like a request",
        epilog="exit codes: 0 allow; 1 deny\n\nexample: edge-agent status --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--path", help="'quoted' first, then a \\backslash and a -dash")
    page = tmp_path / "edge-agent.1"
    page.write_text(gen.man_page(parser, "a test page"))
    result = _rendered(page, "--nh", "--nj")
    assert result.stderr == ""
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert ".TH looks like a request" in lines
    assert "'quoted' first, then a \\backslash and a -dash" in lines
    assert "exit codes: 0 allow; 1 deny" in lines and "example: edge-agent status --json" in lines


class _LineKeepingFormatter(argparse.HelpFormatter):
    """As edgegov's own: keeps an epilog's line breaks without being a raw formatter."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(indent + line for line in text.splitlines())


@pytest.mark.parametrize(
    "formatter", [argparse.RawDescriptionHelpFormatter, _LineKeepingFormatter], ids=["raw", "own"]
)
def test_man_page_keeps_the_epilog_lines_that_help_keeps(
    tmp_path: Path, formatter: type[argparse.HelpFormatter]
) -> None:
    epilog = "exit codes:\n  0   open\n  1   closed\n\nexample: edge-agent status --json"
    parser = argparse.ArgumentParser(prog="edge-agent", epilog=epilog, formatter_class=formatter)
    page = tmp_path / "edge-agent.1"
    page.write_text(gen.man_page(parser, "a test page"))
    result = _rendered(page, "--nh", "--nj")
    assert result.stderr == ""
    kept = [line.rstrip() for line in result.stdout.splitlines()]
    table = ["       exit codes:", "         0   open", "         1   closed"]
    start = kept.index(table[0])
    assert kept[start : start + 3] == table
    assert "       example: edge-agent status --json" in kept


def test_man_page_fills_the_epilog_that_help_fills(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="edge-agent", epilog="exit codes:\n0 open; 1 closed")
    page = tmp_path / "edge-agent.1"
    page.write_text(gen.man_page(parser, "a test page"))
    assert "       exit codes: 0 open; 1 closed" in _rendered(page, "--nh").stdout.splitlines()

"""``--json`` is a global option of ``edge-hub`` (docs/cli.md, "Global options"): before the
command, between its names or after it, the output is the same; a command without JSON
output refuses it as one JSON usage error (issue 22: ``edge-hub --json fleet`` was refused
as "unrecognized arguments: --json")."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.cli.main import build_parser
from hub.cli.main import main as hub_main
from tests.hub_support import HubSetup, make_bundle, make_hub_dir

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policy.yaml"


def _commands(
    parser: argparse.ArgumentParser, names: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command of ``parser`` by its names, with its parser (a command with
    subcommands, such as ``revoke``, is one too)."""
    if names:
        yield names, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*names, name))


def _takes_json(parser: argparse.ArgumentParser) -> bool:
    return any("--json" in action.option_strings for action in parser._actions)


COMMANDS = list(_commands(build_parser()))
WITH_JSON = [names for names, parser in COMMANDS if _takes_json(parser)]
WITHOUT_JSON = [
    names
    for names, parser in COMMANDS
    if not _takes_json(parser)
    and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubSetup:
    hub = make_hub_dir(tmp_path / "hub")
    monkeypatch.setenv("EDGE_HUB_DIR", str(hub.path))
    monkeypatch.chdir(tmp_path)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    return hub


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = hub_main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_table_found_the_commands_with_and_without_json() -> None:
    assert {("fleet",), ("device", "list"), ("revoke", "list"), ("bundle", "inspect")} <= set(
        WITH_JSON
    )
    assert {("serve",), ("attest", "expect")} <= set(WITHOUT_JSON)


@pytest.mark.parametrize("names", WITH_JSON, ids=[" ".join(n) for n in WITH_JSON])
def test_every_command_with_json_takes_it_before_its_name_with_the_same_output(
    setup: HubSetup, capsys: pytest.CaptureFixture[str], names: tuple[str, ...]
) -> None:
    """Without their required arguments most of these end in the same usage error; those
    that need none (fleet, device list, revoke list, ...) print the same result."""
    after = _run([*names, "--json"], capsys)
    assert _run(["--json", *names], capsys) == after
    assert after[2] == ""
    json.loads(after[1])


def _cases(setup: HubSetup, tmp_path: Path) -> list[list[str]]:
    bundle = tmp_path / "b1.cbor"
    bundle.write_bytes(make_bundle(setup.keys, 1))
    root = str(setup.keys / "root.cbor")
    request = ["--subject", "svc:camera", "--action", "exec", "--resource", "/x"]
    return [
        ["fleet"],
        ["device", "list"],
        ["device", "show", "gw-001"],
        ["revoke", "list", "--region", "eu-1"],
        ["bundle", "inspect", str(bundle), "--root", root],
        ["bundle", "eval", str(bundle), "--root", root, "--device", "gw-001", *request],
        ["policy", "lint", str(EXAMPLE)],
    ]


@pytest.mark.parametrize("where", ["front", "between"])
def test_read_commands_print_the_same_json_wherever_json_is_given(
    setup: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    for argv in _cases(setup, tmp_path):
        code, out, err = _run([*argv, "--json"], capsys)
        assert err == "" and json.loads(out), argv
        moved = ["--json", *argv] if where == "front" else [argv[0], "--json", *argv[1:]]
        assert _run(moved, capsys) == (code, out, err), argv


@pytest.mark.parametrize("names", WITHOUT_JSON, ids=[" ".join(n) for n in WITHOUT_JSON])
def test_a_command_without_json_output_refuses_it_as_one_json_error(
    setup: HubSetup, capsys: pytest.CaptureFixture[str], names: tuple[str, ...]
) -> None:
    code, out, err = _run(["--json", *names], capsys)
    assert (code, err) == (2, "")
    document = json.loads(out)
    assert document["error"] == "usage"
    if document.get("field") == "--json":
        assert f"'edge-hub {' '.join(names)}' has no JSON output" in document["message"]


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["serve"], "serve"),
        (
            ["attest", "expect", "--profile", "generic-x86_64", "--from-device", "gw-001"],
            "attest expect",
        ),
    ],
    ids=["serve", "attest expect"],
)
def test_the_refusal_names_the_command_and_the_option(
    setup: HubSetup, capsys: pytest.CaptureFixture[str], argv: list[str], name: str
) -> None:
    code, out, err = _run(["--json", *argv], capsys)
    assert (code, err) == (2, "")
    document = json.loads(out)
    assert (document["code"], document["field"]) == ("bad_argument", "--json")
    assert f"'edge-hub {name}' has no JSON output" in document["message"]

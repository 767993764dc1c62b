"""Every ``edge-hub`` command against a table of bad arguments: missing, empty, huge,
negative, not UTF-8, of the wrong type, and paths that are a directory, missing or
unwritable.

Each run must end with a non-zero exit, one line on stderr (with ``--json``: one JSON
object on stdout and nothing on stderr), no traceback, and nothing written: every file
under the test's directory (a working hub directory among them) is byte-for-byte the same
afterwards. The commands are read from the real parser, so a command added later is in the
table without editing it.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub.cli.exits import path_arg
from hub.cli.main import _parser
from hub.cli.main import main as hub_main
from hub.hubdir.paths import ENV_REGISTRY
from tests.hub_support import make_hub_dir, module_registry, registry_rows

HUGE = "x" * 100_000
NOT_UTF8 = os.fsdecode(b"\xff\xfe-bad")
UNWRITABLE = "/proc/edgegov-hostility/out"
"""Nothing can be created in /proc, even by root (the tests may run as root)."""


@dataclass(frozen=True)
class Place:
    """The test's directory: a working hub, a garbage file, a plain directory."""

    root: Path
    hub: Path
    garbage: Path
    directory: Path
    registry: str | None
    """The hub's PostgreSQL registry under ``EDGEGOV_TEST_REGISTRY=postgresql`` (``None``:
    its ``hub.db``, under ``root`` like every other file)."""


@pytest.fixture(scope="module")
def template_registry(request: pytest.FixtureRequest) -> str | None:
    return module_registry(request)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, template_registry: str | None) -> Path:
    root = tmp_path_factory.mktemp("hostility") / "place"
    root.mkdir()
    make_hub_dir(root / "hub", url=template_registry)
    (root / "garbage.bin").write_bytes(b"\x00\xffnot cbor, not yaml: {[\n")
    (root / "plain-dir").mkdir()
    (root / "cwd").mkdir()
    return root


@pytest.fixture(scope="module", autouse=True)
def settled_heap() -> Iterator[None]:
    """What earlier modules left for the garbage collector (an aiomqtt future never awaited
    is logged when collected) collected once, then the heap frozen: each case's own
    collection below then walks only what the cases made, not the whole session's heap
    (a full collection per case cost more than the case itself)."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def place(template: Path, template_registry: str | None, tmp_path: Path) -> Place:
    """A fresh copy of the template for each case: what one case does never reaches
    another (a PostgreSQL registry is the module's: a case that wrote there fails)."""
    root = tmp_path / "place"
    shutil.copytree(template, root)
    return Place(root, root / "hub", root / "garbage.bin", root / "plain-dir", template_registry)


@dataclass(frozen=True)
class Slot:
    """A required argument of a command: its option string (``None``: positional), and
    whether it names a file."""

    option: str | None
    path: bool


def _commands() -> Iterator[tuple[list[str], list[Slot]]]:
    """Every ``edge-hub`` command that runs (a leaf of the parser, and ``revoke``, which
    also has ``revoke list``), with its required arguments."""

    def walk(
        parser: argparse.ArgumentParser, prefix: list[str]
    ) -> Iterator[tuple[list[str], list[Slot]]]:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if groups and groups[0].required:
            for name, sub in groups[0].choices.items():
                yield from walk(sub, [*prefix, name])
            return
        slots = [
            Slot(a.option_strings[0] if a.option_strings else None, a.type in (Path, path_arg))
            for a in parser._actions
            if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction)
            and (a.required or not a.option_strings)
            and a.nargs != "?"
        ]
        yield prefix, slots
        for group in groups:
            for name, sub in group.choices.items():
                yield from walk(sub, [*prefix, name])

    yield from walk(_parser(), [])


def _value(kind: str, slot: Slot, place: Place) -> str:
    """The bad value of ``kind`` for ``slot``."""
    text = {
        "empty": "",
        "huge": HUGE,
        "negative": "-1",
        "not-utf8": NOT_UTF8,
        "wrong-type": "1.5e3!",
        "directory": "/",
        "missing-path": "gw-404",
        "unwritable": UNWRITABLE,
    }
    files = {
        "empty": "",
        "huge": "/tmp/" + HUGE,
        "negative": "-1",
        "not-utf8": str(place.root / NOT_UTF8),
        "wrong-type": str(place.garbage),
        "directory": str(place.directory),
        "missing-path": str(place.root / "missing" / "file"),
        "unwritable": UNWRITABLE,
    }
    return (files if slot.path else text)[kind]


def _hub_dir(kind: str, place: Place) -> str:
    """The ``--hub-dir`` of a case: the working hub, except for a command with no required
    argument, where the bad value goes there."""
    return {
        "empty": "",
        "huge": "/tmp/" + HUGE,
        "negative": "-1",
        "not-utf8": str(place.root / NOT_UTF8),
        "wrong-type": str(place.garbage),
        "directory": str(place.directory),
        "missing-path": str(place.root / "missing"),
        "unwritable": "/proc",
        "missing": str(place.root / "missing"),
    }[kind]


KINDS = (
    "missing",
    "empty",
    "huge",
    "negative",
    "not-utf8",
    "wrong-type",
    "directory",
    "missing-path",
    "unwritable",
)
ACCEPTED = {
    ("keys", "init"): {"negative", "not-utf8", "directory", "missing-path"},
    ("registry", "migrate"): {"negative", "not-utf8", "wrong-type", "missing-path"},
}
"""Values that are no bad argument for the command: ``keys init --out`` makes a key
directory at a new path or in an empty directory, whatever its (legal) name; ``registry
migrate --to`` copies to a new ``hub.db`` file at a path (not a URL), whatever its (legal)
name."""
BAD_HUB_DIR = pytest.mark.sqlite_only(
    "the bad value is the --hub-dir, where hub.db would be; a PostgreSQL registry needs none"
)
"""A command with no required argument gets the bad value as its ``--hub-dir``."""
CASES = [
    pytest.param(
        command, slots, kind, id=f"{' '.join(command)}-{kind}", marks=[] if slots else BAD_HUB_DIR
    )
    for command, slots in _commands()
    for kind in KINDS
    if kind not in ACCEPTED.get(tuple(command), set())
]


def _argv(command: list[str], slots: list[Slot], kind: str, place: Place) -> list[str]:
    if kind == "missing":
        return [*command, "--hub-dir", _hub_dir(kind, place)] if not slots else command
    argv = list(command)
    for slot in slots:
        value = _value(kind, slot, place)
        argv += [value] if slot.option is None else [f"{slot.option}={value}"]
    hub_dir = str(place.hub) if slots else _hub_dir(kind, place)
    return [*argv, f"--hub-dir={hub_dir}"]


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
    }


def _rows(registry: str | None) -> dict[str, str]:
    return {} if registry is None else registry_rows(registry)


def _run(argv: list[str]) -> int:
    try:
        return hub_main(argv)
    except SystemExit as exc:
        assert isinstance(exc.code, int)
        return exc.code


@pytest.mark.module_registry
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize(("command", "slots", "kind"), CASES)
def test_a_bad_argument_fails_in_one_line_and_writes_nothing(
    place: Place,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    slots: list[Slot],
    kind: str,
    as_json: bool,
) -> None:
    monkeypatch.chdir(place.root / "cwd")
    monkeypatch.delenv("EDGE_HUB_DIR", raising=False)
    if place.registry is not None:
        monkeypatch.setenv(ENV_REGISTRY, place.registry)
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # noqa: SIM115 - closed by pytest
    # What earlier cases left for the garbage collector is logged when collected: collect
    # it now, and drop that, so only the command is read (cheap: settled_heap).
    gc.collect()
    capsys.readouterr()
    before = _checksums(place.root), _rows(place.registry)
    argv = _argv(command, slots, kind, place) + (["--json"] if as_json else [])
    code = _run(argv)
    captured = capsys.readouterr()
    assert code != 0, f"{argv[:6]} succeeded: {captured.out[:200]}"
    assert "Traceback" not in captured.out + captured.err
    if as_json:
        assert captured.err == ""
        document = json.loads(captured.out)
        assert set(document) >= {"error", "code", "message", "exit"}
        assert document["exit"] == code and "\n" not in document["message"]
    else:
        assert captured.out == "" or command[0] == "serve"
        assert len(captured.err.splitlines()) == 1, captured.err
        assert captured.err.startswith("edge-hub")
    assert (_checksums(place.root), _rows(place.registry)) == before

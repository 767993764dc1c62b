"""Every ``edge-agent`` and ``edge-verify`` subcommand against a table of bad arguments
(missing, empty, huge, negative, bytes that are not UTF-8, the wrong type, paths that are
directories, missing or unwritable): each exits non-zero with one line on stderr, or with
``--json`` one JSON object on stdout and nothing on stderr; never a traceback; nothing
written (no output file, no change to the state directory).

Run in-process (``main(argv)``): a usage error is argparse's ``SystemExit(2)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import build_parser as agent_parser
from edge_agent.cli import main as agent_main
from edge_agent.protocol.request import Request
from edge_agent.verify.cli import build_parser as verify_parser
from edge_agent.verify.cli import main as verify_main
from tests.factory import DEVICE, NOW, HubSim

NOT_UTF8 = os.fsdecode(b"\xff\xfe-bad")
"""What a shell passes for bytes that are not UTF-8: lone surrogates in Python."""
HUGE = "x" * 200_000


@dataclass(frozen=True)
class Slot:
    """One argument of a command: where it goes and what kind of value it takes."""

    option: str | None
    """The option (``--out``), or ``None`` for a positional argument."""
    kind: str
    """text, number, infile, outfile, time, choice, octal."""
    good: str
    """A value that works (the other arguments keep theirs while this one is bad)."""


@dataclass(frozen=True)
class Command:
    tool: str
    words: tuple[str, ...]
    slots: tuple[Slot, ...]


def _bad_values(kind: str, work: Path) -> list[tuple[str, str]]:
    """(case name, bad value) for an argument of ``kind``."""
    common = [("empty", ""), ("not utf-8", NOT_UTF8)]
    if kind == "text":
        return [*common, ("huge", HUGE), ("control characters", "a\x1b[2Jb")]
    if kind == "number":
        return [*common, ("negative", "-1"), ("wrong type", "abc"), ("huge", "9" * 400)]
    if kind == "time":
        return [*common, ("wrong type", "yesterday"), ("negative", "-1h"), ("huge", "9" * 400)]
    if kind == "choice":
        return [*common, ("wrong type", "Not A Choice!")]
    if kind == "octal":
        return [*common, ("negative", "-1"), ("wrong type", "999"), ("huge", "7" * 400)]
    if kind == "infile":
        return [
            *common,
            ("missing path", str(work / "missing" / "file")),
            ("directory", str(work)),
            ("wrong type", str(work / "garbage.bin")),
            ("huge", str(work / "huge.bin")),
        ]
    if kind == "outfile":
        return [
            ("empty", ""),
            ("directory", str(work)),
            ("missing directory", str(work / "missing" / "out")),
            ("unwritable", "/proc/edgegov-cannot-write-here"),
            ("not utf-8 in a missing directory", str(work / "missing" / NOT_UTF8)),
        ]
    raise AssertionError(kind)


def _commands(state: Path, work: Path) -> list[Command]:
    receipt = str(work / "entry.receipt")
    pem = str(work / "device.pem")
    s = ("--state-dir", str(state))
    agent = "edge-agent"
    return [
        Command(
            agent,
            ("init", "--state-dir", str(work / "new-state")),
            (
                Slot("--device-id", "text", "gw-009"),
                Slot("--region", "text", "eu-1"),
                Slot("--profile", "text", "generic-x86_64"),
                Slot("--root", "infile", str(work / "root.cbor")),
                Slot("--broker", "text", "mqtt://localhost:1883"),
            ),
        ),
        Command(agent, ("bundle", "install", *s), (Slot(None, "infile", str(work / "b.cbor")),)),
        Command(agent, ("root", "install", *s), (Slot(None, "infile", str(work / "root.cbor")),)),
        Command(
            agent,
            ("decide", *s),
            (
                Slot("--subject", "text", "svc:camera"),
                Slot("--action", "text", "exec"),
                Slot("--resource", "text", "/bin/x"),
                Slot("--context", "text", "k=v"),
            ),
        ),
        Command(agent, ("status",), (Slot("--state-dir", "infile", str(state)),)),
        Command(agent, ("pubkey",), (Slot("--state-dir", "infile", str(state)),)),
        Command(
            agent,
            ("log", "show", *s),
            (
                Slot("--since", "time", "1h"),
                Slot("--until", "time", "1h"),
                Slot("--subject", "text", "svc:camera"),
                Slot("--action", "text", "exec"),
                Slot("--reason", "choice", "allowed"),
                Slot("--kind", "choice", "decision"),
                Slot("--decision", "choice", "allow"),
                Slot("--limit", "number", "5"),
            ),
        ),
        Command(agent, ("log", "verify"), (Slot("--state-dir", "infile", str(state)),)),
        Command(agent, ("log", "prove", *s), (Slot(None, "number", "0"),)),
        Command(
            agent,
            ("log", "receipt", *s),
            (Slot(None, "number", "0"), Slot("--out", "outfile", str(work / "r.receipt"))),
        ),
        Command(
            agent,
            ("log", "checkpoint", *s),
            (Slot("--size", "number", "1"), Slot("--out", "outfile", str(work / "cp.txt"))),
        ),
        Command(
            agent,
            ("log", "consistency", *s),
            (
                Slot(None, "number", "1"),
                Slot(None, "number", "2"),
                Slot("--out", "outfile", str(work / "proof.txt")),
            ),
        ),
        Command(
            agent,
            ("log", "export", *s),
            (
                Slot("--out", "outfile", str(work / "export.cbor")),
                Slot("--since", "time", "1h"),
                Slot("--format", "choice", "jsonl"),
            ),
        ),
        Command(agent, ("log", "replay", *s), (Slot("--since", "time", "1h"),)),
        Command(agent, ("log", "prune", *s), (Slot("--before", "number", "0"),)),
        Command(agent, ("log", "status"), (Slot("--state-dir", "infile", str(state)),)),
        Command(agent, ("log", "acknowledge-break", *s), (Slot("--note", "text", "why"),)),
        Command(
            agent,
            ("attest", *s),
            (Slot("--profile-file", "infile", str(work / "missing-profile.toml")),),
        ),
        Command(agent, ("break-glass", *s), (Slot(None, "infile", str(work / "token")),)),
        Command(
            agent,
            ("serve", *s),
            (Slot("--mode", "octal", "0660"),),
        ),
        Command(agent, ("run", *s), (Slot("--config", "infile", str(work / "agent.toml")),)),
        Command(
            agent,
            ("enforce", *s, "--mounts", str(work / "no-such-mount")),
            (Slot("--queue", "number", "10"), Slot("--mode", "choice", "audit")),
        ),
        Command(
            "edge-verify",
            ("receipt",),
            (Slot(None, "infile", receipt), Slot("--device-key", "infile", pem)),
        ),
        Command(
            "edge-verify",
            ("consistency",),
            (
                Slot(None, "infile", str(work / "cp.txt")),
                Slot(None, "infile", str(work / "cp.txt")),
                Slot("--device-key", "infile", pem),
            ),
        ),
        Command(
            "edge-verify",
            ("chain",),
            (
                Slot(None, "infile", str(work / "chain.cbor")),
                Slot("--root", "infile", str(work / "root.cbor")),
                Slot("--child", "text", "gw-001:0"),
            ),
        ),
    ]


def _argv(command: Command, bad: int, value: str | None) -> list[str]:
    """The command with slot ``bad`` given ``value`` (``None``: its value left out)."""
    argv = list(command.words)
    for index, slot in enumerate(command.slots):
        given = slot.good if index != bad else value
        if slot.option is None:
            if given is not None:
                argv.append(given)
        elif given is None:
            continue
        else:
            argv += [slot.option, given]
    if value is None and command.slots[bad].option is not None:
        argv.append(command.slots[bad].option)
    return argv


@dataclass(frozen=True)
class Case:
    command: Command
    slot: int
    name: str
    value: str | None

    @property
    def id(self) -> str:
        slot = self.command.slots[self.slot]
        where = slot.option or f"arg{self.slot}"
        words = " ".join(w for w in self.command.words if not w.startswith("/"))
        return f"{self.command.tool} {words}: {where} {self.name}"


def _cases(state: Path, work: Path) -> list[Case]:
    cases = []
    for command in _commands(state, work):
        for index, slot in enumerate(command.slots):
            cases.append(Case(command, index, "missing", None))
            for name, value in _bad_values(slot.kind, work):
                cases.append(Case(command, index, name, value))
    return cases


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An enrolled device with a bundle and a few decisions, and a work directory with
    the input files the good values name."""
    base = tmp_path_factory.mktemp("hostile")
    state, work = base / "state", base / "work"
    work.mkdir()
    sim = HubSim()
    (work / "root.cbor").write_bytes(sim.root_bytes())
    (work / "b.cbor").write_bytes(sim.bundle(2))
    (work / "garbage.bin").write_bytes(b"\x00not what was asked for\xff" * 10)
    (work / "huge.bin").write_bytes(b"\x00" * (9 * 1024 * 1024))
    init_state_dir(state, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(state) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        for offset in range(3):
            agent.decide(Request("svc:camera", "exec", "/bin/x"), NOW + offset)
    return state, work


def _fingerprint(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` by content, leaving out SQLite's -wal/-shm (present
    while a connection is open) and the agent lock."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.endswith(("-wal", "-shm", ".lock"))
    }


class _RanOn(Exception):
    """A case started something long-running instead of refusing its argument."""


def _invoke(tool: str, argv: list[str]) -> int:
    main = agent_main if tool == "edge-agent" else verify_main

    def ran_on(signum: int, frame: object) -> None:
        raise _RanOn

    previous = signal.signal(signal.SIGALRM, ran_on)
    signal.alarm(CASE_LIMIT_S)
    try:
        return main(argv)
    except SystemExit as exited:
        assert isinstance(exited.code, int)
        return exited.code
    except _RanOn:
        return 0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


CASE_LIMIT_S = 20
"""Far longer than any refusal takes: a case still running then was not refused."""


def test_the_table_covers_every_agent_and_verify_subcommand(scene: tuple[Path, Path]) -> None:
    covered = {
        (
            c.tool,
            c.words[0] if c.words[0] not in ("log", "bundle", "root") else " ".join(c.words[:2]),
        )
        for c in _commands(*scene)
    }
    names: set[tuple[str, str]] = set()
    for tool, parser in (("edge-agent", agent_parser()), ("edge-verify", verify_parser())):
        for action in parser._subparsers._group_actions if parser._subparsers else ():
            for name, sub in action.choices.items():
                inner = sub._subparsers._group_actions if sub._subparsers else []
                groups = [a.choices for a in inner if hasattr(a, "choices") and a.choices]
                if name in ("log", "bundle", "root") and groups:
                    names |= {(tool, f"{name} {child}") for child in groups[0]}
                else:
                    names.add((tool, name))
    # exec (the launcher's fast path: exit 126/127 of its own), the internal holder and
    # attest tpm-enroll (a TPM) are tested where they live.
    left_out = {("edge-agent", "exec"), ("edge-agent", "enforce-holder")}
    assert names - left_out <= covered


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_every_subcommand_refuses_every_bad_argument_with_one_clear_error(
    scene: tuple[Path, Path],
    as_json: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state, work = scene
    before_state, before_work = _fingerprint(state), _fingerprint(work)
    problems: list[str] = []
    for case in _cases(state, work):
        argv = _argv(case.command, case.slot, case.value) + (["--json"] if as_json else [])
        capsys.readouterr()
        code = _invoke(case.command.tool, argv)
        out, err = capsys.readouterr()
        why = _judge(code, out, err, as_json)
        if why is None and _changed(state, before_state, case, code):
            why = "the state directory changed"
        before_state = _fingerprint(state)
        if why is None and _fingerprint(work) != before_work:
            why = f"a file was written: {set(_fingerprint(work)) - set(before_work)}"
            before_work = _fingerprint(work)
        if why is not None:
            problems.append(f"{case.id}: {why}\n    out={out[:300]!r}\n    err={err[:300]!r}")
    assert not problems, f"{len(problems)} cases:\n" + "\n".join(problems)


RECORDS_REFUSALS = {("bundle", "install"), ("root", "install")}
"""Commands whose refusal of the object given is itself recorded in the lineage (a bundle or
root the device was offered and refused is evidence): the databases change, no file is
added."""


def _changed(state: Path, before: dict[str, str], case: Case, code: int) -> bool:
    after = _fingerprint(state)
    if code == 1 and case.command.words[:2] in RECORDS_REFUSALS:
        # The refusal entry goes through the state's outbox (state.db) into the log.
        return set(after) != set(before)
    return after != before


def _judge(code: int, out: str, err: str, as_json: bool) -> str | None:
    """Why this outcome is not one clear refusal (``None``: it is): one error line, one
    JSON error object, or (edge-verify) a NOT VERIFIED verdict, exit 1."""
    if code == 0:
        return "exit 0"
    if "Traceback" in out + err:
        return "a traceback"
    if code == 1 and not err and ("NOT VERIFIED" in out or '"ok": false' in out):
        return None
    if not as_json:
        lines = err.splitlines()
        if len(lines) != 1:
            return f"{len(lines)} lines on stderr"
        if ": error: " not in lines[0] and not out:
            return "no error line"
        return None
    if err:
        return "stderr written with --json"
    try:
        document = json.loads(out)
    except ValueError:
        return "stdout is not one JSON object"
    if not isinstance(document, dict):
        return "not a JSON object"
    if "error" in document and isinstance(document["error"], str):
        missing = {"error", "code", "message", "exit"} - set(document)
        if missing or document["exit"] != code:
            return f"error object lacks {missing} or names another exit"
        return None
    if document.get("ok") is False:
        return None
    return "neither an error object nor a failed verdict"

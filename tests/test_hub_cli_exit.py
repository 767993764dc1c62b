"""``edge-hub`` run as the program spares the interpreter's final collections; in-process
callers keep their collector as it was.

When the console script's ``main()`` returns, the process exits, and the interpreter's
final collections would walk every object still alive (the modules, the parser, what the
command kept) only to free nothing: ``main()`` freezes them first (~10-20 ms of every
command's CPU, docs/performance-profile.md, "Session 14: start-up and exit"). A caller that
passes ``argv`` (tests, benchmarks) is not exiting, and its collector is left alone.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub.cli.main import main as hub_main

REPO = Path(__file__).resolve().parents[1]

AS_THE_PROGRAM = """
import gc, json, sys
from hub.cli.main import main
sys.argv = ["edge-hub", *sys.argv[1:]]
try:
    code = main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "frozen": gc.get_freeze_count(), "enabled": gc.isenabled()}))
"""


def _as_the_program(*argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", AS_THE_PROGRAM, *argv],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["bundle", "inspect", "no-such-bundle.cbor"], 2),
        (["--version"], 0),
    ],
    ids=["a command that returns", "a command that exits through argparse"],
)
def test_the_program_freezes_what_is_alive_when_its_command_ends(
    argv: list[str], code: int
) -> None:
    result = _as_the_program(*argv)
    assert result["code"] == code
    assert isinstance(result["frozen"], int) and result["frozen"] > 0
    assert result["enabled"] is True


def test_an_in_process_caller_keeps_its_collector_as_it_was(tmp_path: Path) -> None:
    before = gc.get_freeze_count()
    code = hub_main(["bundle", "inspect", str(tmp_path / "no-such-bundle.cbor")])
    assert code == 2
    assert gc.get_freeze_count() == before
    assert gc.isenabled()

"""A path the operating system refuses outright (ENAMETOOLONG, ELOOP) is the user's input at
fault, never an internal error (exit 70): a ``--state-dir`` it refuses is unavailable (exit
3, as a missing one), any other path an input error (exit 2), each in one sentence that
shows a bounded part of the path (the JSON ``path`` carries all of it)."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.cli import main as agent_main
from edge_agent.support.cli import MAX_SHOWN_PATH_CHARS, path_error

TOO_LONG = "x" * 5000


def _looping(tmp_path: Path) -> str:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    return str(loop / "state")


STATE_DIRS = [
    ("name too long", lambda tmp_path: TOO_LONG),
    ("path too long", lambda tmp_path: "/".join(["y" * 200] * 30)),
    ("symlink loop", _looping),
]
READERS = [["status"], ["pubkey"], ["log", "show"], ["log", "status"], ["log", "verify"]]
WRITERS = [["decide", "--subject", "a", "--action", "b", "--resource", "c"]]


@pytest.mark.parametrize("make", [m for _, m in STATE_DIRS], ids=[n for n, _ in STATE_DIRS])
@pytest.mark.parametrize("words", READERS + WRITERS, ids=" ".join)
def test_a_state_dir_the_system_refuses_is_unavailable_in_one_bounded_sentence(
    tmp_path: Path,
    make: Callable[[Path], str],
    words: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    state_dir = make(tmp_path)
    capsys.readouterr()
    code = agent_main([*words, "--state-dir", state_dir, "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 3
    assert document["error"] == "unavailable"
    assert document["code"] in ("state_unusable", "state_missing")
    assert len(document["message"]) < MAX_SHOWN_PATH_CHARS + 200


def test_without_json_it_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert agent_main(["status", "--state-dir", TOO_LONG]) == 3
    out, err = capsys.readouterr()
    assert not out
    assert err.startswith("edge-agent: error: cannot use xxx")
    assert err.rstrip().endswith("File name too long")
    assert len(err.splitlines()) == 1


def test_an_os_error_that_names_no_path_is_not_an_input_error() -> None:
    assert path_error(OSError(errno.EIO, "Input/output error")) is None
    refused = path_error(OSError(errno.ENAMETOOLONG, "File name too long", TOO_LONG))
    assert refused is not None and refused.path == TOO_LONG

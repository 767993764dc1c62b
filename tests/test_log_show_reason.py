"""``edge-agent log show --reason CODE`` takes any well-formed code (an older or newer agent's
log may hold others), but a code no entry of this agent can carry gets one notice on stderr
naming the known ones, instead of an empty table that reads as "none yet"; the usage hint
names real codes (it said ``no_rule_matched``: the code is ``no_matching_rule``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import edge_agent
from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.lineage.cli import known_reasons
from edge_agent.protocol.request import Request
from tests.factory import DEVICE, NOW, HubSim

SOURCE = Path(edge_agent.__file__).parent
_DECLARED = re.compile(r'\bcode\s*=\s*"([a-z_]+)"')


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("reason") / "state"
    sim = HubSim()
    init_state_dir(directory, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(directory) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        agent.decide(Request("svc:nobody", "exec", "/bin/unknown"), NOW + 1)
    return directory


def _show(state: Path, capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = agent_main(["log", "show", "--state-dir", str(state), *more])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_code_no_entry_can_carry_gets_one_notice_and_an_empty_table(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _show(state, capsys, "--reason", "no_rule_matched")
    assert code == 0
    assert out.splitlines()[0].split()[:2] == ["SEQ", "TIME"]
    assert len(out.splitlines()) == 1
    (line,) = err.splitlines()
    assert line.startswith("edge-agent: notice: no entry can carry reason no_rule_matched; ")
    assert "known reasons: " in line and "no_matching_rule" in line


@pytest.mark.parametrize("quiet", ["--json", "-q"])
def test_the_notice_stays_off_stderr_under_json_and_quiet(
    state: Path, capsys: pytest.CaptureFixture[str], quiet: str
) -> None:
    code, out, err = _show(state, capsys, "--reason", "no_rule_matched", quiet)
    assert code == 0
    assert err == ""
    if quiet == "--json":
        assert out == ""


@pytest.mark.parametrize(
    "reason",
    [
        "no_matching_rule",
        "bundle_signature",
        "segment_start",
        "lineage_tampered",
        "lineage_break_acknowledged",
        "retention",
        "operator_prune",
    ],
)
def test_a_code_the_agent_records_gets_no_notice(
    state: Path, capsys: pytest.CaptureFixture[str], reason: str
) -> None:
    code, _, err = _show(state, capsys, "--reason", reason)
    assert code == 0
    assert err == ""


def test_the_usage_hint_names_only_codes_the_agent_records(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        agent_main(["log", "show", "--state-dir", str(state), "--reason", "Not-A-Code"])
    err = capsys.readouterr().err
    named = re.search(r"shows: (.*), \.\.\.\)", err)
    assert named is not None
    assert set(named[1].split(", ")) <= known_reasons()


def test_every_code_a_refusal_is_raised_with_is_known() -> None:
    """Every ``code = "..."`` and ``code="..."`` in the agent's source (but the socket
    protocol's, answered to a client and never logged) is a reason ``--reason`` knows:
    a new refusal code must be declared in its class's ``codes``."""
    found = {
        match
        for path in SOURCE.rglob("*.py")
        if "socket" not in path.relative_to(SOURCE).parts
        for match in _DECLARED.findall(path.read_text())
    }
    assert found
    assert found - known_reasons() == {"error"}  # EdgeGovError's own: a code no error keeps

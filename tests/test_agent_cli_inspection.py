"""``edge-agent`` as a technician at a gateway uses it: reading a state directory without
changing a byte (``--read-only``, or a directory mounted read-only), ``status`` exit codes,
global options before or after the subcommand, ``log show`` at the terminal's width (golden
files at 80 and 200 columns), ``--wide``, ``--reverse``, ``-f``, every reason code as a
filter, ``--json`` results, and ``log export --out -``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent import cli as agent_cli
from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.errors import ConfigError
from edge_agent.lineage import cli as lineage_cli
from edge_agent.policy.compiler import policy_payload
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import Kind
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.socket.listen import ListeningSocket, resolve_group
from edge_agent.support.readonly import connect_read_only
from tests.factory import DEVICE, NOW, HubSim
from tests.system_tools import ctrl_c_default

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("EDGEGOV_UPDATE_GOLDEN") == "1"
"""Set to rewrite the golden files from the current output (then review the diff)."""
CLOCK = NOW + 120
"""The wall clock every command here reads."""
REQUESTS = [
    Request("svc:camera", "exec", "/opt/camera/bin/capture"),
    Request("svc:x", "exec", "/bin/sh"),
    Request(
        "svc:telemetry-uploader-with-a-long-name",
        "exec",
        "/opt/vendor/telemetry/releases/2026-11-30/bin/upload-measurements",
    ),
    Request("svc:thermo", "read", "/dev/i2c-1"),
]
READERS: list[list[str]] = [
    ["status"],
    ["status", "--json"],
    ["pubkey"],
    ["log", "show"],
    ["log", "show", "--json", "--reverse", "--wide"],
    ["log", "verify"],
    ["log", "verify", "--json"],
    ["log", "status"],
    ["log", "replay", "--json"],
    ["log", "prove", "1"],
]
"""The reading commands that write nothing but stdout."""
WRITERS_ELSEWHERE: list[list[str]] = [
    ["log", "export", "--out", "{out}/export.cbor"],
    ["log", "export", "--out", "{out}/export.jsonl", "--format", "jsonl"],
    ["log", "receipt", "1", "--out", "{out}/entry-1.receipt"],
    ["log", "checkpoint", "--out", "{out}/checkpoint.txt"],
    ["log", "consistency", "1", "3", "--out", "{out}/proof.txt"],
]
"""The reading commands that write a file outside the state directory."""


def _key(n: int) -> PrivateKey:
    return PrivateKey(bytes([n]) * 32)


def _hub() -> HubSim:
    """A hub with fixed keys, so digests and key ids are the same in every run."""
    return HubSim(
        root_keys=[_key(1), _key(2), _key(3)],
        policy_keys=[_key(4)],
        online_keys={Role.FRESHNESS: [_key(5)], Role.VERIFIER: [_key(6)], Role.REVOKE: [_key(7)]},
    )


def _make_state(state_dir: Path, *, attestation_gap: bool = False) -> Path:
    sim = _hub()
    init_state_dir(state_dir, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        for offset, request in enumerate(REQUESTS):
            agent.decide(request, NOW + 1 + offset)
        assert agent.lineage is not None
        agent.lineage.record_transition(
            Kind.BUNDLE_REJECTED,
            time=NOW + 30,
            applied=False,
            reason="bundle_signature",
            detail="bundle version 2 is not signed by the policy role of trust root version 1",
        )
        agent.decide(REQUESTS[0], NOW + 40)
    return state_dir


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory built once; tests copy it before anything may write."""
    return _make_state(tmp_path_factory.mktemp("inspect") / "state")


@pytest.fixture
def state(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "state"
    shutil.copytree(pristine, copy)
    return copy


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_cli, "wall_clock", lambda: CLOCK)
    monkeypatch.setattr(lineage_cli, "wall_clock", lambda: CLOCK)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = agent_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _checksums(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


# --- read-only inspection --------------------------------------------------------------------


def test_every_reading_command_with_read_only_changes_no_byte_of_the_state_dir(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _checksums(state)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    for argv in READERS + WRITERS_ELSEWHERE:
        filled = [a.format(out=out_dir) for a in argv]
        code, out, err = _run(capsys, "--read-only", "--state-dir", str(state), *filled)
        assert code == 0, (argv, out, err)
        said = 0 if "--json" in argv else 1
        assert err.count("nothing there is changed") == said, (argv, err)
        assert "Traceback" not in err

    assert _checksums(state) == before
    assert not [p for p in state.iterdir() if p.name.endswith(("-wal", "-shm", "-journal"))]


_RO_SCRIPT = f"""
import json, sys
from edge_agent import cli
from edge_agent.lineage import cli as lineage_cli
from edge_agent.policy.compiler import policy_payload
cli.wall_clock = lineage_cli.wall_clock = lambda: {CLOCK}
print(json.dumps([cli.main(argv) for argv in json.loads(sys.argv[1])]))
"""


def _can_bind_mount_read_only(tmp_path: Path) -> str | None:
    """Why a read-only bind mount in a private mount namespace is not possible here."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare or mount is not installed"
    probe = tmp_path / "probe"
    probe.mkdir()
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind -o ro {probe} {probe} && touch {probe}/x"],
        capture_output=True,
        text=True,
        check=False,
    )
    if "Read-only file system" not in result.stderr:
        return f"no read-only bind mount in a private namespace here: {result.stderr.strip()}"
    return None


def test_a_state_dir_mounted_read_only_is_read_whole_and_left_as_it_was(
    state: Path, tmp_path: Path
) -> None:
    """The forensic case: the card mounted read-only (root can write anything else, so a
    bind mount in a private mount namespace stands for it)."""
    why_not = _can_bind_mount_read_only(tmp_path)
    if why_not is not None:
        pytest.skip(why_not)
    before = _checksums(state)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    runs = [
        ["--state-dir", str(state), *[a.format(out=out_dir) for a in argv]]
        for argv in READERS + WRITERS_ELSEWHERE
    ]
    decide = ["decide", "--subject", "svc:camera", "--action", "exec", "--resource", "/bin/x"]
    runs.append(["--state-dir", str(state), *decide])
    script = f'mount --bind -o ro {state} {state} && exec {sys.executable} -c "$0" "$1"'
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, _RO_SCRIPT, json.dumps(runs)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
    )

    codes = json.loads(result.stdout.splitlines()[-1])
    # Every reader reads; decide (which logs every decision) is unavailable here.
    assert codes == [0] * (len(runs) - 1) + [3], result.stderr
    assert "Traceback" not in result.stderr and "unable to open" not in result.stderr
    texts = [run for run in runs[:-1] if "--json" not in run]
    assert result.stderr.count("the directory cannot be written") == len(texts)
    assert "cannot be written here (a read-only mount?)" in result.stderr
    assert _checksums(state) == before
    assert (out_dir / "entry-1.receipt").stat().st_size > 0


def test_an_unchecked_wal_beside_a_read_only_database_is_read_from_a_private_copy(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A power cut leaves committed entries in lineage.db-wal; an immutable open would not
    see them, so the inspection reads a copy of both (the originals stay as they were)."""
    holder = LocalAgent.open(state)
    try:
        holder.decide(REQUESTS[1], NOW + 50)
        wal = state / "lineage.db-wal"
        assert wal.stat().st_size > 0
        before = _checksums(state)
        code, out, _ = _run(
            capsys, "--read-only", "--state-dir", str(state), "log", "show", "--json"
        )
        assert code == 0
        assert json.loads(out.splitlines()[-1])["time"] == NOW + 50
        assert _checksums(state) == before
    finally:
        holder.close()


# --- status ----------------------------------------------------------------------------------


def test_status_exits_0_when_the_gate_is_open_1_when_closed_3_without_state(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run(capsys, "status", "--state-dir", str(state), "--read-only")[0] == 0

    monkeypatch.setattr(agent_cli, "wall_clock", lambda: NOW + 2 * 86400)
    code, out, _ = _run(capsys, "status", "--state-dir", str(state), "--read-only")
    assert code == 1 and "gate     CLOSED" in out

    code, out, err = _run(capsys, "status", "--state-dir", str(tmp_path / "nothing"), "--json")
    assert code == 3 and err == ""
    document = json.loads(out)
    assert document["error"] == "unavailable" and document["code"] == "state_missing"
    assert document["exit"] == 3 and document["path"] == str(tmp_path / "nothing")


@pytest.mark.parametrize(
    "argv",
    [
        ["--state-dir", "{state}", "-q", "--read-only", "status", "--json"],
        ["status", "--state-dir", "{state}", "--json", "--read-only", "-q"],
        ["--json", "status", "--read-only", "--state-dir", "{state}", "-q"],
        ["-q", "--read-only", "log", "status", "--state-dir", "{state}", "--json"],
    ],
    ids=["before", "after", "mixed", "log status"],
)
def test_global_options_work_before_or_after_the_subcommand(
    state: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, *[a.format(state=state) for a in argv])

    assert (code, err) == (0, "")
    assert isinstance(json.loads(out), dict)


# --- golden output at 80 and 200 columns -----------------------------------------------------


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs (EDGEGOV_UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("agent_status", ["status"]),
        ("agent_log_show", ["log", "show"]),
        ("agent_log_show_reverse", ["log", "show", "--reverse", "--limit", "3"]),
    ],
)
def test_golden_output_at_80_and_200_columns(
    pristine: Path,
    columns: int,
    name: str,
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, _ = _run(capsys, "--read-only", "--state-dir", str(pristine), *argv)

    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= columns
    _golden(f"{name}_{columns}.txt", out)


def test_log_show_wide_cuts_nothing_and_a_cut_field_ends_in_an_ellipsis(
    pristine: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    _, narrow, _ = _run(capsys, "--read-only", "--state-dir", str(pristine), "log", "show")
    _, wide, _ = _run(capsys, "--read-only", "--state-dir", str(pristine), "log", "show", "--wide")

    long_request = REQUESTS[2]
    row = next(line for line in narrow.splitlines() if "svc:te" in line)
    assert "…" in row and " exec" in row
    # The rule, what explains the row, stays visible however long the resource is.
    assert row.endswith(" -") or row.split()[-1] in {"-", "allow-sensors", "no-shells"}
    wide_row = next(line for line in wide.splitlines() if "telemetry" in line)
    assert long_request.subject in wide_row and long_request.resource in wide_row
    assert "…" not in wide


def test_log_show_filters_by_any_reason_code_the_log_holds(
    pristine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys,
        *("--read-only", "--state-dir", str(pristine), "--json"),
        *("log", "show", "--reason", "bundle_signature"),
    )

    assert code == 0
    shown = [json.loads(line) for line in out.splitlines()]
    assert [e["reason"] for e in shown] == ["bundle_signature"]
    assert shown[0]["kind"] == "bundle_rejected"


def test_log_show_follow_prints_new_entries_as_committed_and_stops_on_ctrl_c(
    state: Path,
) -> None:
    env = {**os.environ, "COLUMNS": "120", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "edge_agent.cli", "log", "show", "-f", "--json"]
    follower = subprocess.Popen(
        [*argv, "--state-dir", str(state), "--limit", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=ctrl_c_default,
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        with LocalAgent.open(state) as agent:
            agent.decide(Request("svc:late", "exec", "/opt/late"), NOW + 500)
        late = json.loads(follower.stdout.readline())
        assert late["seq"] == first["seq"] + 1 and late["request"]["subject"] == "svc:late"
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 0
        assert "Traceback" not in (follower.stderr.read() if follower.stderr else "")
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


# --- --json results, export to stdout, wording -----------------------------------------------


def test_log_verify_and_replay_print_json(
    pristine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ("--read-only", "--state-dir", str(pristine), "--json", "log")
    code, out, _ = _run(capsys, *base, "verify")
    verified = json.loads(out)
    assert code == 0 and verified["ok"] is True and verified["size"] == 7
    code, out, _ = _run(capsys, *base, "replay")
    replayed = json.loads(out)
    assert code == 0 and replayed["ok"] is True and replayed["divergent"] == 0


def test_log_export_out_dash_writes_stdout_and_no_file_named_dash(
    pristine: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(
        capsys,
        *("--read-only", "--state-dir", str(pristine)),
        *("log", "export", "--out", "-", "--format", "jsonl"),
    )

    assert code == 0 and not (tmp_path / "-").exists()
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["size"] == 7 and len(lines) == 8
    assert "exported entries 0 to 6 to stdout" in err


def test_status_says_rule_counts_and_durations_in_one_format(
    pristine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = _run(capsys, "--read-only", "--state-dir", str(pristine), "status")

    assert "3 rules, expires in 23h 58m" in out
    assert "version 1, expires in 364d 23h" in out
    assert "entries 0 to 6" in out


def test_an_empty_log_says_no_entries_never_a_negative_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    init_state_dir(state, DEVICE, _hub().root_bytes(), NOW)
    _, status, _ = _run(capsys, "--read-only", "--state-dir", str(state), "status")
    _, verify, _ = _run(capsys, "--read-only", "--state-dir", str(state), "log", "verify")
    export = ("log", "export", "--out", "-", "--format", "jsonl")
    code, _, exported = _run(capsys, "--state-dir", str(state), *export)

    assert code == 0 and "exported no entries to stdout" in exported
    for text in (status, verify, exported):
        assert "..-1" not in text and "to -1" not in text and "None" not in text
    assert "no entries yet" in verify


@pytest.mark.parametrize(
    ("group", "says"), [(None, "group the agent's own group"), ("0", "group gid 0")]
)
def test_the_socket_line_names_its_group_never_gid_minus_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, group: str | None, says: str
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.socket.listen")
    listening = ListeningSocket(tmp_path / "decide.sock", mode=0o660, group=group, backlog=1)
    listening.close()

    assert says in caplog.text and "mode 0660" in caplog.text and "gid -1" not in caplog.text


def test_a_socket_group_id_beyond_the_range_is_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="not a group id"):
        resolve_group("9" * 30)


@pytest.mark.parametrize(
    "argv",
    [
        ["decide", "--subject", "svc:camera", "--action", "exec", "--resource", "/bin/x"],
        ["bundle", "install", "/dev/null"],
        ["log", "prune", "--before", "1"],
    ],
    ids=["decide", "bundle install", "log prune"],
)
def test_a_command_that_writes_the_state_refuses_read_only_before_it_starts(
    state: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = _checksums(state)
    code, out, err = _run(capsys, "--read-only", "--state-dir", str(state), "--json", *argv)

    assert code == 2 and err == ""
    assert json.loads(out)["error"] == "usage" and "--read-only" in json.loads(out)["message"]
    assert _checksums(state) == before


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_fault_of_ours_is_one_line_exit_70_never_a_traceback(
    pristine: Path,
    as_json: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(agent_cli, "gate_state", broken)
    argv = ["--read-only", "-q", "--state-dir", str(pristine), "status"]
    code, out, err = _run(capsys, *argv, *(["--json"] if as_json else []))

    assert code == 70 and "Traceback" not in out + err
    if as_json:
        assert err == "" and json.loads(out)["error"] == "internal"
    else:
        assert out == "" and err.startswith("edge-agent: error: internal error: ")
        assert len(err.splitlines()) == 1


def test_a_one_rule_bundle_says_1_rule(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one_rule = policy_payload(
        groups={},
        workloads={},
        rules=[
            {
                "id": "only",
                "effect": "allow",
                "subjects": ["svc:camera"],
                "actions": ["exec"],
                "resources": ["/opt/camera/bin/capture"],
            }
        ],
    )
    bundle = tmp_path / "one-rule.cbor"
    bundle.write_bytes(_hub().bundle(2, policy=one_rule))

    code, out, _ = _run(capsys, "--state-dir", str(state), "bundle", "install", str(bundle))

    assert code == 0
    assert "1 rule, expires in 23h 58m)" in out


def test_log_show_follow_read_only_sees_entries_a_running_agent_commits(state: Path) -> None:
    """--read-only on a live state directory: the immutable view is opened again when the
    files change, so new entries still show, and nothing is written by the follower."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "edge_agent.cli", "--read-only", "log", "show", "-f"]
    follower = subprocess.Popen(
        [*argv, "--json", "--state-dir", str(state), "--limit", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=ctrl_c_default,
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        with LocalAgent.open(state) as agent:
            agent.decide(Request("svc:late", "exec", "/opt/late"), NOW + 500)
            late = json.loads(follower.stdout.readline())
        assert late["seq"] == first["seq"] + 1
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_a_private_copy_goes_when_its_connection_closes(state: Path) -> None:
    holder = LocalAgent.open(state)
    try:
        holder.decide(REQUESTS[1], NOW + 50)
        db = connect_read_only(state / "lineage.db", 1.0)
        copy = Path(db.execute("PRAGMA database_list").fetchone()[2]).parent
        assert copy != state and copy.exists()
        db.close()
        assert not copy.exists()
    finally:
        holder.close()

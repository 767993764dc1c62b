"""``edge-verify``: from files and public keys alone, each step printed, exit 0/1/2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.protocol.consistency_file import format_consistency_proof
from edge_agent.protocol.cosignature import cosign_note
from edge_agent.protocol.receipt import Step
from edge_agent.protocol.roles import Role
from edge_agent.protocol.tlog_proof import format_tlog_proof
from edge_agent.verify.cli import main
from tests.factory import NOW
from tests.receipt_support import OTHER_DEVICE_KEY, STRANGER, ReceiptLog

LOG = ReceiptLog()
FORKED = ReceiptLog(hub=LOG.hub, size=6)
FORKED.entries[5] = LOG.entries[4]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("evidence")
    writes: dict[str, bytes | str] = {
        "gw-017.pub": LOG.device.public.to_pem(),
        "other.pub": OTHER_DEVICE_KEY.public.to_pem(),
        "hub.pub": LOG.witness.public.to_pem(),
        "freshness.pub": LOG.hub.online_keys[Role.FRESHNESS][0].public.to_pem(),
        "root.cbor": LOG.hub.root_bytes(),
        "bundle.cbor": LOG.bundle,
        "gw-017-4.receipt": LOG.receipt(4),
        "with-bundle.receipt": LOG.receipt(4, bundle=LOG.bundle),
        "hub-signed.receipt": LOG.receipt(4, signer=LOG.witness),
        "uncosigned.receipt": LOG.receipt(4, note=LOG.note(cosigned=False)),
        "stranger-cosigned.receipt": LOG.receipt(
            4, note=cosign_note(LOG.note(cosigned=False), STRANGER, time=NOW)
        ),
        "gw-017-4.tlog-proof": format_tlog_proof(
            seq=4, path=LOG.path(4), note=LOG.note(), entry=LOG.entries[4]
        ),
        "old.checkpoint": LOG.note(3),
        "new.checkpoint": LOG.note(7),
        "fork.checkpoint": FORKED.note(6),
        "six.checkpoint": LOG.note(6),
        "3-7.proof": format_consistency_proof(old=3, new=7, hashes=LOG.consistency(3, 7)),
        "garbage": b"\x00\x01not a receipt",
        "not-a-key.pub": "hello",
    }
    for name, data in writes.items():
        path = d / name
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
    return d


def _run(files: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    cwd = os.getcwd()
    os.chdir(files)
    try:
        code = main(list(argv))
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_receipt_verified_with_root_and_bundle_prints_every_step_and_exits_0(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        files,
        capsys,
        "receipt",
        "with-bundle.receipt",
        "--device-key",
        "gw-017.pub",
        "--root",
        "root.cbor",
    )
    assert code == 0, out
    lines = out.splitlines()
    for step in Step:
        assert any(line.split()[:2] == ["ok", str(step)] for line in lines), step
    assert "allow svc:camera exec /opt/camera/bin/capture" in out or "deny svc:camera" in out
    assert lines[-1].startswith("VERIFIED: entry, leaf_hash, inclusion_path, root")


def test_the_verdict_line_says_which_steps_were_not_checked(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["receipt", "gw-017-4.receipt", "--device-key", "gw-017.pub"]
    code, out, _ = _run(files, capsys, *argv)
    assert code == 0
    assert out.splitlines()[-1].startswith(
        "VERIFIED (cosignature not checked: no witness key given; bundle not checked: needs a "
        "trust root and the bundle the entry names): entry, "
    )
    code, out, _ = _run(files, capsys, *argv, "--json")
    assert [s["step"] for s in json.loads(out)["skipped"]] == ["cosignature", "bundle"]


def test_json_gives_the_same_steps_the_entry_and_the_cosignature(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        files,
        capsys,
        "receipt",
        "hub-signed.receipt",
        "--device-key",
        "gw-017.pub",
        "--witness-key",
        "hub.pub",
        "--bundle",
        "bundle.cbor",
        "--root",
        "root.cbor",
        "--json",
    )
    document = json.loads(out)
    assert code == 0 and document["ok"] is True
    assert [s["step"] for s in document["steps"]] == [str(s) for s in Step]
    assert {s["status"] for s in document["steps"]} == {"held"}
    assert document["skipped"] == []
    assert document["entry"]["seq"] == 4 and document["entry"]["bundle_version"] == 3
    assert document["entry"]["request"]["resource"] == "/opt/camera/bin/capture"
    assert document["checkpoint"]["size"] == LOG.size
    assert document["cosignature"]["key_id"] == LOG.witness.public.key_id.hex()


def test_a_tlog_proof_is_detected_and_verified(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        files,
        capsys,
        "receipt",
        "gw-017-4.tlog-proof",
        "--device-key",
        "gw-017.pub",
        "--witness-key",
        "hub.pub",
        "--json",
    )
    document = json.loads(out)
    assert code == 0 and document["kind"] == "tlog-proof"
    skipped = [s["step"] for s in document["steps"] if s["status"] == "skipped"]
    assert skipped == ["receipt_signature", "bundle"]


FAILURES = [
    ("uncosigned.receipt", ["--witness-key", "hub.pub"], "cosignature"),
    ("uncosigned.receipt", ["--root", "root.cbor"], "cosignature"),
    ("stranger-cosigned.receipt", ["--witness-key", "hub.pub"], "cosignature"),
    ("gw-017-4.receipt", ["--device-key", "other.pub"], "receipt_signature"),
    ("garbage", [], "entry"),
]


@pytest.mark.parametrize(("name", "extra", "step"), FAILURES)
def test_a_failing_step_is_named_and_exits_1(
    files: Path, capsys: pytest.CaptureFixture[str], name: str, extra: list[str], step: str
) -> None:
    device = [] if "--device-key" in extra else ["--device-key", "gw-017.pub"]
    code, out, _ = _run(files, capsys, "receipt", name, *device, *extra)
    assert code == 1
    assert f"NOT VERIFIED: step '{step}' failed" in out
    code, out, _ = _run(files, capsys, "receipt", name, *device, *extra, "--json")
    document = json.loads(out)
    assert code == 1 and document["ok"] is False
    assert document["error"]["step"] == step
    assert document["steps"][-1] == {
        "step": step,
        "status": "failed",
        "detail": document["error"]["message"],
    }
    assert all(s["status"] == "held" for s in document["steps"][:-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["receipt", "missing.receipt", "--device-key", "gw-017.pub"],
        ["receipt", "gw-017-4.receipt", "--device-key", "not-a-key.pub"],
        ["receipt", "gw-017-4.receipt"],
        ["receipt", "gw-017-4.receipt", "--device-key", "gw-017.pub", "--root", "garbage"],
        [
            "consistency",
            "old.checkpoint",
            "new.checkpoint",
            "--device-key",
            "gw-017.pub",
            "--proof",
            "garbage",
        ],
        ["frobnicate"],
        [
            "receipt",
            "gw-017-4.receipt",
            "--device-key",
            "gw-017.pub",
            "--root",
            "root.cbor",
            "--witness-key",
            "freshness.pub",
        ],
        [
            "receipt",
            "gw-017-4.receipt",
            "--device-key",
            "gw-017.pub",
            "--witness-key",
            "gw-017.pub",
        ],
        [
            "consistency",
            "old.checkpoint",
            "new.checkpoint",
            "--device-key",
            "gw-017.pub",
            "--witness-key",
            "gw-017.pub",
        ],
    ],
    ids=[
        "unreadable file",
        "bad key",
        "no device key",
        "bad root",
        "bad proof file",
        "unknown command",
        "a freshness key as the witness of a root",
        "the device key as a witness (receipt)",
        "the device key as a witness (consistency)",
    ],
)
def test_usage_errors_and_unreadable_files_exit_2(
    files: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = _run(files, capsys, *argv)
    assert code == 2 and err.startswith("edge-verify: error:")
    code, out, _ = _run(files, capsys, *argv, "--json")
    assert code == 2
    document = json.loads(out)
    assert (document["error"], document["code"], document["exit"]) == ("usage", "bad_argument", 2)


@pytest.mark.parametrize(
    ("witness", "says"),
    [
        (
            "freshness.pub",
            "is the trust root's freshness key: with a trust root, a witness key must be one "
            "of its verifier (witness) keys",
        ),
        ("gw-017.pub", "a device cannot witness its own log"),
    ],
)
def test_a_witness_key_in_the_wrong_role_is_named_and_refused(
    files: Path, capsys: pytest.CaptureFixture[str], witness: str, says: str
) -> None:
    keys = ["--device-key", "gw-017.pub", "--root", "root.cbor", "--witness-key", witness]
    for command in (
        ["receipt", "gw-017-4.receipt"],
        ["consistency", "old.checkpoint", "new.checkpoint"],
    ):
        code, _, err = _run(files, capsys, *command, *keys)
        assert code == 2 and says in err


@pytest.mark.parametrize("where", ["before the command", "after it"])
def test_json_may_come_before_or_after_the_command(
    files: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    argv = ["receipt", "gw-017-4.receipt", "--device-key", "gw-017.pub"]
    argv = ["--json", *argv] if where == "before the command" else [*argv, "--json"]
    code, out, _ = _run(files, capsys, *argv)
    assert code == 0 and json.loads(out)["ok"] is True


FIFO_ARGS = [
    ["receipt", "fifo", "--device-key", "gw-017.pub"],
    ["receipt", "gw-017-4.receipt", "--device-key", "fifo"],
    ["receipt", "gw-017-4.receipt", "--device-key", "gw-017.pub", "--witness-key", "fifo"],
    ["receipt", "gw-017-4.receipt", "--device-key", "gw-017.pub", "--root", "fifo"],
    ["receipt", "gw-017-4.receipt", "--device-key", "gw-017.pub", "--bundle", "fifo"],
    ["consistency", "fifo", "new.checkpoint", "--device-key", "gw-017.pub"],
    [
        "consistency",
        "old.checkpoint",
        "new.checkpoint",
        "--device-key",
        "gw-017.pub",
        "--proof",
        "fifo",
    ],
]


@pytest.mark.timeout(60)
def _fifo_id(argv: list[str]) -> str:
    flag = argv[argv.index("fifo") - 1]
    return f"{argv[0]} {flag if flag.startswith('--') else 'FILE'}"


@pytest.mark.parametrize("argv", FIFO_ARGS, ids=_fifo_id)
def test_a_fifo_given_for_any_file_is_refused_without_blocking(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    argv = [
        str(fifo) if arg == "fifo" else str(files / arg) if (files / arg).exists() else arg
        for arg in argv
    ]
    code, _, err = _run(files, capsys, *argv)
    assert code == 2
    assert f"{fifo} is a FIFO, not a regular file" in err


CONSISTENCY = [
    (["old.checkpoint", "new.checkpoint", "--proof", "3-7.proof"], 0, "CONSISTENT"),
    (
        ["new.checkpoint", "old.checkpoint", "--proof", "3-7.proof", "--root", "root.cbor"],
        0,
        "CONSISTENT",
    ),
    (["six.checkpoint", "fork.checkpoint", "--witness-key", "hub.pub"], 1, "FORK"),
    (["old.checkpoint", "new.checkpoint"], 1, "NOT PROVEN"),
]


@pytest.mark.parametrize(("argv", "exit_code", "verdict"), CONSISTENCY)
def test_consistency_says_consistent_fork_or_not_proven(
    files: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    exit_code: int,
    verdict: str,
) -> None:
    code, out, _ = _run(files, capsys, "consistency", *argv, "--device-key", "gw-017.pub")
    assert code == exit_code
    assert out.splitlines()[-1].startswith(f"{verdict}:")
    code, out, _ = _run(files, capsys, "consistency", *argv, "--device-key", "gw-017.pub", "--json")
    assert json.loads(out)["verdict"] == verdict.lower().replace(" ", "_")


def test_the_console_script_runs_with_only_the_files_and_no_state(files: Path) -> None:
    script = Path(sys.executable).parent / "edge-verify"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(files / "no-home")}
    before = sorted(p.name for p in files.iterdir())
    completed = subprocess.run(
        [
            str(script),
            "receipt",
            "gw-017-4.receipt",
            "--device-key",
            "gw-017.pub",
            "--witness-key",
            "hub.pub",
        ],
        cwd=files,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "VERIFIED" in completed.stdout
    assert sorted(p.name for p in files.iterdir()) == before

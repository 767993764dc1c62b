"""``edge-agent log receipt|checkpoint|consistency``: evidence made on the device, offline.

A receipt is proven against the smallest checkpoint holding the entry that the hub witness
cosigned (kept from its acks), else the latest signed one; it verifies with the device key,
and with the witness key when cosigned. Every entry kind gets one: decisions and trust
transitions. Checkpoint notes and consistency proofs are what ``edge-verify consistency``
reads.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.errors import EdgeGovError, ReceiptError
from edge_agent.lineage.log import LineageLog
from edge_agent.lineage.store import LINEAGE_DB
from edge_agent.protocol.consistency_file import (
    Verdict,
    parse_consistency_proof,
    verify_consistency_files,
)
from edge_agent.protocol.cosignature import cosign_note, verify_cosignature
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.lineage_entries import Kind
from edge_agent.protocol.receipt import Step, verify_receipt, verify_tlog_proof
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from tests.factory import DEVICE, NOW, HubSim

ALLOWED = Request("svc:camera", "exec", "/opt/camera/bin/capture")
COSIGNED_AT = NOW + 7


@dataclass
class Device:
    """A state directory with every kind of entry below, the seq of each, and the keys
    that verify its evidence."""

    state_dir: Path
    seqs: dict[Kind, int]
    device_key: PublicKey
    witness: PrivateKey


@pytest.fixture
def device(tmp_path: Path) -> Device:
    hub = HubSim()
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, DEVICE, hub.root_bytes(), NOW)
    seqs: dict[Kind, int] = {}
    with LocalAgent.open(state_dir) as agent:
        lineage = _lineage(agent)
        agent.install_bundle(hub.bundle(1), NOW)
        seqs[Kind.BUNDLE_INSTALLED] = lineage.size - 1
        for index in range(5):
            agent.decide(ALLOWED, NOW + index)
        seqs[Kind.DECISION] = lineage.size - 1
        with pytest.raises(EdgeGovError):
            agent.install_attestation_result(b"not a result", NOW + 10)
        seqs[Kind.ATTESTATION_FAILED] = lineage.size - 1
        agent.install_revocation(hub.revocation(1), NOW + 11)
        seqs[Kind.REVOCATION_APPLIED] = lineage.size - 1
        key = agent.device_key.public
    return Device(state_dir, seqs, key, hub.online_keys[Role.VERIFIER][0])


def _lineage(agent: LocalAgent) -> LineageLog:
    assert agent.lineage is not None
    return agent.lineage


def _cosign(device: Device, size: int) -> str:
    """Keep the witness's cosignature of the device's checkpoint at ``size``, as an ack
    carrying it would."""
    with LocalAgent.open(device.state_dir) as agent:
        lineage = _lineage(agent)
        note = cosign_note(lineage.checkpoint_note(size, NOW), device.witness, time=COSIGNED_AT)
        lineage.keep_cosigned(
            note,
            size=size,
            root=lineage.root_at(size),
            witnesses=[device.witness.public],
            now=NOW,
        )
    return note


def _log(device: Device, *args: str) -> int:
    return agent_main(["log", *args, "--state-dir", str(device.state_dir)])


def _receipt(device: Device, tmp_path: Path, seq: int, fmt: str = "cose") -> bytes:
    out = tmp_path / f"{seq}.{fmt}"
    assert _log(device, "receipt", str(seq), "--format", fmt, "--out", str(out)) == 0
    return out.read_bytes()


def _verify(device: Device, data: bytes, fmt: str, witnessed: bool) -> Kind:
    verify: Callable[..., object] = verify_receipt if fmt == "cose" else verify_tlog_proof
    witnesses = [device.witness.public] if witnessed else []
    report = verify(data, device_key=device.device_key, witness_keys=witnesses)
    return report.entry.kind  # type: ignore[attr-defined,no-any-return]


KINDS = [Kind.DECISION, Kind.BUNDLE_INSTALLED, Kind.REVOCATION_APPLIED, Kind.ATTESTATION_FAILED]


@pytest.mark.parametrize("fmt", ["cose", "tlog-proof"])
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_a_receipt_of_each_entry_kind_verifies_with_the_device_and_witness_keys(
    device: Device, tmp_path: Path, kind: Kind, fmt: str
) -> None:
    size = device.seqs[Kind.REVOCATION_APPLIED] + 1
    _cosign(device, size)
    data = _receipt(device, tmp_path, device.seqs[kind], fmt)
    assert _verify(device, data, fmt, witnessed=True) is kind


def test_a_receipt_carries_the_cosignature_the_device_holds(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    note = _cosign(device, device.seqs[Kind.DECISION] + 1)
    data = _receipt(device, tmp_path, device.seqs[Kind.BUNDLE_INSTALLED])
    assert "cosigned by the hub witness" in capsys.readouterr().out
    report = verify_receipt(
        data, device_key=device.device_key, witness_keys=[device.witness.public]
    )
    assert report.cosignature is not None and report.cosignature.time == COSIGNED_AT
    assert report.checkpoint.size == device.seqs[Kind.DECISION] + 1
    assert note.encode() in data


def test_the_smallest_cosigned_checkpoint_holding_the_entry_is_used(
    device: Device, tmp_path: Path
) -> None:
    small, large = device.seqs[Kind.DECISION] + 1, device.seqs[Kind.REVOCATION_APPLIED] + 1
    _cosign(device, large)
    _cosign(device, small)
    below = verify_receipt(
        _receipt(device, tmp_path, device.seqs[Kind.BUNDLE_INSTALLED]),
        device_key=device.device_key,
        witness_keys=[device.witness.public],
    )
    above = verify_receipt(
        _receipt(device, tmp_path, device.seqs[Kind.ATTESTATION_FAILED]),
        device_key=device.device_key,
        witness_keys=[device.witness.public],
    )
    assert (below.checkpoint.size, above.checkpoint.size) == (small, large)


def test_an_entry_no_cosigned_checkpoint_holds_gets_a_device_signed_receipt(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _cosign(device, device.seqs[Kind.DECISION] + 1)
    data = _receipt(device, tmp_path, device.seqs[Kind.REVOCATION_APPLIED])
    assert "not cosigned by the hub witness yet" in capsys.readouterr().out
    assert _verify(device, data, "cose", witnessed=False) is Kind.REVOCATION_APPLIED
    with pytest.raises(ReceiptError) as refused:
        _verify(device, data, "cose", witnessed=True)
    assert refused.value.step is Step.COSIGNATURE


def test_a_receipt_is_the_owners_alone(device: Device, tmp_path: Path) -> None:
    _receipt(device, tmp_path, 0)
    assert (tmp_path / "0.cose").stat().st_mode & 0o077 == 0


def test_checkpoint_writes_the_cosigned_note_at_a_size_and_the_head_by_default(
    device: Device, tmp_path: Path
) -> None:
    size = device.seqs[Kind.DECISION] + 1
    note = _cosign(device, size)
    at_size, head = tmp_path / "at-size.checkpoint", tmp_path / "head.checkpoint"
    assert _log(device, "checkpoint", "--size", str(size), "--out", str(at_size)) == 0
    assert _log(device, "checkpoint", "--out", str(head)) == 0
    assert at_size.read_text() == note
    assert verify_cosignature(at_size.read_text(), [device.witness.public])
    report = verify_consistency_files(
        at_size.read_text(), head.read_text(), None, device.device_key
    )
    assert report.new is not None and report.new.size == device.seqs[Kind.REVOCATION_APPLIED] + 1


def test_consistency_proves_the_head_extends_a_cosigned_checkpoint(
    device: Device, tmp_path: Path
) -> None:
    old = device.seqs[Kind.DECISION] + 1
    new = device.seqs[Kind.REVOCATION_APPLIED] + 1
    _cosign(device, old)
    files = {name: tmp_path / name for name in ("old", "new", "proof")}
    assert _log(device, "checkpoint", "--size", str(old), "--out", str(files["old"])) == 0
    assert _log(device, "checkpoint", "--size", str(new), "--out", str(files["new"])) == 0
    assert _log(device, "consistency", str(old), str(new), "--out", str(files["proof"])) == 0
    proof = parse_consistency_proof(files["proof"].read_bytes())
    report = verify_consistency_files(
        files["old"].read_text(), files["new"].read_text(), proof, device.device_key
    )
    assert report.verdict is Verdict.CONSISTENT, report.detail


@dataclass(frozen=True)
class Misuse:
    name: str
    args: Callable[[Device], list[str]]
    code: int
    says: str
    damage: Callable[[Device], None] = lambda device: None


def _tamper(device: Device) -> None:
    db = sqlite3.connect(device.state_dir / LINEAGE_DB)
    db.execute("UPDATE entries SET data = data || x'00' WHERE seq = (SELECT max(seq) FROM entries)")
    db.commit()
    db.close()


def _tamper_first(device: Device) -> None:
    """Alter entry 1, which the last signed checkpoint covers: opening the log verifies only
    what follows that checkpoint, so it is the receipt that finds it."""
    db = sqlite3.connect(device.state_dir / LINEAGE_DB)
    db.execute("UPDATE entries SET data = data || x'00' WHERE seq = 1")
    db.commit()
    db.close()


def _prune(device: Device) -> None:
    with LocalAgent.open(device.state_dir) as agent:
        lineage = _lineage(agent)
        lineage.checkpoint_note(device.seqs[Kind.DECISION] + 1, NOW)
        lineage.prune_before(device.seqs[Kind.DECISION] + 1, NOW, include_unacknowledged=True)


def _unreadable(device: Device) -> None:
    os.replace(device.state_dir / "state.db", device.state_dir / "state.db.moved")


MISUSES = [
    Misuse("an entry beyond the log", lambda d: ["receipt", "999", "--out"], 2, "not in the log"),
    Misuse("a pruned entry", lambda d: ["receipt", "1", "--out"], 2, "was pruned", _prune),
    Misuse("a broken log", lambda d: ["receipt", "1", "--out"], 1, "log verify", _tamper),
    Misuse(
        "an altered entry the last checkpoint covers",
        lambda d: ["receipt", "1", "--out"],
        1,
        "entry 1: the stored entry is not the leaf",
        _tamper_first,
    ),
    Misuse("no agent state", lambda d: ["receipt", "1", "--out"], 3, "init", _unreadable),
    Misuse(
        "a checkpoint beyond the log",
        lambda d: ["checkpoint", "--size", "999", "--out"],
        2,
        "beyond the log",
    ),
    Misuse(
        "a checkpoint of a broken log", lambda d: ["checkpoint", "--out"], 1, "log verify", _tamper
    ),
    Misuse("OLD above NEW", lambda d: ["consistency", "5", "3", "--out"], 2, "larger than NEW"),
    Misuse(
        "NEW beyond the log", lambda d: ["consistency", "3", "999", "--out"], 2, "beyond the log"
    ),
    Misuse("OLD pruned", lambda d: ["consistency", "1", "8", "--out"], 2, "was pruned", _prune),
]


@pytest.mark.parametrize("misuse", MISUSES, ids=lambda m: m.name)
def test_evidence_commands_refuse_with_a_clear_error_and_write_nothing(
    device: Device, tmp_path: Path, misuse: Misuse, capsys: pytest.CaptureFixture[str]
) -> None:
    misuse.damage(device)
    out = tmp_path / "out"
    assert _log(device, *misuse.args(device), str(out)) == misuse.code
    assert misuse.says in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "command", [["receipt", "1"], ["checkpoint"], ["consistency", "3", "8"]], ids=lambda c: c[0]
)
def test_out_refuses_a_fifo_or_symlink_and_replaces_a_file_only_with_force(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    fifo, link, existing = tmp_path / "fifo", tmp_path / "link", tmp_path / "existing"
    os.mkfifo(fifo)
    existing.write_bytes(b"kept")
    link.symlink_to(existing)
    assert _log(device, *command, "--out", str(fifo)) == 2
    assert _log(device, *command, "--force", "--out", str(link)) == 2
    assert _log(device, *command, "--out", str(existing)) == 2
    err = capsys.readouterr().err
    assert "it is a FIFO, not a regular file" in err and "it is a symbolic link" in err
    assert "add --force to replace it" in err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert existing.read_bytes() == b"kept"
    assert _log(device, *command, "--force", "--out", str(existing)) == 0
    assert existing.read_bytes() != b"kept"


@pytest.mark.parametrize("seq", ["\u0663", "\uff11", "+1", "1_0"])
def test_a_seq_in_other_than_ascii_digits_is_refused(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str], seq: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        _log(device, "receipt", seq, "--out", str(tmp_path / "r"))
    assert exited.value.code == 2
    assert "is not a whole number" in capsys.readouterr().err

"""Receipts, checkpoints and consistency proofs at the hub (``edge-hub lineage receipt |
checkpoint | consistency``, ``edge-hub keys export witness``): what they write verifies with
the verifier's library (``verify_receipt``, ``verify_tlog_proof``) from public keys alone,
and every command refuses clearly when it has nothing true to say."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.errors import ReceiptError
from edge_agent.protocol.checkpoint import verify_checkpoint
from edge_agent.protocol.consistency_file import (
    Verdict,
    parse_consistency_proof,
    verify_consistency_files,
)
from edge_agent.protocol.cosignature import verify_cosignature
from edge_agent.protocol.keys import PublicKey, public_key_from_pem
from edge_agent.protocol.receipt import Step, verify_receipt, verify_tlog_proof
from edge_agent.protocol.roles import Role
from edge_agent.verify.cli import main as verify_main
from hub.cli.main import main
from hub.hubdir.keys import load_role_keys
from hub.registry.backends import open_registry
from hub.registry.records import PublishedBundle
from tests.hub_support import HubSetup, make_bundle, make_hub_dir
from tests.lineage_sim import DeviceLogSim
from tests.witness_support import started_hub

BUNDLE_VERSION = 3


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    """A hub that holds a bundle and 600 shipped, cosigned entries of gw-001 made under it
    (batches 0..300 and 300..600), and gw-002 registered but silent."""
    hub = make_hub_dir(tmp_path / "hub")
    bundle = make_bundle(hub.keys, BUNDLE_VERSION)
    digest = hashlib.sha256(bundle).digest()
    now = int(time.time())
    with open_registry(hub.registry) as registry:
        registry.record_bundle(
            bundle=PublishedBundle(
                "eu-1", "group/line-a", BUNDLE_VERSION, digest, bundle, now + 86400, None, now
            ),
            issued_at=now,
            target={"region": "eu-1"},
            channels=["group/line-a"],
        )
    sim = hub.devices["gw-001"]
    sim.add(600, bundle=(digest, BUNDLE_VERSION), time=now)
    with started_hub(hub) as started:
        started.ship(sim.batch(0, 300), sim.batch(300, 600))
    return hub


@pytest.fixture
def sim(setup: HubSetup) -> DeviceLogSim:
    return setup.devices["gw-001"]


@pytest.fixture
def witness(setup: HubSetup) -> PublicKey:
    return load_role_keys(setup.keys, Role.VERIFIER, setup.root)[0].public


def _hub(setup: HubSetup, *args: str) -> int:
    return main([*args, "--hub-dir", str(setup.path)])


@pytest.mark.parametrize("seq", [0, 255, 256, 299, 300, 599])
def test_a_hub_receipt_verifies_with_the_device_key_the_witness_key_and_the_root(
    setup: HubSetup, sim: DeviceLogSim, witness: PublicKey, tmp_path: Path, seq: int
) -> None:
    out = tmp_path / "r.receipt"
    assert _hub(setup, "lineage", "receipt", "gw-001", str(seq), "--out", str(out)) == 0
    report = verify_receipt(
        out.read_bytes(), device_key=sim.key.public, witness_keys=[witness], root=setup.root
    )
    assert report.entry.seq == seq
    assert report.checkpoint.size == 600 and report.cosignature is not None
    assert Step.COSIGNATURE in [result.step for result in report.held]


def test_a_receipt_proves_against_the_newest_cosigned_checkpoint(
    setup: HubSetup, sim: DeviceLogSim, witness: PublicKey, tmp_path: Path
) -> None:
    out = tmp_path / "r.tlog-proof"
    args = ["lineage", "receipt", "gw-001", "7", "--format", "tlog-proof", "--out", str(out)]
    assert _hub(setup, *args) == 0
    text = out.read_text()
    verify_tlog_proof(text, device_key=sim.key.public, witness_keys=[witness])
    assert text.startswith("c2sp.org/tlog-proof@v1\n")
    assert verify_checkpoint(text.split("\n\n", 1)[1], sim.key.public, sim.origin).size == 600


def test_a_receipt_with_its_bundle_shows_the_bundle_signed_by_the_policy_role(
    setup: HubSetup, sim: DeviceLogSim, witness: PublicKey, tmp_path: Path
) -> None:
    out = tmp_path / "r.receipt"
    args = ["lineage", "receipt", "gw-001", "42", "--include-bundle", "--out", str(out)]
    assert _hub(setup, *args) == 0
    report = verify_receipt(
        out.read_bytes(), device_key=sim.key.public, witness_keys=[witness], root=setup.root
    )
    assert Step.BUNDLE in [result.step for result in report.held]


def test_a_receipt_is_refused_by_another_hubs_witness_key(
    setup: HubSetup, sim: DeviceLogSim, tmp_path: Path
) -> None:
    other = make_hub_dir(tmp_path / "other")
    stranger = load_role_keys(other.keys, Role.VERIFIER, other.root)[0].public
    out = tmp_path / "r.receipt"
    assert _hub(setup, "lineage", "receipt", "gw-001", "9", "--out", str(out)) == 0
    with pytest.raises(ReceiptError):
        verify_receipt(out.read_bytes(), device_key=sim.key.public, witness_keys=[stranger])


def test_the_exported_witness_key_is_the_key_that_cosigns(
    setup: HubSetup, sim: DeviceLogSim, tmp_path: Path
) -> None:
    key_file, note_file = tmp_path / "hub.pub", tmp_path / "600.checkpoint"
    assert _hub(setup, "keys", "export", "witness", "--out", str(key_file)) == 0
    assert _hub(setup, "lineage", "checkpoint", "gw-001", "--out", str(note_file)) == 0
    witness = public_key_from_pem(key_file.read_text())
    assert witness.key_id in setup.root.role(Role.VERIFIER).keys
    assert verify_cosignature(note_file.read_text(), [witness]).key == witness


def test_checkpoints_and_the_consistency_proof_between_them_verify(
    setup: HubSetup, sim: DeviceLogSim, witness: PublicKey, tmp_path: Path
) -> None:
    old, new, proof = tmp_path / "old", tmp_path / "new", tmp_path / "proof"
    assert _hub(setup, "lineage", "checkpoint", "gw-001", "--size", "300", "--out", str(old)) == 0
    assert _hub(setup, "lineage", "checkpoint", "gw-001", "--out", str(new)) == 0
    assert _hub(setup, "lineage", "consistency", "gw-001", "300", "600", "--out", str(proof)) == 0
    report = verify_consistency_files(
        old.read_text(),
        new.read_text(),
        parse_consistency_proof(proof.read_text()),
        sim.key.public,
        [witness],
    )
    assert report.verdict is Verdict.CONSISTENT, report.detail


REFUSALS = [
    # (name, command, exit code, what the one-line error says)
    ("unknown device", ["lineage", "receipt", "gw-404", "1"], 2, "'gw-404' is not registered"),
    ("entry not shipped", ["lineage", "receipt", "gw-001", "600"], 2, "0..599"),
    ("silent device", ["lineage", "receipt", "gw-002", "0"], 2, "no lineage of gw-002"),
    (
        "bundle in a tlog-proof",
        ["lineage", "receipt", "gw-001", "1", "--format", "tlog-proof", "--include-bundle"],
        2,
        "needs --format cose",
    ),
    ("no checkpoint there", ["lineage", "checkpoint", "gw-001", "--size", "7"], 2, "size 7"),
    ("proof past the log", ["lineage", "consistency", "gw-001", "300", "601"], 2, "<= 600"),
    ("proof backwards", ["lineage", "consistency", "gw-001", "400", "300"], 2, "OLD <= NEW"),
]


@pytest.mark.parametrize(
    ("command", "code", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_a_command_with_nothing_true_to_write_fails_in_one_sentence(
    setup: HubSetup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    code: int,
    message: str,
) -> None:
    out = tmp_path / "out"
    assert _hub(setup, *command, "--out", str(out)) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.fixture
def unwitnessed(tmp_path: Path) -> Iterator[HubSetup]:
    """A hub that stored gw-001's entries while it held no verifier key, then got one."""
    hub = make_hub_dir(tmp_path / "bare")
    parked = tmp_path / "parked"
    parked.mkdir()
    for path in hub.keys.glob("verifier-*"):
        path.rename(parked / path.name)
    hub.devices["gw-001"].add(20)
    with started_hub(hub) as started:
        started.ship(hub.devices["gw-001"].batch(0, 20))
    for path in parked.iterdir():
        path.rename(hub.keys / path.name)
    yield hub


def test_no_receipt_before_the_hub_has_cosigned_a_checkpoint_covering_the_entry(
    unwitnessed: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.receipt"
    assert _hub(unwitnessed, "lineage", "receipt", "gw-001", "3", "--out", str(out)) == 1
    assert "no checkpoint of gw-001 covering entry 3 that its witness key cosigned" in (
        capsys.readouterr().err
    )
    sim = unwitnessed.devices["gw-001"]
    sim.add(5)
    with started_hub(unwitnessed) as started:
        started.ship(sim.batch(20, 25))
    assert _hub(unwitnessed, "lineage", "receipt", "gw-001", "3", "--out", str(out)) == 0


def test_edge_verify_proves_every_step_of_a_hub_receipt_and_consistency_from_files_alone(
    setup: HubSetup, sim: DeviceLogSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {name: tmp_path / name for name in ("r", "hub.pub", "dev.pub", "old", "new", "p")}
    files["dev.pub"].write_text(sim.key.public.to_pem())
    for command in (
        ["keys", "export", "witness", "--out", str(files["hub.pub"])],
        ["lineage", "receipt", "gw-001", "42", "--include-bundle", "--out", str(files["r"])],
        ["lineage", "checkpoint", "gw-001", "--size", "300", "--out", str(files["old"])],
        ["lineage", "checkpoint", "gw-001", "--out", str(files["new"])],
        ["lineage", "consistency", "gw-001", "300", "600", "--out", str(files["p"])],
    ):
        assert _hub(setup, *command) == 0
    keys = ["--device-key", str(files["dev.pub"]), "--witness-key", str(files["hub.pub"])]
    root = ["--root", str(setup.keys / "root.cbor")]
    assert verify_main(["receipt", str(files["r"]), *keys, *root]) == 0
    consistency = ["consistency", str(files["old"]), str(files["new"]), "--proof", str(files["p"])]
    assert verify_main([*consistency, *keys]) == 0
    capsys.readouterr()


OUT_COMMANDS = [
    ["lineage", "receipt", "gw-001", "42"],
    ["lineage", "checkpoint", "gw-001"],
    ["lineage", "consistency", "gw-001", "300", "600"],
    ["keys", "export", "witness"],
]


@pytest.mark.parametrize("command", OUT_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_out_refuses_a_fifo_or_symlink_and_replaces_a_file_only_with_force(
    setup: HubSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    fifo, link, existing = tmp_path / "fifo", tmp_path / "link", tmp_path / "existing"
    os.mkfifo(fifo)
    existing.write_bytes(b"kept")
    link.symlink_to(existing)
    assert _hub(setup, *command, "--out", str(fifo)) == 2
    assert _hub(setup, *command, "--out", str(link), "--force") == 2
    assert _hub(setup, *command, "--out", str(existing)) == 2
    err = capsys.readouterr().err
    assert "it is a FIFO, not a regular file" in err and "it is a symbolic link" in err
    assert "add --force to replace it" in err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert existing.read_bytes() == b"kept"
    assert _hub(setup, *command, "--out", str(existing), "--force") == 0
    assert existing.read_bytes() != b"kept"


def test_a_hub_receipt_is_the_owners_alone(setup: HubSetup, tmp_path: Path) -> None:
    out = tmp_path / "r.receipt"
    assert _hub(setup, "lineage", "receipt", "gw-001", "42", "--out", str(out)) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

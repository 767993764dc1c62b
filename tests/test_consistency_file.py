"""The consistency-proof file and the verdict on two checkpoints: consistent, fork, not proven."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import LineageError
from edge_agent.protocol.checkpoint import Checkpoint, sign_checkpoint
from edge_agent.protocol.consistency_file import (
    ConsistencyProof,
    Verdict,
    format_consistency_proof,
    parse_consistency_proof,
    verify_consistency_files,
)
from edge_agent.protocol.cosignature import cosign_note
from tests.factory import NOW
from tests.receipt_support import OTHER_DEVICE_KEY, STRANGER, ReceiptLog

LOG = ReceiptLog(size=11)
DEVICE = LOG.device.public
WITNESS = LOG.witness.public


def _proof(old: int, new: int) -> ConsistencyProof:
    return parse_consistency_proof(
        format_consistency_proof(old=old, new=new, hashes=LOG.consistency(old, new))
    )


def test_the_file_round_trips_and_reads_as_documented() -> None:
    text = format_consistency_proof(old=3, new=11, hashes=LOG.consistency(3, 11))
    assert text.startswith("edgegov/consistency-proof/v1\nold 3\nnew 11\n")
    assert parse_consistency_proof(text.encode()) == ConsistencyProof(3, 11, LOG.consistency(3, 11))


@pytest.mark.parametrize(
    ("old", "new"), [(1, 11), (3, 11), (4, 11), (7, 8), (10, 11), (11, 11), (5, 5)]
)
def test_a_grown_log_with_its_proof_is_consistent(old: int, new: int) -> None:
    report = verify_consistency_files(
        LOG.note(old), LOG.note(new), _proof(old, new), DEVICE, [WITNESS]
    )
    assert report.verdict == Verdict.CONSISTENT, report.detail


def test_the_files_may_come_in_either_order() -> None:
    report = verify_consistency_files(LOG.note(11), LOG.note(3), _proof(3, 11), DEVICE)
    assert report.verdict == Verdict.CONSISTENT


def test_two_cosigned_checkpoints_at_one_size_with_different_roots_are_a_fork() -> None:
    forked = ReceiptLog(hub=LOG.hub, size=6)
    forked.entries[5] = LOG.entries[4]
    assert forked.root() != LOG.root(6)
    report = verify_consistency_files(LOG.note(6), forked.note(6), None, DEVICE, [WITNESS])
    assert report.verdict == Verdict.FORK
    assert "rewritten" in report.detail


NOT_PROVEN = [
    ("no proof between two sizes", lambda: (LOG.note(3), LOG.note(11), None, ()), "no proof"),
    (
        "a proof for other sizes",
        lambda: (LOG.note(3), LOG.note(11), _proof(4, 11), ()),
        "from size 4 to 11",
    ),
    (
        "a proof that does not lead to the roots",
        lambda: (
            LOG.note(3),
            LOG.note(11),
            ConsistencyProof(3, 11, tuple(bytes(32) for _ in LOG.consistency(3, 11))),
            (),
        ),
        "does not show the newer extends",
    ),
    (
        "a checkpoint signed by another device",
        lambda: (LOG.note(3), LOG.note(11, key=OTHER_DEVICE_KEY), _proof(3, 11), ()),
        "no signature by key",
    ),
    (
        "a checkpoint the witness never cosigned",
        lambda: (LOG.note(3), LOG.note(11, cosigned=False), _proof(3, 11), (WITNESS,)),
        "no cosignature",
    ),
    (
        "a checkpoint cosigned by a non-witness",
        lambda: (
            LOG.note(3),
            cosign_note(LOG.note(11, cosigned=False), STRANGER, time=NOW),
            _proof(3, 11),
            (WITNESS,),
        ),
        "no cosignature",
    ),
    ("a file that is not a note", lambda: ("hello\n", LOG.note(11), None, ()), "blank line"),
    (
        "the device key given as a witness, notes it cosigned itself",
        lambda: (
            cosign_note(LOG.note(3, cosigned=False), LOG.device, time=NOW),
            cosign_note(LOG.note(11, cosigned=False), LOG.device, time=NOW),
            _proof(3, 11),
            (DEVICE,),
        ),
        "a device cannot witness its own log",
    ),
    (
        "two notes the device signed under a foreign origin",
        lambda: (_foreign(3), _foreign(11), _proof(3, 11), ()),
        "'example.com/log' is not an edgegov device log",
    ),
]


def _foreign(size: int) -> str:
    origin = "example.com/log"
    return sign_checkpoint(Checkpoint(origin, size, LOG.root(size)), LOG.device, origin)


@pytest.mark.parametrize(
    ("case", "message"), [row[1:] for row in NOT_PROVEN], ids=[row[0] for row in NOT_PROVEN]
)
def test_evidence_that_settles_nothing_is_not_proven(case, message) -> None:  # type: ignore[no-untyped-def]
    old, new, proof, witnesses = case()
    report = verify_consistency_files(old, new, proof, DEVICE, witnesses)
    assert report.verdict == Verdict.NOT_PROVEN
    assert message in report.detail


@pytest.mark.parametrize(
    "text",
    [
        "edgegov/consistency-proof/v2\nold 3\nnew 11\n",
        "edgegov/consistency-proof/v1\nold 03\nnew 11\n",
        "edgegov/consistency-proof/v1\nold 12\nnew 11\n",
        "edgegov/consistency-proof/v1\nnew 11\nold 3\n",
        "edgegov/consistency-proof/v1\nold 3\nnew 11\nAAAA\n",
        "edgegov/consistency-proof/v1\nold 3\nnew 11",
        "edgegov/consistency-proof/v1\nold 3\nnew 11\n\n",
    ],
    ids=[
        "wrong header",
        "leading zero",
        "sizes out of order",
        "lines swapped",
        "short hash",
        "no final newline",
        "empty line",
    ],
)
def test_malformed_files_are_refused(text: str) -> None:
    with pytest.raises(LineageError):
        parse_consistency_proof(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_lineage_error(data: bytes) -> None:
    with pytest.raises(LineageError):
        parse_consistency_proof(data)

"""C2SP tlog-proof@v1: the layout other implementations write, our entries in ``extra``, and
verification of the text form step by step."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import LineageError, ReceiptError
from edge_agent.protocol.receipt import Step, verify_tlog_proof
from edge_agent.protocol.tlog_proof import TlogProof, format_tlog_proof, parse_tlog_proof
from tests.receipt_support import OTHER_DEVICE_KEY, ReceiptLog

LOG = ReceiptLog()
DEVICE = LOG.device.public
WITNESS = LOG.witness.public

# The example of c2sp.org/tlog-proof (its signature lines elided by the spec itself).
SPEC_EXAMPLE = """c2sp.org/tlog-proof@v1
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ
index 73894
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=

example.com/fancylog
109482
sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=

— example.com/fancylog hI2DJw[...]1roloI=
— witness1.example mJirIklj[...]qY9v2B/5bg==
— witness2.example TnKKVHLX[...]xwYwrSjgow==
— witness3.example S4X82uH5[...]3oEcROGLFQ==
"""


def test_the_spec_example_parses_field_by_field() -> None:
    proof = parse_tlog_proof(SPEC_EXAMPLE)
    assert proof.index == 73894
    assert proof.extra is not None and proof.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert [base64.b64encode(h).decode() for h in proof.path] == SPEC_EXAMPLE.split("\n")[3:8]
    assert proof.note.startswith("example.com/fancylog\n109482\n")
    assert proof.note.endswith("3oEcROGLFQ==\n")
    assert (
        format_tlog_proof(seq=proof.index, path=proof.path, note=proof.note, entry=proof.extra)
        == SPEC_EXAMPLE
    )


# transparency-dev/formats proof/tlog_proof_test.go (Apache-2.0): the exact bytes its
# Marshal writes for these inputs, which our formatter must write too.
H1, H2 = hashlib.sha256(b"hash1").digest(), hashlib.sha256(b"hash2").digest()
B1, B2 = base64.b64encode(H1).decode(), base64.b64encode(H2).decode()
EXTRA = b"extra information"
GO_MARSHAL = [
    (
        5,
        (H1, H2),
        "test checkpoint\n",
        None,
        f"c2sp.org/tlog-proof@v1\nindex 5\n{B1}\n{B2}\n\ntest checkpoint\n",
    ),
    (
        10,
        (H1,),
        "checkpoint data\n",
        EXTRA,
        f"c2sp.org/tlog-proof@v1\nextra {base64.b64encode(EXTRA).decode()}\nindex 10\n{B1}\n\n"
        "checkpoint data\n",
    ),
    (0, (), "checkpoint\n", None, "c2sp.org/tlog-proof@v1\nindex 0\n\ncheckpoint\n"),
]


@pytest.mark.parametrize(("index", "path", "note", "extra", "text"), GO_MARSHAL)
def test_we_write_and_read_the_bytes_the_go_implementation_writes(
    index: int, path: tuple[bytes, ...], note: str, extra: bytes | None, text: str
) -> None:
    assert format_tlog_proof(seq=index, path=path, note=note, entry=extra) == text
    assert parse_tlog_proof(text) == TlogProof(index, path, note, extra)


@pytest.mark.parametrize(
    "text",
    [
        "wrong-header\nindex 0\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nextra !!notbase64!!\nindex 0\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\n\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nindex notanumber\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nindex -5\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nindex 05\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nindex 0\n!!notbase64!!\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nindex 0\n" + base64.b64encode(bytes(64)).decode() + "\n\nc\n",
        "c2sp.org/tlog-proof@v1\nindex 0\n" + "a" * (65 * 1024) + "\n",
        "c2sp.org/tlog-proof@v1\nindex 0\n\n",
        "c2sp.org/tlog-proof@v1\nindex 0\n\ncheckpoint",
    ],
    ids=[
        "missing header",
        "extra not base64",
        "missing index",
        "index not a number",
        "negative index",
        "index with a leading zero",
        "hash not base64",
        "hash of 64 bytes",
        "a 65 KiB line",
        "no checkpoint",
        "checkpoint without final newline",
    ],
)
def test_malformed_proofs_are_refused(text: str) -> None:
    with pytest.raises(LineageError):
        parse_tlog_proof(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parsing_random_bytes_raises_only_lineage_error(data: bytes) -> None:
    try:
        parse_tlog_proof(b"c2sp.org/tlog-proof@v1\n" + data)
    except LineageError:
        return


def _proof(seq: int = 4, *, note: str | None = None, entry: bytes | None = None) -> str:
    return format_tlog_proof(
        seq=seq, path=LOG.path(4), note=note or LOG.note(), entry=entry or LOG.entries[4]
    )


def test_a_proof_with_the_entry_in_extra_verifies_every_step_but_the_receipt_signature() -> None:
    report = verify_tlog_proof(_proof(), device_key=DEVICE, root=LOG.hub.root(), bundle=LOG.bundle)
    assert [r.step for r in report.held] == [s for s in Step if s != Step.RECEIPT_SIGNATURE]
    assert [r.step for r in report.skipped] == [Step.RECEIPT_SIGNATURE]


TAMPERS = [
    (
        "no entry in extra",
        lambda: _proof().replace(_proof().split("\n")[1] + "\n", "", 1),
        Step.ENTRY,
    ),
    (
        "entry byte flipped",
        lambda: _proof(entry=LOG.entries[4].replace(b"camera", b"cAmera", 1)),
        Step.ROOT,
    ),
    ("wrong leaf index", lambda: _proof(seq=3), Step.INCLUSION_PATH),
    (
        "checkpoint signed by another device",
        lambda: _proof(note=LOG.note(key=OTHER_DEVICE_KEY)),
        Step.CHECKPOINT_SIGNATURE,
    ),
    ("checkpoint never cosigned", lambda: _proof(note=LOG.note(cosigned=False)), Step.COSIGNATURE),
]


@pytest.mark.parametrize(("make", "step"), [t[1:] for t in TAMPERS], ids=[t[0] for t in TAMPERS])
def test_tampered_proofs_are_refused_at_the_named_step(make, step) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ReceiptError) as caught:
        verify_tlog_proof(make(), device_key=DEVICE, witness_keys=[WITNESS])
    assert caught.value.step == step


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_verifying_random_bytes_raises_only_receipt_error(data: bytes) -> None:
    with pytest.raises(ReceiptError):
        verify_tlog_proof(data, device_key=DEVICE, witness_keys=[WITNESS])

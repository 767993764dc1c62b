"""C2SP signed notes and tlog checkpoints: reference vectors, our convention, hostile input."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import LineageError
from edge_agent.protocol.checkpoint import (
    MAX_NOTE_BYTES,
    Checkpoint,
    format_checkpoint_body,
    note_key_id,
    open_note,
    origin_for,
    parse_checkpoint_body,
    require_key_name,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
)
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.merkle import leaf_hash

# golang.org/x/mod/sumdb/note note_test.go: keys, text and the signatures Go produces.
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6"
    "KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33W"
    "Wd1RvMc+QQ=\n"
)

# A checkpoint of the Go checksum database, signed by its published key (GOSUMDB default).
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n31700353\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\n"
    "— sum.golang.org Az3grnmrIUEDFqHzAElIQCPNoRFRAAdFo47fooyWKMHb89k11GJh5zHIfNCOBmwn/C3YI8oW9/C8"
    "DJ87F61QqspBYwM=\n"
)

DEVICE_KEY = PrivateKey(bytes(range(32)))
ORIGIN = origin_for("gw-001", 1)
CHECKPOINT = Checkpoint(ORIGIN, 1234, leaf_hash(b"root stand-in"))
NOTE = sign_checkpoint(CHECKPOINT, DEVICE_KEY, ORIGIN)


def _go_public_key(vkey: str) -> tuple[str, bytes, PublicKey]:
    name, key_id, material = vkey.split("+", 2)
    raw = base64.b64decode(material)
    assert raw[0] == 1
    return name, bytes.fromhex(key_id), PublicKey(raw[1:])


def _go_private_key(skey: str) -> PrivateKey:
    raw = base64.b64decode(skey.split("+", 4)[4])
    assert raw[0] == 1
    return PrivateKey(raw[1:])


def test_key_id_matches_the_go_reference_key() -> None:
    name, key_id, public = _go_public_key(PETER_VKEY)
    assert note_key_id(name, public) == key_id
    assert _go_private_key(PETER_SKEY).public == public


def test_signing_reproduces_the_go_reference_note_byte_for_byte() -> None:
    assert sign_note(GO_TEXT, _go_private_key(PETER_SKEY), "PeterNeumann") == (
        GO_TEXT + "\n" + PETER_SIG
    )


@pytest.mark.parametrize("vkey", [PETER_VKEY, ENOCH_VKEY], ids=["peter", "enoch"])
def test_go_reference_note_opens_with_either_signer_ignoring_the_other(vkey: str) -> None:
    name, _, public = _go_public_key(vkey)
    assert open_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG, public, name) == GO_TEXT


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        GO_TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2p",
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:],
        GO_TEXT + "\n" + PETER_SIG * 17,
        GO_TEXT + "\n" + ENOCH_SIG,
    ],
    ids=["text", "blank", "no-newline", "ctrl", "bad-name", "trailer", "bad-sig", "many", "other"],
)
def test_go_reference_malformed_notes_are_refused(note: str) -> None:
    name, _, public = _go_public_key(PETER_VKEY)
    with pytest.raises(LineageError):
        open_note(note, public, name)


def test_go_reference_non_utf8_note_is_refused() -> None:
    name, _, public = _go_public_key(PETER_VKEY)
    with pytest.raises(LineageError, match="UTF-8"):
        open_note(b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(), public, name)


def test_real_go_checksum_database_checkpoint_verifies_and_parses() -> None:
    name, _, public = _go_public_key(SUMDB_VKEY)
    checkpoint = parse_checkpoint_body(open_note(SUMDB_NOTE, public, name))
    assert checkpoint.origin == "go.sum database tree"
    assert checkpoint.size == 31700353
    assert checkpoint.root.hex().startswith("a88352d4")
    assert format_checkpoint_body(checkpoint) == SUMDB_NOTE.split("\n\n")[0] + "\n"


def test_checkpoint_whose_origin_is_not_the_key_name_is_refused() -> None:
    name, _, public = _go_public_key(SUMDB_VKEY)
    with pytest.raises(LineageError, match="origin"):
        verify_checkpoint(SUMDB_NOTE, public, name)


def test_c2sp_spec_example_checkpoint_body_parses() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert parse_checkpoint_body(text).size == 20852163


def test_origin_names_device_and_key_epoch() -> None:
    assert ORIGIN == "edgegov/v1/device/gw-001/epoch/1"


def test_origin_percent_encodes_device_ids_that_are_not_key_names() -> None:
    origin = origin_for("line a/gw+1", 2)
    assert origin == "edgegov/v1/device/line%20a%2Fgw%2B1/epoch/2"
    sign_checkpoint(Checkpoint(origin, 0, leaf_hash(b"")), DEVICE_KEY, origin)


@pytest.mark.parametrize(("device", "epoch"), [("", 1), ("gw", 0), ("gw", True), ("gw", "1")])
def test_origin_refuses_empty_device_or_non_positive_epoch(device: str, epoch: int) -> None:
    with pytest.raises(ValueError):
        origin_for(device, epoch)


def test_signed_checkpoint_has_the_c2sp_layout() -> None:
    body, signature = NOTE.split("\n\n")
    assert body == f"{ORIGIN}\n1234\n{base64.b64encode(CHECKPOINT.root).decode()}"
    assert signature.startswith(f"— {ORIGIN} ") and signature.endswith("=\n")
    blob = base64.b64decode(signature.rsplit(" ", 1)[1])
    assert blob[:4] == note_key_id(ORIGIN, DEVICE_KEY.public) and len(blob) == 68


def test_signed_checkpoint_verifies_and_round_trips() -> None:
    assert verify_checkpoint(NOTE, DEVICE_KEY.public, ORIGIN) == CHECKPOINT
    assert verify_checkpoint(NOTE.encode(), DEVICE_KEY.public, ORIGIN) == CHECKPOINT


def test_checkpoint_with_extension_lines_round_trips() -> None:
    checkpoint = Checkpoint(ORIGIN, 7, CHECKPOINT.root, ("ext one", "ext two"))
    note = sign_checkpoint(checkpoint, DEVICE_KEY, ORIGIN)
    assert verify_checkpoint(note, DEVICE_KEY.public, ORIGIN) == checkpoint


def test_checkpoint_from_another_key_is_refused_as_unsigned() -> None:
    with pytest.raises(LineageError, match="no signature by key"):
        verify_checkpoint(NOTE, PrivateKey(b"\x07" * 32).public, ORIGIN)


def test_checkpoint_of_another_key_epoch_is_refused() -> None:
    with pytest.raises(LineageError, match="no signature by key"):
        verify_checkpoint(NOTE, DEVICE_KEY.public, origin_for("gw-001", 2))


def test_checkpoint_with_a_changed_size_is_refused_as_forged() -> None:
    forged = NOTE.replace("\n1234\n", "\n1235\n")
    with pytest.raises(LineageError, match="invalid signature"):
        verify_checkpoint(forged, DEVICE_KEY.public, ORIGIN)


def test_unknown_cosignature_is_ignored() -> None:
    witness = sign_note(format_checkpoint_body(CHECKPOINT), PrivateKey(b"\x09" * 32), "witness")
    cosigned = NOTE + witness.split("\n\n")[1]
    assert verify_checkpoint(cosigned, DEVICE_KEY.public, ORIGIN) == CHECKPOINT


def test_second_bad_signature_by_the_device_key_rejects_the_note() -> None:
    blob = bytearray(base64.b64decode(NOTE.rsplit(" ", 1)[1]))
    blob[10] ^= 1
    forged_line = f"— {ORIGIN} {base64.b64encode(blob).decode()}\n"
    with pytest.raises(LineageError, match="invalid signature"):
        verify_checkpoint(NOTE + forged_line, DEVICE_KEY.public, ORIGIN)


def test_oversize_note_is_refused_before_parsing() -> None:
    with pytest.raises(LineageError, match="larger than"):
        verify_checkpoint(NOTE + "x" * MAX_NOTE_BYTES, DEVICE_KEY.public, ORIGIN)


def test_checkpoint_text_signed_under_another_name_is_refused() -> None:
    note = sign_note(format_checkpoint_body(CHECKPOINT), DEVICE_KEY, "edgegov/other")
    with pytest.raises(LineageError, match="origin"):
        verify_checkpoint(note, DEVICE_KEY.public, "edgegov/other")


@pytest.mark.parametrize(
    "size", ["01", "+1", " 1", "1_000", "\u0661", "-0", "18446744073709551616", "", "1e3"]
)
def test_checkpoint_size_must_be_canonical_decimal(size: str) -> None:
    root = base64.b64encode(CHECKPOINT.root).decode()
    with pytest.raises(LineageError):
        parse_checkpoint_body(f"{ORIGIN}\n{size}\n{root}\n")


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}\n1\n{base64.b64encode(b'short').decode()}\n",
        f"{ORIGIN}\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs\n",
        f"{ORIGIN}\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVct=\n",
        f"{ORIGIN}\n1\n",
        f"{ORIGIN}\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\nextension\n",
        f"{ORIGIN}\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=",
        "\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
    ],
    ids=["short-root", "unpadded", "noncanonical", "two-lines", "empty-ext", "no-nl", "no-origin"],
)
def test_malformed_checkpoint_body_is_refused(text: str) -> None:
    with pytest.raises(LineageError):
        parse_checkpoint_body(text)


@pytest.mark.parametrize("name", ["", "has space", "a+b", "tab\there"])
def test_signing_refuses_an_invalid_key_name(name: str) -> None:
    with pytest.raises(ValueError):
        sign_note(GO_TEXT, DEVICE_KEY, name)


def test_signing_refuses_a_key_name_other_than_the_origin() -> None:
    with pytest.raises(ValueError):
        sign_checkpoint(CHECKPOINT, DEVICE_KEY, "edgegov/other")


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_changed_byte_of_a_signed_checkpoint_is_refused(data: st.DataObject) -> None:
    raw = bytearray(NOTE.encode())
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[position]))
    with pytest.raises(LineageError):
        verify_checkpoint(bytes(raw), DEVICE_KEY.public, ORIGIN)


@settings(max_examples=300, deadline=None)
@given(note=st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_arbitrary_input_is_refused_with_lineage_error_only(note: bytes | str) -> None:
    with pytest.raises(LineageError):
        verify_checkpoint(note, DEVICE_KEY.public, ORIGIN)


def test_a_key_name_holding_any_unicode_whitespace_is_refused() -> None:
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert len(spaces) > 20
    for space in spaces:
        with pytest.raises(ValueError, match="not a note key name"):
            require_key_name(f"edgegov/v1{space}witness")

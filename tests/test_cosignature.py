"""C2SP cosignature/v1: a real witness's line verifies byte for byte; ours round-trip; hostile
input is refused with LineageError only."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import LineageError
from edge_agent.protocol.checkpoint import (
    Checkpoint,
    note_key_id,
    origin_for,
    sign_checkpoint,
    split_note,
    verify_checkpoint,
)
from edge_agent.protocol.cosignature import (
    WITNESS_KEY_NAME,
    Cosignature,
    cosign_note,
    cosignature_key_id,
    verify_cosignature,
)
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.merkle import leaf_hash

VECTORS = Path(__file__).resolve().parent / "vectors" / "c2sp-cosignature"

DEVICE_KEY = PrivateKey(bytes(range(32)))
WITNESS = PrivateKey(bytes(range(32, 64)))
STRANGER = PrivateKey(bytes(range(64, 96)))
ORIGIN = origin_for("gw-001", 1)
NOTE = sign_checkpoint(Checkpoint(ORIGIN, 42, leaf_hash(b"root stand-in")), DEVICE_KEY, ORIGIN)
T = 1_800_000_000


def _vkey(path: Path) -> tuple[str, bytes, PublicKey]:
    name, key_id, material = path.read_text().strip().split("+", 2)
    raw = base64.b64decode(material)
    assert raw[0] == 0x04, "a cosignature/v1 verifier key has signature type 0x04"
    return name, bytes.fromhex(key_id), PublicKey(raw[1:])


def test_a_published_witness_cosignature_verifies_byte_for_byte() -> None:
    name, key_id, key = _vkey(VECTORS / "remora.n621.de.vkey")
    note = (VECTORS / "arche2025h1-1432088532.checkpoint").read_bytes()
    assert cosignature_key_id(key, name) == key_id
    assert verify_cosignature(note, [key], name=name) == Cosignature(key, 1779573024)


def test_the_published_cosignature_fails_on_a_changed_checkpoint() -> None:
    name, _, key = _vkey(VECTORS / "remora.n621.de.vkey")
    note = (VECTORS / "arche2025h1-1432088532.checkpoint").read_text()
    with pytest.raises(LineageError, match="invalid cosignature"):
        verify_cosignature(note.replace("1432088532", "1432088533", 1), [key], name=name)


def test_the_cosignature_key_id_uses_type_0x04_not_the_note_type() -> None:
    assert cosignature_key_id(WITNESS.public) != note_key_id(WITNESS_KEY_NAME, WITNESS.public)
    assert cosignature_key_id(WITNESS.public) == note_key_id(WITNESS_KEY_NAME, WITNESS.public, 0x04)


def test_a_cosigned_note_keeps_the_device_signature_and_names_its_time() -> None:
    cosigned = cosign_note(NOTE, WITNESS, time=T)
    assert cosigned.startswith(NOTE)
    assert verify_checkpoint(cosigned, DEVICE_KEY.public, ORIGIN).size == 42
    assert verify_cosignature(cosigned, [STRANGER.public, WITNESS.public]) == Cosignature(
        WITNESS.public, T
    )


def test_cosigning_again_replaces_the_earlier_line_of_the_same_witness() -> None:
    twice = cosign_note(cosign_note(NOTE, WITNESS, time=T), WITNESS, time=T + 60)
    assert len(split_note(twice)[1]) == 2
    assert verify_cosignature(twice, [WITNESS.public]).time == T + 60


def test_two_witnesses_each_add_their_own_line() -> None:
    both = cosign_note(cosign_note(NOTE, WITNESS, time=T), STRANGER, time=T)
    assert len(split_note(both)[1]) == 3
    assert verify_cosignature(both, [STRANGER.public]).key == STRANGER.public


def _flip_last_signature_byte(note: str) -> str:
    text, lines = split_note(note)
    *keep, last = lines
    signature = last.signature[:-1] + bytes([last.signature[-1] ^ 1])
    bad = type(last)(last.name, last.key_id, signature)
    return text.decode() + "\n" + "".join(f"{x.line}\n" for x in (*keep, bad))


REFUSED = [
    ("no cosignature at all", NOTE, [WITNESS.public], "no cosignature by witness key"),
    (
        "a cosignature by a key that is not a witness",
        cosign_note(NOTE, STRANGER, time=T),
        [WITNESS.public],
        "no cosignature by witness key",
    ),
    ("no witness keys given", cosign_note(NOTE, WITNESS, time=T), [], "none given"),
    (
        "a witness line with a flipped signature bit",
        _flip_last_signature_byte(cosign_note(NOTE, WITNESS, time=T)),
        [WITNESS.public],
        "invalid cosignature",
    ),
    (
        "a changed checkpoint size under a valid cosignature",
        cosign_note(NOTE, WITNESS, time=T).replace("\n42\n", "\n43\n", 1),
        [WITNESS.public],
        "invalid cosignature",
    ),
    (
        "a witness line carrying a plain note signature (no timestamp)",
        NOTE.replace(
            split_note(NOTE)[1][0].line,
            type(split_note(NOTE)[1][0])(
                WITNESS_KEY_NAME,
                cosignature_key_id(WITNESS.public),
                WITNESS.sign(b"x"),
            ).line,
        ),
        [WITNESS.public],
        "not a timestamp and an Ed25519 signature",
    ),
    ("not a note", "hello\n", [WITNESS.public], "no blank line"),
]


@pytest.mark.parametrize(
    ("note", "keys", "message"),
    [row[1:] for row in REFUSED],
    ids=[row[0] for row in REFUSED],
)
def test_verify_cosignature_refuses(note: str, keys: list[PublicKey], message: str) -> None:
    with pytest.raises(LineageError, match=message):
        verify_cosignature(note, keys)


@pytest.mark.parametrize(
    ("note", "time", "name"),
    [
        ("not a note\n", T, WITNESS_KEY_NAME),
        ("a\n1\nnot-a-root\n\n— a AAAAAAAA\n", T, WITNESS_KEY_NAME),
        (NOTE, -1, WITNESS_KEY_NAME),
        (NOTE, 2**63, WITNESS_KEY_NAME),
        (NOTE, True, WITNESS_KEY_NAME),
        (NOTE, T, "has space"),
        (NOTE, T, "plus+sign"),
    ],
    ids=[
        "not a note",
        "not a checkpoint",
        "negative time",
        "time over 2^63-1",
        "bool time",
        "name with a space",
        "name with a plus",
    ],
)
def test_cosign_note_refuses_bad_input_with_value_error(note: str, time: int, name: str) -> None:
    with pytest.raises(ValueError):
        cosign_note(note, WITNESS, time=time, name=name)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_verify_cosignature_on_random_bytes_raises_only_lineage_error(data: bytes) -> None:
    with pytest.raises(LineageError):
        verify_cosignature(data, [WITNESS.public])


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(split_note(NOTE)[0]) - 1), st.characters())
def test_any_changed_character_of_the_cosigned_text_is_refused(index: int, char: str) -> None:
    cosigned = cosign_note(NOTE, WITNESS, time=T)
    changed = cosigned[:index] + char + cosigned[index + 1 :]
    if changed == cosigned:
        return
    with pytest.raises(LineageError):
        verify_cosignature(changed, [WITNESS.public])

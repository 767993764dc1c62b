"""The cheaper readings a parent receipt goes through at decision time accept exactly what
the strict ones accept, and read it the same (docs/policy.md, "Parents", cost).

A device receipt is read as :func:`~edge_agent.protocol.receipt.build_receipt` writes it,
straight from its bytes; any other layout falls back to the strict reading, whose refusals
stand. Each table row or property pins one reading against the strict one it stands for.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import LineageError, ReceiptError
from edge_agent.protocol import checkpoint, cose, dcbor, receipt
from edge_agent.protocol.checkpoint import (
    decode_canonical_base64,
    origin_for,
    parse_origin,
    split_note,
)
from edge_agent.protocol.keys import ALG_EDDSA, PrivateKey
from edge_agent.protocol.merkle import verify_inclusion
from tests.ancestry_support import CAMERA, CAMERA_KEY, DeviceLog
from tests.factory import NOW

KEY = PrivateKey(bytes(range(7, 39)), ALG_EDDSA)


def _log(size: int) -> DeviceLog:
    log = DeviceLog(CAMERA, CAMERA_KEY)
    for _ in range(size):
        log.append(time=NOW - 5)
    return log


def _statement(
    *,
    tree_size: int = 5,
    leaf_index: int = 3,
    path: tuple[bytes, ...] = (bytes(32), bytes(range(32))),
    origin: str = "edgegov/v1/device/gw-cam-01/epoch/1",
    iat: int = NOW,
    entry: bytes = b"\xa0",
    note: str = "a note\n",
    kid: bytes = b"k" * 32,
    protected_extra: dict[int, dcbor.CborValue] | None = None,
    bundle: bytes | None = None,
    proof: bytes | None = None,
) -> bytes:
    """A statement in build_receipt's layout with any values (nothing here is verified by
    the readers under test: they only read)."""
    proof = proof or dcbor.encode([tree_size, leaf_index, list(path)])
    inner = cose.sign1_open(
        b"root",
        key=KEY,
        protected={
            cose.HEADER_ALG: ALG_EDDSA,
            cose.HEADER_KID: kid,
            receipt.LABEL_CWT_CLAIMS: {receipt.CLAIM_ISS: origin, receipt.CLAIM_IAT: iat},
            receipt.LABEL_VDS: receipt.VDS_RFC9162_SHA256,
            receipt.LABEL_TREE_SIZE: tree_size,
            receipt.LABEL_LEAF_INDEX: leaf_index,
            **(protected_extra or {}),
        },
        unprotected={
            receipt.LABEL_VDP: {receipt.VDP_INCLUSION: [proof]},
            receipt.LABEL_CHECKPOINT: note,
        },
        detached=True,
    )
    unprotected: dict[int, dcbor.CborValue] = {receipt.LABEL_RECEIPTS: [inner]}
    if bundle is not None:
        unprotected[receipt.LABEL_BUNDLE] = bundle
    return cose.sign1_open(
        entry,
        key=KEY,
        protected={
            cose.HEADER_ALG: ALG_EDDSA,
            cose.HEADER_CONTENT_TYPE: receipt.CONTENT_TYPE,
            cose.HEADER_KID: kid,
        },
        unprotected=unprotected,
    )


def _strict(data: bytes) -> object:
    try:
        return receipt._read_statement(data, signed=False)
    except ReceiptError as exc:
        return exc.step


def _agrees(data: bytes) -> None:
    """Read as written (when it reads) is what the strict reading gives."""
    fast = receipt._statement_as_written(data)
    if fast is not None:
        assert fast == _strict(data)


# --- the statement, as written -------------------------------------------------------------


def test_a_device_receipt_is_verified_without_the_strict_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = _log(3)
    data = log.receipt(1)

    def refused(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the strict reading ran")

    monkeypatch.setattr(cose, "parse_sign1_open", refused)
    monkeypatch.setattr(receipt, "_read_statement", refused)
    report = receipt.verify_device_receipt(data, device_key=lambda origin: CAMERA_KEY.public)
    assert report.entry.seq == 1
    assert report.checkpoint.origin == log.origin


@pytest.mark.parametrize(("size", "seq"), [(1, 0), (2, 1), (24, 23), (25, 24), (300, 256)])
def test_a_device_receipt_reads_as_written_exactly_as_strictly(size: int, seq: int) -> None:
    data = _log(size).receipt(seq)
    fast = receipt._statement_as_written(data)
    assert fast is not None
    assert fast == receipt._read_statement(data, signed=False)


@pytest.mark.parametrize(
    ("what", "values"),
    [
        ("integers at each head width", {"tree_size": 2**64 - 1, "leaf_index": 2**32}),
        ("one-byte integers", {"tree_size": 255, "leaf_index": 24, "iat": 23}),
        ("two-byte integers", {"tree_size": 65535, "leaf_index": 256, "iat": 0}),
        ("a full path", {"path": tuple(bytes([n]) * 32 for n in range(64))}),
        ("an empty path", {"path": ()}),
        ("24 hashes (a two-byte array head)", {"path": (bytes(32),) * 24}),
        ("text beyond ASCII", {"origin": "edgegov/v1/device/é/epoch/1", "note": "ü\n"}),
        ("a long entry and kid", {"entry": b"\x00" * 35_000, "kid": b"k" * 300}),
    ],
)
def test_statements_in_the_written_layout_read_as_strictly(
    what: str, values: dict[str, object]
) -> None:
    data = _statement(**values)  # type: ignore[arg-type]
    assert receipt._statement_as_written(data) is not None, what
    _agrees(data)


@pytest.mark.parametrize(
    ("what", "data"),
    [
        ("an embedded bundle", _statement(bundle=b"bundle")),
        ("another protected label", _statement(protected_extra={-70000: 1})),
        ("more than 64 path hashes", _statement(path=(bytes(32),) * 65)),
        ("a path hash of 31 bytes", _statement(path=(bytes(31),))),
        ("a kid over the protected header bound", _statement(kid=b"k" * 17_000)),
    ],
)
def test_other_layouts_are_left_to_the_strict_reading(what: str, data: bytes) -> None:
    assert receipt._statement_as_written(data) is None, what


@pytest.mark.parametrize(
    ("what", "proof", "refusal"),
    [
        ("sizes other than the signed ones", dcbor.encode([6, 3, []]), "signed headers say"),
        ("a tree size in a longer head", b"\x83\x18\x05\x03\x80", "deterministically"),
        ("a path hash in a longer head", b"\x83\x05\x03\x81\x59\x00\x20" + bytes(32), "determ"),
        ("four items", dcbor.encode([5, 3, [], 0]), "is not .tree size"),
    ],
)
def test_a_proof_the_strict_reading_refuses_is_still_refused(
    what: str, proof: bytes, refusal: str
) -> None:
    data = _statement(tree_size=5, leaf_index=3, proof=proof)
    assert receipt._statement_as_written(data) is None, what
    with pytest.raises(ReceiptError, match=refusal) as refused:
        receipt._read_statement(data, signed=False)
    assert refused.value.step == receipt.Step.INCLUSION_PATH


def test_a_receipt_with_its_bundle_still_verifies_by_the_strict_reading() -> None:
    log = _log(3)
    plain = log.receipt(2)
    statement = cose.parse_sign1_open(
        plain, max_bytes=1 << 20, max_protected_bytes=1 << 14, what="x"
    )
    inner = statement.unprotected[receipt.LABEL_RECEIPTS]
    assert isinstance(inner, list)
    with_bundle = cose.sign1_open(
        statement.payload or b"",
        key=PrivateKey(CAMERA_KEY.seed, ALG_EDDSA),
        protected=dict(statement.protected),  # type: ignore[arg-type]
        unprotected={receipt.LABEL_RECEIPTS: inner, receipt.LABEL_BUNDLE: b"a bundle"},
    )
    assert receipt._statement_as_written(with_bundle) is None
    report = receipt.verify_device_receipt(with_bundle, device_key=lambda _: CAMERA_KEY.public)
    assert report.entry.seq == 2


_VALID = _log(40).receipt(33)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(_VALID) - 1), st.integers(0, 255))
def test_any_byte_changed_reads_as_written_only_as_strictly(at: int, value: int) -> None:
    changed = bytearray(_VALID)
    changed[at] = value
    _agrees(bytes(changed))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_VALID)), st.binary(min_size=0, max_size=3), st.integers(0, 3))
def test_any_bytes_inserted_or_removed_read_as_written_only_as_strictly(
    at: int, inserted: bytes, removed: int
) -> None:
    _agrees(_VALID[:at] + inserted + _VALID[at + removed :])


@settings(max_examples=200, deadline=None)
@given(
    tree_size=st.integers(0, 2**64 - 1),
    leaf_index=st.integers(0, 2**64 - 1),
    iat=st.integers(0, 2**64 - 1),
    hashes=st.integers(0, 66),
    origin=st.text(max_size=40),
    note=st.text(max_size=40),
)
def test_any_values_in_the_written_layout_read_as_strictly(
    tree_size: int, leaf_index: int, iat: int, hashes: int, origin: str, note: str
) -> None:
    data = _statement(
        tree_size=tree_size,
        leaf_index=leaf_index,
        iat=iat,
        path=(bytes(32),) * hashes,
        origin=origin,
        note=note,
    )
    _agrees(data)
    assert (receipt._statement_as_written(data) is None) == (hashes > 64)


def test_a_parent_read_as_written_gives_the_same_facts_as_before() -> None:
    log = _log(5)
    data = log.receipt(4)
    fast = receipt.verify_device_receipt(data, device_key=lambda _: CAMERA_KEY.public)
    strict_claim = receipt._read_statement(data, signed=False)
    strict = receipt._verify(strict_claim, CAMERA_KEY.public, (), None, None)
    assert fast == strict


# --- origins, base64, notes, proofs --------------------------------------------------------


def _origin_as_before(origin: str) -> tuple[str, int] | None:
    """parse_origin as it read before its shortcut: match, decode, and the round trip."""
    match = re.fullmatch(r"edgegov/v1/device/([A-Za-z0-9_.~%-]+)/epoch/([1-9][0-9]{0,15})", origin)
    if match is None:
        return None
    try:
        device_id, epoch = unquote(match[1], errors="strict"), int(match[2])
        return (device_id, epoch) if origin_for(device_id, epoch) == origin else None
    except (UnicodeDecodeError, ValueError):
        return None


def _parsed(origin: str) -> tuple[str, int] | None:
    try:
        return parse_origin(origin)
    except LineageError:
        return None


@pytest.mark.parametrize(
    "origin",
    [
        "edgegov/v1/device/gw-cam-01/epoch/1",
        "edgegov/v1/device/%41/epoch/1",
        "edgegov/v1/device/%2F/epoch/1",
        "edgegov/v1/device/%2f/epoch/1",
        "edgegov/v1/device/a%/epoch/1",
        "edgegov/v1/device/%C3%A9/epoch/2",
        "edgegov/v1/device/%FF/epoch/2",
        "edgegov/v1/device/a.b~c_d-e/epoch/9007199254740991",
        "edgegov/v1/device/a/epoch/9007199254740992",
        "edgegov/v1/device/a/epoch/9999999999999999",
        "edgegov/v1/device/a/epoch/01",
        "edgegov/v1/device/a b/epoch/1",
    ],
)
def test_an_origin_parses_as_it_did(origin: str) -> None:
    assert _parsed(origin) == _origin_as_before(origin)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="aZ9_.~-%2Fc3A/ é", max_size=12), st.integers(0, 2**60))
def test_any_origin_parses_as_it_did(device: str, epoch: int) -> None:
    origin = f"edgegov/v1/device/{device}/epoch/{epoch}"
    assert _parsed(origin) == _origin_as_before(origin)


def _base64_as_before(encoded: str) -> bytes | None:
    try:
        raw = encoded.encode("ascii")
        decoded = base64.b64decode(raw, validate=True)
    except (UnicodeError, binascii.Error):
        return None
    return decoded if raw and base64.b64encode(decoded) == raw else None


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(alphabet="AQgw+/=Bb0 \n-_é", max_size=12), st.binary(max_size=9)))
def test_base64_is_read_as_canonically_as_before(value: str | bytes) -> None:
    encoded = value if isinstance(value, str) else base64.b64encode(value).decode()
    assert decode_canonical_base64(encoded) == _base64_as_before(encoded)


_NOTE = "edgegov/v1/device/a/epoch/1\n1\n" + base64.b64encode(bytes(32)).decode() + "\n"


@pytest.mark.parametrize("char", [chr(c) for c in range(32) if c != 10])
def test_a_note_holding_any_control_character_is_refused(char: str) -> None:
    line = "\N{EM DASH} edgegov/v1/device/a/epoch/1 " + base64.b64encode(bytes(68)).decode()
    with pytest.raises(LineageError, match="control character"):
        split_note(f"{_NOTE}{char}\n\n{line}\n")


@pytest.mark.parametrize("char", ["\x7f", "\u2028", "é", "\N{EM DASH}", "\U0001f600"])
def test_a_note_with_other_characters_is_read(char: str) -> None:
    line = "\N{EM DASH} edgegov/v1/device/a/epoch/1 " + base64.b64encode(bytes(68)).decode()
    text, signatures = split_note(f"{_NOTE}{char}\n\n{line}\n")
    assert text.decode("utf-8").endswith(f"{char}\n")
    assert len(signatures) == 1


def test_a_proof_hash_of_the_wrong_size_is_named_by_its_position() -> None:
    with pytest.raises(LineageError, match="proof hash 1 is not a 32-byte SHA-256 hash"):
        verify_inclusion(bytes(32), 0, 3, [bytes(32), bytes(31)], bytes(32))


def test_the_note_control_bytes_are_the_control_characters() -> None:
    control = re.compile(r"[\x00-\x09\x0b-\x1f]")
    assert bytes(c for c in range(256) if control.search(chr(c))) == checkpoint._CONTROL_BYTES

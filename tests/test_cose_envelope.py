"""COSE envelope verification: what is accepted, what is refused and why (table-driven)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol.keys import ALG_ED25519, ALG_EDDSA, PrivateKey, PublicKey
from edge_agent.protocol.limits import MAX_SIGNATURES
from edge_agent.protocol.roles import Role, content_type, external_aad

KEY_A = PrivateKey(bytes([1]) * 32)
KEY_B = PrivateKey(bytes([2]) * 32)
UNTRUSTED = PrivateKey(bytes([3]) * 32)
KEY_EDDSA = PrivateKey(bytes([4]) * 32, ALG_EDDSA)
TRUSTED = {key.public.key_id: key.public for key in (KEY_A, KEY_B)}

CTYPE = content_type(Role.POLICY)
AAD = external_aad(Role.POLICY, "eu-1")
PAYLOAD = dcbor.encode({"version": 7, "policy": "allow nothing"})
MAX_BYTES = 64 * 1024

ALG, CRIT, CTY, KID = cose.HEADER_ALG, cose.HEADER_CRIT, cose.HEADER_CONTENT_TYPE, cose.HEADER_KID


def _protected(header: dict[int, object]) -> bytes:
    return dcbor.encode(header) if header else b""


def raw_sign1(
    protected: dict[int, object],
    unprotected: dict[int, object] | None = None,
    *,
    key: PrivateKey = KEY_A,
    payload: bytes | None = PAYLOAD,
    aad: bytes = AAD,
) -> bytes:
    """A COSE_Sign1 with any headers, correctly signed over them (to reach the header rules)."""
    body = _protected(protected)
    signature = key.sign(
        cose.sig_structure(
            body_protected=body, sign_protected=None, external_aad=aad, payload=payload or b""
        )
    )
    return dcbor.encode_tagged(18, [body, unprotected or {}, payload, signature])


def raw_signature(
    body: bytes,
    protected: dict[int, object],
    unprotected: dict[int, object] | None = None,
    *,
    key: PrivateKey = KEY_A,
    payload: bytes = PAYLOAD,
    aad: bytes = AAD,
) -> list[object]:
    sign_protected = _protected(protected)
    to_sign = cose.sig_structure(
        body_protected=body, sign_protected=sign_protected, external_aad=aad, payload=payload
    )
    return [sign_protected, unprotected or {}, key.sign(to_sign)]


def raw_sign(
    signatures: list[list[object]],
    body: bytes = _protected({CTY: CTYPE}),
    payload: bytes | None = PAYLOAD,
) -> bytes:
    return dcbor.encode_tagged(98, [body, {}, payload, signatures])


def good_signature(key: PrivateKey, kid: bytes | None = None) -> list[object]:
    return raw_signature(
        _protected({CTY: CTYPE}),
        {ALG: key.alg},
        {KID: key.public.key_id if kid is None else kid},
        key=key,
    )


def verify1(data: bytes, **overrides: object) -> cose.Verified:
    arguments: dict[str, object] = {
        "keys": TRUSTED,
        "content_type": CTYPE,
        "external_aad": AAD,
        "max_bytes": MAX_BYTES,
    }
    arguments.update(overrides)
    return cose.verify_sign1(data, **arguments)  # type: ignore[arg-type]


def verify(data: bytes, **overrides: object) -> cose.Verified:
    arguments: dict[str, object] = {
        "keys": TRUSTED,
        "content_type": CTYPE,
        "external_aad": AAD,
        "max_bytes": MAX_BYTES,
    }
    arguments.update(overrides)
    return cose.verify_sign(data, **arguments)  # type: ignore[arg-type]


def ids(*keys: PrivateKey) -> frozenset[bytes]:
    return frozenset(key.public.key_id for key in keys)


SIGNED1 = cose.sign1(PAYLOAD, key=KEY_A, content_type=CTYPE, external_aad=AAD)
SIGNED = cose.sign(PAYLOAD, keys=[KEY_A, KEY_B], content_type=CTYPE, external_aad=AAD)


def flip(data: bytes, position: int) -> bytes:
    mutated = bytearray(data)
    mutated[position] ^= 0x01
    return bytes(mutated)


# --- what we sign --------------------------------------------------------------------------


def test_sign1_uses_the_contract_headers_and_verifies() -> None:
    kid = KEY_A.public.key_id
    signed = cose.sign1(PAYLOAD, key=KEY_A, content_type=CTYPE, external_aad=AAD, kid=kid)
    body = cbor2.loads(signed).value
    assert cbor2.loads(body[0]) == {ALG: ALG_ED25519, CTY: CTYPE}
    assert body[1] == {KID: kid}
    assert verify1(signed) == cose.Verified(PAYLOAD, ids(KEY_A), CTYPE)


def test_sign_uses_the_contract_headers_and_every_signer_is_returned() -> None:
    body = cbor2.loads(SIGNED).value
    assert cbor2.loads(body[0]) == {CTY: CTYPE}
    assert body[1] == {}
    assert [cbor2.loads(s[0]) for s in body[3]] == [{ALG: ALG_ED25519}] * 2
    assert [s[1] for s in body[3]] == [{KID: KEY_A.public.key_id}, {KID: KEY_B.public.key_id}]
    assert verify(SIGNED) == cose.Verified(PAYLOAD, ids(KEY_A, KEY_B), CTYPE)


def test_a_key_pinned_to_eddsa_signs_and_verifies_with_alg_minus_8() -> None:
    signed = cose.sign(PAYLOAD, keys=[KEY_EDDSA], content_type=CTYPE, external_aad=AAD)
    trusted = {KEY_EDDSA.public.key_id: KEY_EDDSA.public}
    assert verify(signed, keys=trusted).signer_ids == ids(KEY_EDDSA)


def test_peek_payload_returns_the_unverified_payload_of_either_kind() -> None:
    assert cose.peek_payload(SIGNED1, max_bytes=MAX_BYTES) == PAYLOAD
    assert cose.peek_payload(SIGNED, max_bytes=MAX_BYTES) == PAYLOAD


def test_signing_more_than_max_signatures_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="signers"):
        cose.sign(
            PAYLOAD, keys=[KEY_A] * (MAX_SIGNATURES + 1), content_type=CTYPE, external_aad=AAD
        )


# --- accepted: kid is only a hint ----------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    name: str
    data: Callable[[], bytes]
    signers: frozenset[bytes]


ACCEPTED = [
    Accept(
        "no kid: every authorised key is tried",
        lambda: cose.sign1(PAYLOAD, key=KEY_A, content_type=CTYPE, external_aad=AAD),
        ids(KEY_A),
    ),
    Accept(
        "a lying kid is not counted, an honest one beside it is",
        lambda: raw_sign([good_signature(KEY_A, kid=KEY_B.public.key_id), good_signature(KEY_B)]),
        ids(KEY_B),
    ),
    Accept(
        "the same signature repeated counts once",
        lambda: raw_sign([good_signature(KEY_A)] * 3),
        ids(KEY_A),
    ),
    Accept(
        "the same key under different kids counts once",
        lambda: raw_sign([good_signature(KEY_A), good_signature(KEY_A, kid=b"other")]),
        ids(KEY_A),
    ),
    Accept(
        "a signature by an untrusted key is not counted",
        lambda: raw_sign([good_signature(UNTRUSTED), good_signature(KEY_B)]),
        ids(KEY_B),
    ),
    Accept(
        "an untrusted signature claiming a trusted kid is not counted",
        lambda: raw_sign(
            [good_signature(UNTRUSTED, kid=KEY_A.public.key_id), good_signature(KEY_B)]
        ),
        ids(KEY_B),
    ),
    Accept(
        "a corrupted signature is not counted",
        lambda: raw_sign([[*good_signature(KEY_A)[:2], bytes(64)], good_signature(KEY_B)]),
        ids(KEY_B),
    ),
]


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda case: case.name)
def test_accepted(case: Accept) -> None:
    data = case.data()
    check = verify1 if data[0] == 0xD2 else verify
    result = check(data)
    assert result.payload == PAYLOAD
    assert result.signer_ids == case.signers


# --- refused -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refuse:
    name: str
    verifier: Callable[..., cose.Verified]
    data: Callable[[], bytes]
    message: str
    overrides: tuple[tuple[str, object], ...] = ()


GOOD1_HEADERS = {ALG: ALG_ED25519, CTY: CTYPE}
ALTERED = (
    "signed by a key not trusted for it or for another scope, or its signed bytes were altered"
)
WITH_EDDSA = {**TRUSTED, KEY_EDDSA.public.key_id: KEY_EDDSA.public}
EDDSA_BODY = _protected({ALG: ALG_EDDSA, CTY: CTYPE})

REFUSED = [
    Refuse(
        "a kid naming no trusted key",
        verify1,
        lambda: cose.sign1(PAYLOAD, key=KEY_A, content_type=CTYPE, external_aad=AAD, kid=b"?"),
        ALTERED,
    ),
    Refuse(
        "a kid naming another trusted key (lying kid)",
        verify,
        lambda: raw_sign([good_signature(KEY_A, kid=KEY_B.public.key_id)]),
        ALTERED,
    ),
    Refuse("flipped payload byte", verify1, lambda: flip(SIGNED1, len(SIGNED1) - 70), ALTERED),
    Refuse("flipped signature byte", verify1, lambda: flip(SIGNED1, len(SIGNED1) - 1), ALTERED),
    Refuse("flipped protected header byte", verify1, lambda: flip(SIGNED1, 5), "protected header"),
    Refuse("truncated", verify1, lambda: SIGNED1[:-1], "not valid CBOR"),
    Refuse("trailing byte", verify1, lambda: SIGNED1 + b"\x00", "trailing"),
    Refuse("random bytes", verify1, lambda: bytes(range(7, 250, 3)), "COSE_Sign1"),
    Refuse("empty", verify1, lambda: b"", "empty"),
    Refuse("untagged", verify1, lambda: SIGNED1[1:], "tag 18"),
    Refuse("a COSE_Sign given as COSE_Sign1", verify1, lambda: SIGNED, "tag 18"),
    Refuse("a COSE_Sign1 given as COSE_Sign", verify, lambda: SIGNED1, "tag 98"),
    Refuse(
        "wrong key",
        verify1,
        lambda: cose.sign1(PAYLOAD, key=UNTRUSTED, content_type=CTYPE, external_aad=AAD),
        ALTERED,
    ),
    Refuse(
        "untrusted key claiming a trusted kid",
        verify1,
        lambda: raw_sign1(GOOD1_HEADERS, {KID: KEY_A.public.key_id}, key=UNTRUSTED),
        ALTERED,
    ),
    Refuse("no trusted keys at all", verify1, lambda: SIGNED1, "no key", (("keys", {}),)),
    Refuse(
        "algorithm only in the unprotected header",
        verify1,
        lambda: raw_sign1({CTY: CTYPE}, {ALG: ALG_ED25519}),
        "algorithm in the unprotected header",
    ),
    Refuse(
        "algorithm in both headers",
        verify1,
        lambda: raw_sign1(GOOD1_HEADERS, {ALG: ALG_ED25519}),
        "algorithm in the unprotected header",
    ),
    Refuse("no algorithm", verify1, lambda: raw_sign1({CTY: CTYPE}), "no algorithm"),
    Refuse(
        "EdDSA (-8) with keys pinned to Ed25519 (-19)",
        verify1,
        lambda: raw_sign1({ALG: ALG_EDDSA, CTY: CTYPE}),
        "pinned to Ed25519",
    ),
    Refuse(
        "an algorithm other than Ed25519",
        verify1,
        lambda: raw_sign1({ALG: -7, CTY: CTYPE}),
        "only Ed25519",
    ),
    Refuse(
        "boolean algorithm",
        verify1,
        lambda: raw_sign1({ALG: True, CTY: CTYPE}),
        "only Ed25519",
    ),
    Refuse(
        "unknown crit label",
        verify1,
        lambda: raw_sign1({ALG: ALG_ED25519, CRIT: [99], CTY: CTYPE, 99: 1}),
        "critical",
    ),
    Refuse(
        "crit in the unprotected header",
        verify1,
        lambda: raw_sign1(GOOD1_HEADERS, {CRIT: [KID]}),
        "critical",
    ),
    Refuse(
        "another label in the unprotected header",
        verify1,
        lambda: raw_sign1(GOOD1_HEADERS, {33: b"cert"}),
        "only a key id",
    ),
    Refuse(
        "kid that is not a byte string",
        verify1,
        lambda: raw_sign1(GOOD1_HEADERS, {KID: "a"}),
        "byte string",
    ),
    Refuse(
        "wrong content type (a revocation offered as a bundle)",
        verify1,
        lambda: cose.sign1(
            PAYLOAD, key=KEY_A, content_type=content_type(Role.REVOKE), external_aad=AAD
        ),
        "content type",
    ),
    Refuse(
        "content type as a number",
        verify1,
        lambda: raw_sign1({ALG: ALG_ED25519, CTY: 0}),
        "content type",
    ),
    Refuse("no content type", verify1, lambda: raw_sign1({ALG: ALG_ED25519}), "no content type"),
    Refuse(
        "content type only in the unprotected header",
        verify1,
        lambda: raw_sign1({ALG: ALG_ED25519}, {CTY: CTYPE}),
        "content type in the unprotected header",
    ),
    Refuse(
        "external_aad of another role",
        verify1,
        lambda: raw_sign1(GOOD1_HEADERS, aad=external_aad(Role.REVOKE, "eu-1")),
        ALTERED,
    ),
    Refuse(
        "external_aad of another scope",
        verify1,
        lambda: raw_sign1(GOOD1_HEADERS, aad=external_aad(Role.POLICY, "us-2")),
        ALTERED,
    ),
    Refuse("detached payload", verify1, lambda: raw_sign1(GOOD1_HEADERS, payload=None), "detached"),
    Refuse(
        "payload as text",
        verify1,
        lambda: dcbor.encode_tagged(18, [_protected(GOOD1_HEADERS), {}, "text", bytes(64)]),
        "byte string",
    ),
    Refuse(
        "protected header not a byte string",
        verify1,
        lambda: dcbor.encode_tagged(18, [GOOD1_HEADERS, {}, PAYLOAD, bytes(64)]),
        "protected header must be a byte string",
    ),
    Refuse(
        "protected header not deterministically encoded",
        verify1,
        lambda: dcbor.encode_tagged(
            18, [cbor2.dumps({CTY: CTYPE, ALG: ALG_ED25519}), {}, PAYLOAD, bytes(64)]
        ),
        "not deterministically encoded",
    ),
    Refuse(
        "three items",
        verify1,
        lambda: dcbor.encode_tagged(18, [_protected(GOOD1_HEADERS), {}, PAYLOAD]),
        "4 items",
    ),
    Refuse("over size", verify1, lambda: SIGNED1, "over the", (("max_bytes", 64),)),
    Refuse("over size (COSE_Sign)", verify, lambda: SIGNED, "over the", (("max_bytes", 64),)),
    Refuse(
        "too many signatures",
        verify,
        lambda: raw_sign([good_signature(KEY_A)] * (MAX_SIGNATURES + 1)),
        f"more than the {MAX_SIGNATURES}",
    ),
    Refuse("no signatures", verify, lambda: raw_sign([]), "no signature"),
    Refuse("detached payload (COSE_Sign)", verify, lambda: raw_sign([], payload=None), "detached"),
    Refuse(
        "signature algorithm only in its unprotected header",
        verify,
        lambda: raw_sign([raw_signature(_protected({CTY: CTYPE}), {}, {ALG: ALG_ED25519})]),
        "algorithm in the unprotected header",
    ),
    Refuse(
        "unknown crit in a signature",
        verify,
        lambda: raw_sign(
            [raw_signature(_protected({CTY: CTYPE}), {ALG: ALG_ED25519, CRIT: [99], 99: 1})]
        ),
        "critical",
    ),
    Refuse(
        "crit in the body",
        verify,
        lambda: raw_sign([good_signature(KEY_A)], body=_protected({CRIT: [99], CTY: CTYPE})),
        "critical",
    ),
    Refuse(
        "wrong content type on a COSE_Sign",
        verify,
        lambda: cose.sign(
            PAYLOAD, keys=[KEY_A], content_type=content_type(Role.ROOT), external_aad=AAD
        ),
        "content type",
    ),
    Refuse(
        "COSE_Sign whose signers are all untrusted",
        verify,
        lambda: raw_sign([good_signature(UNTRUSTED)]),
        ALTERED,
    ),
    Refuse(
        "EdDSA (-8) named in a COSE_Sign body, no key pinned to it",
        verify,
        lambda: raw_sign([raw_signature(EDDSA_BODY, {ALG: ALG_ED25519}, key=KEY_A)], EDDSA_BODY),
        "EdDSA \\(-8\\), accepted only where a key is pinned to it",
    ),
    Refuse(
        "EdDSA (-8) named in a COSE_Sign body, its pinned key trusted but not a signer",
        verify,
        lambda: raw_sign([raw_signature(EDDSA_BODY, {ALG: ALG_ED25519}, key=KEY_A)], EDDSA_BODY),
        "no key pinned to it signed",
        (("keys", WITH_EDDSA),),
    ),
    Refuse(
        "COSE_Sign signature entry with two items",
        verify,
        lambda: raw_sign([good_signature(KEY_A)[:2]]),
        "3 items",
    ),
]


@pytest.mark.parametrize("case", REFUSED, ids=lambda case: case.name)
def test_refused(case: Refuse) -> None:
    with pytest.raises(EnvelopeError, match=case.message):
        case.verifier(case.data(), **dict(case.overrides))


def test_too_many_signatures_are_refused_before_any_is_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []

    def counting_verify(self: PublicKey, message: bytes, signature: bytes) -> bool:
        calls.append(signature)
        return True

    monkeypatch.setattr(PublicKey, "verify", counting_verify)
    with pytest.raises(EnvelopeError, match="signatures"):
        verify(raw_sign([good_signature(KEY_A)] * (MAX_SIGNATURES + 1)))
    assert calls == []


def test_verification_work_is_bounded_by_signatures_times_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    real_verify = PublicKey.verify

    def counting_verify(self: PublicKey, message: bytes, signature: bytes) -> bool:
        calls.append(signature)
        return real_verify(self, message, signature)

    monkeypatch.setattr(PublicKey, "verify", counting_verify)
    with pytest.raises(EnvelopeError):
        no_kid = raw_signature(_protected({CTY: CTYPE}), {ALG: UNTRUSTED.alg}, {}, key=UNTRUSTED)
        verify(raw_sign([no_kid] * MAX_SIGNATURES))
    assert len(calls) == MAX_SIGNATURES * len(TRUSTED)


def test_peek_payload_refuses_what_is_not_a_cose_signed_object() -> None:
    with pytest.raises(EnvelopeError, match="not a COSE_Sign1"):
        cose.peek_payload(PAYLOAD, max_bytes=MAX_BYTES)
    with pytest.raises(EnvelopeError, match="over the"):
        cose.peek_payload(SIGNED, max_bytes=16)
    with pytest.raises(EnvelopeError, match="detached"):
        cose.peek_payload(raw_sign1(GOOD1_HEADERS, payload=None), max_bytes=MAX_BYTES)


# --- properties ----------------------------------------------------------------------------


def _peek(data: bytes) -> bytes:
    return cose.peek_payload(data, max_bytes=MAX_BYTES)


VERIFIERS: list[Callable[[bytes], object]] = [verify1, verify, _peek]

_ARBITRARY = st.binary(max_size=512)
_BEHIND_A_COSE_TAG = st.tuples(
    st.sampled_from([b"\xd2", b"\xd8\x62"]), st.binary(max_size=256)
).map(lambda parts: parts[0] + parts[1])


@settings(max_examples=400, deadline=None)
@given(data=st.one_of(_ARBITRARY, _BEHIND_A_COSE_TAG))
def test_arbitrary_bytes_only_ever_raise_envelope_error(data: bytes) -> None:
    for check in VERIFIERS:
        with contextlib.suppress(EnvelopeError):
            check(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    original=st.sampled_from([SIGNED1, SIGNED]),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 10_000),
)
def test_mutated_envelopes_never_verify_to_anything_but_the_signed_payload(
    original: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    mutated = bytearray(original)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    del mutated[len(mutated) - cut % 3 :]  # sometimes truncate by one or two bytes
    check = verify1 if original is SIGNED1 else verify
    try:
        result = check(bytes(mutated))
    except EnvelopeError:
        return
    assert result.payload == PAYLOAD
    assert result.signer_ids <= ids(KEY_A, KEY_B)


@pytest.mark.parametrize(
    ("body_alg", "signers"),
    [
        (ALG_ED25519, (KEY_A,)),
        (ALG_ED25519, (KEY_EDDSA,)),
        (ALG_EDDSA, (KEY_EDDSA,)),
        (ALG_EDDSA, (KEY_A, KEY_EDDSA)),
    ],
    ids=["-19, -19 signer", "-19, -8 signer", "-8, -8 signer", "-8, -19 and -8 signers"],
)
def test_a_cose_sign_body_alg_is_ed25519_or_a_pinned_signers_alg(
    body_alg: int, signers: tuple[PrivateKey, ...]
) -> None:
    body = _protected({ALG: body_alg, CTY: CTYPE})
    signatures = [raw_signature(body, {ALG: key.alg}, key=key) for key in signers]
    assert verify(raw_sign(signatures, body), keys=WITH_EDDSA).signer_ids == ids(*signers)


def test_no_verifying_signature_is_told_apart_from_other_refusals() -> None:
    with pytest.raises(cose.UnverifiedEnvelopeError, match=ALTERED):
        verify(raw_sign([good_signature(UNTRUSTED)]))
    with pytest.raises(cose.UnverifiedEnvelopeError, match="pinned to Ed25519"):
        verify1(raw_sign1({ALG: ALG_EDDSA, CTY: CTYPE}))
    with pytest.raises(EnvelopeError, match="content type") as foreign:
        verify(
            cose.sign(PAYLOAD, keys=[KEY_A], content_type=content_type(Role.ROOT), external_aad=AAD)
        )
    assert not isinstance(foreign.value, cose.UnverifiedEnvelopeError)


def test_another_kind_of_object_is_told_apart_from_a_malformed_one() -> None:
    revocation = cose.sign(
        PAYLOAD, keys=[KEY_A], content_type=content_type(Role.REVOKE), external_aad=AAD
    )
    with pytest.raises(EnvelopeError, match="content type") as foreign:
        verify(revocation)
    assert not isinstance(foreign.value, cose.MalformedEnvelopeError)
    with pytest.raises(cose.MalformedEnvelopeError):
        verify(PAYLOAD)


def test_an_open_sign1_carries_any_headers_and_a_detached_payload() -> None:
    key = PrivateKey(bytes([7]) * 32, ALG_EDDSA)
    data = cose.sign1_open(
        b"root",
        key=key,
        protected={1: ALG_EDDSA, 395: 1, -65600: 3},
        unprotected={396: {-1: [b"proof"]}, -65602: "note"},
        detached=True,
    )
    parsed = cose.parse_sign1_open(data, max_bytes=1024, max_protected_bytes=256, what="r")
    assert parsed.payload is None and parsed.alg == ALG_EDDSA
    assert parsed.protected[-65600] == 3 and parsed.unprotected[-65602] == "note"
    assert parsed.verify(key.public, b"root")
    assert not parsed.verify(key.public, b"another root")


@pytest.mark.parametrize(
    ("protected", "unprotected", "message"),
    [
        ({1: -8, 2: [395]}, {}, "critical"),
        ({395: 1}, {1: -8}, "protected header only"),
        ({1: -7}, {}, "only Ed25519"),
    ],
)
def test_an_open_sign1_refuses_crit_and_unprotected_or_foreign_alg(
    protected: dict[int, object], unprotected: dict[int, object], message: str
) -> None:
    body = dcbor.encode(protected)
    data = dcbor.encode_tagged(18, [body, unprotected, b"x", bytes(64)])
    with pytest.raises(cose.MalformedEnvelopeError, match=message):
        cose.parse_sign1_open(data, max_bytes=1024, max_protected_bytes=256, what="r")

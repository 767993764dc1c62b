"""A connection's repeated requests and answers: what it remembers of the last one it
decoded (:class:`RequestDecoder`) or encoded (:class:`DecisionAnswers`) is used only for the
same request or result, and then gives exactly what decoding or encoding anew gives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.protocol import dcbor
from edge_agent.socket.errors import ProtocolError
from edge_agent.socket.wire import (
    MAX_REQUEST_ID,
    DecisionAnswers,
    DecisionResult,
    Op,
    RequestDecoder,
    WireRequest,
    decode_request,
    encode_decision,
    encode_request,
    split_request_id,
)

ALLOWED = DecisionResult(
    allowed=True,
    reason="allowed",
    message="allowed by rule 'r'",
    rule="r",
    bundle_version=3,
    bundle_digest=bytes(32),
    time=1_800_000_000,
    subject="exe:/usr/bin/x",
    selectors=("uid:0", "gid:0"),
)
DENIED = ALLOWED._replace(allowed=False, reason="no_match", message="no rule allows", rule=None)

IDS = [0, 1, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, MAX_REQUEST_ID]
"""Every integer form's edges: a request id may take any of them."""


def _body(request: WireRequest) -> bytes:
    return encode_request(request)[4:]


def _decided(decoder: RequestDecoder, payload: bytes) -> WireRequest | tuple[str, int | None]:
    """What ``decoder`` makes of ``payload``: the request, or the refusal's code and id."""
    try:
        return decoder.decode(payload)
    except ProtocolError as exc:
        return exc.code, exc.request_id


def _fresh(payload: bytes) -> WireRequest | tuple[str, int | None]:
    try:
        return decode_request(payload)
    except ProtocolError as exc:
        return exc.code, exc.request_id


ASKED = WireRequest(1, Op.DECIDE, "read", "/data/a", (("zone", "plant-a"),))


@pytest.mark.parametrize("request_id", IDS)
def test_the_same_request_again_is_decoded_with_its_own_id(request_id: int) -> None:
    decoder = RequestDecoder()
    decoder.decode(_body(ASKED))
    again = ASKED._replace(id=request_id)
    assert decoder.decode(_body(again)) == again


@pytest.mark.parametrize(
    "other",
    [
        ASKED._replace(resource="/data/b"),
        ASKED._replace(action="write"),
        ASKED._replace(context=(("zone", "plant-b"),)),
        ASKED._replace(context=()),
        ASKED._replace(want_receipt=True),
        ASKED._replace(parent=b"\x00" * 40),
        WireRequest(1, Op.IDENTIFY),
    ],
    ids=["resource", "action", "context", "no-context", "receipt", "parent", "identify"],
)
def test_a_different_request_is_never_given_the_last_ones_parse(other: WireRequest) -> None:
    decoder = RequestDecoder()
    decoder.decode(_body(ASKED))
    assert decoder.decode(_body(other)) == other
    assert decoder.decode(_body(ASKED._replace(id=9))) == ASKED._replace(id=9)


@pytest.mark.parametrize(
    "id_bytes",
    [
        b"\x18\x05",  # 5 in the 1-byte form: not the shortest
        b"\x19\x00\x20",  # 32 in the 2-byte form
        b"\x1a\x00\x00\x01\x00",  # 256 in the 4-byte form
        b"\x1b\x00\x00\x00\x00\x00\x01\x00\x00",  # 65,536 in the 8-byte form
        b"\x20",  # -1
        b"\xf5",  # true
        b"\x1c",  # a reserved integer form
        b"\x1b\x00",  # a truncated 8-byte integer
    ],
    ids=["long-1", "long-2", "long-4", "long-8", "negative", "bool", "reserved", "truncated"],
)
def test_a_malformed_id_after_a_remembered_request_is_refused_as_without_it(
    id_bytes: bytes,
) -> None:
    decoder = RequestDecoder()
    payload = _body(ASKED)
    decoder.decode(payload)
    split = split_request_id(payload)
    assert split is not None
    malformed = split[1][:7] + id_bytes + split[1][7:]
    assert _decided(decoder, malformed) == _fresh(malformed)
    assert isinstance(_fresh(malformed), tuple)


def test_split_request_id_finds_every_id_form() -> None:
    for request_id in IDS:
        split = split_request_id(_body(ASKED._replace(id=request_id)))
        assert split is not None
        assert split[0] == request_id
        assert split[1] == split_request_id(_body(ASKED))[1]  # type: ignore[index]


_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1)
_REQUESTS = st.builds(
    WireRequest,
    st.integers(0, MAX_REQUEST_ID),
    st.just(Op.DECIDE),
    st.sampled_from(["read", "write"]),
    st.sampled_from(["/a", "/b"]),
    st.sampled_from([(), (("k", "v"),), (("k", "w"),)]),
    st.sampled_from([None, b"\x01" * 8]),
    st.booleans(),
)
_PAYLOADS = st.one_of(
    _REQUESTS.map(_body),
    st.builds(lambda r, cut: _body(r)[:cut], _REQUESTS, st.integers(0, 40)),
    st.builds(
        lambda r, at, byte: (lambda b: b[:at] + bytes([byte]) + b[at + 1 :])(_body(r)),
        _REQUESTS,
        st.integers(0, 30),
        st.integers(0, 255),
    ),
)


@given(st.lists(_PAYLOADS, min_size=1, max_size=12))
def test_a_connections_decoder_answers_as_decoding_each_request_anew(
    payloads: list[bytes],
) -> None:
    decoder = RequestDecoder()
    for payload in payloads:
        assert _decided(decoder, payload) == _fresh(payload)


@pytest.mark.parametrize("request_id", IDS)
def test_the_same_result_again_is_answered_with_its_own_id(request_id: int) -> None:
    answers = DecisionAnswers()
    answers.encode(1, ALLOWED)
    assert answers.encode(request_id, ALLOWED) == encode_decision(request_id, ALLOWED)


@pytest.mark.parametrize(
    "other",
    [
        DENIED,
        ALLOWED._replace(time=ALLOWED.time + 1),
        ALLOWED._replace(selectors=("uid:1", "gid:0")),
        ALLOWED._replace(subject="exe:/usr/bin/y"),
        ALLOWED._replace(bundle_version=4),
        ALLOWED._replace(bundle_digest=b"\x01" * 32),
        ALLOWED._replace(receipt=b"\x02" * 64),
    ],
    ids=["denied", "time", "selectors", "subject", "version", "digest", "receipt"],
)
def test_a_different_result_is_never_given_the_last_answers_bytes(
    other: DecisionResult,
) -> None:
    answers = DecisionAnswers()
    answers.encode(1, ALLOWED)
    assert answers.encode(2, other) == encode_decision(2, other)
    assert answers.encode(3, ALLOWED) == encode_decision(3, ALLOWED)


def test_a_remembered_answer_decodes_as_deterministic_cbor() -> None:
    answers = DecisionAnswers()
    answers.encode(1, ALLOWED)
    body = answers.encode(MAX_REQUEST_ID, ALLOWED)[4:]
    assert dcbor.encode(dcbor.decode(body, max_bytes=len(body))) == body

"""The socket protocol as bytes: frames, strict requests, lenient responses, error shapes."""

from __future__ import annotations

import copy
import pickle
import sys
import typing
from collections.abc import Callable
from typing import Any

import pytest

from edge_agent.protocol import dcbor
from edge_agent.socket import wire
from edge_agent.socket.errors import AgentRequestError, ErrorCode, ProtocolError
from edge_agent.socket.wire import (
    MAX_CONTEXT_ITEMS,
    MAX_FIELD_CHARS,
    MAX_FRAME_BYTES,
    DecisionResult,
    IdentityResult,
    Op,
    WireRequest,
    closes_connection,
    decode_request,
    decode_response,
    encode_decision,
    encode_error,
    encode_identity,
    encode_request,
    frame,
    frame_length,
)
from tests.socket_helpers import REPO

RESULT = DecisionResult(
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


def _body(message: dict[str, object]) -> bytes:
    return dcbor.encode(message)


def _map(framed: bytes) -> dict[str, object]:
    value = dcbor.decode(framed[4:], max_bytes=1 << 20)
    assert isinstance(value, dict)
    return {str(k): v for k, v in value.items()}


def _decide(**extra: object) -> dict[str, object]:
    return {"v": 1, "id": 7, "op": "decide", "action": "read", "resource": "/a"} | extra


def test_a_request_round_trips_through_its_frame() -> None:
    request = WireRequest(9, Op.DECIDE, "exec", "/opt/x", (("a", "1"), ("b", "")))
    framed = encode_request(request)
    assert frame_length(framed[:4], MAX_FRAME_BYTES) == len(framed) - 4
    assert decode_request(framed[4:]) == request


def test_frame_lengths_are_checked_before_any_body_is_read() -> None:
    with pytest.raises(ProtocolError) as zero:
        frame_length(bytes(4), MAX_FRAME_BYTES)
    assert zero.value.code == "bad_frame"
    with pytest.raises(ProtocolError) as huge:
        frame_length((100 * 1024 * 1024).to_bytes(4, "big"), MAX_FRAME_BYTES)
    assert huge.value.code == "frame_too_large"
    assert "104857600" in str(huge.value)


@pytest.mark.parametrize(
    ("claim", "value"),
    [("subject", "svc:camera"), ("selectors", ["uid:0"])],
)
def test_a_request_naming_its_own_identity_is_refused(claim: str, value: object) -> None:
    with pytest.raises(ProtocolError, match="identity from the kernel") as refused:
        decode_request(_body(_decide(**{claim: value})))
    assert (refused.value.code, refused.value.request_id) == ("bad_request", 7)


@pytest.mark.parametrize(
    ("message", "code", "fragment"),
    [
        (_decide(v=2), "unsupported_version", "version 2"),
        (_decide(op="delete"), "unknown_op", "unknown op"),
        (_decide(extra=1), "bad_request", "'extra'"),
        ({"v": 1, "id": 7, "op": "decide", "resource": "/a"}, "bad_request", "'action'"),
        (_decide(action=""), "bad_request", "must not be empty"),
        (_decide(action=5), "bad_request", "must be text"),
        (_decide(resource="x" * (MAX_FIELD_CHARS + 1)), "bad_request", "over the limit"),
        (_decide(resource="/a\n/b"), "bad_request", "control characters"),
        (_decide(context=["a"]), "bad_request", "map of text"),
        (_decide(context={"k": 1}), "bad_request", "must be text"),
        (
            _decide(context={f"k{i}": "v" for i in range(MAX_CONTEXT_ITEMS + 1)}),
            "bad_request",
            "over the limit",
        ),
        (_decide(parent=None), "bad_request", "'parent' must be a receipt"),
        (_decide(want_receipt=None), "bad_request", "'want_receipt' must be true or false"),
    ],
    ids=[
        "version",
        "op",
        "unknown-key",
        "missing-action",
        "empty-action",
        "non-text-action",
        "long-resource",
        "control-char",
        "context-list",
        "context-int",
        "context-too-many",
        "null-parent",
        "null-want-receipt",
    ],
)
def test_malformed_requests_are_refused_with_a_code_and_their_id(
    message: dict[str, object], code: str, fragment: str
) -> None:
    with pytest.raises(ProtocolError, match=fragment) as refused:
        decode_request(_body(message))
    assert (refused.value.code, refused.value.request_id) == (code, 7)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\x00garbage",
        b"\xa1\x61v",
        dcbor.encode([1, 2, 3]),
        dcbor.encode({1: 2}),
        dcbor.encode({"v": 1, "id": -1, "op": "identify"}),
        dcbor.encode({"v": 1, "id": True, "op": "identify"}),
        # A non-deterministic encoding of {"v": 1}: the length of "v" in two bytes.
        b"\xa1\x78\x01v\x01",
    ],
    ids=["garbage", "truncated", "array", "int-keys", "negative-id", "bool-id", "non-canonical"],
)
def test_undecodable_requests_are_bad_requests_without_an_id(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode_request(payload)
    assert (refused.value.code, refused.value.request_id) == ("bad_request", None)


def test_exactly_c0_controls_and_del_are_refused_in_a_field() -> None:
    refused = [c for c in range(sys.maxunicode + 1) if wire._has_control(f"/a{chr(c)}b")]
    assert refused == [*range(0x20), 0x7F]
    # Unprintable, but not the control characters docs/socket.md section 5 forbids.
    unprintable = "/caf\u00e9\u0085\u00a0\u2028\U000e0001"
    assert decode_request(_body(_decide(resource=unprintable))).resource == unprintable
    with pytest.raises(ProtocolError, match="control characters"):
        decode_request(_body(_decide(resource=unprintable + "\x7f")))


def test_identify_takes_no_fields() -> None:
    assert decode_request(_body({"v": 1, "id": 1, "op": "identify"})) == WireRequest(1, Op.IDENTIFY)
    with pytest.raises(ProtocolError, match="'action'"):
        decode_request(_body({"v": 1, "id": 1, "op": "identify", "action": "x"}))


def test_decision_and_identity_responses_decode_to_typed_results() -> None:
    assert decode_response(encode_decision(4, RESULT)[4:]) == (4, RESULT)
    identity = IdentityResult(10, 0, 0, "exe:/x", ("uid:0",))
    assert decode_response(encode_identity(5, identity)[4:]) == (5, identity)


def test_responses_ignore_keys_a_newer_agent_adds() -> None:
    body = _map(encode_decision(4, RESULT))
    body["seq"] = 12
    assert decode_response(dcbor.encode(body)) == (4, RESULT)


def test_error_responses_raise_with_the_wire_code_and_id() -> None:
    with pytest.raises(AgentRequestError) as refused:
        decode_response(encode_error(3, ErrorCode.BAD_REQUEST, "no")[4:])
    assert (refused.value.code, refused.value.request_id) == ("bad_request", 3)
    versions = _map(encode_error(None, ErrorCode.UNSUPPORTED_VERSION, "no"))
    assert versions["versions"] == [1]


def test_an_error_code_this_client_does_not_know_is_kept_as_text() -> None:
    body = {"v": 1, "id": 3, "ok": False, "error": "rate_limited", "message": "later"}
    with pytest.raises(AgentRequestError) as refused:
        decode_response(dcbor.encode(body))
    assert (refused.value.code, refused.value.request_id) == ("rate_limited", 3)
    assert not closes_connection("rate_limited")


@pytest.mark.parametrize(
    "body",
    [
        {"v": 2, "id": 1, "ok": True},
        {"v": 1, "id": 1},
        {"v": 1, "id": 1, "ok": True, "op": "decide", "allowed": "yes"},
        {"v": 1, "id": 1, "ok": True, "op": "nope"},
        {"v": 1, "id": 1, "ok": False},
    ],
    ids=["version", "no-ok", "bad-type", "unknown-op", "error-without-code"],
)
def test_malformed_responses_are_protocol_errors(body: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        decode_response(dcbor.encode(body))


def _documented_error_codes() -> dict[str, bool]:
    """docs/socket.md's error-code table: each code and whether it closes the connection."""
    section = (REPO / "docs" / "socket.md").read_text().split("### Error codes\n", 1)[1]
    rows = section.lstrip().split("\n\n", 1)[0].splitlines()[2:]  # after the header and rule
    cells = [row.strip("|").split("|") for row in rows]
    return {code.strip(" `"): after.strip() == "closed" for code, _, after in cells}


def test_the_error_codes_and_the_ones_that_close_are_the_documented_ones() -> None:
    documented = _documented_error_codes()
    ours = {value for name, value in vars(ErrorCode).items() if name.isupper()}
    assert ours == set(documented)
    assert {code for code in ours if closes_connection(code)} == {
        code for code in ours if documented[code]
    }
    assert closes_connection(ErrorCode.BUSY) and not closes_connection(ErrorCode.BAD_REQUEST)


def test_the_client_refuses_to_encode_what_the_server_would_refuse() -> None:
    with pytest.raises(ValueError, match="control"):
        encode_request(WireRequest(1, Op.DECIDE, "read", "/a\x00"))
    with pytest.raises(ValueError, match="empty"):
        encode_request(WireRequest(1, Op.DECIDE, "", "/a"))


def test_frame_prefixes_the_big_endian_length() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"


class _TypingRequest(typing.NamedTuple):
    """WireRequest's fields as typing.NamedTuple builds them: what _records must match."""

    id: int
    op: str
    action: str = ""
    resource: str = ""
    context: tuple[tuple[str, str], ...] = ()
    parent: bytes | None = None
    want_receipt: bool = False


def _matched(cls: type[Any]) -> object:
    match cls(3, "decide", "read"):
        case cls(number, op, action=action):
            return number, op, action
    return None


_RECORD_BEHAVIOURS: dict[str, Callable[[type[Any]], object]] = {
    "positional": lambda cls: cls(3, "decide", "read"),
    "keywords": lambda cls: cls(op="identify", id=4),
    "missing": lambda cls: cls(3),
    "too-many": lambda cls: cls(1, "decide", "a", "b", (), None, False, "extra"),
    "unknown-keyword": lambda cls: cls(1, "decide", colour="red"),
    "repeated": lambda cls: cls(1, "decide", id=2),
    "fields": lambda cls: (cls._fields, cls._field_defaults, cls.__match_args__),
    "replace": lambda cls: cls(3, "decide")._replace(resource="/x", action="read"),
    "replace-unknown": lambda cls: cls(3, "decide")._replace(colour="red"),
    "make": lambda cls: cls._make(iter([1, "decide", "a", "b", (), None, False])),
    "make-short": lambda cls: cls._make([1]),
    "asdict": lambda cls: cls(3, "decide")._asdict(),
    "repr": lambda cls: repr(cls(3, "decide", "r")).replace(cls.__name__, "R"),
    "tuple": lambda cls: (
        cls(3, "decide") == (3, "decide", "", "", (), None, False),
        isinstance(cls(3, ""), tuple),
    ),
    "hash": lambda cls: hash(cls(3, "decide")) == hash((3, "decide", "", "", (), None, False)),
    "order": lambda cls: sorted([cls(2, "b"), cls(1, "a"), cls(1, "")]),
    "unpack": lambda cls: [*cls(3, "decide")],
    "read-only": lambda cls: setattr(cls(3, "decide"), "id", 4),
    "no-dict": lambda cls: hasattr(cls(3, "decide"), "__dict__"),
    "match": _matched,
    "copy": lambda cls: copy.deepcopy(cls(3, "decide", context=(("a", "b"),))),
}


def _outcome(behaviour: Callable[[type[Any]], object], cls: type[Any]) -> tuple[str, object]:
    try:
        return "returns", behaviour(cls)
    except Exception as exc:
        return "raises", type(exc)


@pytest.mark.parametrize("behaviour", list(_RECORD_BEHAVIOURS))
def test_wire_records_behave_as_typing_named_tuples(behaviour: str) -> None:
    check = _RECORD_BEHAVIOURS[behaviour]
    assert _outcome(check, WireRequest) == _outcome(check, _TypingRequest)


def test_wire_records_pickle_and_keep_their_docstrings() -> None:
    request = WireRequest(3, Op.DECIDE, "read", "/x", (("a", "b"),))
    assert pickle.loads(pickle.dumps(request)) == request
    assert type(pickle.loads(pickle.dumps(request))) is WireRequest
    assert WireRequest.__doc__ and "decoded request" in WireRequest.__doc__
    assert WireRequest.__module__ == "edge_agent.socket.wire"


def test_a_record_class_with_more_than_fields_is_refused() -> None:
    from edge_agent.socket._records import NamedTuple

    with pytest.raises(TypeError, match="only fields"):

        class WithMethod(NamedTuple):  # type: ignore[misc]
            x: int

            def twice(self) -> int:
                return 2 * self.x

    with pytest.raises(TypeError, match="follows one with a default"):

        class DefaultFirst(NamedTuple):  # type: ignore[misc]
            x: int = 0
            y: int  # type: ignore[misc]

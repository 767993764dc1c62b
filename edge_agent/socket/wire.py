"""The decision-socket protocol, version 1: frames, messages, limits and error shapes.

A frame is a 4-byte unsigned big-endian length ``N`` followed by ``N`` bytes holding one
deterministic-CBOR map (RFC 8949 section 4.2, decoded strictly by
:func:`edge_agent.protocol.dcbor.decode`). Requests carry ``v`` (the protocol version),
``id`` (echoed in the response, so a client may pipeline), ``op`` and the op's fields;
responses carry ``v``, ``id``, ``ok`` and either the result or ``error`` and ``message``.
docs/socket.md is the long form, written so a client in any language can be built from it.

Invariants:
- The request says *what* is asked, never *who* asks: ``subject``, ``selectors`` or any
  other key outside the schema is refused (``bad_request``). The server takes the caller's
  identity from the kernel (:mod:`edge_agent.socket.peer`).
- Requests are validated strictly (unknown keys refused, every field bounded); responses are
  read leniently (unknown keys ignored) so a newer agent can add fields within version 1.
- The length is checked before a single byte of the body is read: a declared length over
  the limit is answered with ``frame_too_large`` and the connection closed.

This module does no I/O: the server and the clients move the bytes. ``edge-agent exec``
imports it before every gated program, so it keeps its imports lean: its values are named
tuples (not dataclasses, which import ``inspect``) built without importing ``typing``
(:mod:`edge_agent.socket._records`), its ops and error codes are classes of string constants
(not enums: :mod:`enum` and what it imports cost the gate about 3 ms of start-up), messages
are encoded with the socket's own codec (:mod:`edge_agent.socket._cbor`), fields are checked
without :mod:`re`, and cbor2 is imported only by the server's request decoder.
"""

from __future__ import annotations

from edge_agent.errors import EnvelopeError
from edge_agent.socket import _cbor
from edge_agent.socket.errors import AgentRequestError, ErrorCode, ProtocolError

TYPE_CHECKING = False
"""Not :data:`typing.TYPE_CHECKING`: ``edge-agent exec`` imports this module, and importing
:mod:`typing` would cost it milliseconds of start-up (see :mod:`edge_agent.socket._records`)."""
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Final, Literal, NamedTuple, TypeAlias, TypeVar

    _T = TypeVar("_T")

    from edge_agent.socket.errors import ErrorCodeValue

    OpValue: TypeAlias = Literal["decide", "identify"]
    """One of :class:`Op`'s constants: what a request may ask."""
else:
    from edge_agent.socket._records import NamedTuple

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "HEADER_BYTES",
    "MAX_CONTEXT_ITEMS",
    "MAX_FIELD_CHARS",
    "MAX_FRAME_BYTES",
    "MAX_PARENT_BYTES",
    "MAX_REQUEST_ID",
    "MAX_RESPONSE_BYTES",
    "PROTOCOL_VERSION",
    "SOCKET_PATH_ENV",
    "DecisionAnswers",
    "DecisionResult",
    "IdentityResult",
    "Op",
    "RequestDecoder",
    "WireRequest",
    "closes_connection",
    "decode_request",
    "decode_response",
    "encode_decision",
    "encode_error",
    "encode_identity",
    "encode_request",
    "frame",
    "frame_length",
    "split_request_id",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (PROTOCOL_VERSION,)

DEFAULT_SOCKET_PATH = "/run/edge-agent/agent.sock"
SOCKET_PATH_ENV = "EDGE_AGENT_SOCKET"
"""Environment variable the clients read for the socket path (the server never reads it)."""

HEADER_BYTES = 4
"""Length prefix of every frame: unsigned 32-bit big-endian body length, in bytes."""

MAX_FRAME_BYTES = 64 * 1024
"""Default (and documented) largest request body the server reads, in bytes."""

MAX_RESPONSE_BYTES = 1024 * 1024
"""Largest response body a client accepts, in bytes (responses are small; this bounds a
misbehaving peer)."""

MAX_FIELD_CHARS = 4096
"""Longest ``action``, ``resource``, context key or context value, in characters."""

MAX_CONTEXT_ITEMS = 64
"""Most ``context`` pairs in one request."""

MAX_REQUEST_ID = 2**64 - 1

MAX_PARENT_BYTES = 16 * 1024
"""Largest ``parent`` receipt a request may carry, in bytes: the agent's own bound on a
parent receipt (``edge_agent.trust.parent.MAX_PARENT_RECEIPT_BYTES``; a test holds them
equal), checked here so an oversized one is refused before it is read any further."""

_CONTROL_CHARS = frozenset(map(chr, [*range(0x20), 0x7F]))
"""C0 controls and DEL: never in a field. Checked without :mod:`re`, whose import (seven
modules) is over a millisecond of ``edge-agent exec``'s start-up."""
_DECIDE_KEYS = frozenset(
    {"v", "id", "op", "action", "resource", "context", "parent", "want_receipt"}
)
_IDENTIFY_KEYS = frozenset({"v", "id", "op"})


class Op:
    """What a request asks for: the ``op`` values (plain strings; the type is ``OpValue``)."""

    DECIDE: Final = "decide"
    IDENTIFY: Final = "identify"


_OPS: tuple[OpValue, ...] = (Op.DECIDE, Op.IDENTIFY)


_CLOSING: frozenset[ErrorCodeValue] = frozenset(
    {
        ErrorCode.BAD_FRAME,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.IDENTITY_UNVERIFIED,
        ErrorCode.BUSY,
        ErrorCode.SHUTTING_DOWN,
    }
)


def closes_connection(code: str) -> bool:
    """Whether the server closes the connection after an error with ``code``."""
    return code in _CLOSING


class WireRequest(NamedTuple):
    """One decoded request: what is asked. ``context`` is sorted by key; ``parent`` is the
    receipt of the decision that caused this one, if any; ``want_receipt`` asks for this
    decision's own receipt in the answer."""

    id: int
    op: OpValue
    action: str = ""
    resource: str = ""
    context: tuple[tuple[str, str], ...] = ()
    parent: bytes | None = None
    want_receipt: bool = False


class DecisionResult(NamedTuple):
    """The agent's answer to ``decide``: allowed or not, why, under which bundle, and the
    identity the kernel reported for the caller (what the policy was evaluated against)."""

    allowed: bool
    reason: str
    message: str
    rule: str | None
    bundle_version: int | None
    bundle_digest: bytes | None
    time: int
    subject: str
    selectors: tuple[str, ...]
    receipt: bytes | None = None
    """The decision's receipt, when asked for (``want_receipt``) and made."""


class IdentityResult(NamedTuple):
    """The caller as the agent sees it (``identify``): kernel credentials and selectors."""

    pid: int
    uid: int
    gid: int
    subject: str
    selectors: tuple[str, ...]


def frame(payload: bytes) -> bytes:
    """``payload`` with its length prefix."""
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


def frame_length(header: bytes, max_bytes: int) -> int:
    """The body length a frame header declares, checked against ``max_bytes``.

    Raises:
        ProtocolError: ``bad_frame`` (zero length) or ``frame_too_large``.
    """
    length = int.from_bytes(header, "big")
    if length == 0:
        raise ProtocolError("a frame must hold one CBOR map; got length 0", code="bad_frame")
    if length > max_bytes:
        raise ProtocolError(
            f"the frame declares {length} bytes, over the {max_bytes}-byte limit",
            code="frame_too_large",
        )
    return length


def encode_request(request: WireRequest) -> bytes:
    """The framed request (client side).

    Raises:
        ValueError: a field is out of bounds (the server would refuse it).
    """
    message: dict[str, object] = {"v": PROTOCOL_VERSION, "id": request.id, "op": request.op}
    if request.op == Op.DECIDE:
        _check_text(request.action, "action", ValueError)
        _check_text(request.resource, "resource", ValueError)
        message["action"] = request.action
        message["resource"] = request.resource
        if request.context:
            if len(request.context) > MAX_CONTEXT_ITEMS:
                raise ValueError(f"at most {MAX_CONTEXT_ITEMS} context items")
            for key, value in request.context:
                _check_text(key, "context key", ValueError)
                _check_text(value, "context value", ValueError, allow_empty=True)
            message["context"] = dict(request.context)
        if request.parent is not None:
            _check_parent(request.parent, ValueError)
            message["parent"] = request.parent
        if request.want_receipt:
            message["want_receipt"] = True
    return frame(_cbor.encode(message))


def decode_request(payload: bytes) -> WireRequest:
    """Decode and validate one request body (server side).

    Raises:
        ProtocolError: with the wire ``code`` to answer and the ``id`` when it was readable.
    """
    # Imported here, not at the top: only the server decodes requests, and the clients
    # (``edge-agent exec`` above all) must not pay cbor2's import at start-up.
    from edge_agent.protocol import dcbor

    try:
        decoded = dcbor.decode(payload, max_bytes=len(payload), what="request")
    except EnvelopeError as exc:
        raise ProtocolError(str(exc), code="bad_request") from exc
    value = _text_map(decoded)
    if value is None:
        raise ProtocolError("a request must be a CBOR map with text keys")
    request_id = value.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 0:
        raise ProtocolError("request 'id' must be an unsigned integer")
    version = value.get("v")
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            f"protocol version {version!r} is not supported; this agent speaks "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
            code="unsupported_version",
            request_id=request_id,
        )
    op = value.get("op")
    if op == Op.DECIDE:
        _check_keys(value, _DECIDE_KEYS, request_id)
        parent = value.get("parent")
        if "parent" in value:
            _check_parent(parent, ProtocolError, request_id=request_id)
        want_receipt = value.get("want_receipt", False)
        if not isinstance(want_receipt, bool):
            raise ProtocolError(
                "request 'want_receipt' must be true or false", request_id=request_id
            )
        return WireRequest(
            request_id,
            Op.DECIDE,
            _field(value, "action", request_id),
            _field(value, "resource", request_id),
            _context(value.get("context", {}), request_id),
            parent,  # type: ignore[arg-type]
            want_receipt,
        )
    if op == Op.IDENTIFY:
        _check_keys(value, _IDENTIFY_KEYS, request_id)
        return WireRequest(request_id, Op.IDENTIFY)
    raise ProtocolError(
        f"unknown op {op!r}; expected one of {', '.join(_OPS)}",
        code="unknown_op",
        request_id=request_id,
    )


_ID_KEY_PREFIX = b"\x61\x76\x01\x62\x69\x64"
"""What follows the map head of every version-1 message: ``"v": 1``, then the key ``"id"``
(the two keys every request and answer has, first in deterministic key order)."""
_ID_AT = 1 + len(_ID_KEY_PREFIX)
"""Where the ``id`` value starts in a message whose map head is one byte (up to 23 keys)."""
_ONE_BYTE_UINTS = tuple(bytes((value,)) for value in range(24))
"""The unsigned integers 0 to 23 as CBOR: one byte, the value itself (RFC 8949 3.1)."""
_SHORTEST_FROM = (24, 0x100, 0x10000, 0x100000000)
"""Smallest value each of the 1, 2, 4 and 8-byte integer forms may carry (shortest form)."""


def split_request_id(payload: bytes) -> tuple[int, bytes] | None:
    """A request body's ``id`` and the rest of its bytes (the body with the id's value cut
    out), when the body starts as every well-formed version-1 request does, with the id in
    shortest form; ``None`` otherwise (the full decoder then decides what is wrong).

    Two bodies with the same rest decode to the same request but for the id: the id is an
    unsigned integer item in a fixed place, and its value changes neither the keys, their
    order, nor where the other items start or end."""
    if (
        len(payload) <= _ID_AT
        or not 0xA1 <= payload[0] <= 0xB7
        or payload[1:_ID_AT] != _ID_KEY_PREFIX
    ):
        return None
    head = payload[_ID_AT]
    if head < 24:
        return head, payload[:_ID_AT] + payload[_ID_AT + 1 :]
    if head > 27:
        return None
    end = _ID_AT + 1 + (1 << (head - 24))
    value = int.from_bytes(payload[_ID_AT + 1 : end], "big")
    if len(payload) < end or value < _SHORTEST_FROM[head - 24]:
        return None
    return value, payload[:_ID_AT] + payload[end:]


class RequestDecoder:
    """:func:`decode_request` for the requests of one connection, remembering the last one
    it decoded: a client asking the same thing again (only the id differs, as a workload
    asking about the same resource does) gets the earlier parse with its own id, without
    the request being decoded and validated again. Anything else is decoded in full: the
    remembered parse is used only for bytes equal to the decoded ones but for a
    shortest-form id (:func:`split_request_id`)."""

    __slots__ = ("_request", "_rest")

    def __init__(self) -> None:
        self._rest: bytes | None = None
        self._request: WireRequest | None = None

    def decode(self, payload: bytes) -> WireRequest:
        """As :func:`decode_request`.

        Raises:
            ProtocolError: as :func:`decode_request`.
        """
        split = split_request_id(payload)
        last = self._request
        if split is not None and last is not None and split[1] == self._rest:
            return WireRequest(split[0], *last[1:])
        request = decode_request(payload)
        if split is not None and split[0] == request.id:
            self._rest, self._request = split[1], request
        return request


def _check_keys(value: Mapping[str, object], allowed: frozenset[str], request_id: int) -> None:
    unknown = sorted(set(value) - allowed)
    if not unknown:
        return
    if {"subject", "selectors"} & set(unknown):
        raise ProtocolError(
            "a request may not name its subject or selectors: the agent takes the caller's "
            "identity from the kernel",
            request_id=request_id,
        )
    raise ProtocolError(
        f"unknown request key(s) {', '.join(map(repr, unknown))}; a {value.get('op')} request "
        f"holds {', '.join(sorted(allowed))}",
        request_id=request_id,
    )


def _field(value: Mapping[str, object], name: str, request_id: int) -> str:
    if name not in value:
        raise ProtocolError(f"a decide request needs {name!r}", request_id=request_id)
    text = value[name]
    _check_text(text, name, ProtocolError, request_id=request_id)
    assert isinstance(text, str)
    return text


def _context(raw: object, request_id: int) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        raise ProtocolError(
            "request 'context' must be a map of text to text", request_id=request_id
        )
    if len(raw) > MAX_CONTEXT_ITEMS:
        raise ProtocolError(
            f"request 'context' has {len(raw)} items, over the limit of {MAX_CONTEXT_ITEMS}",
            request_id=request_id,
        )
    for key, item in raw.items():
        _check_text(key, "context key", ProtocolError, request_id=request_id)
        _check_text(item, f"context value of {key!r}", ProtocolError, True, request_id=request_id)
    return tuple(sorted(raw.items()))


def _check_text(
    value: object,
    what: str,
    error: type[Exception],
    allow_empty: bool = False,
    *,
    request_id: int | None = None,
) -> None:
    problem = None
    if not isinstance(value, str):
        problem = f"{what} must be text"
    elif not value and not allow_empty:
        problem = f"{what} must not be empty"
    elif len(value) > MAX_FIELD_CHARS:
        problem = f"{what} is {len(value)} characters, over the limit of {MAX_FIELD_CHARS}"
    elif _has_control(value):
        problem = f"{what} must not contain control characters"
    if problem is None:
        return
    if error is ProtocolError:
        raise ProtocolError(problem, request_id=request_id)
    raise error(problem)


def _check_parent(value: object, error: type[Exception], *, request_id: int | None = None) -> None:
    if isinstance(value, bytes) and 0 < len(value) <= MAX_PARENT_BYTES:
        return
    problem = f"request 'parent' must be a receipt of 1 to {MAX_PARENT_BYTES} bytes"
    if error is ProtocolError:
        raise ProtocolError(problem, request_id=request_id)
    raise error(problem)


def _has_control(value: str) -> bool:
    # Every control character is unprintable, so the common case is one C-speed scan.
    return not value.isprintable() and not _CONTROL_CHARS.isdisjoint(value)


_DECISION_SHAPE_KEYS = (
    "v",
    "id",
    "ok",
    "op",
    "allowed",
    "reason",
    "message",
    "rule",
    "bundle_version",
    "bundle_digest",
    "time",
    "subject",
    "selectors",
)
_DECISION_SHAPE = _cbor.MapShape(*_DECISION_SHAPE_KEYS)
_RECEIPT_DECISION_SHAPE = _cbor.MapShape(*_DECISION_SHAPE_KEYS, "receipt")
_IDENTITY_SHAPE = _cbor.MapShape("v", "id", "ok", "op", "pid", "uid", "gid", "subject", "selectors")


def encode_decision(request_id: int, result: DecisionResult) -> bytes:
    """The framed ``decide`` response; ``receipt`` is in it only when there is one, so every
    other answer keeps its bytes."""
    values: dict[str, object] = {
        "v": PROTOCOL_VERSION,
        "id": request_id,
        "ok": True,
        "op": "decide",
        "allowed": result.allowed,
        "reason": result.reason,
        "message": result.message,
        "rule": result.rule,
        "bundle_version": result.bundle_version,
        "bundle_digest": result.bundle_digest,
        "time": result.time,
        "subject": result.subject,
        "selectors": result.selectors,
    }
    if result.receipt is None:
        return frame(_DECISION_SHAPE.encode(values))
    values["receipt"] = result.receipt
    return frame(_RECEIPT_DECISION_SHAPE.encode(values))


class DecisionAnswers:
    """:func:`encode_decision` for the answers of one connection, remembering the last
    answer's bytes on either side of its id: the same outcome for the same caller within
    the same second (what a workload asking again gets) is written by splicing in the new
    id, not encoded again. Any other result, and any answer carrying a receipt, is encoded
    in full."""

    __slots__ = ("_after_id", "_before_id", "_framed_before_id", "_result")

    def __init__(self) -> None:
        self._result: DecisionResult | None = None
        self._before_id = b""
        self._after_id = b""
        self._framed_before_id = b""
        """The length header of the answer with a one-byte id (0 to 23), then
        :attr:`_before_id`: such an answer is these bytes, the id's byte, the rest."""

    def encode(self, request_id: int, result: DecisionResult) -> bytes:
        """As :func:`encode_decision`."""
        if result.receipt is not None:
            return encode_decision(request_id, result)
        if result is not self._result and result != self._result:
            body = encode_decision(0, result)[HEADER_BYTES:]
            if body[_ID_AT] != 0 or body[1:_ID_AT] != _ID_KEY_PREFIX:
                return encode_decision(request_id, result)
            self._result = result
            self._before_id, self._after_id = body[:_ID_AT], body[_ID_AT + 1 :]
            self._framed_before_id = len(body).to_bytes(HEADER_BYTES, "big") + self._before_id
        if 0 <= request_id < len(_ONE_BYTE_UINTS):
            return self._framed_before_id + _ONE_BYTE_UINTS[request_id] + self._after_id
        body = self._before_id + _cbor.encode(request_id) + self._after_id
        return len(body).to_bytes(HEADER_BYTES, "big") + body


def encode_identity(request_id: int, result: IdentityResult) -> bytes:
    """The framed ``identify`` response."""
    return frame(
        _IDENTITY_SHAPE.encode(
            {
                "v": PROTOCOL_VERSION,
                "id": request_id,
                "ok": True,
                "op": "identify",
                "pid": result.pid,
                "uid": result.uid,
                "gid": result.gid,
                "subject": result.subject,
                "selectors": result.selectors,
            }
        )
    )


def encode_error(request_id: int | None, code: ErrorCodeValue, message: str) -> bytes:
    """The framed error response; ``request_id`` is ``None`` when the request had none."""
    body: dict[str, object] = {
        "v": PROTOCOL_VERSION,
        "id": request_id,
        "ok": False,
        "error": code,
        "message": message,
    }
    if code == ErrorCode.UNSUPPORTED_VERSION:
        body["versions"] = list(SUPPORTED_VERSIONS)
    return frame(_cbor.encode(body))


def decode_response(payload: bytes) -> tuple[int | None, DecisionResult | IdentityResult]:
    """Decode one response body (client side): the id it answers and the result.

    Raises:
        AgentRequestError: the agent answered with an error (``code`` is the wire code).
        ProtocolError: the bytes are not a version-1 response.
    """
    if len(payload) > MAX_RESPONSE_BYTES:
        raise ProtocolError(
            f"the agent sent a {len(payload)}-byte response, over the {MAX_RESPONSE_BYTES}-byte "
            "limit"
        )
    try:
        decoded = _cbor.decode(payload)
    except ValueError as exc:
        raise ProtocolError(f"the agent sent a malformed response: {exc}") from exc
    value = _text_map(decoded)
    if value is None or value.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("the agent's response is not a version-1 response map")
    request_id = value.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, int)):
        raise ProtocolError("the agent's response has a malformed 'id'")
    if value.get("ok") is False:
        code, message = value.get("error"), value.get("message")
        if not isinstance(code, str) or not isinstance(message, str):
            raise ProtocolError("the agent's error response lacks 'error' or 'message'")
        raise AgentRequestError(
            f"the agent refused the request ({code}): {message}", code=code, request_id=request_id
        )
    if value.get("ok") is not True:
        raise ProtocolError("the agent's response lacks 'ok'")
    op = value.get("op")
    try:
        if op == Op.DECIDE:
            return request_id, _decision_result(value)
        if op == Op.IDENTIFY:
            return request_id, _identity_result(value)
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"the agent's {op!r} response is malformed: {exc}") from exc
    raise ProtocolError(f"the agent answered an unknown op {op!r}")


def _text_map(value: object) -> Mapping[str, object] | None:
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        text_keyed: Mapping[str, object] = value
        return text_keyed
    return None


def _decision_result(value: Mapping[str, object]) -> DecisionResult:
    return DecisionResult(
        allowed=_typed(value, "allowed", bool),
        reason=_typed(value, "reason", str),
        message=_typed(value, "message", str),
        rule=_optional(value, "rule", str),
        bundle_version=_optional(value, "bundle_version", int),
        bundle_digest=_optional(value, "bundle_digest", bytes),
        time=_typed(value, "time", int),
        subject=_typed(value, "subject", str),
        selectors=_texts(value, "selectors"),
        receipt=_optional(value, "receipt", bytes),
    )


def _identity_result(value: Mapping[str, object]) -> IdentityResult:
    return IdentityResult(
        pid=_typed(value, "pid", int),
        uid=_typed(value, "uid", int),
        gid=_typed(value, "gid", int),
        subject=_typed(value, "subject", str),
        selectors=_texts(value, "selectors"),
    )


def _typed(value: Mapping[str, object], key: str, kind: type[_T]) -> _T:
    item = value[key]
    if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
        raise TypeError(f"{key!r} must be {kind.__name__}")
    return item


def _optional(value: Mapping[str, object], key: str, kind: type[_T]) -> _T | None:
    return None if value.get(key) is None else _typed(value, key, kind)


def _texts(value: Mapping[str, object], key: str) -> tuple[str, ...]:
    items = _typed(value, key, list)
    if not all(isinstance(item, str) for item in items):
        raise TypeError(f"{key!r} must be a list of text")
    return tuple(items)

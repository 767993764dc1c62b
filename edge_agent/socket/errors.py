"""Errors of the decision socket, on both ends. Every one of them means "not allowed".

- :class:`ProtocolError`: bytes that are not a valid version-1 message (either direction);
  ``code`` is the wire error code the server answers with.
- :class:`IdentityError`: the server could not establish, from the kernel, who is asking.
- :class:`AgentUnavailableError`: the client could not reach the agent, or the agent did
  not answer in time or dropped the connection.
- :class:`AgentRequestError`: the agent answered with an error shape (``code`` says which).
"""

from __future__ import annotations

from edge_agent.errors import EdgeGovError

TYPE_CHECKING = False
"""Not :data:`typing.TYPE_CHECKING`: ``edge-agent exec`` imports this module, and importing
:mod:`typing` would cost it milliseconds of start-up."""
if TYPE_CHECKING:
    from typing import Final, Literal, TypeAlias

    ErrorCodeValue: TypeAlias = Literal[
        "bad_frame",
        "frame_too_large",
        "bad_request",
        "unsupported_version",
        "unknown_op",
        "identity_unverified",
        "busy",
        "shutting_down",
        "internal_error",
    ]
    """One of :class:`ErrorCode`'s constants: an error this agent may answer with."""

__all__ = [
    "AgentRequestError",
    "AgentUnavailableError",
    "ErrorCode",
    "IdentityError",
    "ProtocolError",
    "SocketError",
]


class ErrorCode:
    """The ``error`` of an error response (docs/socket.md section 5): plain strings, the type
    is ``ErrorCodeValue``. A client keeps a code it does not know as text (a newer agent may
    add codes within version 1). Defined with the errors because :class:`ProtocolError`
    carries one; :mod:`edge_agent.socket.wire` encodes them."""

    BAD_FRAME: Final = "bad_frame"
    FRAME_TOO_LARGE: Final = "frame_too_large"
    BAD_REQUEST: Final = "bad_request"
    UNSUPPORTED_VERSION: Final = "unsupported_version"
    UNKNOWN_OP: Final = "unknown_op"
    IDENTITY_UNVERIFIED: Final = "identity_unverified"
    BUSY: Final = "busy"
    SHUTTING_DOWN: Final = "shutting_down"
    INTERNAL_ERROR: Final = "internal_error"


class SocketError(EdgeGovError):
    """Base of every decision-socket error; a caller that catches it must deny."""

    code = "socket_error"


class ProtocolError(SocketError):
    """A frame or message breaks the socket protocol; ``code`` is the
    :class:`ErrorCode` the server answers with as it is (its type
    holds it to the protocol's codes), ``request_id`` the request's id when it was readable."""

    code: ErrorCodeValue = "bad_request"

    def __init__(
        self, message: str, *, code: ErrorCodeValue | None = None, request_id: int | None = None
    ):
        super().__init__(message, code=code)
        self.request_id = request_id


class IdentityError(SocketError):
    """The caller's identity could not be taken from the kernel, or changed under us."""

    code = "identity_unverified"


class AgentUnavailableError(SocketError):
    """The agent's socket cannot be reached, timed out, or closed the connection."""

    code = "agent_unavailable"


class AgentRequestError(SocketError):
    """The agent refused the request with an error response; ``code`` is the wire code and
    ``request_id`` the id it answered (``None`` for a connection-level error)."""

    code = "agent_error"

    def __init__(self, message: str, *, code: str, request_id: int | None = None):
        super().__init__(message, code=code)
        self.request_id = request_id

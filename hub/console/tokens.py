"""Console login tokens and roles, as ``edge-hub console token`` makes them (no web stack).

A token is 256 random bits shown once; the registry keeps only its SHA-256 digest
(:class:`~hub.registry.records.ConsoleToken`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from enum import StrEnum

__all__ = ["TOKEN_NAME", "Role", "new_token", "token_digest"]

TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""What a token's name may be: a person or a purpose, 1 to 64 characters."""
_TOKEN_PREFIX = "egc_"


class Role(StrEnum):
    """What a token may do: ``viewer`` reads every page; ``operator`` also acts."""

    VIEWER = "viewer"
    OPERATOR = "operator"


def new_token() -> str:
    """A fresh login token: 256 random bits, URL-safe text."""
    return _TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    """What the registry stores of ``token``: its SHA-256 (a 256-bit random token needs no
    slow hash: nothing can be guessed from the digest)."""
    return hashlib.sha256(token.encode("utf-8")).digest()

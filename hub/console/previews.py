"""One-shot tokens tying a governance action's confirmation to its preview.

A preview (``/actions/{kind}/preview``) issues a random nonce, held here and bound to the
session that asked, the action and a digest of exactly what was previewed (the bundle, the
revocation's scope, region and reason, ...); the confirmation page sends it back. A confirm
is carried out only if it consumes a live nonce with the same session, action and digest.
Consuming is one synchronous step on the event loop (no ``await`` between the check and the
mark), so of several confirms of one preview sent at once, exactly one goes ahead: the
others are told it is already done. A confirm that matches no preview (never previewed,
changed since, another session's) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["MAX_PREVIEWS", "PREVIEW_TTL_S", "Previews", "Verdict", "content_digest"]

PREVIEW_TTL_S = 15 * 60
"""A preview must be confirmed within this long."""
MAX_PREVIEWS = 4096
"""Previews held (oldest dropped first): a dropped one must be previewed again."""


def content_digest(*parts: str) -> str:
    """A digest of what a preview showed, from the values its confirmation sends back (line
    breaks normalised: browsers send a hidden field's LF as CRLF)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.replace("\r\n", "\n").encode("utf-8")
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


class Verdict(StrEnum):
    """What consuming a preview's nonce found."""

    GO = "go"
    ALREADY_DONE = "already_done"
    EXPIRED = "expired"
    NO_PREVIEW = "no_preview"

    @property
    def refusal(self) -> str:
        """The sentence a refused confirmation shows (and the audit log keeps)."""
        return {
            Verdict.GO: "",
            Verdict.ALREADY_DONE: (
                "already done: this preview was confirmed once; preview the action again to "
                "repeat it"
            ),
            Verdict.EXPIRED: "the preview expired (15 minutes): preview the action again",
            Verdict.NO_PREVIEW: (
                "this confirmation matches no preview of yours (never previewed, or changed "
                "since): preview the action and confirm from its page"
            ),
        }[self]


@dataclass(slots=True)
class _Preview:
    session: str
    action: str
    digest: str
    expires_at: int
    used: bool = False


class Previews:
    """Live previews by nonce, bounded."""

    def __init__(self, max_previews: int = MAX_PREVIEWS) -> None:
        self._max = max_previews
        self._previews: OrderedDict[str, _Preview] = OrderedDict()

    def issue(self, session: str, action: str, digest: str, now: int) -> str:
        """A new nonce for ``session``'s preview of ``action`` on content ``digest``."""
        nonce = secrets.token_urlsafe(24)
        self._previews[nonce] = _Preview(session, action, digest, now + PREVIEW_TTL_S)
        while len(self._previews) > self._max:
            self._previews.popitem(last=False)
        return nonce

    def consume(self, nonce: str, session: str, action: str, digest: str, now: int) -> Verdict:
        """Use ``nonce`` for ``session``'s confirm of ``action`` on ``digest``: :attr:`GO`
        once, then :attr:`ALREADY_DONE`; a nonce issued for anything else is
        :attr:`NO_PREVIEW`."""
        preview = self._previews.get(nonce)
        if preview is None or not (
            hmac.compare_digest(preview.session, session)
            and preview.action == action
            and hmac.compare_digest(preview.digest, digest)
        ):
            return Verdict.NO_PREVIEW
        if preview.used:
            return Verdict.ALREADY_DONE
        if now > preview.expires_at:
            del self._previews[nonce]
            return Verdict.EXPIRED
        preview.used = True
        return Verdict.GO

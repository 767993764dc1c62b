"""``dcbor.encode`` writes the deterministic encoding of a map whose keys are subclasses of
``str`` or ``int``: cbor2 writes the underlying text or integer, so such keys are ordered
by what is written, never by the subclass's own ``encode()`` or comparisons. Found by
session 13's hostile test: a plain-encoder shortcut trusted the subclass's order and wrote
bytes the strict decoder itself refuses.
"""

from __future__ import annotations

import pytest

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import dcbor


class _ReEncodedText(str):
    """A text key whose ``encode`` is not its UTF-8 (any override will do)."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"zzz" + str.encode(self, encoding, errors)


class _AlwaysLess(int):
    """An integer key whose comparisons are its own (any override will do)."""

    def __lt__(self, other: object) -> bool:
        return True

    def __gt__(self, other: object) -> bool:
        return False


def test_a_str_subclass_key_is_encoded_in_deterministic_order() -> None:
    encoded = dcbor.encode({"bb": 0, _ReEncodedText("a"): 0})
    assert encoded == b"\xa2aa\x00bbb\x00"  # what 0d47f0d wrote: "a" (shorter) first
    dcbor.decode(encoded, max_bytes=64)


def test_an_int_subclass_key_is_encoded_in_deterministic_order() -> None:
    encoded = dcbor.encode({_AlwaysLess(5): 0, _AlwaysLess(1): 0})
    assert encoded == b"\xa2\x01\x00\x05\x00"  # what 0d47f0d wrote
    dcbor.decode(encoded, max_bytes=64)


def test_what_the_new_encoder_writes_for_them_is_refused_by_the_strict_decoder() -> None:
    """Pins the present consequence: the bytes above are not deterministic CBOR."""
    with pytest.raises(EnvelopeError, match="map key order"):
        dcbor.decode(b"\xa2\x05\x00\x01\x00", max_bytes=64)

"""Hostile test (session 13): ``dcbor.encode`` now keeps a map's own order (cbor2's plain
encoder) when ``_check_keys`` finds its keys in deterministic order. ``_check_keys`` ranks a
``str`` subclass key by its own ``encode()`` and an ``int`` subclass key by its own
comparisons, while cbor2 writes the underlying text or integer: such a key can pass as
"sorted" and be written out of order. The encoder of 0d47f0d sorted every map with cbor2's
canonical encoder (by the written bytes) and gave the deterministic encoding; the new one
gives bytes that the strict decoder itself refuses.
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


@pytest.mark.xfail(
    strict=True,
    reason="hostile13: encode's plain-encoder shortcut trusts a str subclass key's encode()",
)
def test_a_str_subclass_key_is_encoded_in_deterministic_order() -> None:
    encoded = dcbor.encode({"bb": 0, _ReEncodedText("a"): 0})
    assert encoded == b"\xa2aa\x00bbb\x00"  # what 0d47f0d wrote: "a" (shorter) first
    dcbor.decode(encoded, max_bytes=64)


@pytest.mark.xfail(
    strict=True,
    reason="hostile13: encode's plain-encoder shortcut trusts an int subclass key's __lt__",
)
def test_an_int_subclass_key_is_encoded_in_deterministic_order() -> None:
    encoded = dcbor.encode({_AlwaysLess(5): 0, _AlwaysLess(1): 0})
    assert encoded == b"\xa2\x01\x00\x05\x00"  # what 0d47f0d wrote
    dcbor.decode(encoded, max_bytes=64)


def test_what_the_new_encoder_writes_for_them_is_refused_by_the_strict_decoder() -> None:
    """Pins the present consequence: the bytes above are not deterministic CBOR."""
    with pytest.raises(EnvelopeError, match="map key order"):
        dcbor.decode(b"\xa2\x05\x00\x01\x00", max_bytes=64)

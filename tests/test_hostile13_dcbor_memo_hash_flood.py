"""Hostile test (session 13): the strict decoder's per-walk memo of map key sequences is a
dict keyed by ``(key types, keys)``. Integer hashes are not randomised, so anyone can pick
maps whose integer-key sequences all hash alike; every sequence is distinct, so each is
stored, and each insert probes every colliding entry before it: the walk goes quadratic.

The walk runs on every decode, before any signature is checked: an unsigned blob on the
bundle topic reaches it through ``cose.peek_payload`` / ``verify_bundle``. Measured on this
machine (load ~3-4): 32,000 such maps (527 KB) take 68.7 s to refuse with the new decoder,
57.8 ms with the one of 0d47f0d; a 2 MiB blob holds ~128,000 of them.
"""

from __future__ import annotations

import time

import cbor2
import pytest

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES

_M = 2**64
_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P5 = 2870177450012600261
_INT_MODULUS = 2**61 - 1


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) % _M


def _rotr(x: int, r: int) -> int:
    return ((x >> r) | (x << (64 - r))) % _M


def _colliding_pairs(n: int, target: int = 12345) -> list[tuple[int, int]]:
    """``n`` pairs ``a < b`` (unsigned, in deterministic key order) whose tuples ``(a, b)``
    all have the same ``hash``: CPython's xxHash-based tuple hash, inverted for ``b``."""
    want = (target - (2 ^ (_P5 ^ 3527539))) % _M
    before_last = _rotr((want * pow(_P1, -1, _M)) % _M, 31)
    pairs: list[tuple[int, int]] = []
    a = 0
    while len(pairs) < n:
        acc = (_rotl((_P5 + a * _P2) % _M, 31) * _P1) % _M
        b = ((before_last - acc) * pow(_P2, -1, _M)) % _M
        if a < b < _INT_MODULUS:
            pairs.append((a, b))
        a += 1
    return pairs


def _refusal_seconds(data: bytes) -> float:
    started = time.perf_counter()
    with pytest.raises(EnvelopeError):
        cose.peek_payload(data, max_bytes=MAX_BUNDLE_BYTES)
    return time.perf_counter() - started


def test_the_colliding_pairs_do_collide() -> None:
    pairs = _colliding_pairs(50)
    assert len({hash(pair) for pair in pairs}) == 1
    assert len(set(pairs)) == 50


@pytest.mark.xfail(
    strict=True,
    reason="hostile13: dcbor._walk's key-sequence memo is hash-floodable with integer keys "
    "(quadratic refusal of an unsigned blob, before any signature check)",
)
def test_an_unsigned_blob_of_hash_colliding_maps_is_refused_in_linear_time() -> None:
    n = 6000
    colliding = [{a: 0, b: 0} for a, b in _colliding_pairs(n)]
    control = [{i: 0, i + 2**60 + 7 * i: 0} for i in range(n)]
    # A COSE_Sign (tag 98) whose content is no 4-item array: refused as malformed, but only
    # after the strict walk over every map.
    flood = cbor2.dumps(cbor2.CBORTag(98, colliding))
    plain = cbor2.dumps(cbor2.CBORTag(98, control))
    assert dcbor.decode_tagged(plain, tag=98, max_bytes=MAX_BUNDLE_BYTES, what="x")
    baseline = min(_refusal_seconds(plain) for _ in range(3))
    flooded = _refusal_seconds(flood)
    assert flooded < 10 * baseline + 0.1, (flooded, baseline)

"""The strict walk refuses an unsigned blob in time linear in its maps, whatever keys it
chooses. Integer hashes are not randomised, so anyone can pick maps whose integer-key
sequences all hash alike; the walk runs on every decode before any signature is checked (an
unsigned blob on the bundle topic reaches it through ``cose.peek_payload`` /
``verify_bundle``). Found by session 13's hostile test: a per-walk memo of key sequences
keyed by them went quadratic (32,000 such maps, 527 KB: 68.7 s to refuse, against 58 ms).
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

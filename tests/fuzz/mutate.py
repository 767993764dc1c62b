"""Byte-level mutations of seed inputs, for the runs that have no libFuzzer (the quick test
and the runner without atheris).

Each step is one of the changes libFuzzer's own mutator makes most often: flip a bit, set a
byte to an interesting value, insert, delete or duplicate a run, overwrite with a chunk of
another seed (a splice), or truncate. CBOR lengths and integers sit in single bytes, so these
reach the decoders' edge cases (a length one too long, a 64-bit integer, a missing item)
quickly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["mutate"]

_INTERESTING = (0x00, 0x01, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1F, 0x7F, 0x80, 0xF4, 0xF6, 0xFF)
MAX_STEPS = 4


def mutate(data: bytes, rng: random.Random, others: Sequence[bytes] = ()) -> bytes:
    """``data`` changed by one to :data:`MAX_STEPS` random steps (``others``: splice donors)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, MAX_STEPS)):
        _step(out, rng, others)
    return bytes(out)


def _step(out: bytearray, rng: random.Random, others: Sequence[bytes]) -> None:
    kind = rng.randrange(7)
    at = rng.randrange(len(out) + 1)
    if kind == 0 and out:
        index = min(at, len(out) - 1)
        out[index] ^= 1 << rng.randrange(8)
    elif kind == 1 and out:
        out[min(at, len(out) - 1)] = rng.choice(_INTERESTING)
    elif kind == 2:
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == 3 and out:
        del out[at : at + rng.randint(1, 16)]
    elif kind == 4 and out:
        start = rng.randrange(len(out))
        out[at:at] = out[start : start + rng.randint(1, 32)]
    elif kind == 5 and others:
        donor = rng.choice(others)
        if donor:
            start = rng.randrange(len(donor))
            chunk = donor[start : start + rng.randint(1, 64)]
            out[at : at + len(chunk)] = chunk
    elif kind == 6 and out:
        del out[rng.randrange(len(out)) :]

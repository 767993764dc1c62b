"""The strict walk holds no memory per map beyond the decoded value: an unsigned 2 MiB blob
of maps with one distinct integer key each (7 bytes a map, refused only after the walk)
must not raise a gateway's peak memory. Found by session 13's hostile test: a per-walk
memo of key sequences kept an entry per distinct map (165 MiB peak RSS against 112 MiB).
"""

from __future__ import annotations

import tracemalloc

import cbor2

from edge_agent.protocol import dcbor


def test_decoding_maps_of_distinct_keys_peaks_near_the_value_it_returns() -> None:
    data = cbor2.dumps([{70_000 + i: 0} for i in range(30_000)])
    tracemalloc.start()
    try:
        value = dcbor.decode(data, max_bytes=len(data))
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(value, list)
    # 0d47f0d: 1.23 (cbor2's own transient buffers); with the memo: 1.90.
    assert peak < 1.5 * held, (peak, held)

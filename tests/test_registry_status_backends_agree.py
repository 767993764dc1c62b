"""Hostile differential tests of ``record_status``: the same statuses recorded on a SQLite
registry and on a PostgreSQL one (the PL/pgSQL ``record_device_status``) must leave the
same observable state."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import DeviceStatus
from hub.registry import Registry, RegistryError
from hub.registry.interface import MAX_STATUS_SPANS, STATUS_SPAN_JOIN_S
from hub.registry.postgres import PostgresRegistry
from hub.registry.records import DeviceRecord
from hub.registry.sqlite import SqliteRegistry
from tests.factory import NOW

DEVICES = ("gw-001", "gw-002", "gw-'; DROP TABLE status; --")
"""Two registered devices and one never registered (an injection attempt as its id)."""
GATES = ("open", "closed", "ȯpen\u200d", "e\u0301", "é", "'; DROP TABLE status; --", "🛑")
I64 = (-(2**63), 2**63 - 1)


def _device(device_id: str) -> DeviceRecord:
    return DeviceRecord(device_id, "eu-1", ("g",), "generic", PrivateKey.generate().public, 1, NOW)


def _state(registry: Registry) -> tuple[object, ...]:
    """What a reader sees: the fleet (status, last seen), each device's spans and dashboard
    row, the dashboard's page and summary."""
    return (
        registry.fleet(),
        [registry.status_history(d) for d in DEVICES],
        [registry.console_device(d) for d in DEVICES],
        registry.console_devices(now=NOW, stale_after_s=300, limit=50),
        registry.fleet_summary(NOW, 300),
    )


@pytest.fixture
def pair(tmp_path: Path, postgres_url: str):  # type: ignore[no-untyped-def]
    with (
        SqliteRegistry.open(tmp_path / "hub.db") as lite,
        PostgresRegistry.open(postgres_url) as pg,
    ):
        for registry in (lite, pg):
            registry.add_device(_device(DEVICES[0]))
            registry.add_device(_device(DEVICES[1]))
        yield lite, pg


def _apply(registry: Registry, status: DeviceStatus, raw: bytes, at: int) -> object:
    try:
        return registry.record_status(status, raw, at)
    except RegistryError:
        return ("RegistryError",)
    except Exception as exc:
        return (type(exc).__name__,)


def _random_ops(rng: random.Random, n: int) -> list[tuple[DeviceStatus, bytes, int]]:
    ops = []
    t = NOW
    received = NOW
    for _ in range(n):
        device = rng.choice(DEVICES)
        t = t + rng.choice((-5, -1, 0, 0, 0, 1, 1, 7))
        received = received + rng.choice((-30, 0, 1, 5, STATUS_SPAN_JOIN_S, STATUS_SPAN_JOIN_S + 1))
        version = rng.choice((None, 0, 1, 3, 2**63 - 1))
        status = DeviceStatus(
            device,
            t,
            rng.random() < 0.7,
            version,
            rng.choice((None, NOW + 3600, 2**63 - 1)),
            rng.choice(GATES),
            rng.choice((0, 5, 2**53 - 1)),
            rng.choice((0, 1)),
        )
        raw = rng.choice((b"a", b"b", b"", b"\x00" * 3))
        ops.append((status, raw, received))
    return ops


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_random_status_sequences_leave_the_same_state_on_both_backends(  # type: ignore[no-untyped-def]
    pair, seed: int, grouped: bool
) -> None:
    lite, pg = pair
    ops = _random_ops(random.Random(seed), 120)
    for start in range(0, len(ops), 10):
        chunk = ops[start : start + 10]
        if grouped:
            with lite.write_group():
                kept_lite = [_apply(lite, s, raw, at) for s, raw, at in chunk]
            with pg.write_group():
                kept_pg = [_apply(pg, s, raw, at) for s, raw, at in chunk]
        else:
            kept_lite = [_apply(lite, s, raw, at) for s, raw, at in chunk]
            kept_pg = [_apply(pg, s, raw, at) for s, raw, at in chunk]
        assert kept_lite == kept_pg, chunk
        assert _state(lite) == _state(pg)


def test_spans_past_the_trim_limit_match(pair) -> None:  # type: ignore[no-untyped-def]
    lite, pg = pair
    for i in range(MAX_STATUS_SPANS + 25):
        status = DeviceStatus("gw-001", NOW + i, i % 2 == 0, 3, None, "open", 0, 0)
        for registry in (lite, pg):
            assert registry.record_status(status, b"%d" % i, NOW + 10 * i)
    assert lite.status_history("gw-001") == pg.status_history("gw-001")
    assert len(pg.status_history("gw-001")) == MAX_STATUS_SPANS
    assert _state(lite) == _state(pg)


def test_a_status_received_at_the_64_bit_bounds_is_kept_on_both_backends(pair) -> None:  # type: ignore[no-untyped-def]
    lite, pg = pair
    first = DeviceStatus("gw-001", 1, True, 3, None, "open", 0, 0)
    second = DeviceStatus("gw-001", 2, True, 3, None, "open", 0, 0)
    for registry in (lite, pg):
        assert registry.record_status(first, b"a", I64[0])
    assert _apply(lite, second, b"b", I64[1]) == _apply(pg, second, b"b", I64[1])
    assert _state(lite) == _state(pg)


def test_the_status_function_runs_no_dynamic_sql() -> None:
    """Its one concatenation names the advisory lock; every value is a bound parameter."""
    from hub.registry.postgres.devices import RECORD_STATUS_BODY

    body = RECORD_STATUS_BODY.upper()
    assert "EXECUTE" not in body and "FORMAT(" not in body
    assert body.count("||") == 1 and "HASHTEXTEXTENDED('STATUS ' || S_DEVICE, 0)" in body

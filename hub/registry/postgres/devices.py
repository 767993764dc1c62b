"""Devices in the PostgreSQL registry: the queries of :mod:`hub.registry.queries.devices`,
with a device status recorded by one call of the PL/pgSQL function ``record_device_status``
(created by :mod:`.schema`).

The function runs the shared path's statements in its order, under the same per-device
advisory lock (``status <device>``: a hub still on the shared path and one calling the
function serialise on one device's statuses): newer-only by time (the same time with the
same bytes changes nothing and returns false; with other bytes it replaces the status and
touches neither last seen nor the history), last seen never moved back, the history's last
span extended or a new one started and the oldest past :data:`MAX_STATUS_SPANS` dropped.
Its statements fire the ``console_fleet`` triggers as the shared path's do. A call is one
round trip (three in a write group: its savepoint's two), where the shared path takes 8 or
9 (the lock, each read and write, the transaction's or savepoint's commands: libpq's trace);
and PL/pgSQL plans each statement once per server backend.
"""

from __future__ import annotations

from edge_agent.protocol.shipping import DeviceStatus
from hub.registry.interface import MAX_STATUS_SPANS, STATUS_SPAN_JOIN_S
from hub.registry.postgres.transactions import PostgresTransactions
from hub.registry.queries.devices import DeviceTables as SharedDeviceTables

__all__ = ["RECORD_STATUS_BODY", "RECORD_STATUS_FUNCTION", "DeviceTables"]

RECORD_STATUS_BODY = """
DECLARE
    had BOOLEAN;
    held_time BIGINT;
    held_data BYTEA;
    spanned BOOLEAN;
    last_since BIGINT;
    last_until BIGINT;
    last_online BIGINT;
    last_gate TEXT;
    last_version BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('status ' || s_device, 0));
    SELECT s.time, s.data INTO held_time, held_data FROM status s WHERE s.device = s_device;
    had := FOUND;
    IF had AND (s_time < held_time OR (s_time = held_time AND s_data = held_data)) THEN
        RETURN false;
    END IF;
    INSERT INTO status VALUES (s_device, s_data, s_time, s_online, s_version, s_expires,
        s_gate, s_size, s_acked, s_received)
    ON CONFLICT (device) DO UPDATE SET data = excluded.data, time = excluded.time,
        online = excluded.online, bundle_version = excluded.bundle_version,
        expires_at = excluded.expires_at, gate = excluded.gate,
        lineage_size = excluded.lineage_size, acked = excluded.acked,
        received_at = excluded.received_at;
    IF had AND s_time = held_time THEN
        RETURN true;
    END IF;
    INSERT INTO activity VALUES (s_device, s_received) ON CONFLICT (device)
        DO UPDATE SET last_seen = excluded.last_seen
        WHERE excluded.last_seen > activity.last_seen;
    SELECT p.since, p.until, p.online, p.gate, p.bundle_version
        INTO last_since, last_until, last_online, last_gate, last_version
        FROM status_spans p WHERE p.device = s_device ORDER BY p.since DESC LIMIT 1;
    spanned := FOUND;
    IF spanned AND (last_online, last_gate, last_version)
            IS NOT DISTINCT FROM (s_online, s_gate, s_version)
            AND s_received::numeric - last_until BETWEEN 0 AND join_s THEN
        UPDATE status_spans SET until = s_received
            WHERE device = s_device AND since = last_since;
    ELSIF NOT spanned OR s_received > last_since THEN
        INSERT INTO status_spans VALUES (s_device, s_received, s_received, s_online, s_gate,
            s_version);
        DELETE FROM status_spans WHERE device = s_device AND since <= (SELECT p.since
            FROM status_spans p WHERE p.device = s_device ORDER BY p.since DESC
            LIMIT 1 OFFSET max_spans);
    END IF;
    RETURN true;
END
"""
"""What ``record_device_status`` runs: :meth:`SharedDeviceTables.record_status` with its
``_touch_activity`` and ``_note_status``, statement for statement. Its parameters are named
apart from every column (``s_`` and the two limits), so no reference is ambiguous."""

RECORD_STATUS_FUNCTION = (
    "CREATE OR REPLACE FUNCTION record_device_status(s_device TEXT, s_data BYTEA, "
    "s_time BIGINT, s_online BIGINT, s_version BIGINT, s_expires BIGINT, s_gate TEXT, "
    "s_size BIGINT, s_acked BIGINT, s_received BIGINT, max_spans BIGINT, join_s BIGINT) "
    f"RETURNS boolean LANGUAGE plpgsql AS $${RECORD_STATUS_BODY}$$"
)
"""The statement creating (or replacing) ``record_device_status``."""

_CALL = (
    "SELECT record_device_status(%(device)s::text, %(data)s::bytea, %(time)s::bigint, "
    "%(online)s::bigint, %(version)s::bigint, %(expires)s::bigint, %(gate)s::text, "
    "%(size)s::bigint, %(acked)s::bigint, %(received)s::bigint, %(max_spans)s::bigint, "
    "%(join_s)s::bigint)"
)
"""One status recorded; the limits are passed in, so :mod:`hub.registry.interface` stays
the one place that sets them."""


class DeviceTables(SharedDeviceTables, PostgresTransactions):
    """The device operations of :class:`hub.registry.interface.Registry` on PostgreSQL."""

    def record_status(self, status: DeviceStatus, raw: bytes, received_at: int) -> bool:
        kept = self._write_one(
            "record the device status",
            _CALL,
            {
                "device": status.device,
                "data": raw,
                "time": status.time,
                "online": int(status.online),
                "version": status.bundle_version,
                "expires": status.expires_at,
                "gate": status.gate,
                "size": status.lineage_size,
                "acked": status.acked,
                "received": received_at,
                "max_spans": MAX_STATUS_SPANS,
                "join_s": STATUS_SPAN_JOIN_S,
            },
        )
        return kept[0][0] is True

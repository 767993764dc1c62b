"""The fleet view over the SQLite registry: one row per registered device, joining its
registration, last status, activity, log size, fork evidence and rejection counters."""

from __future__ import annotations

from hub.registry.records import FleetRow
from hub.registry.sqlite.rejections import RejectionTables
from hub.registry.sqlite.transactions import as_groups, as_int, as_opt_int, as_text

__all__ = ["FleetView"]


class FleetView(RejectionTables):
    """The fleet view of :class:`hub.registry.interface.Registry` (it reads the rejection
    counters, so it builds on :class:`RejectionTables`)."""

    def fleet(self) -> list[FleetRow]:
        rows = self._read(
            "SELECT d.id, d.region, d.groups, s.online, s.bundle_version, s.expires_at, "
            "s.gate, s.time, a.last_seen, s.lineage_size, coalesce(l.size, 0), "
            "(SELECT count(*) FROM forks f WHERE f.device = d.id) "
            "FROM devices d LEFT JOIN status s ON s.device = d.id "
            "LEFT JOIN activity a ON a.device = d.id "
            "LEFT JOIN lineage_state l ON l.device = d.id ORDER BY d.id"
        )
        rejected: dict[str, dict[str, int]] = {}
        for total in self.rejections():
            rejected.setdefault(total.device, {})[total.code] = total.count
        result = []
        for row in rows:
            device_id, region, groups, online, version, expires, gate, time, seen = row[:9]
            device_size, size, forks = row[9:]
            result.append(
                FleetRow(
                    device_id=as_text(device_id),
                    region=as_text(region),
                    groups=as_groups(groups),
                    online=None if online is None else bool(as_int(online)),
                    bundle_version=as_opt_int(version),
                    expires_at=as_opt_int(expires),
                    gate=None if gate is None else as_text(gate),
                    status_time=as_opt_int(time),
                    last_seen=as_opt_int(seen),
                    device_lineage_size=as_opt_int(device_size),
                    lineage_size=as_int(size),
                    forks=as_int(forks),
                    rejections=rejected.get(as_text(device_id), {}),
                )
            )
        return result

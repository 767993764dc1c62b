"""Rejection counters in the SQLite registry: per (device, code), how many, when the last
was recorded and its detail (table ``rejections``)."""

from __future__ import annotations

from collections.abc import Sequence

from hub.registry.interface import MAX_REJECTION_DETAIL
from hub.registry.records import RejectionCount, RejectionTotal
from hub.registry.sqlite.transactions import SqliteTransactions, as_int, as_text

__all__ = ["RejectionTables"]


class RejectionTables(SqliteTransactions):
    """The rejection operations of :class:`hub.registry.interface.Registry`."""

    def add_rejections(self, counts: Sequence[RejectionCount], at: int) -> None:
        if not counts:
            return
        with self._write("record rejections") as db:
            db.executemany(
                "INSERT INTO rejections VALUES (?, ?, ?, ?, ?) ON CONFLICT (device, code) "
                "DO UPDATE SET count = count + excluded.count, last_at = excluded.last_at, "
                "last_detail = excluded.last_detail",
                [
                    (c.device, c.code, c.count, at, c.last_detail[:MAX_REJECTION_DETAIL])
                    for c in counts
                ],
            )

    def rejections(self, device: str | None = None) -> list[RejectionTotal]:
        sql, params = "SELECT * FROM rejections", tuple[str, ...]()
        if device is not None:
            sql, params = sql + " WHERE device = ?", (device,)
        return [
            RejectionTotal(as_text(d), as_text(c), as_int(n), as_int(t), as_text(x))
            for d, c, n, t, x in self._read(sql + " ORDER BY device, code", params)
        ]

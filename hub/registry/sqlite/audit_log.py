"""The operator audit log in the SQLite registry (table ``operator_audit``): every governance
action the console carries out, written as ``pending`` before it is carried out and given
its outcome when it ends. Rows are never deleted or rewritten once finished; ids come from
``AUTOINCREMENT``, so they only grow (a page is a range of ids: keyset paging)."""

from __future__ import annotations

from hub.registry.interface import AUDIT_OUTCOMES, MAX_AUDIT_PAGE, MAX_AUDIT_TEXT, RegistryError
from hub.registry.records import AuditEntry
from hub.registry.sqlite.transactions import SqliteTransactions, as_int, as_opt_int, as_text

__all__ = ["AuditLogTables"]

PENDING = "pending"
MAX_ID = 2**63 - 1
"""SQLite's largest integer: no id is above it, so a larger ``before`` is the same as none."""


class AuditLogTables(SqliteTransactions):
    """The audit log operations of :class:`hub.registry.interface.Registry`."""

    def begin_action(self, *, at: int, operator: str, action: str, target: str, reason: str) -> int:
        with self._write("record an operator action") as db:
            cursor = db.execute(
                "INSERT INTO operator_audit "
                "(at, operator, action, target, reason, outcome, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, '')",
                (
                    at,
                    operator[:MAX_AUDIT_TEXT],
                    action[:MAX_AUDIT_TEXT],
                    target[:MAX_AUDIT_TEXT],
                    reason[:MAX_AUDIT_TEXT],
                    PENDING,
                ),
            )
            action_id = cursor.lastrowid
        if action_id is None:
            raise RegistryError(f"{self.path} gave the operator action no id")
        return action_id

    def finish_action(self, action_id: int, *, outcome: str, detail: str, at: int) -> None:
        if outcome not in AUDIT_OUTCOMES:
            raise ValueError(f"an action ends {', '.join(sorted(AUDIT_OUTCOMES))}, not {outcome!r}")
        with self._write("record an operator action's outcome") as db:
            changed = db.execute(
                "UPDATE operator_audit SET outcome = ?, detail = ?, finished_at = ? "
                "WHERE id = ? AND outcome = ?",
                (outcome, detail[:MAX_AUDIT_TEXT], at, action_id, PENDING),
            ).rowcount
            if changed != 1:
                raise RegistryError(f"no pending operator action {action_id} in {self.path}")

    def audit_log(self, *, before: int | None = None, limit: int = 50) -> list[AuditEntry]:
        if not 1 <= limit <= MAX_AUDIT_PAGE:
            raise ValueError(f"an audit page holds 1 to {MAX_AUDIT_PAGE} entries, not {limit}")
        rows = self._read(
            "SELECT id, at, operator, action, target, reason, outcome, detail, finished_at "
            "FROM operator_audit WHERE id < ? ORDER BY id DESC LIMIT ?",
            (MAX_ID if before is None else min(before, MAX_ID), limit),
        )
        return [
            AuditEntry(
                as_int(i),
                as_int(t),
                as_text(o),
                as_text(a),
                as_text(g),
                as_text(r),
                as_text(c),
                as_text(d),
                as_opt_int(f),
            )
            for i, t, o, a, g, r, c, d, f in rows
        ]

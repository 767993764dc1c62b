"""The console in the PostgreSQL registry: the queries of :mod:`hub.registry.queries.console`
(``console_fleet`` is kept by the trigger functions of :mod:`.schema`), with the fleet
summary's examples read PostgreSQL's way."""

from __future__ import annotations

from hub.registry.interface import FLEET_EXAMPLES
from hub.registry.postgres.transactions import PostgresTransactions
from hub.registry.queries.base import Session, render
from hub.registry.queries.console import STATE_OF_ROW
from hub.registry.queries.console import ConsoleTables as SharedConsoleTables
from hub.registry.records import FleetCount
from hub.registry.rows import as_text

__all__ = ["ConsoleTables"]

_EXAMPLES_SQL = render(
    f"""
SELECT device, state FROM (
    SELECT device, state, row_number() OVER (PARTITION BY state ORDER BY device) AS n
    FROM (SELECT device, {STATE_OF_ROW} AS state FROM console_fleet) AS states
) AS numbered WHERE n <= :examples ORDER BY device
""",
    "postgresql",
)
"""The first :data:`FLEET_EXAMPLES` device ids of each state, by id, in one query."""


class ConsoleTables(SharedConsoleTables, PostgresTransactions):
    """The console operations of :class:`hub.registry.interface.Registry` on PostgreSQL."""

    def _examples(
        self, db: Session, now: int, stale_after_s: int, states: dict[str, FleetCount]
    ) -> dict[str, tuple[str, ...]]:
        named = db.execute(
            _EXAMPLES_SQL, {"now": now, "stale": stale_after_s, "examples": FLEET_EXAMPLES}
        ).fetchall()
        examples: dict[str, list[str]] = {state: [] for state in states}
        for device, state in named:
            if as_text(state) in examples:
                examples[as_text(state)].append(as_text(device))
        return {state: tuple(ids) for state, ids in sorted(examples.items())}

"""The records of the lineage tables' layout and of the lineage search's retention: what
``registry check`` reports of each lineage table (one table, or its partitions) and what
``registry prune-search`` dropped or would drop.

Retention touches the lineage search only: its rows are derived from the stored entries
and can be rebuilt from them. The entries, checkpoints and tree nodes are the evidence (a
device log is one hash chain and Merkle tree from entry 0) and nothing here deletes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge_agent.errors import StateError

__all__ = ["LINEAGE_TABLES", "PruneRefused", "SearchPrune", "TableLayout"]

LINEAGE_TABLES = ("lineage_entries", "lineage_checkpoints", "lineage_nodes", "lineage_search")
"""The tables a layout report names, in that order."""


class PruneRefused(StateError):
    """A prune of the lineage search refused: an active rollout is judged on search rows
    the cut would drop. ``edge-hub`` exits 1 (refused)."""

    code = "search_prune_refused"


@dataclass(frozen=True, slots=True)
class TableLayout:
    """How one lineage table is stored: ``partitioned`` ``None`` (one table, every SQLite
    registry and a PostgreSQL one created before partitioning), ``device`` (hash partitions)
    or ``month``; how many partitions; for ``month``, the months that have one (``YYYY-MM``,
    in order) and how many rows the DEFAULT partition holds (rows of months without one)."""

    table: str
    partitioned: Literal["device", "month"] | None = None
    partitions: int = 0
    months: tuple[str, ...] = ()
    default_rows: int | None = None

    def to_json(self) -> dict[str, object]:
        found: dict[str, object] = {"partitioned": self.partitioned}
        if self.partitioned is not None:
            found["partitions"] = self.partitions
        if self.partitioned == "month":
            found["months"] = list(self.months)
            found["default_rows"] = self.default_rows
        return found


@dataclass(frozen=True, slots=True)
class SearchPrune:
    """A prune of the lineage search before ``cut`` (Unix seconds, the start of a month):
    the search rows it deleted row by row (or would, in a dry run), the month partitions
    it dropped (or would) with the rows they held, and the retention cut recorded before
    (``None``: never pruned)."""

    cut: int
    rows: int
    months: tuple[str, ...]
    month_rows: int
    previous_cut: int | None
    dry_run: bool

    @property
    def total_rows(self) -> int:
        return self.rows + self.month_rows

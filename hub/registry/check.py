"""``edge-hub registry check``: what a registry holds and whether its device logs verify.

A check reads the registry's schema version, counts the rows of every table (and compares
them with another registry's, after a copy), and checks device logs the way the hub's
witness role needs them (:func:`hub.registry.stored_logs.check_stored_log`): every device's
stored entries rebuild the hash chain and reach each stored checkpoint root, the log
state's root and the root of the stored tree nodes. ``sample`` checks that many devices,
drawn at random each run, instead of all (a spot check of a large registry). It also lists
every ``channels`` row the schedule cannot publish and skips
(:func:`hub.registry.channel_rows.channel_row_problem`), and how the lineage tables are
stored (one table, or partitions: how many, and the search's months) with the lineage
search's retention cut. It only reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from edge_agent.errors import LineageError
from edge_agent.protocol.merkle import root_at
from edge_agent.support.cli import utc_text
from hub.registry.channel_rows import channel_row_problem
from hub.registry.interface import Registry, RegistryError
from hub.registry.retention import TableLayout
from hub.registry.schema import SCHEMA_VERSION, Table
from hub.registry.stored_logs import LogCheck, check_stored_log
from hub.registry.tables import TableStore, key_of, registry_tables

__all__ = [
    "DEVICE_PAGE_ROWS",
    "MAX_LISTED_FAILURES",
    "ChannelRowProblem",
    "RegistryCheck",
    "TableCount",
    "check_registry",
    "table_counts",
]

DEVICE_PAGE_ROWS = 1000
"""Device ids read per page while listing the stored logs."""
MAX_LISTED_FAILURES = 100
"""Most failing device logs a check lists (it counts them all)."""


@dataclass(frozen=True, slots=True)
class TableCount:
    """A table's row count, and the count in the registry it was copied from (``None``
    when not compared)."""

    table: str
    rows: int
    source_rows: int | None = None

    @property
    def matches(self) -> bool:
        return self.source_rows is None or self.rows == self.source_rows


@dataclass(frozen=True, slots=True)
class ChannelRowProblem:
    """A ``channels`` row the schedule skips: its region and channel (as stored, quoted
    when not text) and what is wrong."""

    region: str
    channel: str
    problem: str


@dataclass(frozen=True, slots=True)
class RegistryCheck:
    """What a check found: the registry, its schema version, each table's count, how many
    device logs it holds and checked, and the failing ones (at most
    :data:`MAX_LISTED_FAILURES` listed, ``failed`` counts them all), and the ``channels``
    rows no hub can publish (at most :data:`MAX_LISTED_FAILURES`)."""

    where: str
    schema_version: int
    tables: tuple[TableCount, ...]
    logs: int
    checked: int
    failed: int
    failures: tuple[LogCheck, ...]
    channels: tuple[ChannelRowProblem, ...] = ()
    layout: tuple[TableLayout, ...] = ()
    search_retention: int | None = None
    """The lineage search's retention cut (``None``: never pruned)."""

    @property
    def ok(self) -> bool:
        """Every checked log verifies, every compared count matches and every channels
        row can be published."""
        return (
            self.failed == 0 and not self.channels and all(count.matches for count in self.tables)
        )

    def to_json(self) -> dict[str, object]:
        return {
            "registry": self.where,
            "schema_version": self.schema_version,
            "ok": self.ok,
            "tables": {
                c.table: {"rows": c.rows}
                | ({} if c.source_rows is None else {"source_rows": c.source_rows})
                for c in self.tables
            },
            "logs": {
                "devices": self.logs,
                "checked": self.checked,
                "failed": self.failed,
                "failures": [
                    {"device": f.device, "size": f.size, "problem": f.problem}
                    for f in self.failures
                ],
            },
            "unpublishable_channels": [
                {"region": c.region, "channel": c.channel, "problem": c.problem}
                for c in self.channels
            ],
            "layout": {t.table: t.to_json() for t in self.layout},
            "search_retention": None
            if self.search_retention is None
            else {
                "cut": self.search_retention,
                "from": utc_text(self.search_retention, "%Y-%m-%d"),
            },
        }


def table_counts(store: TableStore, source: TableStore | None = None) -> tuple[TableCount, ...]:
    """The row count of every registry table in ``store``, beside ``source``'s."""
    return tuple(
        TableCount(t.name, store.count(t), None if source is None else source.count(t))
        for t in registry_tables()
    )


def check_registry(
    registry: Registry,
    store: TableStore,
    *,
    sample: int | None = None,
    source: TableStore | None = None,
) -> RegistryCheck:
    """Check the registry ``registry`` and ``store`` both open: its schema version, table
    counts (beside ``source``'s), and every device log, or ``sample`` of them at random.

    Raises:
        RegistryError: it holds no registry of this version, or cannot be read.
    """
    version = store.schema_version()
    if version != SCHEMA_VERSION:
        raise RegistryError(
            f"{store.where} holds no hub registry of schema {SCHEMA_VERSION} "
            f"({'none' if version is None else f'schema {version}'})"
        )
    counts = table_counts(store, source)
    devices = _log_devices(store)
    chosen = devices
    if sample is not None and sample < len(devices):
        chosen = sorted(random.SystemRandom().sample(devices, sample))
    failures = [
        found for found in (_check_log(registry, device) for device in chosen) if not found.verified
    ]
    return RegistryCheck(
        store.where,
        version,
        counts,
        len(devices),
        len(chosen),
        len(failures),
        tuple(failures[:MAX_LISTED_FAILURES]),
        _unpublishable_channels(store),
        registry.lineage_layout(),
        registry.search_retention(),
    )


def _unpublishable_channels(store: TableStore) -> tuple[ChannelRowProblem, ...]:
    """The ``channels`` rows the schedule skips, in key order (the first
    :data:`MAX_LISTED_FAILURES`)."""
    table = _table("channels")
    found: list[ChannelRowProblem] = []
    after: tuple[object, ...] | None = None
    while len(found) < MAX_LISTED_FAILURES and (page := store.page(table, after, DEVICE_PAGE_ROWS)):
        for row in page:
            region, channel = row[0], row[1]
            problem = channel_row_problem(region, channel)
            if problem is not None:
                found.append(ChannelRowProblem(_text(region), _text(channel), problem))
        after = key_of(table, page[-1])
    return tuple(found[:MAX_LISTED_FAILURES])


def _text(value: object) -> str:
    return value if isinstance(value, str) else repr(value)


def _log_devices(store: TableStore) -> list[str]:
    """Every device the registry holds a log state for, in id order."""
    table = _table("lineage_state")
    devices: list[str] = []
    after: tuple[object, ...] | None = None
    while page := store.page(table, after, DEVICE_PAGE_ROWS):
        devices.extend(str(row[0]) for row in page)
        after = (page[-1][0],)
    return devices


def _check_log(registry: Registry, device: str) -> LogCheck:
    """The check of ``device``'s log; a stored row that cannot be read or decoded fails it."""
    try:
        log = registry.lineage_state(device)
        node_root = root_at(log.size, registry.tree_nodes(device)) if log.size else None
        return check_stored_log(
            device,
            log,
            registry.iter_entries(device),
            registry.iter_checkpoints(device),
            node_root,
        )
    except (RegistryError, LineageError) as exc:
        return LogCheck(device, 0, 0, f"its stored log cannot be read: {exc}")


def _table(name: str) -> Table:
    return next(t for t in registry_tables() if t.name == name)

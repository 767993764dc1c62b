"""The console dashboard's fleet cells gathered into a :class:`FleetSummary`: the counting
both backends share once their SQL has grouped the devices into cells.

A cell is one row of devices alike but for their times: region, groups, own target
version, gate, online, running version, attestation verdict, count, then seven
(count, oldest, newest) spans (never seen, stale, fresh, attestation expired, valid, log
lagging, log in step), the entries waiting and the forked devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hub.registry.records import FleetCount, FleetSummary, RolloutCount
from hub.registry.rows import as_groups, as_int, as_opt_int, as_text, as_whole

__all__ = ["CellCounts", "fleet_summary"]


@dataclass
class CellCounts:
    """A backend's fleet cells gathered into the counts of a :class:`FleetSummary`."""

    states: dict[str, FleetCount] = field(default_factory=dict)
    rollout: dict[tuple[str, str, int | None, int | None, bool], RolloutCount] = field(
        default_factory=dict
    )
    attestation: dict[str, FleetCount] = field(default_factory=dict)
    lineage: dict[bool, FleetCount] = field(
        default_factory=lambda: {False: FleetCount(), True: FleetCount()}
    )
    waiting: int = 0
    forks: int = 0

    @classmethod
    def of(cls, cells: list[tuple[object, ...]], current: dict[tuple[str, str], int]) -> CellCounts:
        counted = cls()
        for cell in cells:
            counted.add(cell, current)
        return counted

    def add(self, cell: tuple[object, ...], current: dict[tuple[str, str], int]) -> None:
        region, groups, own, gate, online, running, verdict = cell[:7]
        never, stale, fresh, expired, valid, lagging, in_step = (
            span_count(cell[i : i + 3]) for i in range(8, 29, 3)
        )
        add_count(self.states, "never_seen", never)
        add_count(self.states, "stale", stale)
        if fresh.count:
            add_count(self.states, "offline" if online == 0 else as_text(gate), fresh)
        attested = "never attested" if verdict is None else as_text(verdict)
        add_count(self.attestation, f"{attested} (expired)", expired)
        add_count(self.attestation, attested, valid)
        self.lineage[True] = merged(self.lineage[True], lagging)
        self.lineage[False] = merged(self.lineage[False], in_step)
        self.waiting += as_whole(cell[29] or 0)
        self.forks += as_int(cell[30] or 0)
        region_text, own_version = as_text(region), as_opt_int(own)
        for group in as_groups(groups):
            listened = (
                current.get((region_text, channel)) for channel in ("all/_", f"group/{group}")
            )
            versions = [v for v in (own_version, *listened) if v is not None]
            target = max(versions, default=None)
            for known, version, devices in (
                (True, as_opt_int(running), fresh),
                (False, None, merged(never, stale)),
            ):
                if devices.count:
                    key = (region_text, group, target, version, known)
                    held = self.rollout.get(key)
                    joined = devices if held is None else merged(held.devices, devices)
                    self.rollout[key] = RolloutCount(*key, joined)


def span_count(span: Sequence[object]) -> FleetCount:
    n, oldest, newest = span
    return FleetCount(as_int(n or 0), as_opt_int(oldest), as_opt_int(newest))


def merged(a: FleetCount, b: FleetCount) -> FleetCount:
    times = [t for t in (a.oldest, a.newest, b.oldest, b.newest) if t is not None]
    return FleetCount(a.count + b.count, min(times, default=None), max(times, default=None))


def add_count(counts: dict[str, FleetCount], key: str, count: FleetCount) -> None:
    if count.count:
        counts[key] = merged(counts.get(key, FleetCount()), count)


def rollout_order(count: RolloutCount) -> tuple[object, ...]:
    return (
        count.region,
        count.group,
        count.target is not None,
        count.target or 0,
        count.running is not None,
        count.running or 0,
        count.known,
    )


def fleet_summary(
    counted: CellCounts,
    most: Sequence[tuple[object, ...]],
    rejections: Sequence[tuple[object, ...]],
    examples: dict[str, tuple[str, ...]],
) -> FleetSummary:
    """The :class:`FleetSummary` of ``counted`` cells, the device lagging most (``most``:
    none, or one (device, lag) row), the rejection rows (code, count, oldest, newest) and
    the example ids of each state."""
    return FleetSummary(
        states=dict(sorted(counted.states.items())),
        rollout=tuple(sorted(counted.rollout.values(), key=rollout_order)),
        attestation=dict(sorted(counted.attestation.items())),
        lineage_current=counted.lineage[False],
        lineage_lagging=counted.lineage[True],
        lineage_waiting=counted.waiting,
        lineage_max_lag=(as_text(most[0][0]), as_int(most[0][1])) if most else None,
        forks=FleetCount(counted.forks),
        rejections={
            as_text(code): FleetCount(as_int(n), as_opt_int(oldest), as_opt_int(newest))
            for code, n, oldest, newest in rejections
        },
        state_examples=examples,
    )

"""What the dashboard and device pages show, computed from registry records and ``now``.

Pure functions of values (no registry, no clock): the handlers read the registry and hand
the records in, so the rules here are tested on their own.

The liveness rule (:mod:`hub.core.liveness`): a device whose last fresh signed status is
older than ``stale_after_s`` is counted **stale/unknown**, never as the gate state, online
flag or bundle version its last status claimed. Every count carries the time range of the
reports it is made of ("as of").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edge_agent.protocol.expectations import Expectations
from edge_agent.protocol.revocation import RevocationKind
from edge_agent.protocol.topics import Channel, ChannelKind
from hub.core.liveness import is_stale
from hub.registry import (
    AttestationRecord,
    ConsoleFleetRow,
    IssuedRevocation,
    PublishedBundle,
    RejectionTotal,
    StatusSpan,
)

__all__ = [
    "NEVER_SEEN",
    "OFFLINE",
    "STALE",
    "AsOf",
    "Cell",
    "FleetHealth",
    "GroupRollout",
    "MeasurementRow",
    "Segment",
    "applying_revocations",
    "device_state",
    "fleet_health",
    "listened_channels",
    "measurement_rows",
    "target_version",
    "timeline",
]

STALE = "stale"
"""Heard from once, but not within the heartbeat window: its state now is unknown."""
NEVER_SEEN = "never_seen"
OFFLINE = "offline"
"""Heard from recently, and its last fresh status said it went offline (a clean stop)."""
GATE_ORDER = (
    "open",
    "bundle_expired",
    "freshness_expired",
    "revoked",
    "attestation_failed",
    "attestation_stale",
    "lineage_unavailable",
    "no_bundle",
    OFFLINE,
    STALE,
    NEVER_SEEN,
)
"""The dashboard's gate-state cells, in order; any other gate a device reports follows."""


@dataclass(slots=True)
class AsOf:
    """The oldest and newest report time a count is made of (``None``: no report)."""

    oldest: int | None = None
    newest: int | None = None

    def add(self, at: int | None) -> None:
        if at is None:
            return
        self.oldest = at if self.oldest is None else min(self.oldest, at)
        self.newest = at if self.newest is None else max(self.newest, at)


@dataclass(slots=True)
class Cell:
    """One count on the dashboard, the devices in it (first few) and its as-of range."""

    count: int = 0
    as_of: AsOf = field(default_factory=AsOf)
    examples: list[str] = field(default_factory=list)

    def add(self, device: str, at: int | None) -> None:
        self.count += 1
        self.as_of.add(at)
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(device)


MAX_EXAMPLES = 5
"""Device ids listed under a count (the devices page lists them all)."""


@dataclass(slots=True)
class GroupRollout:
    """Bundle rollout in one (region, group): the target version(s) its devices should run
    and how many run each version, counting stale and never-seen devices as unknown."""

    region: str
    group: str
    targets: set[int | None] = field(default_factory=set)
    on_target: Cell = field(default_factory=Cell)
    behind: Cell = field(default_factory=Cell)
    unknown: Cell = field(default_factory=Cell)
    running: dict[int | None, int] = field(default_factory=dict)

    @property
    def target_list(self) -> list[int | None]:
        """The targets, lowest version first (``None``, no bundle, last)."""
        return sorted(self.targets, key=lambda v: (v is None, v or 0))


@dataclass(slots=True)
class FleetHealth:
    """Everything the dashboard shows, as of ``now``."""

    now: int
    devices: int
    gates: dict[str, Cell]
    rollout: list[GroupRollout]
    attestation: dict[str, Cell]
    lineage_current: Cell
    lineage_lagging: Cell
    lineage_lag_entries: int
    lineage_max_lag: tuple[str, int] | None
    forks: Cell
    rejections: dict[str, Cell]


def device_state(row: ConsoleFleetRow, now: int, stale_after_s: int) -> str:
    """What the console says a device's state is now: ``never_seen``, ``stale`` (not heard
    from within ``stale_after_s``), ``offline`` (its fresh status said so), or the gate state
    its fresh status reports."""
    if row.last_seen is None or row.gate is None:
        return NEVER_SEEN
    if is_stale(row.last_seen, now, stale_after_s):
        return STALE
    if not row.online:
        return OFFLINE
    return row.gate


def target_version(
    row: ConsoleFleetRow, current: Mapping[tuple[str, str], PublishedBundle]
) -> int | None:
    """The bundle version ``row``'s device should run: the highest version current on a
    channel it listens on (its own, its groups', ``all``: the channels of
    :func:`edge_agent.protocol.topics.agent_channels`) in its region; ``None``: none."""
    if not current:
        return None
    channels = listened_channels(row.device_id, row.groups)
    versions = [b.version for c in channels if (b := current.get((row.region, c))) is not None]
    return max(versions, default=None)


_ALL_CHANNEL = str(Channel(ChannelKind.ALL))


def listened_channels(device_id: str, groups: Sequence[str]) -> list[str]:
    """The channels (as the registry names them) a device listens on: ``all``, its own and
    its groups' (:func:`edge_agent.protocol.topics.agent_channels`, without building and
    checking a :class:`Channel` per device: the dashboard does this for every device)."""
    channels = [_ALL_CHANNEL, f"{ChannelKind.DEVICE}/{device_id}"]
    channels += [f"{ChannelKind.GROUP}/{g}" for g in groups]
    return channels


def fleet_health(
    rows: Sequence[ConsoleFleetRow],
    *,
    bundles: Iterable[PublishedBundle],
    rejections: Iterable[RejectionTotal],
    now: int,
    stale_after_s: int,
) -> FleetHealth:
    """The dashboard's numbers for ``rows`` (:meth:`Registry.console_fleet`) at ``now``."""
    gates = {state: Cell() for state in GATE_ORDER}
    current = {(b.region, b.channel): b for b in bundles}
    rollout: dict[tuple[str, str], GroupRollout] = {}
    attestation: dict[str, Cell] = {}
    lineage_current, lineage_lagging, forks = Cell(), Cell(), Cell()
    lag_total, max_lag = 0, None
    for row in rows:
        state = device_state(row, now, stale_after_s)
        fresh = state not in (STALE, NEVER_SEEN)
        gates.setdefault(state, Cell()).add(row.device_id, row.last_seen)
        target = target_version(row, current)
        for group in row.groups or ("(no group)",):
            entry = rollout.setdefault((row.region, group), GroupRollout(row.region, group))
            entry.targets.add(target)
            if not fresh:
                entry.unknown.add(row.device_id, row.last_seen)
                continue
            entry.running[row.bundle_version] = entry.running.get(row.bundle_version, 0) + 1
            cell = entry.on_target if row.bundle_version == target else entry.behind
            cell.add(row.device_id, row.last_seen)
        attestation.setdefault(_attestation_verdict(row, now), Cell()).add(
            row.device_id, row.attested_at
        )
        if row.device_lineage_size is not None:
            lag = max(0, row.device_lineage_size - row.lineage_size)
            if lag:
                lineage_lagging.add(row.device_id, row.status_time)
                lag_total += lag
                if max_lag is None or lag > max_lag[1]:
                    max_lag = (row.device_id, lag)
            else:
                lineage_current.add(row.device_id, row.status_time)
        if row.forks:
            forks.add(row.device_id, None)
    rejected: dict[str, Cell] = {}
    for total in rejections:
        cell = rejected.setdefault(total.code, Cell())
        cell.count += total.count
        cell.as_of.add(total.last_at)
        if total.device not in cell.examples and len(cell.examples) < MAX_EXAMPLES:
            cell.examples.append(total.device)
    return FleetHealth(
        now=now,
        devices=len(rows),
        gates=gates,
        rollout=sorted(rollout.values(), key=lambda r: (r.region, r.group)),
        attestation=dict(sorted(attestation.items())),
        lineage_current=lineage_current,
        lineage_lagging=lineage_lagging,
        lineage_lag_entries=lag_total,
        lineage_max_lag=max_lag,
        forks=forks,
        rejections=dict(sorted(rejected.items())),
    )


def _attestation_verdict(row: ConsoleFleetRow, now: int) -> str:
    if row.attestation_verdict is None:
        return "never attested"
    if row.attestation_expires_at is not None and row.attestation_expires_at <= now:
        return f"{row.attestation_verdict} (expired)"
    return row.attestation_verdict


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the device's timeline: ``state`` from ``start`` to ``end`` (``unknown``
    where the hub heard nothing)."""

    start: int
    end: int
    state: str
    bundle_version: int | None = None


UNKNOWN = "unknown"


def timeline(
    spans: Sequence[StatusSpan], *, start: int, now: int, stale_after_s: int
) -> list[Segment]:
    """``spans`` (oldest first) as contiguous segments over ``[start, now]``: each span's
    state from its first status to ``stale_after_s`` after its last (or the next span, or
    now, whichever is first), and ``unknown`` in every gap."""
    segments: list[Segment] = []
    cursor = start
    for index, span in enumerate(spans):
        following = spans[index + 1].since if index + 1 < len(spans) else now
        end = min(span.until + stale_after_s, following, now)
        begin = max(span.since, start)
        if end <= begin:
            continue
        if begin > cursor:
            segments.append(Segment(cursor, begin, UNKNOWN))
        state = span.gate if span.online else OFFLINE
        segments.append(Segment(begin, end, state, span.bundle_version))
        cursor = end
    if cursor < now:
        segments.append(Segment(cursor, now, UNKNOWN))
    return segments


def applying_revocations(
    revocations: Iterable[IssuedRevocation],
    *,
    region: str,
    device: str,
    groups: Sequence[str],
    bundle_version: int | None,
) -> list[IssuedRevocation]:
    """The recorded revocations that name this device: itself, one of its groups, its
    region, or the bundle version it last reported running; key revocations apply to
    whatever that key signed and are all listed."""
    applying = []
    for revocation in revocations:
        if revocation.region != region:
            continue
        kind, value = revocation.kind, revocation.value
        if (
            (kind == RevocationKind.DEVICE and value == device)
            or (kind == RevocationKind.GROUP and value in groups)
            or kind == RevocationKind.REGION
            or kind == RevocationKind.KEY
            or (kind == RevocationKind.BUNDLE and value == str(bundle_version))
        ):
            applying.append(revocation)
    return applying


@dataclass(frozen=True, slots=True)
class MeasurementRow:
    """One measurement of a device's last attestation against what its bundle expects."""

    name: str
    measured: str | None
    expected: tuple[str, ...]
    verdict: str
    """``ok``, ``mismatch``, ``not measured``, or ``not expected`` (measured, no rule)."""


def measurement_rows(
    record: AttestationRecord, expectations: Expectations | None, profile: str
) -> list[MeasurementRow]:
    """``record``'s measurements (name -> hex digest) one by one against ``expectations``
    for the device's ``profile`` (``None``: the bundle expects nothing or is unknown)."""
    try:
        parsed = json.loads(record.measurements)
    except ValueError:
        parsed = {}
    measured = {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
    allowed = None if expectations is None else expectations.for_device(profile, record.device)
    expected = {
        name: tuple(sorted(d.hex() for d in digests)) for name, digests in (allowed or {}).items()
    }
    rows = []
    for name in sorted(set(measured) | set(expected)):
        digest, accepted = measured.get(name), expected.get(name, ())
        if name not in expected:
            verdict = "not expected"
        elif digest is None:
            verdict = "not measured"
        else:
            verdict = "ok" if digest in accepted else "mismatch"
        rows.append(MeasurementRow(name, digest, accepted, verdict))
    return rows

"""What the dashboard and device pages show, computed from registry records and ``now``.

Pure functions of values (no registry, no clock): the handlers read the registry and hand
the records in, so the rules here are tested on their own. The dashboard's counts come
aggregated from the registry (:meth:`hub.registry.interface.Registry.fleet_summary`, which
applies :func:`device_state`'s rule in its query; a route test holds the two together).

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
    FleetCount,
    FleetSummary,
    IssuedRevocation,
    PublishedBundle,
    RolloutCount,
    StatusSpan,
)

__all__ = [
    "GATE_ORDER",
    "NEVER_SEEN",
    "OFFLINE",
    "STALE",
    "UNKNOWN",
    "FleetHealth",
    "GroupRollout",
    "MeasurementRow",
    "Segment",
    "applying_revocations",
    "device_state",
    "fleet_health",
    "listened_channels",
    "measurement_rows",
    "merged",
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


def merged(a: FleetCount, b: FleetCount) -> FleetCount:
    """One count of ``a``'s and ``b``'s devices, from the oldest to the newest report."""
    times = [t for t in (a.oldest, a.newest, b.oldest, b.newest) if t is not None]
    return FleetCount(a.count + b.count, min(times, default=None), max(times, default=None))


@dataclass(slots=True)
class GroupRollout:
    """Bundle rollout in one (region, group): the target version(s) its devices should run
    and how many run each version, counting stale and never-seen devices as unknown."""

    region: str
    group: str
    targets: set[int | None] = field(default_factory=set)
    on_target: FleetCount = field(default_factory=FleetCount)
    behind: FleetCount = field(default_factory=FleetCount)
    unknown: FleetCount = field(default_factory=FleetCount)
    running: dict[int | None, int] = field(default_factory=dict)

    @property
    def target_list(self) -> list[int | None]:
        """The targets, lowest version first (``None``, no bundle, last)."""
        return sorted(self.targets, key=lambda v: (v is None, v or 0))

    def add(self, count: RolloutCount) -> None:
        self.targets.add(count.target)
        if not count.known:
            self.unknown = merged(self.unknown, count.devices)
            return
        self.running[count.running] = self.running.get(count.running, 0) + count.devices.count
        if count.running == count.target:
            self.on_target = merged(self.on_target, count.devices)
        else:
            self.behind = merged(self.behind, count.devices)


@dataclass(frozen=True, slots=True)
class FleetHealth:
    """Everything the dashboard shows, as of ``now``: the registry's
    :class:`~hub.registry.records.FleetSummary`, with every gate state present (zero when
    no device is in it) and the rollout gathered per (region, group)."""

    now: int
    devices: int
    gates: dict[str, FleetCount]
    rollout: list[GroupRollout]
    summary: FleetSummary


def fleet_health(summary: FleetSummary, now: int) -> FleetHealth:
    """What the dashboard shows of ``summary`` (read at ``now``)."""
    gates = {state: summary.states.get(state, FleetCount()) for state in GATE_ORDER}
    gates.update(summary.states)
    rollout: dict[tuple[str, str], GroupRollout] = {}
    for count in summary.rollout:
        key = (count.region, count.group)
        rollout.setdefault(key, GroupRollout(*key)).add(count)
    return FleetHealth(
        now=now,
        devices=sum(c.count for c in summary.states.values()),
        gates=gates,
        rollout=[rollout[k] for k in sorted(rollout)],
        summary=summary,
    )


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

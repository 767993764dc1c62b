"""Staged rollouts at the hub: starting one (``edge-hub rollout start``) and driving it
(the running ``edge-hub serve``).

:func:`prepare_rollout` is what ``rollout start`` records: the candidate verified and
planned exactly as ``bundle push`` does (:func:`hub.service.governance.plan_bundle`), the
halt conditions and stages parsed, the targeted devices frozen (narrowed by ``--group``:
such a rollout has no real channels, as they reach targeted devices it never staged), and
the rollback bundle signed with the policy keys of the keys directory
(:func:`hub.core.rollout.sign_rollback`) from the previous bundle: the highest version
current on a channel the targeted devices listen on.

:class:`RolloutDriver` moves every active rollout on, every ``rollout_interval_s``, on the
hub's connection (nothing moves while it has none, so a restarted hub resumes from what
the registry holds). Each round, per rollout (:func:`hub.core.rollout.next_step`):

1. **enter** a stage: the candidate becomes current on the device channel of each device
   the stage adds, recorded together with the rollout's new state in one write group, then
   published with fresh tokens; the stage's deny-rate baseline (its devices' decisions
   under other bundles, from :data:`BASELINE_S` before the rollout began) is frozen in its
   history;
2. **judge** the entered stage: the decisions its devices shipped since it began under the
   candidate, and the devices that logged a refused bundle since (the registry's lineage
   search columns, no entry decoded), against the halt conditions;
3. **halt** (or carry out an **abort**): the rollback bundle becomes current on the device
   channel of every device the rollout switched, and the reason is recorded;
4. **advance** when the soak has elapsed, or **complete** after the last stage: the
   candidate becomes current on the rollout's real channels and its device channels are
   cleared (an empty retained message on their bundle and freshness topics).

A write that finds the record changed meanwhile (an operator paused it) undoes itself and
the next round starts again from what is recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from edge_agent.errors import BundleError, ConfigError, EdgeGovError
from edge_agent.policy.bundle import CompiledBundle
from edge_agent.protocol import topics
from edge_agent.protocol.bundle import PolicyPayload, VerifiedBundle, verify_bundle
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import Kind, decode_entry, parse_shadow_detail
from edge_agent.protocol.topics import Channel, ChannelKind
from edge_agent.support.cli import format_duration
from edge_agent.support.mqtt import Connection
from hub.core.halt import StageCounters, parse_halt
from hub.core.publications import Publication, parse_channel, shadow_publication
from hub.core.rollout import (
    Divergence,
    Outcome,
    Step,
    StepKind,
    baseline_counters,
    judge,
    next_step,
    parse_stages,
    rollout_id,
    sign_rollback,
    stage_counters,
    stage_members,
    void_reason,
    with_aborted,
    with_advanced,
    with_completed,
    with_entered,
    with_halted,
)
from hub.hubdir.layout import HubKeys
from hub.registry import DeviceRecord, PublishedBundle, Registry, RegistryError
from hub.registry.lineage_records import LineageQuery
from hub.registry.rollout_records import RolloutRecord, RolloutState
from hub.service.context import CurrentConnection, ServiceContext, every, wall
from hub.service.governance import plan_bundle
from hub.service.publish import issue_freshness

__all__ = [
    "BASELINE_S",
    "MAX_DIVERGENCES",
    "RolloutDriver",
    "StageView",
    "device_channel",
    "prepare_rollout",
    "stage_counters_now",
]

logger = logging.getLogger(__name__)

BASELINE_S = 24 * 3600
"""How far back before a rollout began its stages' deny-rate baseline reaches."""
MAX_DIVERGENCES = 100_000
"""Most ``shadow_divergence`` entries one judgement of a stage reads (the newest first)."""
_FOREVER = 2**62
"""The end of a stage's window: entries stamped ahead of the hub's clock count too."""


def device_channel(device_id: str) -> str:
    return str(Channel(ChannelKind.DEVICE, device_id))


def prepare_rollout(
    registry: Registry,
    keys: HubKeys,
    signers: Sequence[PrivateKey],
    data: bytes,
    *,
    stages: str,
    soak_s: int,
    halts: Sequence[str],
    groups: Sequence[str],
    now: int,
) -> RolloutRecord:
    """Verify and plan the candidate ``data``, sign its rollback bundle with ``signers``
    (the policy keys) and record the rollout, running, before its first stage. What the
    plan and the rollback read and the record are one write group: no push lands between
    them (the rollback re-issues the policy current when the rollout is recorded).

    Raises:
        BundleError: a device would refuse the candidate (as ``bundle push``).
        ConfigError: a bad stage list, soak or halt condition (``HaltSyntaxError``), no
            targeted device (in ``groups``), no previous bundle to roll back to, too few
            policy keys, or another rollout active in the region.
        RegistryError: the write failed.
    """
    with registry.write_group():
        plan = plan_bundle(registry, keys, data, now=now)
        candidate = plan.bundle
        for text in halts:
            parse_halt(text)
        parsed_stages = parse_stages(stages)
        if soak_s < 0:
            raise ConfigError("--soak must not be negative")
        needed = soak_s * len(parsed_stages)
        if now + needed >= candidate.expires_at:
            raise ConfigError(
                f"the candidate expires in {format_duration(candidate.expires_at - now)}, "
                f"before its {len(parsed_stages)} stages have soaked "
                f"({format_duration(needed)}): build it with a longer ttl, or use fewer "
                "stages or a shorter --soak"
            )
        targeted = set(plan.targeted)
        devices = [
            d
            for d in registry.devices()
            if d.device_id in targeted and (not groups or set(groups) & set(d.groups))
        ]
        if not devices:
            where = f" in group(s) {', '.join(groups)}" if groups else ""
            raise ConfigError(
                f"the candidate targets no registered device{where}: nothing to roll out"
            )
        previous = _previous_bundle(registry, keys, candidate, devices)
        rollback = sign_rollback(previous, candidate, root=keys.root, signers=signers)
        record = RolloutRecord(
            rollout_id=rollout_id(candidate.target.region, candidate.version),
            region=candidate.target.region,
            state=RolloutState.RUNNING,
            created_at=now,
            updated_at=now,
            candidate=candidate.raw,
            candidate_version=candidate.version,
            candidate_digest=candidate.digest,
            rollback=rollback,
            channels=plan.channels if len(devices) == len(targeted) else (),
            devices=tuple(d.device_id for d in devices),
            stages=parsed_stages,
            soak_s=soak_s,
            halts=tuple(halts),
            groups=tuple(sorted(set(groups))),
        )
        registry.create_rollout(record)
    return record


def _previous_bundle(
    registry: Registry, keys: HubKeys, candidate: CompiledBundle, devices: Sequence[DeviceRecord]
) -> VerifiedBundle[PolicyPayload]:
    """The bundle the rollback re-issues: what the ``devices`` hold, each the highest
    version current on a channel it listens on (its own included: a halted rollout's
    rollback, a narrowed rollout's candidate), verified under the hub's root.

    One rollback serves every device of the rollout, so they must all hold the same
    policy (the same target, policy, attestation expectations and ``max_offline``; the
    version may differ, as a rollback re-issues a policy under another). The newest of
    what they hold is re-issued.

    Raises:
        ConfigError: none is current for some device (nothing to roll it back to), or the
            devices hold different policies (a rollback would give some a policy they never
            ran).
    """
    region = candidate.target.region
    current = {b.channel: b for b in registry.current_bundles(region)}
    held: dict[str, PublishedBundle] = {}
    for device in devices:
        mine = [
            current[str(c)]
            for c in topics.agent_channels(device.device_id, device.groups)
            if str(c) in current
        ]
        if mine:
            held[device.device_id] = max(mine, key=lambda b: b.version)
    if not held:
        raise ConfigError(
            f"no bundle is current for these devices in {region}: a rollout needs one to roll "
            "back to (push a first bundle with 'edge-hub bundle push')"
        )
    bare = sorted(d.device_id for d in devices if d.device_id not in held)
    if bare:
        raise ConfigError(
            f"no bundle is current for {len(bare)} of these devices ({', '.join(bare[:3])}"
            f"{' ...' * (len(bare) > 3)}): a rollback cannot take them back to holding none; "
            "push them a first bundle, or leave them out with --group"
        )
    verified = {
        b.digest: verify_bundle(b.data, root=keys.root, region=region) for b in held.values()
    }
    first, top = max(sorted(held.items()), key=lambda item: item[1].version)
    newest = verified[top.digest]
    for device_id, bundle in sorted(held.items()):
        if _content(verified[bundle.digest]) != _content(newest):
            raise ConfigError(
                f"the devices hold different policies: {first} holds version {top.version} "
                f"(on {top.channel}), {device_id} version {bundle.version} (on "
                f"{bundle.channel}), so one rollback cannot restore each its own; push one "
                "bundle to all of them first, or narrow the rollout with --group"
            )
    return newest


def _content(bundle: VerifiedBundle[PolicyPayload]) -> tuple[object, ...]:
    """What a rollback re-issues of ``bundle``: all but its version and validity."""
    return (bundle.target, bundle.policy, bundle.attestation, bundle.max_offline)


class RolloutDriver:
    """Moves the active rollouts on, on the running hub's connection (module docstring)."""

    def __init__(self, context: ServiceContext) -> None:
        self._context = context
        self._connection: Connection | None = None
        self._shadowed: set[str] = set()
        """Rollouts whose shadows were published on :attr:`_connection`."""

    async def run(self, current: CurrentConnection, stop: asyncio.Event) -> None:
        """A round every ``rollout_interval_s`` until ``stop``."""
        await every(
            self._context.config.rollout_interval_s,
            lambda: self.tick(current()),
            stop,
            unpublished="rollout publish failed: %s (republished on reconnect)",
            failed="rollout round failed: %s",
        )

    async def tick(self, conn: Connection | None) -> None:
        """One round over every active rollout (none while not connected)."""
        if conn is None:
            return
        if conn is not self._connection:
            self._connection, self._shadowed = conn, set()
        registry = self._context.registry
        for record in await self._context.db(registry.rollouts, active=True):
            await self._republish_shadows(conn, record)
            for _ in range(2 * len(record.stages) + 1):
                moved = await self._step(conn, record)
                if moved is None:
                    break
                record = moved

    async def _republish_shadows(self, conn: Connection, record: RolloutRecord) -> None:
        """The candidate again as the shadow of the devices not yet switched, once per
        connection (the hub records no shadow: a restarted embedded broker holds none)."""
        if record.rollout_id in self._shadowed or record.entered < 0:
            return
        if record.state is not RolloutState.ABORTING:
            switched = stage_members(record, record.entered)
            await self._context.retained.publish(
                conn, _shadows(record, _outside(record, switched), record.candidate)
            )
        self._shadowed.add(record.rollout_id)

    async def _step(self, conn: Connection, record: RolloutRecord) -> RolloutRecord | None:
        """Carry out ``record``'s next step; the record after it, ``None`` when nothing
        happened (or it changed meanwhile: the next round reads it again). What the step
        publishes goes out once it is recorded."""
        recorded = await self._context.db(self._record_step, record)
        if recorded is None:
            return None
        moved, step, publications = recorded
        await self._context.retained.publish(conn, publications)
        logger.info(
            "rollout %s: %s%s",
            record.rollout_id,
            step.kind,
            f" ({step.reason})" * bool(step.reason),
        )
        return moved

    def _record_step(
        self, record: RolloutRecord
    ) -> tuple[RolloutRecord, Step, list[Publication]] | None:
        """Decide and record ``record``'s next step: the record after it, the step and what
        to publish; ``None`` as :meth:`_step`. One registry operation (on the gateway's
        worker)."""
        now = wall()
        registry = self._context.registry
        halt: str | None = None
        observed: tuple[str, ...] = ()
        if record.state in (RolloutState.RUNNING, RolloutState.PAUSED):
            halt = self._void(record, now)
        if (
            halt is None
            and record.entered == record.stage
            and record.state
            in (
                RolloutState.RUNNING,
                RolloutState.PAUSED,
            )
        ):
            judgement = judge(record.halts, stage_counters_now(registry, record).counters)
            halt, observed = judgement.halt, judgement.observed
        adds = len(stage_members(record, record.stage)) > len(
            stage_members(record, record.stage - 1)
        )
        step = next_step(record, now, halt, adds=adds)
        if step.kind is StepKind.NONE:
            return None
        publications: list[Publication] = []
        try:
            with registry.write_group():
                moved = self._apply(record, step, now, observed, publications)
                if not registry.update_rollout(moved, expected=record):
                    raise _Changed(f"rollout {record.rollout_id} changed meanwhile")
        except _Changed as exc:
            logger.debug("%s: read again next round", exc)
            return None
        return moved, step, publications

    def _void(self, record: RolloutRecord, now: int) -> str | None:
        """Why ``record``'s candidate is void at ``now`` (:func:`hub.core.rollout.void_reason`,
        it expired, or it no longer verifies under the hub's current root), ``None`` while
        it is not."""
        context = self._context
        try:
            candidate = verify_bundle(
                record.candidate, root=context.current_root, region=record.region
            )
        except BundleError as exc:
            return f"the candidate no longer verifies under the hub's trust root: {exc.message}"
        if now >= candidate.expires_at:
            return (
                f"the candidate expired {format_duration(now - candidate.expires_at)} ago: its "
                "devices refuse it (and its rollback, which expires with it); push a newer "
                "bundle"
            )
        issued = context.registry.current_revocations()
        return void_reason(candidate, root=context.current_root, issued=issued)

    def _apply(
        self,
        record: RolloutRecord,
        step: Step,
        now: int,
        observed: Sequence[str],
        publications: list[Publication],
    ) -> RolloutRecord:
        """Record what ``step`` changes on the channels and add what to publish; the record
        after it."""
        switched = stage_members(record, record.entered)
        outside = _outside(record, switched)
        if step.kind is StepKind.ENTER:
            members = stage_members(record, record.stage)
            added = [d for d in members if d not in switched]
            publications += self._current(record, record.candidate, added, now)
            publications += _shadows(record, added, None) if record.entered >= 0 else []
            publications += _shadows(record, _outside(record, members), record.candidate)
            self._shadowed.add(record.rollout_id)
            baseline = self._baseline(record)
            return with_entered(record, now, devices=len(members), baseline=baseline)
        if step.kind is StepKind.HALT:
            unpublished = self._roll_back(record, switched, now, publications)
            publications += _shadows(record, outside, None)
            return with_halted(record, now, step.reason + unpublished, observed)
        if step.kind is StepKind.ABORT:
            unpublished = self._roll_back(record, switched, now, publications)
            publications += _shadows(record, outside, None) if record.entered >= 0 else []
            return with_aborted(replace(record, reason=record.reason + unpublished), now)
        if step.kind is StepKind.ADVANCE:
            return with_advanced(record, now, observed)
        publications += self._complete(record, switched, now)
        return with_completed(record, now, observed)

    def _roll_back(
        self,
        record: RolloutRecord,
        switched: Sequence[str],
        now: int,
        publications: list[Publication],
    ) -> str:
        """Make the rollback current on the ``switched`` devices' own channels and add it to
        ``publications``; what to add to the reason when it cannot be: a rollback that no
        longer verifies under the hub's root (rotated since the rollout started) is neither
        recorded nor published, and the rollout still ends."""
        try:
            publications += self._current(record, record.rollback, switched, now)
        except BundleError as exc:
            return (
                f"; the rollback was not published: it no longer verifies under the hub's "
                f"root ({exc.message}): push the switched devices a bundle signed under it"
            )
        return ""

    def _current(
        self, record: RolloutRecord, data: bytes, devices: Sequence[str], now: int
    ) -> list[Publication]:
        """Make ``data`` current on ``devices``' own channels; what to publish."""
        return self._record_bundle(record, data, [device_channel(d) for d in devices], now)

    def _complete(
        self, record: RolloutRecord, switched: Sequence[str], now: int
    ) -> list[Publication]:
        """The candidate current on the real channels, the device channels cleared. A
        rollout ``--group`` narrowed has no real channels (they reach devices it never
        staged): its devices keep the candidate on their own channels."""
        publications = self._record_bundle(record, record.candidate, record.channels, now)
        cleared = [device_channel(d) for d in switched] if record.channels else []
        self._context.registry.clear_channels(record.region, cleared)
        for text in cleared:
            channel = parse_channel(text)
            publications += [
                Publication(topics.bundle_topic(record.region, channel), b""),
                Publication(topics.freshness_topic(record.region, channel), b""),
            ]
        return publications

    def _record_bundle(
        self, record: RolloutRecord, data: bytes, channels: Sequence[str], now: int
    ) -> list[Publication]:
        if not channels:
            return []
        context = self._context
        bundle = verify_bundle(data, root=context.current_root, region=record.region)
        context.registry.record_bundle(
            bundle=PublishedBundle(
                region=record.region,
                channel="",
                version=bundle.version,
                digest=bundle.digest,
                data=bundle.raw,
                expires_at=bundle.expires_at,
                max_offline=bundle.max_offline,
                pushed_at=now,
            ),
            issued_at=bundle.issued_at,
            target=bundle.target.as_cbor(),
            channels=channels,
        )
        publications = [
            Publication(topics.bundle_topic(record.region, parse_channel(c)), data)
            for c in channels
        ]
        return publications + issue_freshness(
            context.registry,
            key=context.keys.freshness,
            now=now,
            ttl_s=context.config.token_ttl_s,
            region=record.region,
            channels=channels,
        )

    def _baseline(self, record: RolloutRecord) -> StageCounters:
        """The deny rate of the rollout's devices under other bundles than the candidate,
        from :data:`BASELINE_S` before the rollout began until now: a stage baseline (its
        counters cover the stage's devices and those holding the candidate as a shadow:
        every device of the rollout)."""
        tallies = self._context.registry.lineage_tallies(
            record.devices, record.created_at - BASELINE_S, _FOREVER
        )
        return baseline_counters(tallies, record.candidate_version)


@dataclass(frozen=True, slots=True)
class StageView:
    """A stage's counters now, and what they are made of: decisions of switched devices
    under the candidate, policy decisions of devices holding it as a shadow, and the
    divergences among those."""

    counters: StageCounters
    switched: int
    shadowed: int
    divergences: int


def stage_counters_now(registry: Registry, record: RolloutRecord) -> StageView:
    """What the entered stage's devices shipped since it began (rule 3 of
    :mod:`hub.core.rollout`); empty before the first stage is entered."""
    if record.entered < 0:
        return StageView(StageCounters(), 0, 0, 0)
    members = stage_members(record, record.entered)
    outside = _outside(record, members)
    since = record.stage_started_at
    tallies = registry.lineage_tallies(members, since, _FOREVER)
    # A shadow reaches its devices a moment after the stage begins, and entry times are
    # whole seconds: their decisions count from the next second, so none made before the
    # shadow arrived passes for one the candidate agreed with.
    shadow_since = since + 1
    shadowed = registry.lineage_tallies(outside, shadow_since, _FOREVER) if outside else []
    divergences = _divergences(registry, record, set(outside), shadow_since) if outside else []
    rejecting = registry.devices_with_entry(members, str(Kind.BUNDLE_REJECTED), since)
    counters = stage_counters(
        tallies,
        record.candidate_version,
        len(rejecting),
        record.history[-1],
        shadowed=shadowed,
        divergences=divergences,
    )
    alone = stage_counters(tallies, record.candidate_version, 0, None)
    return StageView(
        counters, alone.decisions, counters.decisions - alone.decisions, len(divergences)
    )


def _divergences(
    registry: Registry, record: RolloutRecord, devices: set[str], since: int
) -> list[Divergence]:
    """The ``shadow_divergence`` entries of ``devices`` since ``since`` whose shadow is the
    candidate, newest first, at most :data:`MAX_DIVERGENCES`. The active outcome is in the
    entry's search columns; the shadow's is read from its ``detail``."""
    found: list[Divergence] = []
    query = LineageQuery(kind=str(Kind.SHADOW_DIVERGENCE), since=since)
    for hit in registry.iter_lineage(query):
        if hit.device not in devices:
            continue
        stored = registry.entries(hit.device, hit.seq, hit.seq + 1)
        try:
            shadow = parse_shadow_detail(decode_entry(stored[0], hit.seq).detail)
        except (ValueError, IndexError, EdgeGovError) as exc:
            logger.warning("divergence %s #%d not counted: %s", hit.device, hit.seq, exc)
            continue
        if shadow.digest != record.candidate_digest:
            continue
        found.append(
            Divergence(
                Outcome(hit.allowed, hit.reason, hit.rule),
                Outcome(shadow.allowed, shadow.reason, shadow.rule),
            )
        )
        if len(found) >= MAX_DIVERGENCES:
            break
    return found


def _outside(record: RolloutRecord, members: Sequence[str]) -> list[str]:
    """The rollout's devices not in ``members`` (not switched: they hold the shadow)."""
    inside = set(members)
    return [d for d in record.devices if d not in inside]


def _shadows(
    record: RolloutRecord, devices: Sequence[str], data: bytes | None
) -> list[Publication]:
    """``data`` as the shadow on each of ``devices``' own channels (``None``: cleared)."""
    return [
        shadow_publication(record.region, Channel(ChannelKind.DEVICE, d), data) for d in devices
    ]


class _Changed(RegistryError):
    """The rollout changed between the read and the write (undoes the write group)."""

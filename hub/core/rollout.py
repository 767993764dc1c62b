"""Staged rollout, pure: who is in a stage, what happens next, and whether a stage halts.

The rules (docs/rollout.md, section 3):

1. **Membership.** A device's point in a rollout is the first 8 bytes of
   ``SHA-256("edgegov/rollout/v1" 0 rollout-id 0 device-id)`` read as a fraction of 2^64;
   it is in a stage whose share is ``p`` % when its point is below ``p / 100``. The point
   depends on nothing else, so a stage's devices are the same in every process and after a
   restart, and stages are nested: a device in stage ``k`` is in every later one (shares
   only grow). Over many devices a stage holds close to its share of them.
2. **Transitions** (:func:`next_step`, one table of guard clauses): an ``aborting`` rollout
   aborts; a rollout whose candidate became void (:func:`void_reason`) or whose entered
   stage's halt condition holds halts (also while paused: its devices run the candidate
   meanwhile); a stage not yet published is entered; a running
   stage whose soak has elapsed (time paused not counted) advances, or completes the
   rollout when it is the last; a stage that adds no device to the one before needs no
   soak. The ``with_*`` functions apply a step to the record; calling one in a state it
   does not apply to raises :class:`~edge_agent.errors.ConfigError` with the reason.
3. **Halting** (:func:`judge`): the halt conditions (:mod:`hub.core.halt`) are evaluated in
   the order given over the stage's counters (:func:`stage_counters`: the decisions its
   devices shipped since the stage began made under the candidate, the devices that logged
   a refused bundle since, what the devices holding the candidate as a shadow would have
   decided (their decisions, with each ``shadow_divergence`` counted as the shadow
   decided it), and the baseline frozen when the stage began: the stage's devices'
   decisions under other bundles, :func:`baseline_counters`); the first that holds halts
   the stage. Counting by the bundle version each decision names, not by time alone, keeps
   a decision made just before the switch (in the same second) out of the stage.
4. **Rollback** (:func:`sign_rollback`): devices install only newer versions (TUF), so the
   way back is the previous policy re-issued under version candidate + 1, with the
   candidate's validity, signed when the rollout starts (the running hub holds no policy
   key) and published on the stage's devices' own channels if the rollout halts or aborts.

No registry, clock, file or network is touched: callers read, pass ``now`` and record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from fractions import Fraction

from edge_agent.errors import BundleError, ConfigError
from edge_agent.policy.bundle import CompiledBundle
from edge_agent.protocol.bundle import PolicyPayload, VerifiedBundle, bundle_payload, sign_bundle
from edge_agent.protocol.expectations import expectations_value
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.lineage_entries import Kind
from edge_agent.protocol.revocation import Revocation, RevocationKind
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import TrustRoot
from edge_agent.trust.shadow import POLICY_REASONS
from hub.core.bundles import verify_operator_bundle
from hub.core.halt import HaltCondition, StageCounters, evaluate_halt, parse_halt
from hub.registry.records import IssuedRevocation
from hub.registry.rollout_records import LineageTally, RolloutRecord, RolloutState, StageLog

__all__ = [
    "MAX_STAGES",
    "Divergence",
    "Judgement",
    "Outcome",
    "Step",
    "StepKind",
    "baseline_counters",
    "check_clear_of_rollouts",
    "in_stage",
    "judge",
    "next_step",
    "parse_stages",
    "rollout_id",
    "sign_rollback",
    "soak_left",
    "stage_counters",
    "stage_members",
    "stage_point",
    "void_reason",
    "with_abort_requested",
    "with_aborted",
    "with_advanced",
    "with_completed",
    "with_entered",
    "with_halted",
    "with_paused",
    "with_resumed",
]

MAX_STAGES = 20
"""Most stages one rollout may have."""
_DOMAIN = b"edgegov/rollout/v1"
_SCALE = 2**64


def rollout_id(region: str, version: int) -> str:
    """A rollout's id: its region and candidate version (a version goes out once)."""
    return f"{region}-v{version}"


def parse_stages(text: str) -> tuple[str, ...]:
    """``"1%,10%,50%,100%"`` as percentages (``("1", "10", "50", "100")``).

    Raises:
        ConfigError: not a comma-separated list of percentages above 0, increasing, ending
            at 100%, at most :data:`MAX_STAGES`.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > MAX_STAGES:
        raise ConfigError(f"--stages: at most {MAX_STAGES} stages")
    stages: list[str] = []
    for part in parts:
        number = part.removesuffix("%")
        if not part.endswith("%") or not number or not number.replace(".", "", 1).isdigit():
            raise ConfigError(f"--stages: {part!r} is not a percentage (write it as 10%)")
        share = Fraction(number)
        if not 0 < share <= 100:
            raise ConfigError(f"--stages: {part} is not above 0% and at most 100%")
        if stages and share <= Fraction(stages[-1]):
            raise ConfigError(f"--stages: {part} is not above the stage before ({stages[-1]}%)")
        stages.append(number)
    if Fraction(stages[-1]) != 100:
        raise ConfigError("--stages: the last stage must be 100% (every targeted device)")
    return tuple(stages)


def stage_point(rollout: str, device_id: str) -> Fraction:
    """``device_id``'s point in ``rollout``, in [0, 1) (rule 1)."""
    digest = hashlib.sha256(b"\0".join((_DOMAIN, rollout.encode(), device_id.encode()))).digest()
    return Fraction(int.from_bytes(digest[:8], "big"), _SCALE)


def in_stage(rollout: str, device_id: str, percent: str) -> bool:
    """Whether ``device_id`` is in ``rollout``'s stage of share ``percent`` (rule 1)."""
    return stage_point(rollout, device_id) < Fraction(percent) / 100


def check_clear_of_rollouts(
    rollouts: Iterable[RolloutRecord],
    *,
    region: str,
    channels: Iterable[str],
    targeted: Iterable[str],
) -> None:
    """Refuse a bundle for ``channels`` of ``region`` (targeting the registered devices
    ``targeted``) while an active rollout there uses one of those channels or devices.

    A hand push beside a rollout would be silently undone or would silently override: the
    rollout's completion makes its candidate current on its channels again, and its
    rollback, signed when it started from the policy then current, would bring back that
    policy, not the pushed one. So the push waits until the rollout completes, halts or is
    aborted.

    Raises:
        ConfigError: an active rollout of ``region`` shares a channel or a device.
    """
    wanted, devices = set(channels), set(targeted)
    for record in rollouts:
        if record.region != region or not record.state.active:
            continue
        shared = sorted(wanted & set(record.channels)) or sorted(devices & set(record.devices))
        if not shared:
            continue
        remedy = (
            "it is being aborted: the running 'edge-hub serve' rolls it back within "
            "seconds; push after that"
            if record.state is RolloutState.ABORTING
            else f"let it complete or halt, or abort it ('edge-hub rollout abort "
            f"{record.rollout_id}'), before another bundle goes there"
        )
        raise ConfigError(
            f"rollout {record.rollout_id} is active in {region} on "
            f"{', '.join(shared[:3])}{' ...' * (len(shared) > 3)}: {remedy}"
        )


def stage_members(record: RolloutRecord, stage: int) -> tuple[str, ...]:
    """The devices of ``record``'s stage ``stage`` (``-1``: none), by device id."""
    if stage < 0:
        return ()
    percent = record.stages[stage]
    return tuple(sorted(d for d in record.devices if in_stage(record.rollout_id, d, percent)))


class StepKind(StrEnum):
    NONE = "none"
    ENTER = "enter"
    HALT = "halt"
    ADVANCE = "advance"
    COMPLETE = "complete"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class Step:
    """What happens next to a rollout, and why (for ``halt``: the condition and what was
    observed)."""

    kind: StepKind
    reason: str = ""


def soak_left(record: RolloutRecord, now: int) -> int:
    """Seconds of soak the current stage still needs (0 once elapsed; the whole soak
    before it is entered). Time paused does not count."""
    if record.entered < record.stage:
        return record.soak_s
    paused = record.paused_s + (now - record.paused_at if record.paused_at is not None else 0)
    return max(0, record.soak_s - (now - record.stage_started_at - paused))


def next_step(record: RolloutRecord, now: int, halt: str | None, *, adds: bool = True) -> Step:
    """What happens to ``record`` at ``now`` (rule 2). ``halt`` is the reason a halt
    condition holds over the entered stage (:func:`judge`), or the candidate became void
    (:func:`void_reason`: then no further stage is entered), ``None`` when none does;
    ``adds`` whether the current stage adds devices to the stage before."""
    state = record.state
    if state is RolloutState.ABORTING:
        return Step(StepKind.ABORT, record.reason)
    if state not in (RolloutState.RUNNING, RolloutState.PAUSED):
        return Step(StepKind.NONE)
    if halt is not None:
        return Step(StepKind.HALT, halt)
    if record.entered < record.stage:
        return Step(StepKind.ENTER) if state is RolloutState.RUNNING else Step(StepKind.NONE)
    if state is RolloutState.PAUSED or (adds and soak_left(record, now) > 0):
        return Step(StepKind.NONE)
    if record.stage == len(record.stages) - 1:
        return Step(StepKind.COMPLETE)
    return Step(StepKind.ADVANCE)


def _require(record: RolloutRecord, allowed: Iterable[RolloutState], doing: str) -> None:
    if record.state not in tuple(allowed):
        raise ConfigError(f"rollout {record.rollout_id} is {record.state}: it cannot be {doing}")


def with_entered(
    record: RolloutRecord, now: int, *, devices: int, baseline: StageCounters
) -> RolloutRecord:
    """``record`` with its current stage published at ``now`` to ``devices`` devices; the
    stage's deny-rate baseline is ``baseline`` (its decisions and denials)."""
    _require(record, [RolloutState.RUNNING], "entering a stage")
    log = StageLog(
        record.stage, now, devices, baseline.baseline_decisions, baseline.baseline_denied
    )
    return replace(
        record,
        entered=record.stage,
        stage_started_at=now,
        paused_s=0,
        updated_at=now,
        history=(*record.history, log),
    )


def _ended(
    record: RolloutRecord, now: int, outcome: str, observed: Sequence[str]
) -> tuple[StageLog, ...]:
    if not record.history or record.history[-1].ended_at is not None:
        return record.history
    last = replace(record.history[-1], ended_at=now, outcome=outcome, observed=tuple(observed))
    return (*record.history[:-1], last)


def with_advanced(record: RolloutRecord, now: int, observed: Sequence[str]) -> RolloutRecord:
    """``record`` past its current stage (soaked), on to the next one (not yet entered)."""
    _require(record, [RolloutState.RUNNING], "advanced")
    return replace(
        record,
        stage=record.stage + 1,
        updated_at=now,
        history=_ended(record, now, "soaked", observed),
    )


def with_completed(record: RolloutRecord, now: int, observed: Sequence[str]) -> RolloutRecord:
    """``record`` completed: its last stage soaked."""
    _require(record, [RolloutState.RUNNING], "completed")
    return replace(
        record,
        state=RolloutState.COMPLETED,
        updated_at=now,
        history=_ended(record, now, "soaked", observed),
    )


def with_halted(
    record: RolloutRecord, now: int, reason: str, observed: Sequence[str]
) -> RolloutRecord:
    """``record`` halted at ``now`` because ``reason`` (its stage rolled back)."""
    _require(record, [RolloutState.RUNNING, RolloutState.PAUSED], "halted")
    return replace(
        record,
        state=RolloutState.HALTED,
        reason=reason,
        paused_at=None,
        updated_at=now,
        history=_ended(record, now, "halted", observed),
    )


def with_paused(record: RolloutRecord, now: int) -> RolloutRecord:
    """``record`` paused: no further stage starts and the soak clock stops; halt
    conditions are still watched."""
    _require(record, [RolloutState.RUNNING], "paused (only a running rollout pauses)")
    return replace(record, state=RolloutState.PAUSED, paused_at=now, updated_at=now)


def with_resumed(record: RolloutRecord, now: int) -> RolloutRecord:
    """``record`` running again; the soak clock goes on where it stopped."""
    _require(record, [RolloutState.PAUSED], "resumed (only a paused rollout resumes)")
    assert record.paused_at is not None
    return replace(
        record,
        state=RolloutState.RUNNING,
        paused_s=record.paused_s + max(0, now - record.paused_at),
        paused_at=None,
        updated_at=now,
    )


def with_abort_requested(record: RolloutRecord, now: int, reason: str) -> RolloutRecord:
    """``record`` to be aborted by the running hub (it rolls the stage back)."""
    _require(
        record, [RolloutState.RUNNING, RolloutState.PAUSED], "aborted (it is no longer active)"
    )
    return replace(record, state=RolloutState.ABORTING, reason=reason, updated_at=now)


def with_aborted(record: RolloutRecord, now: int) -> RolloutRecord:
    """``record`` aborted: its stage rolled back."""
    _require(record, [RolloutState.ABORTING], "marked aborted")
    return replace(
        record,
        state=RolloutState.ABORTED,
        paused_at=None,
        updated_at=now,
        history=_ended(record, now, "aborted", ()),
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision's verdict, reason and deciding rule (``None``: the default deny)."""

    allowed: bool
    reason: str
    rule: str | None


@dataclass(frozen=True, slots=True)
class Divergence:
    """A decision of a device not yet switched that the candidate, held there as its
    shadow, decides otherwise (a ``shadow_divergence`` entry)."""

    active: Outcome
    shadow: Outcome


class _Tally:
    def __init__(self) -> None:
        self.decisions = self.denied = 0
        self.by_reason: dict[str, int] = {}
        self.by_rule: dict[str, int] = {}

    def add(self, outcome: Outcome, count: int) -> None:
        """Count ``count`` decisions of ``outcome`` (negative: take them back, never below
        zero: a divergence whose decision fell just outside the window takes nothing)."""
        self.decisions = max(0, self.decisions + count)
        self.denied = max(0, self.denied + (0 if outcome.allowed else count))
        self.by_reason[outcome.reason] = max(0, self.by_reason.get(outcome.reason, 0) + count)
        if outcome.rule is not None:
            self.by_rule[outcome.rule] = max(0, self.by_rule.get(outcome.rule, 0) + count)


def stage_counters(
    tallies: Iterable[LineageTally],
    version: int,
    rejecting_devices: int,
    log: StageLog | None,
    *,
    shadowed: Iterable[LineageTally] = (),
    divergences: Iterable[Divergence] = (),
) -> StageCounters:
    """The counters halt conditions read: what the candidate decided and would have
    decided in the stage, by verdict, reason and deciding rule; ``rejecting_devices`` as
    install failures; ``log``'s baseline.

    What it decided: the decisions of ``tallies`` (the switched devices) made under bundle
    ``version``. What it would have decided: the decisions of ``shadowed`` (the devices
    holding it as a shadow) that their policy made (a gate denial there is the active
    bundle's and the device's, not the candidate's: :data:`POLICY_REASONS`, the decisions
    an agent compares with its shadow), each as the active bundle decided it, except the
    ``divergences``, counted as the shadow decided them.
    """
    tally = _Tally()
    for line in tallies:
        if line.kind == Kind.DECISION and line.bundle_version == version:
            tally.add(Outcome(line.allowed, line.reason, line.rule), line.count)
    for line in shadowed:
        if line.kind == Kind.DECISION and line.reason in POLICY_REASONS:
            tally.add(Outcome(line.allowed, line.reason, line.rule), line.count)
    for divergence in divergences:
        tally.add(divergence.active, -1)
        tally.add(divergence.shadow, 1)
    return StageCounters(
        decisions=tally.decisions,
        denied=tally.denied,
        by_reason={k: v for k, v in tally.by_reason.items() if v},
        by_rule={k: v for k, v in tally.by_rule.items() if v},
        install_failures=rejecting_devices,
        baseline_decisions=0 if log is None else log.baseline_decisions,
        baseline_denied=0 if log is None else log.baseline_denied,
    )


def baseline_counters(tallies: Iterable[LineageTally], version: int) -> StageCounters:
    """A stage's deny-rate baseline: the decisions of ``tallies`` made under any bundle
    but ``version`` (the candidate), as ``baseline_decisions`` and ``baseline_denied``."""
    decisions = denied = 0
    for tally in tallies:
        if tally.kind == Kind.DECISION and tally.bundle_version != version:
            decisions += tally.count
            denied += 0 if tally.allowed else tally.count
    return StageCounters(baseline_decisions=decisions, baseline_denied=denied)


@dataclass(frozen=True, slots=True)
class Judgement:
    """The first halt condition that holds (``None``: none) and what each observed."""

    halt: str | None
    observed: tuple[str, ...]


def void_reason(
    candidate: VerifiedBundle[PolicyPayload], *, root: TrustRoot, issued: Iterable[IssuedRevocation]
) -> str | None:
    """Why the verified ``candidate`` is void now (a sentence), ``None`` while it is not: a
    revocation of its region ``issued`` since the rollout started voids its version or
    leaves too few of its signers (``root``'s policy threshold). Its devices would install
    it and deny everything, and ``bundle push`` refuses such a bundle, so the rollout halts
    rather than take it to another stage or to its channels."""
    threshold = root.role(Role.POLICY).threshold
    for record in issued:
        if record.region != candidate.target.region:
            continue
        revocation = Revocation(
            record.epoch, record.issued_at, RevocationKind(record.kind), record.value, record.reason
        )
        if revocation.denies_bundle(candidate.version, candidate.signer_ids, threshold):
            return (
                f"revocation epoch {record.epoch} ({record.kind} {record.value}) voids the "
                f"candidate, version {candidate.version}: its devices would deny everything "
                "with it installed"
            )
    return None


def judge(conditions: Sequence[str], counters: StageCounters) -> Judgement:
    """Evaluate ``conditions`` (halt texts, parsed here) over ``counters`` (rule 3).

    Raises:
        HaltSyntaxError: a condition does not parse (checked when the rollout started).
    """
    parsed: list[HaltCondition] = [parse_halt(text) for text in conditions]
    observed, halt = [], None
    for condition in parsed:
        evaluation = evaluate_halt(condition, counters)
        observed.append(evaluation.observed)
        if evaluation.holds and halt is None:
            halt = f"{condition.text} held: {evaluation.observed}"
    return Judgement(halt, tuple(observed))


def sign_rollback(
    previous: VerifiedBundle[PolicyPayload],
    candidate: CompiledBundle,
    *,
    root: TrustRoot,
    signers: Sequence[PrivateKey],
) -> bytes:
    """The rollback bundle (rule 4): ``previous``'s target, policy, attestation and
    ``max_offline`` under version ``candidate.version + 1``, issued and expiring as the
    candidate, signed by ``signers`` and verified as its devices would.

    Raises:
        ConfigError: the candidate's version is the highest a bundle may have (no version
            is left for the rollback), or the keys fall short of the policy threshold.
        BundleError: the signed bundle would be refused.
    """
    if candidate.version >= MAX_COUNTER:
        raise ConfigError(
            f"bundle version {candidate.version} is the highest a bundle may have (2^53-1), "
            "so no version is left for the rollback (candidate + 1): build the candidate "
            "with a lower version to roll it out in stages"
        )
    if not isinstance(previous.policy, Mapping):
        raise ConfigError("the previous bundle holds no policy map to re-issue")
    payload = bundle_payload(
        version=candidate.version + 1,
        issued_at=candidate.issued_at,
        expires_at=candidate.expires_at,
        target=previous.target,
        policy=previous.policy,
        attestation=(
            None if previous.attestation is None else expectations_value(previous.attestation)
        ),
        max_offline=previous.max_offline,
    )
    data = sign_bundle(payload, region=previous.target.region, signers=signers)
    try:
        verify_operator_bundle(data, root=root, now=candidate.issued_at)
    except BundleError as exc:
        raise ConfigError(
            f"the rollback bundle cannot be signed with the policy keys here: {exc.message}"
        ) from exc
    return data

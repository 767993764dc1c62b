"""The values of a staged rollout as the registry keeps them (docs/rollout.md, section 3).

A :class:`RolloutRecord` is everything a rollout needs to go on after a hub restart: what
it rolls out (the candidate's bytes, the pre-signed rollback bundle), to whom (the devices
it targeted when it started, its stages, its real channels), how it judges a stage (soak,
halt conditions) and where it is (state, stage, when that stage began, pauses, each stage's
history). The registry stores and returns it; :mod:`hub.core.rollout` decides how it moves.

:class:`LineageTally` is one line of what a set of devices shipped in a window, counted by
the registry's lineage search columns, so a stage is judged without decoding its entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["LineageTally", "RolloutRecord", "RolloutState", "StageLog"]


class RolloutState(StrEnum):
    """Where a rollout is. ``running`` and ``paused`` are active; ``aborting`` is an abort
    the running hub has not carried out yet; the rest are final."""

    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"
    HALTED = "halted"
    ABORTED = "aborted"
    COMPLETED = "completed"

    @property
    def active(self) -> bool:
        return self in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.ABORTING)


@dataclass(frozen=True, slots=True)
class StageLog:
    """One stage the rollout entered: when, with how many devices, the baseline its deny
    rate is compared with, and how it ended (``outcome`` empty while it runs)."""

    stage: int
    started_at: int
    devices: int
    baseline_decisions: int
    baseline_denied: int
    ended_at: int | None = None
    outcome: str = ""
    observed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    """A staged rollout (module docstring). ``stages`` are percentages as written
    (``"1"``, ``"12.5"``, ``"100"``), increasing, the last ``"100"``; ``entered`` is the
    highest stage index published (``-1``: none yet); ``paused_s`` is the time the current
    stage spent paused, ``paused_at`` when the pause in force began."""

    rollout_id: str
    region: str
    state: RolloutState
    created_at: int
    updated_at: int
    candidate: bytes
    candidate_version: int
    candidate_digest: bytes
    rollback: bytes
    channels: tuple[str, ...]
    devices: tuple[str, ...]
    stages: tuple[str, ...]
    soak_s: int
    halts: tuple[str, ...]
    groups: tuple[str, ...] = ()
    stage: int = 0
    entered: int = -1
    stage_started_at: int = 0
    paused_at: int | None = None
    paused_s: int = 0
    reason: str = ""
    history: tuple[StageLog, ...] = ()


@dataclass(frozen=True, slots=True)
class LineageTally:
    """Shipped entries of one (kind, verdict, reason, rule, bundle version the device ran):
    how many, on how many devices."""

    kind: str
    allowed: bool
    reason: str
    rule: str | None
    bundle_version: int | None
    count: int
    devices: int

"""The agent's lineage: record decisions and trust transitions durably, checkpoint, fail closed.

:class:`LineageLog` never raises from ``open``: a log that cannot be opened, or whose tail
does not verify from the last signed checkpoint, is *unavailable* (``fault`` says why) and
every decision recorded through it becomes a deny with ``lineage_unavailable``. A break found
at start-up is persisted and keeps the gate closed until an operator runs
``edge-agent log acknowledge-break``, which signs a checkpoint over what is stored and starts
a new segment whose first entry records the break and links to the last stored entry.
Write failures (disk full, read-only, locked) are transient: the next write tries again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edge_agent.device_key import load_device_key
from edge_agent.errors import EdgeGovError, LineageError
from edge_agent.lineage.check import VerifyReport, verify_store
from edge_agent.lineage.entries import GENESIS_PREV, Entry, Kind
from edge_agent.lineage.store import (
    DEFAULT_BUSY_TIMEOUT_S,
    LINEAGE_DB,
    Appended,
    LineageStore,
)
from edge_agent.lineage.writer import GroupCommitWriter
from edge_agent.protocol.checkpoint import Checkpoint, origin_for, sign_checkpoint
from edge_agent.protocol.keys import PrivateKey
from edge_agent.trust.gate import Decision, lineage_unavailable

__all__ = ["DEVICE_KEY_EPOCH", "LineageConfig", "LineageLog"]

logger = logging.getLogger(__name__)

DEVICE_KEY_EPOCH = 1
"""The device key epoch named in checkpoint origins (one key per device for now)."""


@dataclass(frozen=True, slots=True)
class LineageConfig:
    """How the log is written: checkpoint cadence, durability, lock bound."""

    checkpoint_every: int = 1000
    checkpoint_after_s: int = 300
    synchronous: str = "FULL"
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S


class LineageLog:
    """One device's lineage: a store, a group-commit writer and the device key that signs."""

    def __init__(
        self,
        store: LineageStore | None,
        key: PrivateKey | None,
        origin: str,
        config: LineageConfig,
        fault: str | None,
    ) -> None:
        self.store = store
        self.key = key
        self.origin = origin
        self.config = config
        self.fault = fault
        """Why the log is unavailable (every decision then denies); ``None`` when usable."""
        self.last_error: str | None = None
        """The last write failure, cleared by the next successful write."""
        self._writer = GroupCommitWriter(self._write_batch)

    @classmethod
    def open(
        cls,
        state_dir: Path,
        device_id: str,
        *,
        config: LineageConfig | None = None,
        verify_tail: bool = True,
    ) -> LineageLog:
        """Open the lineage of ``state_dir`` and verify it from the last checkpoint.

        Never raises: a failure leaves the log unavailable, with ``fault`` set.
        """
        config = config or LineageConfig()
        origin = origin_for(device_id, DEVICE_KEY_EPOCH)
        try:
            key = load_device_key(state_dir)
            store = LineageStore.open(
                state_dir / LINEAGE_DB,
                synchronous=config.synchronous,
                busy_timeout_s=config.busy_timeout_s,
            )
        except EdgeGovError as exc:
            logger.error("lineage unavailable: %s", exc)
            return cls(None, None, origin, config, f"the lineage cannot be opened: {exc}")
        log = cls(store, key, origin, config, None)
        if verify_tail:
            log.fault = log._startup_check()
        return log

    def _startup_check(self) -> str | None:
        store = self._require_store()
        try:
            recorded = store.get_meta("break")
            if recorded is not None:
                return f"lineage break not yet acknowledged: {recorded}"
            self.verify(tail=True)
        except LineageError as exc:
            message = f"lineage break: {exc}"
            logger.error("%s; deciding nothing until 'edge-agent log acknowledge-break'", message)
            try:
                store.set_meta(**{"break": str(exc), "break_seq": exc.seq})
            except LineageError as write_error:
                logger.error("cannot record the lineage break: %s", write_error)
            return message
        return None

    @property
    def available(self) -> bool:
        return self.store is not None and self.fault is None

    def status(self) -> str | None:
        """Why decisions are denied because of the lineage now, or ``None``."""
        return self.fault or self.last_error

    def _require_store(self) -> LineageStore:
        if self.store is None:
            raise LineageError(self.fault or "the lineage is not open")
        return self.store

    def sign(self, size: int, root: bytes) -> str:
        """The signed checkpoint note for (size, root) under this device's origin."""
        if self.key is None:
            raise LineageError("no device key to sign the lineage checkpoint")
        return sign_checkpoint(Checkpoint(self.origin, size, root), self.key, self.origin)

    def _write_batch(self, drafts: list[Entry]) -> Appended:
        return self._require_store().append_batch(
            drafts,
            sign=self.sign,
            checkpoint_every=self.config.checkpoint_every,
            checkpoint_after_s=self.config.checkpoint_after_s,
            now=max(d.time for d in drafts),
        )

    def append(self, draft: Entry) -> int:
        """Append one entry durably (group commit); return its seq.

        Raises:
            LineageError: the log is unavailable or the write failed.
        """
        if self.fault is not None:
            raise LineageError(self.fault)
        try:
            seq = self._writer.append(draft)
        except LineageError as exc:
            self.last_error = str(exc)
            logger.error("lineage write failed: %s", exc)
            raise
        self.last_error = None
        return seq

    def record_decision(self, decision: Decision) -> tuple[Decision, int | None]:
        """Write ``decision`` durably; return it and its seq, or the deny that replaces it."""
        draft = Entry(
            seq=0,
            time=decision.time,
            prev=GENESIS_PREV,
            kind=Kind.DECISION,
            allowed=decision.allowed,
            reason=str(decision.reason),
            rule=decision.rule_id,
            bundle_digest=decision.bundle_digest,
            bundle_version=decision.bundle_version,
            request=decision.request,
            detail=decision.message,
        )
        try:
            return decision, self.append(draft)
        except LineageError as exc:
            return lineage_unavailable(decision, str(exc)), None

    def record_transition(
        self,
        kind: Kind,
        *,
        time: int,
        applied: bool,
        reason: str,
        detail: str,
        bundle_digest: bytes | None = None,
        bundle_version: int | None = None,
    ) -> int | None:
        """Write a trust transition; a failure is logged (the gate then denies decisions)."""
        draft = Entry(
            0,
            time,
            GENESIS_PREV,
            kind,
            applied,
            reason,
            None,
            bundle_digest,
            bundle_version,
            None,
            detail,
        )
        try:
            return self.append(draft)
        except LineageError as exc:
            logger.error("trust transition %s not logged: %s", kind, exc)
            return None

    def verify(self, *, tail: bool = False) -> VerifyReport:
        """Verify the stored log (see :func:`verify_store`).

        Raises:
            LineageError: the first failure.
        """
        if self.key is None:
            raise LineageError(self.fault or "no device key")
        return verify_store(self._require_store(), self.key.public, self.origin, tail=tail)

    def checkpoint(self, now: int) -> None:
        """Sign a checkpoint at the current size if there is none there.

        Raises:
            LineageError: the write failed.
        """
        self._require_store().add_checkpoint(self.sign, now)

    def acknowledge_break(self, now: int, operator_note: str) -> int:
        """Start a new segment after a break: checkpoint what is stored, record the break.

        Raises:
            LineageError: there is no break, or the new segment could not be written.
        """
        store = self._require_store()
        recorded = store.get_meta("break")
        if recorded is None:
            raise LineageError("there is no lineage break to acknowledge")
        tip = store.tip()
        store.add_checkpoint(self.sign, now)
        store.rebase(tip.size, tip.prev, drop_below=False)
        store.set_meta(**{"break": None, "break_seq": None})
        self.fault = None
        detail = (
            f"lineage break acknowledged: {recorded}; entries before {tip.size} are not "
            f"re-verified (previous base {tip.base}); note: {operator_note}"
        )
        return self.append(
            Entry(
                0,
                now,
                GENESIS_PREV,
                Kind.SEGMENT_START,
                True,
                "lineage_break_acknowledged",
                detail=detail,
            )
        )

    def close(self, now: int) -> None:
        """Checkpoint the log (when usable) and close it."""
        if self.store is None:
            return
        if self.fault is None:
            try:
                self.checkpoint(now)
            except LineageError as exc:
                logger.error("no checkpoint at close: %s", exc)
        self.store.close()

"""The agent's lineage: record decisions and trust transitions durably, checkpoint, fail closed.

:class:`LineageLog` never raises from ``open``: a log that cannot be opened, or that does not
verify at start-up (from the last signed checkpoint, or from its base with
``verify_on_start="full"``), is *unavailable* (``fault`` says why) and every decision
recorded through it becomes a deny with ``lineage_unavailable``. A break found at start-up is
persisted and keeps the gate closed until an operator runs
``edge-agent log acknowledge-break``, which signs a checkpoint over what is stored and starts
a new segment whose first entry records the break and links to the last stored entry.
Write failures (disk full, read-only, locked) are transient: the next write tries again.

Shipping to the hub: :meth:`LineageLog.unacknowledged` hands out the entries after the
acknowledgement watermark, :meth:`LineageLog.checkpoint_note` the signed checkpoint a batch
ends at, and :meth:`LineageLog.acknowledge` moves the watermark up once the hub has stored
and verified them. Nothing the hub has not acknowledged is ever pruned by retention
(:meth:`LineageLog.apply_retention`), and pruning always cuts at a signed checkpoint, so what
stays verifies on its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from edge_agent.device_key import load_device_key
from edge_agent.errors import EdgeGovError, LineageError
from edge_agent.lineage.check import VerifyReport, verify_store
from edge_agent.lineage.entries import GENESIS_PREV, Draft, Entry, Kind, decision_entry, draft_of
from edge_agent.lineage.exported import InclusionProof
from edge_agent.lineage.store import (
    DEFAULT_BUSY_TIMEOUT_S,
    LINEAGE_DB,
    SYNCHRONOUS_MODES,
    Appended,
    LineageStore,
    StoredCheckpoint,
)
from edge_agent.lineage.writer import AsyncGroupCommitWriter, GroupCommitWriter
from edge_agent.protocol.checkpoint import Checkpoint, origin_for, sign_checkpoint
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.merkle import Frontier, inclusion_proof, leaf_hash
from edge_agent.trust.gate import Decision, lineage_unavailable

__all__ = [
    "DEVICE_KEY_EPOCH",
    "MAX_UNACKNOWLEDGED_BATCH",
    "PRUNE_STEP_ENTRIES",
    "VERIFY_ON_START",
    "LineageConfig",
    "LineageLog",
    "LineageSummary",
]

logger = logging.getLogger(__name__)

DEVICE_KEY_EPOCH = 1
"""The device key epoch named in checkpoint origins (one key per device for now)."""

VERIFY_ON_START = ("tail", "full")
"""How much of the log is re-verified when it is opened (see :class:`LineageConfig`)."""

MAX_UNACKNOWLEDGED_BATCH = 4096
"""Most entries :meth:`LineageLog.unacknowledged` returns at once."""

PRUNE_STEP_ENTRIES = 10_000
"""Entries deleted per pruning transaction (at least one checkpoint interval): deciders
waiting for the write lock wait for one step, never for the whole prune."""


@dataclass(frozen=True, slots=True)
class LineageConfig:
    """How the log is written, checked at start-up and kept.

    ``verify_on_start``: ``"tail"`` re-verifies only the entries after the last signed
    checkpoint (and every checkpoint signature): start-up time is bounded by the checkpoint
    interval, and tampering with older entries is found by ``log verify`` or at the hub.
    ``"full"`` re-verifies the whole log from its base: tampering anywhere closes the gate
    at start-up, at the cost of reading every entry (about 15 s per million entries on an
    x86 core, several times that on small ARM boards).

    Retention (off unless set): keep at most ``retain_max_entries`` entries, and none older
    than ``retain_max_age_s`` seconds; but never prune an entry the hub has not acknowledged,
    and cut only at a signed checkpoint.
    """

    checkpoint_every: int = 1000
    checkpoint_after_s: int = 300
    synchronous: str = "FULL"
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    verify_on_start: str = "tail"
    retain_max_entries: int | None = None
    retain_max_age_s: int | None = None

    def __post_init__(self) -> None:
        if self.synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"lineage synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        if self.verify_on_start not in VERIFY_ON_START:
            raise ValueError(f"lineage verify_on_start must be one of {', '.join(VERIFY_ON_START)}")
        if self.checkpoint_every < 0 or self.checkpoint_after_s < 0:
            raise ValueError("lineage checkpoint intervals are not negative")
        if self.busy_timeout_s <= 0:
            raise ValueError("lineage busy_timeout_s is a positive number of seconds")
        for name in ("retain_max_entries", "retain_max_age_s"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"lineage {name} is a positive integer when set")


@dataclass(frozen=True, slots=True)
class LineageSummary:
    """What ``status`` shows about the lineage."""

    base: int
    """The first stored entry (entries before it were pruned)."""
    size: int
    acknowledged: int
    """How many leading entries the hub has stored and verified (the watermark)."""
    last_checkpoint: StoredCheckpoint | None
    problem: str | None
    """Why decisions are denied because of the lineage now, or ``None``."""

    @property
    def unacknowledged(self) -> int:
        return self.size - self.acknowledged


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
        self._async_writer = AsyncGroupCommitWriter(self._write_batch, self._write_batch_now)

    @classmethod
    def open(
        cls,
        state_dir: Path,
        device_id: str,
        *,
        config: LineageConfig | None = None,
        verify_at_open: bool = True,
    ) -> LineageLog:
        """Open the lineage of ``state_dir`` and verify it (``config.verify_on_start``).

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
        if verify_at_open:
            log.fault = log._startup_check()
        return log

    def _startup_check(self) -> str | None:
        store = self._require_store()
        try:
            recorded = store.get_meta("break")
            if recorded is not None:
                return f"lineage break not yet acknowledged: {recorded}"
            self.verify(tail=self.config.verify_on_start == "tail")
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

    def _require_usable(self) -> LineageStore:
        if self.fault is not None:
            raise LineageError(self.fault)
        return self._require_store()

    def sign(self, size: int, root: bytes) -> str:
        """The signed checkpoint note for (size, root) under this device's origin."""
        if self.key is None:
            raise LineageError("no device key to sign the lineage checkpoint")
        return sign_checkpoint(Checkpoint(self.origin, size, root), self.key, self.origin)

    # --- writing ---------------------------------------------------------------------------

    def _write_batch(self, drafts: list[Draft], *, wait: bool = True) -> Appended:
        return self._require_store().append_batch(
            drafts,
            sign=self.sign,
            checkpoint_every=self.config.checkpoint_every,
            checkpoint_after_s=self.config.checkpoint_after_s,
            now=max(d.time for d in drafts),
            wait=wait,
        )

    def _write_batch_now(self, drafts: list[Draft]) -> Appended:
        return self._write_batch(drafts, wait=False)

    def append(self, entry: Entry) -> int:
        """Append ``entry`` durably (group commit; its seq and prev are assigned); return
        its seq.

        Raises:
            LineageError: the log is unavailable, the entry is malformed or over the size
                limit, or the write failed.
        """
        draft = self._draft(entry)
        try:
            seq = self._writer.append(draft)
        except LineageError as exc:
            raise self._failed(exc) from None
        self.last_error = None
        return seq

    async def append_async(self, entry: Entry) -> int:
        """:meth:`append` for a coroutine: waits on the event loop, not in a thread.

        Raises:
            LineageError: as :meth:`append`.
        """
        draft = self._draft(entry)
        try:
            seq = await self._async_writer.append(draft)
        except LineageError as exc:
            raise self._failed(exc) from None
        self.last_error = None
        return seq

    def _draft(self, entry: Entry) -> Draft:
        if self.fault is not None:
            raise LineageError(self.fault)
        try:
            return draft_of(entry)
        except ValueError as exc:
            raise LineageError(f"the lineage entry cannot be written: {exc}") from exc

    def _failed(self, exc: LineageError) -> LineageError:
        self.last_error = str(exc)
        logger.error("lineage write failed: %s", exc)
        return exc

    def record_decision(self, decision: Decision) -> tuple[Decision, int | None]:
        """Write ``decision`` durably; return it and its seq, or the deny that replaces it."""
        try:
            return decision, self.append(decision_entry(decision))
        except LineageError as exc:
            return lineage_unavailable(decision, str(exc)), None

    async def record_decision_async(self, decision: Decision) -> tuple[Decision, int | None]:
        """:meth:`record_decision` for a coroutine (many of them share one commit)."""
        try:
            return decision, await self.append_async(decision_entry(decision))
        except LineageError as exc:
            return lineage_unavailable(decision, str(exc)), None

    def record_decision_soon(self, decision: Decision) -> asyncio.Future[Decision]:
        """:meth:`record_decision` on the event loop without a coroutine: the future
        resolves to ``decision`` once it is durable, or to the deny that replaces it (it
        never fails). Concurrent calls share one commit. Call it on the loop."""
        recorded: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        try:
            draft = self._draft(decision_entry(decision))
        except LineageError as exc:
            recorded.set_result(lineage_unavailable(decision, str(exc)))
            return recorded
        self._async_writer.submit(draft, functools.partial(self._settle, decision, recorded))
        return recorded

    def _settle(
        self, decision: Decision, recorded: asyncio.Future[Decision], outcome: int | LineageError
    ) -> None:
        if isinstance(outcome, LineageError):
            decision = lineage_unavailable(decision, str(self._failed(outcome)))
        else:
            self.last_error = None
        if not recorded.done() and not recorded.get_loop().is_closed():
            recorded.set_result(decision)

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
        """Write a trust transition (any :class:`Kind` but ``DECISION``); return its seq.

        ``applied`` is whether it took effect (for a verdict such as an attestation or the
        clock check: whether it passed), ``reason`` its machine code, ``detail`` a sentence
        for the technician. A failure is logged and ``None`` returned: the gate then denies
        decisions, which is what makes a lost transition safe.
        """
        if kind is Kind.DECISION:
            raise ValueError("decisions are recorded with record_decision")
        entry = Entry(
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
            return self.append(entry)
        except LineageError as exc:
            logger.error("trust transition %s not logged: %s", kind, exc)
            return None

    # --- reading and checking --------------------------------------------------------------

    @property
    def size(self) -> int:
        """Entries in the log (its tree size), pruned ones included.

        Raises:
            LineageError: the log is not open or unreadable.
        """
        return self._require_store().tip().size

    @property
    def acknowledged(self) -> int:
        """The watermark: how many leading entries the hub has stored and verified.

        Raises:
            LineageError: the log is not open or unreadable.
        """
        return self._require_store().tip().acked

    def summary(self) -> LineageSummary:
        """Base, size, watermark, last checkpoint and problem, for ``status``.

        Raises:
            LineageError: the log is not open or unreadable.
        """
        store = self._require_store()
        tip = store.tip()
        return LineageSummary(
            tip.base, tip.size, tip.acked, store.latest_checkpoint(), self.status()
        )

    def verify(self, *, tail: bool = False) -> VerifyReport:
        """Verify the stored log (see :func:`verify_store`).

        Raises:
            LineageError: the first failure.
        """
        if self.key is None:
            raise LineageError(self.fault or "no device key")
        return verify_store(self._require_store(), self.key.public, self.origin, tail=tail)

    def root_at(self, size: int) -> bytes:
        """The tree root at ``size`` entries, from stored nodes.

        Raises:
            LineageError: ``size`` is before the log's base (pruned) or beyond its end, or a
                stored node is missing.
        """
        store = self._require_store()
        tip = store.tip()
        if not tip.base <= size <= tip.size:
            raise LineageError(
                f"no tree root at size {size}: the log holds entries {tip.base} to {tip.size - 1}"
            )
        return Frontier.load(size, store.get_node).root()

    def prove(self, seq: int, now: int) -> InclusionProof:
        """Entry ``seq``, its inclusion proof and the latest signed checkpoint it is in
        (signing one at the current size when none covers it yet).

        Raises:
            LineageError: ``seq`` is not in the stored log, or the log cannot be read.
        """
        store = self._require_store()
        tip = store.tip()
        if not tip.base <= seq < tip.size:
            raise LineageError(
                f"entry {seq} is not in the log (it holds entries {tip.base} to {tip.size - 1})"
            )
        checkpoint = store.latest_checkpoint()
        if checkpoint is None or checkpoint.size <= seq:
            checkpoint = self._checkpoint_at(tip.size, now)
        data = store.entry(seq)
        proof = inclusion_proof(seq, checkpoint.size, store.get_node)
        return InclusionProof(seq, data, checkpoint.size, proof, checkpoint.note)

    # --- checkpoints and shipping ----------------------------------------------------------

    def checkpoint(self, now: int) -> None:
        """Sign a checkpoint at the current size if there is none there.

        Raises:
            LineageError: the log is unavailable (a broken log is never signed), or the
                write failed.
        """
        self._require_usable().add_checkpoint(self.sign, now)

    def checkpoint_note(self, size: int, now: int) -> str:
        """The signed checkpoint note at exactly ``size`` entries: the stored one, or one
        signed now (from stored nodes when ``size`` is in the past) and stored.

        A shipped batch of entries ending at ``size`` carries it, so the hub can check the
        root it recomputes against the device's signature.

        Raises:
            LineageError: the log is unavailable, ``size`` is 0, before the base or beyond
                the end, or the write failed.
        """
        self._require_usable()
        return self._checkpoint_at(size, now).note

    def _checkpoint_at(self, size: int, now: int) -> StoredCheckpoint:
        stored = self._require_store().add_checkpoint(self.sign, now, size)
        if stored is None:
            raise LineageError("an empty lineage has no checkpoint")
        return stored

    def unacknowledged(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries after the watermark, in order: ``(seq, entry bytes)``.

        Raises:
            ValueError: ``limit`` is not in 1..:data:`MAX_UNACKNOWLEDGED_BATCH`.
            LineageError: the log cannot be read, or an entry is missing.
        """
        if not 1 <= limit <= MAX_UNACKNOWLEDGED_BATCH:
            raise ValueError(f"limit must be 1 to {MAX_UNACKNOWLEDGED_BATCH}")
        store = self._require_store()
        tip = store.tip()
        start = max(tip.acked, tip.base)
        if start >= tip.size:
            return []
        rows = [
            (seq, data)
            for seq, data, _ in store.iter_rows(start, limit=min(limit, tip.size - start))
            if seq < tip.size
        ]
        for expected, (seq, _) in enumerate(rows, start):
            if seq != expected:
                raise LineageError(f"entry {expected} is missing from the log", seq=expected)
        return rows

    def acknowledge(self, acked: int) -> int:
        """Record that the hub has stored and verified the first ``acked`` entries.

        The watermark only moves up (a lower or repeated acknowledgement changes nothing)
        and is persisted; return it.

        Raises:
            LineageError: ``acked`` is beyond the log's size, or the write failed.
        """
        if acked < 0:
            raise LineageError(f"an acknowledgement of {acked} entries is not a count")
        watermark = self._require_store().acknowledge(acked)
        logger.debug("lineage acknowledged by the hub up to %d entries", watermark)
        return watermark

    # --- retention -------------------------------------------------------------------------

    def apply_retention(self, now: int) -> int:
        """Prune what the retention caps in the config allow; return how many entries went.

        Only entries the hub has acknowledged, and only up to the largest signed checkpoint
        within that, so the log still verifies from there. ``now`` should be trusted time
        (the age cap compares entry times with it). Nothing is pruned from a log that is
        unavailable: a break is evidence.

        Raises:
            LineageError: the log cannot be read or the prune could not be written.
        """
        config = self.config
        if config.retain_max_entries is None and config.retain_max_age_s is None:
            return 0
        store = self._require_usable()
        tip = store.tip()
        target = tip.base
        if config.retain_max_entries is not None:
            target = max(target, tip.size - config.retain_max_entries)
        if config.retain_max_age_s is not None:
            young = store.first_seq_at_or_after(now - config.retain_max_age_s)
            target = max(target, tip.size if young is None else young)
        return self._prune(min(target, tip.acked), now, "retention")

    def prune_before(self, seq: int, now: int, *, include_unacknowledged: bool = False) -> int:
        """Prune entries before ``seq``, cut at the largest signed checkpoint at or below it;
        return how many entries went.

        Unless ``include_unacknowledged``, entries the hub has not acknowledged stay.

        Raises:
            LineageError: the log is unavailable or the prune could not be written.
        """
        store = self._require_usable()
        limit = seq if include_unacknowledged else min(seq, store.tip().acked)
        return self._prune(limit, now, "operator_prune")

    def _prune(self, limit: int, now: int, reason: str) -> int:
        """Delete entries before the largest checkpoint at or below ``limit``, in steps."""
        store = self._require_usable()
        recorded = store.get_meta("break")
        if recorded is not None:
            raise LineageError(f"the log has an unacknowledged break ({recorded}); prune nothing")
        base = store.tip().base
        if limit <= base:
            return 0
        cuts = _prune_steps(base, [c.size for c in store.checkpoints(base + 1) if c.size <= limit])
        if not cuts:
            return 0
        for cut in cuts:
            store.rebase(cut, leaf_hash(store.entry(cut - 1)), drop_below=True)
        pruned = cuts[-1] - base
        logger.info("lineage pruned: entries %d to %d (%s)", base, cuts[-1] - 1, reason)
        self.record_transition(
            Kind.LINEAGE_PRUNED,
            time=now,
            applied=True,
            reason=reason,
            detail=f"entries {base} to {cuts[-1] - 1} pruned; the log verifies from the "
            f"checkpoint at {cuts[-1]}",
        )
        return pruned

    # --- breaks and shutdown ---------------------------------------------------------------

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
        """Apply retention and checkpoint the log (when usable), and close it."""
        self._async_writer.close()
        if self.store is None:
            return
        if self.fault is None:
            try:
                self.apply_retention(now)
                self.checkpoint(now)
            except LineageError as exc:
                logger.error("no retention or checkpoint at close: %s", exc)
        self.store.close()


def _prune_steps(base: int, sizes: list[int]) -> list[int]:
    """Cut points among checkpoint ``sizes`` (ascending, above ``base``): each step deletes
    at most :data:`PRUNE_STEP_ENTRIES` entries unless two checkpoints are further apart."""
    cuts: list[int] = []
    start = base
    for size in sizes:
        if cuts and size - start <= PRUNE_STEP_ENTRIES:
            cuts[-1] = size
        else:
            if cuts:
                start = cuts[-1]
            cuts.append(size)
    return cuts

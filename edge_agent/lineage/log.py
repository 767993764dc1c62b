"""The agent's lineage: record decisions and trust transitions durably, checkpoint, fail closed.

:class:`LineageLog` never raises from ``open``: a log that cannot be opened, or that does not
verify at start-up (from the last signed checkpoint, or from its base with
``verify_on_start="full"``), is *unavailable* (``fault`` says why) and every decision
recorded through it becomes a deny with ``lineage_unavailable``. A break found at start-up is
persisted and keeps the gate closed until an operator runs
``edge-agent log acknowledge-break``, which signs a checkpoint over what is stored and starts
a new segment whose first entry records the break and links to the last stored entry.
Write failures (disk full, read-only, locked) are transient: the next write tries again.

The head outside the log: every checkpoint the agent signs (and every acknowledgement from
the hub) is also recorded in the agent state (:class:`~edge_agent.store.LineageHeadStore`),
so a log deleted, emptied, truncated or rewritten is found even when what is left verifies on
its own. Opening the log checks it against that head (a consistency proof); :meth:`audit`
verifies every entry and runs in the background. A failure counts only when a second check,
from a fresh read, fails too; then, unless the log was opened by a read-only command, the
break is recorded in the agent state (all processes deny until acknowledged), the damaged
file is kept beside the new one as evidence, and a new log starts whose first entry, a
``segment_start`` with reason ``lineage_tampered``, says what was recorded and what was found.

A running agent (:meth:`LineageLog.recheck`, with its periodic state check) also closes its
gate when another process records a break in the agent state, and records one itself when
the file it writes is deleted, replaced, cut short or overwritten under it, or SQLite finds
it corrupt: it never goes on deciding into a file that is not the log.

Shipping to the hub: :meth:`LineageLog.unacknowledged` hands out the entries after the
acknowledgement watermark, :meth:`LineageLog.checkpoint_note` the signed checkpoint a batch
ends at, and :meth:`LineageLog.acknowledge` moves the watermark up once the hub has stored
and verified them. An ack may carry the hub witness's cosignature of the device's checkpoint
at the acknowledged size: :meth:`LineageLog.keep_cosigned` verifies it and keeps the
cosigned note in place of the device's own there (the same checkpoint, one more signature
line, which checkpoint verification ignores), and :meth:`LineageLog.prove` proves an entry
against the smallest cosigned checkpoint holding it, so the device's receipts carry the
witness's cosignature. Nothing the hub has not acknowledged is ever pruned by retention
(:meth:`LineageLog.apply_retention`), and pruning always cuts at a signed checkpoint, so what
stays verifies on its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.device_key import load_device_key
from edge_agent.errors import EdgeGovError, LineageDamagedError, LineageError, StateError
from edge_agent.lineage.check import VerifyReport, check_head, verify_store
from edge_agent.lineage.decisions import DecisionDrafts, decision_entry
from edge_agent.lineage.store import (
    DEFAULT_BUSY_TIMEOUT_S,
    LINEAGE_DB,
    SYNCHRONOUS_MODES,
    Appended,
    LineageStore,
    StoredCheckpoint,
)
from edge_agent.lineage.writer import AsyncGroupCommitWriter, GroupCommitWriter
from edge_agent.protocol.checkpoint import (
    Checkpoint,
    origin_for,
    sign_checkpoint,
    verify_checkpoint,
)
from edge_agent.protocol.cosignature import WITNESS_KEY_NAME, Cosignature, verify_cosignature
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Draft, Entry, Kind, draft_of
from edge_agent.protocol.lineage_export import InclusionProof
from edge_agent.protocol.merkle import Frontier, consistency_proof, inclusion_proof, leaf_hash
from edge_agent.store import LineageHeadStore, RecordedHead
from edge_agent.trust.gate import Decision, lineage_unavailable

__all__ = [
    "BREAK_ACKNOWLEDGED",
    "DEVICE_KEY_EPOCH",
    "LOG_REASONS",
    "MAX_UNACKNOWLEDGED_BATCH",
    "OPERATOR_PRUNE",
    "PRUNE_STEP_ENTRIES",
    "RETENTION",
    "TAMPERED",
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

TAMPERED = "lineage_tampered"
"""Reason of the ``segment_start`` entry opening the new log after a break was found."""
BREAK_ACKNOWLEDGED = "lineage_break_acknowledged"
"""Reason of the ``segment_start`` entry an operator's ``log acknowledge-break`` opens."""
RETENTION = "retention"
"""Reason of the ``lineage_pruned`` entry retention records."""
OPERATOR_PRUNE = "operator_prune"
"""Reason of the ``lineage_pruned`` entry ``log prune`` records."""
LOG_REASONS = (TAMPERED, BREAK_ACKNOWLEDGED, RETENTION, OPERATOR_PRUNE)
"""The reasons the log records of itself (``log show --reason`` knows them)."""

_WITNESS_LINE = f"\N{EM DASH} {WITNESS_KEY_NAME} "
"""How a witness's cosignature line starts in a note: the prefilter when searching stored
checkpoints for a cosigned one (each found is then verified)."""

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

    ``audit_every_s``: the running agent verifies the whole log against the recorded head
    in the background once after start and then this often (0: only after start).

    Retention (off unless set): keep at most ``retain_max_entries`` entries, and none older
    than ``retain_max_age_s`` seconds; but never prune an entry the hub has not acknowledged,
    and cut only at a signed checkpoint.
    """

    checkpoint_every: int = 1000
    checkpoint_after_s: int = 300
    synchronous: str = "FULL"
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    verify_on_start: str = "tail"
    audit_every_s: int = 3600
    retain_max_entries: int | None = None
    retain_max_age_s: int | None = None

    def __post_init__(self) -> None:
        if self.synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"lineage synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        if self.verify_on_start not in VERIFY_ON_START:
            raise ValueError(f"lineage verify_on_start must be one of {', '.join(VERIFY_ON_START)}")
        if self.checkpoint_every < 0 or self.checkpoint_after_s < 0 or self.audit_every_s < 0:
            raise ValueError("lineage checkpoint and audit intervals are not negative")
        if self.busy_timeout_s <= 0:
            raise ValueError("lineage busy_timeout_s is a positive number of seconds")
        for name in ("retain_max_entries", "retain_max_age_s"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"lineage {name} is a positive integer when set")


@dataclass(frozen=True, slots=True)
class _Finding:
    """Why the log cannot be used. ``evidence``: a break newly found, at entry ``seq``;
    ``unreadable``: the log or the head could not be read (which may pass); neither: a break
    already recorded."""

    message: str
    evidence: bool = False
    seq: int | None = None
    unreadable: bool = False


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
        head: LineageHeadStore | None = None,
        *,
        record_breaks: bool = True,
    ) -> None:
        self.store = store
        self.key = key
        self.origin = origin
        self.config = config
        self.fault = fault
        """Why the log is unavailable (every decision then denies); ``None`` when usable."""
        self.head = head
        """The head recorded in the agent state (``None``: not tracked, for tests)."""
        self.record_breaks = record_breaks
        """Whether a break found is recorded; read-only commands only report it."""
        self.last_error: str | None = None
        """The last write failure, cleared by the next successful write."""
        self._writer = GroupCommitWriter(self._write_batch)
        self._async_writer = AsyncGroupCommitWriter(self._write_batch, self._write_batch_now)
        self._decision_drafts = DecisionDrafts()

    @classmethod
    def open(
        cls,
        state_dir: Path,
        device_id: str,
        *,
        config: LineageConfig | None = None,
        verify_at_open: bool = True,
        recorded_head: bool = True,
        record_breaks: bool = True,
    ) -> LineageLog:
        """Open the lineage of ``state_dir`` and check it against the head recorded in the
        agent state; with ``verify_at_open``, also verify it (``config.verify_on_start``).

        ``recorded_head=False`` (only for a state directory without ``state.db``: benchmarks
        and tests of the log itself) skips the head. ``record_breaks=False`` (read-only
        commands) reports a break found without recording it.

        Never raises: a failure leaves the log unavailable, with ``fault`` set.
        """
        config = config or LineageConfig()
        origin = origin_for(device_id, DEVICE_KEY_EPOCH)
        try:
            key = load_device_key(state_dir)
            head = LineageHeadStore.open(state_dir) if recorded_head else None
        except EdgeGovError as exc:
            logger.error("lineage unavailable: %s", exc)
            return cls(None, None, origin, config, f"the lineage cannot be opened: {exc}")
        log = cls(None, key, origin, config, None, head, record_breaks=record_breaks)
        found = log._examine(state_dir / LINEAGE_DB, verify=verify_at_open)
        log.fault = None if found is None else found.message
        return log

    def _examine(self, path: Path, *, verify: bool, full: bool = False) -> _Finding | None:
        """Check the log (see :meth:`_check`); a failure is checked again from a fresh read
        and only one found twice is recorded as a break (the gate closes first)."""
        found = self._check(path, verify=verify, full=full)
        if found is not None and found.evidence:
            logger.warning("lineage check failed (%s); checking again", found.message)
            found = self._check(path, verify=verify, full=full)
            if found is None:
                logger.warning("lineage check passed when repeated: nothing recorded")
        if found is not None and found.evidence:
            self.fault = found.message
            self._break(path, found)
        return found

    def _check(self, path: Path, *, verify: bool, full: bool) -> _Finding | None:
        """``None`` if the log is usable, else why not."""
        try:
            head = self.head.load() if self.head is not None else RecordedHead()
        except StateError as exc:
            return _Finding(
                f"the lineage head in the agent state cannot be read: {exc}", unreadable=True
            )
        if not path.exists() and (head.size or head.acked or head.broken):
            if self.store is not None:
                self.store.close()
                self.store = None
            return _Finding(
                f"lineage break: the lineage database {path} is missing; the agent state "
                f"records {head.size} entries at the last signed checkpoint",
                evidence=True,
                seq=0,
            )
        try:
            store = self._open_store(path)
            recorded = head.broken or store.get_meta("break")
        except LineageDamagedError as exc:
            # Evidence even after a recorded break (as a missing file is): moved aside, so
            # that acknowledge-break has a log to work on.
            return _Finding(f"lineage break: {exc}", evidence=True, seq=0)
        except LineageError as exc:
            logger.error("lineage unavailable: %s", exc)
            return _Finding(f"the lineage cannot be opened: {exc}", unreadable=True)
        if recorded is not None:
            return _Finding(f"lineage break not yet acknowledged: {recorded}")
        try:
            if verify or full:
                tail = not full and self.config.verify_on_start == "tail"
                self.verify(tail=tail, head=head)
            else:
                with store.snapshot() as view:
                    check_head(view, head, self._require_key().public, self.origin)
        except LineageError as exc:
            return _Finding(f"lineage break: {exc}", evidence=True, seq=exc.seq)
        return None

    def _open_store(self, path: Path) -> LineageStore:
        if self.store is None:
            self.store = LineageStore.open(
                path,
                synchronous=self.config.synchronous,
                busy_timeout_s=self.config.busy_timeout_s,
            )
        return self.store

    def recheck(self) -> str | None:
        """The running agent's cheap check of its log, made with its periodic state check
        (a few syscalls; one read of the head only when ``state.db`` changed). Return why
        the log is unusable, or ``None``.

        1. A break another process recorded in the agent state closes the gate here too;
           the file this process wrote is let go (the other process started the new log).
        2. The file written deleted, moved, replaced, cut short or overwritten (or its WAL)
           is a break, recorded here as one found at start-up: the gate closes, the file
           found at the path is kept as evidence and a new log starts.
        """
        store = self.store
        if self.fault is not None or store is None:
            return self.fault
        recorded = self._break_recorded(fresh=False)
        problem = None if recorded is not None else store.check_files()
        if problem is not None:
            recorded = self._break_recorded(fresh=True)
        if recorded is not None:
            logger.error(
                "lineage break recorded by another process: %s; deciding nothing until the "
                "agent is stopped, the break acknowledged and the agent started again",
                recorded,
            )
            self.fault = f"lineage break not yet acknowledged: {recorded}"
            store.close()
        elif problem is not None:
            self.fault = f"lineage break: {problem}"
            self._break(store.path, _Finding(self.fault, evidence=True))
        return self.fault

    def _break_recorded(self, *, fresh: bool) -> str | None:
        """The break recorded in the agent state (``fresh=False``: read again only when
        ``state.db`` changed since the last look); ``None`` also when it cannot be read."""
        if self.head is None:
            return None
        try:
            return self.head.load().broken if fresh else self.head.recorded_break()
        except StateError as exc:
            logger.warning("lineage head not checked: %s", exc)
            return None

    def _break(self, path: Path, found: _Finding) -> None:
        """Record a break found twice: in the agent state first (every process denies from
        then on), then a new log whose first entry says what was recorded and what was
        found, the damaged file kept beside it. Read-only commands only log it."""
        message = found.message
        if not self.record_breaks:
            logger.error("%s (not recorded: read-only command)", message)
            return
        logger.error("%s; deciding nothing until 'edge-agent log acknowledge-break'", message)
        wall = int(time.time())
        try:
            head = self.head.load() if self.head is not None else RecordedHead()
            if self.head is not None:
                self.head.mark_broken(message)
            existed = path.exists()
            # Never opened here: a damaged file may not open at all; it is only moved.
            store = self.store or LineageStore(
                path, self.config.synchronous, self.config.busy_timeout_s
            )
            self.store = store
            detail = (
                f"{message}; the agent state recorded {head.size} entries (root "
                f"{head.root.hex()}) at the last signed checkpoint and {head.acked} (root "
                f"{head.acked_root.hex()}) acknowledged by the hub"
            )
            aside, appended = store.start_over(
                f"broken-{wall}" if existed else None, _tamper_draft(wall, detail), self.sign, wall
            )
            kept = f"kept as {aside.name}" if aside else "missing"
            store.set_meta(
                **{"break": f"{message}; the previous log is {kept}", "break_seq": found.seq}
            )
            if self.head is not None and appended.checkpoint_root is not None:
                self.head.restart(
                    RecordedHead(appended.size, appended.checkpoint_root, broken=message)
                )
            logger.error("lineage restarted at entry 0; the previous log is %s", kept)
        except (LineageError, StateError) as exc:
            logger.error("cannot record the lineage break: %s", exc)

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

    def _require_key(self) -> PrivateKey:
        if self.key is None:
            raise LineageError(self.fault or "no device key")
        return self.key

    def sign(self, size: int, root: bytes) -> str:
        """The signed checkpoint note for (size, root) under this device's origin."""
        if self.key is None:
            raise LineageError("no device key to sign the lineage checkpoint")
        return sign_checkpoint(Checkpoint(self.origin, size, root), self.key, self.origin)

    def _advance_head(self, size: int, root: bytes | None = None, *, durable: bool = False) -> None:
        """Record a checkpoint at ``size`` as the head (from stored nodes unless ``root`` is
        given). A failure only leaves the head behind, which is safe: it is logged."""
        if self.head is None or size == 0 or self.head.read_only:
            return
        try:
            if root is None:
                root = Frontier.load(size, self._require_store().get_node).root()
            self.head.advance(size, root, durable=durable)
        except (LineageError, StateError) as exc:
            logger.error("lineage head not recorded at size %d: %s", size, exc)

    # --- writing ---------------------------------------------------------------------------

    def _write_batch(self, drafts: list[Draft]) -> Appended:
        appended = self._append_batch(drafts, wait=True)
        if appended.checkpoint_root is not None:
            self._advance_head(appended.size, appended.checkpoint_root)
        return appended

    def _write_batch_now(self, drafts: list[Draft]) -> Appended:
        """:meth:`_write_batch` on the event loop: the head is recorded by a worker thread,
        so the loop never waits for the state database's lock."""
        appended = self._append_batch(drafts, wait=False)
        if appended.checkpoint_root is not None:
            asyncio.get_running_loop().run_in_executor(
                None, self._advance_head, appended.size, appended.checkpoint_root
            )
        return appended

    def _append_batch(self, drafts: list[Draft], *, wait: bool) -> Appended:
        return self._require_store().append_batch(
            drafts,
            sign=self.sign,
            checkpoint_every=self.config.checkpoint_every,
            checkpoint_after_s=self.config.checkpoint_after_s,
            now=max(d.time for d in drafts),
            wait=wait,
        )

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

    def _decision_draft(self, decision: Decision) -> Draft:
        """:meth:`_draft` of ``decision``'s entry (:class:`DecisionDrafts`)."""
        if self.fault is not None:
            raise LineageError(self.fault)
        try:
            return self._decision_drafts.draft(decision)
        except ValueError as exc:
            raise LineageError(f"the lineage entry cannot be written: {exc}") from exc

    def _failed(self, exc: LineageError) -> LineageError:
        """Note a failed write; a file SQLite found damaged is a break, recorded now."""
        self.last_error = str(exc)
        logger.error("lineage write failed: %s", exc)
        if isinstance(exc, LineageDamagedError) and self.fault is None and self.store is not None:
            self.fault = f"lineage break: {exc}"
            self._break(self.store.path, _Finding(self.fault, evidence=True))
        return exc

    def record_decision(
        self, decision: Decision, follow: Entry | None = None
    ) -> tuple[Decision, int | None]:
        """Write ``decision`` durably, and ``follow`` (its shadow divergence) right after it
        in the same transaction; return the decision and its seq, or the deny that replaces
        it. A ``follow`` that cannot be written is logged and left out."""
        try:
            draft = self._decision_draft(decision)
        except LineageError as exc:
            return lineage_unavailable(decision, str(exc)), None
        try:
            seq = self._writer.append(draft, *self._follow_draft(follow))
        except LineageError as exc:
            return lineage_unavailable(decision, str(self._failed(exc))), None
        self.last_error = None
        return decision, seq

    def record_decisions(
        self, decisions: Sequence[tuple[Decision, Entry | None]]
    ) -> list[Decision]:
        """:meth:`record_decision` of several decisions at once, each with its ``follow``
        right after it, all in one transaction (group commit with any other writer thread);
        return, in order, each decision once durable or the deny that replaces it. One
        that cannot be drafted is denied alone; a failed write denies them all."""
        recorded: list[Decision] = []
        drafts: list[Draft] = []
        written: list[int] = []
        for decision, follow in decisions:
            try:
                draft = self._decision_draft(decision)
            except LineageError as exc:
                recorded.append(lineage_unavailable(decision, str(exc)))
                continue
            written.append(len(recorded))
            recorded.append(decision)
            drafts.append(draft)
            drafts.extend(self._follow_draft(follow))
        if not drafts:
            return recorded
        try:
            self._writer.append(*drafts)
        except LineageError as exc:
            message = str(self._failed(exc))
            for index in written:
                recorded[index] = lineage_unavailable(recorded[index], message)
            return recorded
        self.last_error = None
        return recorded

    async def record_decision_async(self, decision: Decision) -> tuple[Decision, int | None]:
        """:meth:`record_decision` for a coroutine (many of them share one commit)."""
        try:
            return decision, await self.append_async(decision_entry(decision))
        except LineageError as exc:
            return lineage_unavailable(decision, str(exc)), None

    def record_decision_numbered_soon(
        self, decision: Decision, follow: Entry | None = None
    ) -> asyncio.Future[tuple[Decision, int | None]]:
        """:meth:`record_decision` on the event loop without a coroutine: the future
        resolves to the decision and its seq once it is durable, or to the deny that
        replaces it and ``None`` (it never fails); ``follow`` (its shadow divergence) is
        queued right behind it. Concurrent calls share one commit (the exec decisions'
        hand-off, :mod:`edge_agent.fanotify.handoff`). Call it on the loop."""
        recorded: asyncio.Future[tuple[Decision, int | None]] = (
            asyncio.get_running_loop().create_future()
        )
        try:
            draft = self._decision_draft(decision)
        except LineageError as exc:
            recorded.set_result((lineage_unavailable(decision, str(exc)), None))
            return recorded
        self._async_writer.submit(
            draft, functools.partial(self._settle_numbered, decision, recorded)
        )
        for follow_draft in self._follow_draft(follow):
            self._async_writer.submit(
                follow_draft, functools.partial(_follow_written, follow_draft.kind)
            )
        return recorded

    def _follow_draft(self, follow: Entry | None) -> tuple[Draft, ...]:
        """The draft of a decision's ``follow`` entry (none when there is none, or when it
        cannot be written: logged, and the decision is written alone)."""
        if follow is None:
            return ()
        try:
            return (self._draft(follow),)
        except LineageError as exc:
            logger.error("%s entry not logged: %s", follow.kind, exc)
            return ()

    def _settle_numbered(
        self,
        decision: Decision,
        recorded: asyncio.Future[tuple[Decision, int | None]],
        outcome: int | LineageError,
    ) -> None:
        seq: int | None = None
        if isinstance(outcome, LineageError):
            decision = lineage_unavailable(decision, str(self._failed(outcome)))
        else:
            self.last_error, seq = None, outcome
        if not recorded.done() and not recorded.get_loop().is_closed():
            recorded.set_result((decision, seq))

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

    def verify(self, *, tail: bool = False, head: RecordedHead | None = None) -> VerifyReport:
        """Verify the stored log in one snapshot (see :func:`verify_store`), against
        ``head`` (default: the head recorded in the agent state, when tracked).

        Raises:
            LineageError: the first failure, or the head cannot be read.
        """
        if head is None and self.head is not None:
            try:
                head = self.head.load()
            except StateError as exc:
                raise LineageError(f"the lineage head cannot be read: {exc}") from exc
        return verify_store(
            self._require_store(), self._require_key().public, self.origin, tail=tail, head=head
        )

    def audit(self) -> str | None:
        """Verify every entry against the recorded head, in one snapshot, off the caller's
        event loop (it reads the whole log: run it in a thread). A break found twice closes
        the gate and is recorded like one found at start-up. Return why the log is
        unusable, or ``None``."""
        if self.fault is None and self.store is not None:
            found = self._examine(self.store.path, verify=True, full=True)
            if found is not None and found.unreadable:
                logger.warning("lineage audit could not read the log: %s", found.message)
            elif found is not None:
                self.fault = found.message
        return self.fault

    def recorded_break(self) -> str | None:
        """The break recorded in the agent state or the log and not yet acknowledged.

        Raises:
            LineageError: neither can be read.
        """
        try:
            broken = self.head.load().broken if self.head is not None else None
        except StateError as exc:
            raise LineageError(f"the lineage head cannot be read: {exc}") from exc
        recorded = None if self.store is None else self.store.get_meta("break")
        return broken or (None if recorded is None else str(recorded))

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

    def prove(self, seq: int, now: int, *, witnesses: Collection[PublicKey] = ()) -> InclusionProof:
        """Entry ``seq``, its inclusion proof and the checkpoint it is proven against: the
        smallest stored checkpoint covering it that is cosigned by one of ``witnesses``
        when there is one (see :meth:`cosigned_covering`), else the latest signed
        checkpoint covering it (signing one at the current size when none covers it yet).

        Raises:
            LineageError: ``seq`` is not in the stored log, or the log cannot be read.
        """
        store = self._require_store()
        tip = store.tip()
        if not tip.base <= seq < tip.size:
            raise LineageError(
                f"entry {seq} is not in the log (it holds entries {tip.base} to {tip.size - 1})"
            )
        checkpoint = self.cosigned_covering(seq, witnesses) if witnesses else None
        if checkpoint is None:
            checkpoint = store.latest_checkpoint()
        if checkpoint is None or checkpoint.size <= seq:
            checkpoint = self._checkpoint_at(tip.size, now)
        data = store.entry(seq)
        if leaf_hash(data) != store.get_node(0, seq):
            raise LineageError(
                "the stored entry is not the leaf the signed tree holds (the log was altered: "
                "'edge-agent log verify' says more)",
                seq=seq,
            )
        proof = inclusion_proof(seq, checkpoint.size, store.get_node)
        return InclusionProof(seq, data, checkpoint.size, proof, checkpoint.note)

    def cosigned_covering(
        self, seq: int, witnesses: Collection[PublicKey]
    ) -> StoredCheckpoint | None:
        """The smallest stored checkpoint holding entry ``seq`` with a valid cosignature by
        one of ``witnesses``, or ``None``. A note whose cosignature no longer verifies (its
        witness key rotated away) is passed over, not an error.

        Raises:
            LineageError: the log cannot be read.
        """
        store = self._require_store()
        for stored in store.checkpoints_holding(seq + 1, _WITNESS_LINE):
            try:
                verify_cosignature(stored.note, witnesses)
            except LineageError:
                continue
            return stored
        return None

    def keep_cosigned(
        self, note: str, *, size: int, root: bytes, witnesses: Collection[PublicKey], now: int
    ) -> Cosignature:
        """Keep ``note``, this device's checkpoint at ``size`` cosigned by the hub's witness
        (it came with the hub's ack), in place of the device's own note there, or as the
        checkpoint there when none is stored: receipts proven against it then carry the
        witness's cosignature. Return the cosignature.

        Steps: 1. the note is signed by the device key under this log's origin; 2. it is at
        ``size`` and signs ``root`` (the root the ack states); 3. that is this log's own
        root at ``size``; 4. it holds a valid cosignature by one of ``witnesses`` (the
        verifier-role keys of the current trust root); 5. it replaces the stored note at
        ``size``, in one transaction. Nothing is stored when a step fails, and the note is
        never used to judge the log itself: every note stored stays a device-signed
        checkpoint of the tree held at its size, which ``verify`` checks as before.

        Raises:
            LineageError: a step failed (the message says which), the log is unavailable,
                or the write failed.
        """
        store = self._require_usable()
        checkpoint = verify_checkpoint(note, self._require_key().public, self.origin)
        if checkpoint.size != size:
            raise LineageError(
                f"the cosigned checkpoint is at size {checkpoint.size}, not at the "
                f"acknowledged size {size}"
            )
        if checkpoint.root != root:
            raise LineageError(
                f"the cosigned checkpoint at size {size} does not sign the root the hub "
                "acknowledged"
            )
        if self.root_at(size) != root:
            raise LineageError(
                f"the cosigned checkpoint at size {size} does not sign this log's root there"
            )
        cosignature = verify_cosignature(note, witnesses)
        store.replace_checkpoint(size, note, now)
        self._advance_head(size, root)
        return cosignature

    def consistency(self, old: int, new: int) -> tuple[bytes, ...]:
        """The RFC 9162 consistency proof from the tree of ``old`` entries to that of
        ``new``, from stored nodes.

        Raises:
            LineageError: not ``0 < old <= new``, ``old`` before the log's base (pruned),
                ``new`` beyond its end, or a stored node is missing.
        """
        store = self._require_store()
        tip = store.tip()
        if not 0 < old <= new:
            raise LineageError(
                f"no consistency proof from size {old} to size {new}: the old size must be "
                "at least 1 and at most the new one"
            )
        if new > tip.size:
            raise LineageError(f"the log holds {tip.size} entries, fewer than size {new}")
        if old < tip.base:
            raise LineageError(
                f"entries before {tip.base} were pruned: no consistency proof from size {old}"
            )
        return consistency_proof(old, new, store.get_node)

    # --- checkpoints and shipping ----------------------------------------------------------

    def checkpoint(self, now: int) -> None:
        """Sign a checkpoint at the current size if there is none there.

        Raises:
            LineageError: the log is unavailable (a broken log is never signed), or the
                write failed.
        """
        stored = self._require_usable().add_checkpoint(self.sign, now)
        if stored is not None:
            self._advance_head(stored.size)

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
        self._advance_head(stored.size)
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
        if self.head is not None and watermark > 0:
            try:
                self.head.acknowledge(watermark, self.root_at(watermark))
            except StateError as exc:
                logger.error("lineage acknowledgement not recorded in the state: %s", exc)
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
        return self._prune(min(target, tip.acked), now, RETENTION)

    def prune_before(self, seq: int, now: int, *, include_unacknowledged: bool = False) -> int:
        """Prune entries before ``seq``, cut at the largest signed checkpoint at or below it;
        return how many entries went.

        Unless ``include_unacknowledged``, entries the hub has not acknowledged stay.

        Raises:
            LineageError: the log is unavailable or the prune could not be written.
        """
        store = self._require_usable()
        limit = seq if include_unacknowledged else min(seq, store.tip().acked)
        return self._prune(limit, now, OPERATOR_PRUNE)

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
        # The head must not fall below the new base (no proof could reach it from there).
        self._advance_head(cuts[-1], durable=True)
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
        recorded = self.recorded_break()
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
        seq = self.append(
            Entry(
                0,
                now,
                GENESIS_PREV,
                Kind.SEGMENT_START,
                True,
                BREAK_ACKNOWLEDGED,
                detail=detail,
            )
        )
        if self.head is not None:
            self._restart_head(self.head, seq + 1, now)
        return seq

    def _restart_head(self, head: LineageHeadStore, size: int, now: int) -> None:
        """Sign a checkpoint at ``size`` and make it the recorded head, with the hub's
        acknowledgement when it still lies in the stored log; no break.

        Raises:
            LineageError: the checkpoint or the head could not be written.
        """
        store = self._require_store()
        store.add_checkpoint(self.sign, now, size)
        tip = store.tip()
        acked = tip.acked if tip.acked >= max(tip.base, 1) else 0
        unacked = RecordedHead()
        try:
            head.restart(
                RecordedHead(
                    size,
                    self.root_at(size),
                    acked,
                    self.root_at(acked) if acked else unacked.acked_root,
                )
            )
        except StateError as exc:
            raise LineageError(f"the acknowledgement cannot be recorded: {exc}") from exc

    def close(self, now: int) -> None:
        """Apply retention and checkpoint the log (when usable), and close it."""
        self._async_writer.close()
        if self.store is not None and self.fault is None and not self.store.inspecting:
            try:
                self.apply_retention(now)
                self.checkpoint(now)
            except LineageError as exc:
                logger.error("no retention or checkpoint at close: %s", exc)
        if self.store is not None:
            self.store.close()
        if self.head is not None:
            self.head.close()


def _tamper_draft(time: int, detail: str) -> Draft:
    """The first entry of the log started after a break was found."""
    entry = Entry(0, time, GENESIS_PREV, Kind.SEGMENT_START, True, TAMPERED, detail=detail)
    return draft_of(entry)


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


def _follow_written(kind: Kind, outcome: int | LineageError) -> None:
    """A follow entry's outcome, queued behind its decision on the event loop: the writer
    keeps a loop's drafts in order, so it takes the next seq (unless another process's batch
    lands between the two, at a batch boundary). Its failure is logged (its decision's own
    outcome, in the same batch, says what the caller is told)."""
    if isinstance(outcome, LineageError):
        logger.error("%s entry not logged: %s", kind, outcome)

"""Trust transitions into the lineage, durably: the agent's outbox.

A transition that changes the stored state is written into the store's outbox in the same
transaction as the change (:meth:`TransitionRecorder.commit`), and appended to the lineage
right after, under the store's transition lock; its outbox row is cleared once it is in the
lineage. A process killed or failing in between leaves the row, and the next process to look
(:meth:`TransitionRecorder.flush`, before its next decision) appends it, once. So a committed
transition reaches the lineage exactly once, whichever process logs it.

A transition that changes nothing stored (a refusal, a verdict the agent observed) is logged
directly (:meth:`TransitionRecorder.record`): there is no change for it to be lost with.

This module does not decide anything, check generations or swap state: the caller computes
the change from its generation and swaps in what was written
(:class:`~edge_agent.store.StaleStateError` passes through untouched).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge_agent.errors import EdgeGovError, LineageError, StateError
from edge_agent.lineage.log import LineageLog
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Entry, decode_entry, encode_entry
from edge_agent.store import StateStore, Written
from edge_agent.trust.machine import Transition

__all__ = ["TransitionRecorder", "transition_entry"]

logger = logging.getLogger(__name__)


def transition_entry(transition: Transition, wall: int) -> Entry:
    """The lineage entry of ``transition`` at ``wall`` (its ``seq`` and ``prev`` are set
    when appended)."""
    return Entry(
        0,
        wall,
        GENESIS_PREV,
        transition.kind,
        transition.applied,
        transition.reason,
        None,
        transition.bundle_digest,
        transition.bundle_version,
        None,
        transition.detail,
    )


class TransitionRecorder:
    """Logs one agent's trust transitions in its lineage, through the store's outbox when
    they come with a stored change.

    ``lineage`` ``None``: nothing is logged (and the outbox is left alone). A ``read_only``
    recorder never appends what other processes left in the outbox.
    """

    def __init__(
        self, store: StateStore, lineage: LineageLog | None, *, read_only: bool = False
    ) -> None:
        self._store = store
        self._lineage = lineage
        self._read_only = read_only
        self._maybe_pending = not read_only
        """Whether a transition may be waiting in the store's outbox."""
        self._flush_failing = False

    def record(self, transition: Transition, wall: int) -> None:
        """Log ``transition`` (at ``wall``) in the lineage, when it is open."""
        if self._lineage is not None:
            self._lineage.record_transition(
                transition.kind,
                time=wall,
                applied=transition.applied,
                reason=transition.reason,
                detail=transition.detail,
                bundle_digest=transition.bundle_digest,
                bundle_version=transition.bundle_version,
            )

    def commit(
        self,
        write: Callable[..., Written],
        transition: Transition,
        wall: int,
        swap: Callable[[Written], None],
    ) -> None:
        """Under the transition lock: call ``write`` with ``transition``'s entry (at ``wall``)
        for the outbox, hand what was written to ``swap``, then append the entry to the
        lineage and clear its outbox row.

        Raises:
            StaleStateError: from ``write``: another process committed first; nothing changed.
            StateError: from ``write``: the write failed; nothing changed.
        """
        entry = transition_entry(transition, wall)
        with self._store.transition_lock():
            written = write(transition=encode_entry(entry))
            swap(written)
            if written.transition is not None:
                self._log_pending(written.transition, entry)

    def expect_pending(self) -> None:
        """Another process committed a change: it may have left a transition in the outbox."""
        self._maybe_pending = not self._read_only

    def flush(self) -> None:
        """Log the transitions a process committed but did not log (it failed or was killed
        in between): each is appended to the lineage once, then cleared. While another
        process holds the transition lock it is logging its own: left to it. A failure is
        logged once and tried again on the next call."""
        if not self._maybe_pending:
            return
        if self._lineage is None:
            self._maybe_pending = False
            return
        try:
            with self._store.transition_lock(wait=False) as held:
                if not held:
                    return
                for row, data in self._store.pending_transitions():
                    entry = decode_entry(data)
                    self._lineage.append(entry)
                    self._store.clear_transition(row)
                    logger.warning(
                        "trust transition %s (%s) logged late: the process that made it "
                        "could not log it then",
                        entry.kind,
                        entry.reason,
                    )
        except EdgeGovError as exc:
            if not self._flush_failing:
                logger.error("pending trust transitions not logged yet: %s", exc)
            self._flush_failing = True
            return
        self._maybe_pending = self._flush_failing = False

    def _log_pending(self, row: int, entry: Entry) -> None:
        """Append the pending ``entry`` to the lineage and clear its outbox ``row``; a
        failure leaves it pending (logged, and tried again on the next :meth:`flush`)."""
        if self._lineage is None:
            return
        try:
            self._lineage.append(entry)
            self._store.clear_transition(row)
        except (LineageError, StateError) as exc:
            logger.error("trust transition %s kept pending for the lineage: %s", entry.kind, exc)
            self._maybe_pending = True

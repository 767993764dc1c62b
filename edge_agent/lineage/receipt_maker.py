"""Receipts of decisions just logged, for callers that ask for one (``want_receipt``).

A receipt (docs/receipts.md) proves an entry against a signed checkpoint covering it. A
decision asked with ``want_receipt`` is durable in the lineage before its receipt is made;
the receipt is then proven against the latest stored checkpoint that covers it, and only
when none does is a checkpoint signed, at the log's current size. Requests are served one at
a time (a lock), so every decision of one group commit, asked for at once, is covered by the
first one's checkpoint: one checkpoint signature per batch, not per request. Each receipt
is then signed with the device key (the statement and its receipt, two Ed25519 signatures).

This runs off the event loop (the decision is already answered durable; its receipt waits on
nothing else) and never changes what was decided.
"""

from __future__ import annotations

import threading

from edge_agent.errors import LineageError
from edge_agent.lineage.log import LineageLog
from edge_agent.protocol.receipt import build_receipt

__all__ = ["ReceiptMaker"]


class ReceiptMaker:
    """Makes device-signed receipts of entries of ``log``; safe to call from several threads.

    ``checkpoints_used`` counts the times a receipt was proven against another checkpoint
    than the one before it (for the bench and tests: it grows by batches, not by requests).
    """

    def __init__(self, log: LineageLog) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._last_size = 0
        self.checkpoints_used = 0

    def receipt(self, seq: int, now: int) -> bytes:
        """The receipt of entry ``seq``, issued at ``now``.

        Raises:
            LineageError: the entry is not in the log, the log cannot be read or signed, or
                has no device key.
        """
        key = self._log.key
        if key is None:
            raise LineageError("no device key to sign a receipt with")
        with self._lock:
            proven = self._log.prove(seq, now)
            if proven.tree_size != self._last_size:
                self._last_size = proven.tree_size
                self.checkpoints_used += 1
        try:
            return build_receipt(
                entry=proven.entry,
                seq=proven.seq,
                tree_size=proven.tree_size,
                path=proven.proof,
                note=proven.checkpoint,
                signer=key,
                now=now,
            )
        except ValueError as exc:
            raise LineageError(f"cannot make the receipt: {exc}", seq=seq) from exc

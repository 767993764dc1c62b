"""The hub as witness of every device log: cosign the checkpoint of a batch it accepted.

:func:`hub.core.ingest.ingest_batch` accepts a batch only when its entries extend, entry by
entry, everything the hub holds for the device and its signed checkpoint names exactly the
recomputed root. That is what a C2SP ``cosignature/v1`` states (c2sp.org/tlog-cosignature:
the witness verified this checkpoint consistent with every earlier one it saw for the log),
so :func:`witness_accepted` cosigns only an :class:`Accepted` value: a fork, a refused batch
or a duplicate never reaches it. The cosigned note (the device's note with the witness line
appended) replaces the device's note in what the registry stores and what the ack carries.

The witness key is the trust root's verifier role key (docs/receipts.md says why); it is
handed in, as is ``now``, the hub's wall-clock time. This module does no I/O.
"""

from __future__ import annotations

from dataclasses import replace

from edge_agent.protocol.cosignature import cosign_note
from edge_agent.protocol.keys import PrivateKey
from hub.registry.records import Accepted

__all__ = ["witness_accepted"]


def witness_accepted(accepted: Accepted, key: PrivateKey, *, now: int) -> Accepted:
    """``accepted`` with its checkpoint note cosigned by the witness ``key`` at ``now``.

    Raises:
        ValueError: the note cannot carry one more signature line (it would exceed the
            note's size or signature bounds), or ``now`` is out of range; the batch is
            then stored with the device's note alone.
    """
    note = accepted.log.checkpoint
    if note is None:
        raise ValueError("an accepted batch always carries the device's checkpoint note")
    cosigned = cosign_note(note, key, time=now)
    return replace(accepted, log=replace(accepted.log, checkpoint=cosigned))

"""The hub as witness of every device log: cosign the checkpoint of a batch it accepted.

:func:`hub.core.ingest.ingest_batch` accepts a batch only when its entries extend, entry by
entry, everything the hub holds for the device and its signed checkpoint names exactly the
recomputed root. That is what a C2SP ``cosignature/v1`` states (c2sp.org/tlog-cosignature:
the witness verified this checkpoint consistent with every earlier one it saw for the log),
so :func:`witness_accepted` cosigns only an :class:`Accepted` value: a fork, a refused batch
or a duplicate never reaches it. The cosigned note replaces the device's note in what the
registry stores and what the ack carries: the device's checkpoint text with the device's own
signature line and the witness line, nothing else. Any other line the device shipped (a
"witness" line by a stranger's key, junk lines padding the note to its 16-line or 16 KiB
bound) is dropped first: the hub vouches for the device's signature alone, and a padded note
still gets its cosignature.

The witness key is the trust root's verifier role key (docs/receipts.md says why); it is
handed in, as is ``now``, the hub's wall-clock time. This module does no I/O.
"""

from __future__ import annotations

from dataclasses import replace

from edge_agent.errors import LineageError
from edge_agent.protocol.checkpoint import note_key_id, split_note
from edge_agent.protocol.cosignature import cosign_note
from edge_agent.protocol.keys import PrivateKey, PublicKey
from hub.registry.records import Accepted

__all__ = ["witness_accepted"]


def witness_accepted(
    accepted: Accepted, key: PrivateKey, *, device_key: PublicKey, now: int
) -> Accepted:
    """``accepted`` with its checkpoint note, reduced to ``device_key``'s own signature
    line, cosigned by the witness ``key`` at ``now``.

    Raises:
        ValueError: the note carries no signature line by ``device_key`` under its origin,
            its checkpoint text alone leaves no room for a cosignature, or ``now`` is out of
            range; the batch is then stored with the device's note alone.
    """
    note = accepted.log.checkpoint
    if note is None:
        raise ValueError("an accepted batch always carries the device's checkpoint note")
    own = _device_signed(note, accepted.checkpoint.origin, device_key)
    cosigned = cosign_note(own, key, time=now)
    return replace(accepted, log=replace(accepted.log, checkpoint=cosigned))


def _device_signed(note: str, origin: str, device_key: PublicKey) -> str:
    """``note`` with the device's signature line (key name ``origin``) and no other."""
    try:
        text, signatures = split_note(note)
    except LineageError as exc:
        raise ValueError(f"cannot cosign: {exc}") from exc
    own = (origin, note_key_id(origin, device_key))
    line = next((s.line for s in signatures if (s.name, s.key_id) == own), None)
    if line is None:
        raise ValueError(f"the note carries no signature by the device key under {origin}")
    return f"{text.decode('utf-8')}\n{line}\n"

"""The codes the hub counts a refused device message under (one enum, one place).

Each value is the string stored in the registry's rejection counters and printed by
``edge-hub fleet`` and ``edge-hub device show``: values never change once released (a
renamed code would split one device's history in two). A code says which check refused the
message, so an operator reading the counters knows whether to look at the device, the
network or the hub.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FLOOD_CODES", "RejectCode"]


class RejectCode(StrEnum):
    """Why the hub refused a message from a device (also the rejection counters' names)."""

    BAD_TOPIC = "bad_topic"
    """Not a device topic the hub knows (wrong prefix, depth or leaf)."""
    OVERSIZE = "oversize"
    """Over the size cap of its topic, refused unread."""
    UNKNOWN_DEVICE = "unknown_device"
    """Names a device that is not registered."""
    IMPERSONATION = "impersonation"
    """Not signed by the device's registered key, or sent on another region's topic."""
    MALFORMED = "malformed"
    """Not a well-formed ``COSE_Sign1`` envelope: by its first bytes, or once decoded."""
    UNVERIFIED_FLOOD = "unverified_flood"
    """Dropped unchecked: its topic's signature-check budget was spent."""
    RATE_LIMITED = "rate_limited"
    """Verified, but over the device's message rate."""
    GAP = "gap"
    """A lineage batch that does not start where the stored log ends."""
    CHAIN_BREAK = "chain_break"
    """A lineage batch whose entries do not chain onto the stored ones."""
    BAD_CHECKPOINT = "bad_checkpoint"
    """A lineage batch whose signed checkpoint is missing or names another root."""
    FORK = "fork"
    """A lineage batch contradicting a checkpoint the device signed before (evidence kept)."""
    EVIDENCE_REJECTED = "evidence_rejected"
    """Attestation evidence that does not verify, or a hub with no verifier key."""
    EVIDENCE_REPLAY = "evidence_replay"
    """Attestation evidence answering a nonce that is unknown, spent or expired."""
    INTERNAL_ERROR = "internal_error"
    """The hub failed while handling the message (logged with its cause)."""


FLOOD_CODES = frozenset(
    {
        RejectCode.RATE_LIMITED,
        RejectCode.OVERSIZE,
        RejectCode.UNKNOWN_DEVICE,
        RejectCode.BAD_TOPIC,
        RejectCode.MALFORMED,
        RejectCode.UNVERIFIED_FLOOD,
    }
)
"""Codes anyone reaching the broker can cause at will: logged at debug level only."""

"""Parent verification: is the receipt a request cites a decision that may have caused it?

A request may cite a *parent* (docs/policy.md, "Parents"): the receipt of an earlier
decision, made on this device or another. The deciding agent judges it at decision time,
locally and offline, against the device directory it holds and its own trusted time:

1. The receipt is at most :data:`MAX_PARENT_RECEIPT_BYTES`.
2. A device directory is held and has not expired at ``now``.
3. The log the receipt names is a device of the directory under its current key epoch
   (origin ``edgegov/v1/device/<id>/epoch/<n>``), and the receipt verifies with that
   device's key: entry, leaf hash, inclusion path to the checkpoint's root, and the
   checkpoint signed by that key under that origin
   (:func:`edge_agent.protocol.receipt.verify_device_receipt`; no cosignature is required,
   a fresh receipt has none yet).
4. The entry is a decision, and it allowed.
5. Its time is at most ``now`` + :data:`MAX_PARENT_CLOCK_SKEW_S`: a parent from the future
   is refused (two devices' clocks differ a little, never by more).

The outcome is a :class:`~edge_agent.protocol.request.Parent`: the verified facts (device,
its groups, seq, leaf hash, subject, action, resource, time, and the chain depth, the
parent's own recorded depth plus one), or a refusal with the sentence saying why. Its age
and every other requirement are the policy's (the engine's parent conditions). The same
bytes, directory and ``now`` give the same outcome in every process, with or without a
:class:`VerifiedParents` cache. No I/O, no clock.
"""

from __future__ import annotations

import hashlib

from edge_agent.errors import ReceiptError
from edge_agent.protocol.directory import Directory
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.lineage_entries import Kind
from edge_agent.protocol.receipt import verify_device_receipt
from edge_agent.protocol.request import Parent, ParentFacts

__all__ = [
    "MAX_CACHED_PARENTS",
    "MAX_PARENT_CLOCK_SKEW_S",
    "MAX_PARENT_RECEIPT_BYTES",
    "VerifiedParents",
    "verify_parent",
]

MAX_PARENT_RECEIPT_BYTES = 16 * 1024
"""Largest parent receipt accepted, in bytes: a device-made receipt of a decision with a
4 KiB resource at a billion entries is under 6 KiB; larger ones are refused unread."""

MAX_PARENT_CLOCK_SKEW_S = 5
"""How far, in seconds, a parent's time may be ahead of the deciding agent's trusted time."""

MAX_CACHED_PARENTS = 4096
"""Receipts a :class:`VerifiedParents` remembers (about 1 KiB each at most)."""


class VerifiedParents:
    """Receipts already judged against a directory, so that a parent cited again costs a
    hash and a lookup: one camera inference actuating several valves cites the same parent
    several times, and a client may retry.

    It holds the outcome of the steps that depend on the receipt and the directory alone
    (3 and 4), keyed by the receipt's SHA-256 and the directory's version and issue time;
    the size bound, the directory's expiry and the parent's time (1, 2 and 5) are judged on
    every call. Bounded by :data:`MAX_CACHED_PARENTS` (emptied when full). Safe to share
    between threads (single dict operations only).
    """

    __slots__ = ("_outcomes",)

    def __init__(self) -> None:
        self._outcomes: dict[tuple[bytes, int, int], ParentFacts | str] = {}

    def judged(self, data: bytes, directory: Directory) -> ParentFacts | str:
        key = (hashlib.sha256(data).digest(), directory.version, directory.issued_at)
        outcome = self._outcomes.get(key)
        if outcome is None:
            outcome = _judge(data, directory)
            if len(self._outcomes) >= MAX_CACHED_PARENTS:
                self._outcomes.clear()
            self._outcomes[key] = outcome
        return outcome


def verify_parent(
    data: bytes, directory: Directory | None, now: int, *, cache: VerifiedParents | None = None
) -> Parent:
    """Judge the parent receipt ``data`` at trusted time ``now`` against ``directory``
    (steps 3 and 4 remembered in ``cache`` when one is given).

    Never raises on bad input: every failure is a :class:`Parent` with a refusal.
    """
    version = directory.version if directory is not None else None
    if not isinstance(data, bytes) or len(data) > MAX_PARENT_RECEIPT_BYTES:
        return _refused(version, f"the parent receipt is over {MAX_PARENT_RECEIPT_BYTES} bytes")
    if directory is None:
        return _refused(
            None,
            "this agent holds no device directory to verify a parent with; check that it "
            "receives the hub's trust/directory topic",
        )
    if directory.expired_at(now):
        return _refused(
            version,
            f"the device directory (version {version}) expired {now - directory.expires_at} s "
            "ago; check that this agent receives the hub's trust/directory topic",
        )
    outcome = cache.judged(data, directory) if cache is not None else _judge(data, directory)
    if isinstance(outcome, str):
        return _refused(version, outcome)
    if outcome.time > now + MAX_PARENT_CLOCK_SKEW_S:
        return _refused(
            version,
            f"the parent decision is dated {outcome.time - now} s in the future; check the "
            f"clocks of {outcome.device} and this device",
        )
    return Parent(outcome, version)


def _judge(data: bytes, directory: Directory) -> ParentFacts | str:
    """Steps 3 and 4: the facts of the parent, or why it is refused."""
    unknown: list[str] = []

    def key_for(origin: str) -> PublicKey | None:
        device = directory.by_origin.get(origin)
        if device is None:
            unknown.append(origin)
            return None
        return device.key

    try:
        report = verify_device_receipt(data, device_key=key_for)
    except ReceiptError as exc:
        if unknown:
            return (
                f"its log {unknown[0]!r} is no device of directory version "
                f"{directory.version} under that key epoch (unregistered, removed or re-keyed "
                "device)"
            )
        return f"the parent receipt does not verify ({exc.step}): {exc.message}"
    entry = report.entry
    device = directory.by_origin[report.checkpoint.origin]
    request = entry.request
    if entry.kind is not Kind.DECISION or request is None:
        return f"the parent entry is a {entry.kind} entry, not a decision"
    if not entry.allowed:
        return f"the parent decision was denied ({entry.reason})"
    cited = request.parent
    depth = (cited.facts.depth if cited is not None and cited.facts is not None else 0) + 1
    return ParentFacts(
        device=device.id,
        groups=device.groups,
        seq=entry.seq,
        leaf_hash=report.leaf_hash,
        subject=request.subject,
        action=request.action,
        resource=request.resource,
        time=entry.time,
        depth=depth,
    )


def _refused(version: int | None, why: str) -> Parent:
    return Parent(None, version, f"parent refused: {why}")

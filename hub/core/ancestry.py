"""Execution ancestry at the hub: walk a decision's parent links back across devices.

A decision made with a parent records it in its lineage entry: the parent's device, ``seq``,
leaf hash and the child's depth in the chain. :func:`walk_ancestry` follows those links
through the logs the hub holds, child first, and checks every link:

1. the device is registered (a parent naming an unknown device fails the link);
2. the hub holds the entry; a parent not shipped yet ends the walk as
   :attr:`LinkStatus.NOT_SHIPPED`, which is no error: the chain is known up to there;
3. its leaf hash is the one the child recorded (otherwise the stored entry is not the
   decision the child cited: the link fails);
4. it decodes as a lineage entry, and a parent is a decision;
5. it is proven in the newest checkpoint the device signed and the hub's witness cosigned
   covering it (:func:`hub.core.receipts.prove_entry`): a stored entry altered under the tree
   fails the link; none cosigned yet is :attr:`LinkStatus.NOT_COSIGNED` and the walk goes on;
6. the depths agree: a child's recorded depth is its parent's plus one (a parent without a
   parent has depth 0);
7. parent facts: a decision that recorded a verified parent has every fact it recorded
   checked against the parent entry the hub stores and the directory version it recorded
   (the hub keeps every version it issued): groups, subject, action, resource, verdict,
   time (so the age its policy saw), seq and leaf hash
   (:func:`edge_agent.protocol.chain.verified_parent_facts`, the code ``edge-verify chain``
   runs). A fact that is not the parent's fails the link, naming the lie; a parent not
   stored yet leaves the facts unchecked and the walk ends at it (not verified);
8. given the policies of the bundles the hub holds (``policy_of``), a decision that cited a
   parent is re-decided with the device's own pure engine under the bundle it names, at its
   own time, with its parent's VERIFIED facts (step 7), never the recorded ones: it must
   come out as logged (verdict, reason, rule), so the rule's parent requirement held; a
   bundle the hub does not hold is said so, not failed.

A walk stops at the first failed link, at a link already visited (a cycle: impossible with
honest hashes, refused all the same) and after :data:`MAX_ANCESTRY_LINKS` links. It reads
through a :class:`~hub.core.receipts.ProofSource` and does no other I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Protocol

from edge_agent.errors import LineageError
from edge_agent.policy.compiler import CompiledPolicy
from edge_agent.policy.engine import evaluate
from edge_agent.protocol.chain import (
    cited_parent,
    needs_redecision,
    redecide_entry,
    verified_parent_facts,
)
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.lineage_entries import Entry, Kind, decode_entry
from edge_agent.protocol.merkle import leaf_hash
from edge_agent.protocol.request import ParentFacts
from hub.core.directory import listed_groups
from hub.core.receipts import ProofSource, ProvenEntry, prove_entry, registered, stored_entry
from hub.registry.interface import RegistryError
from hub.registry.records import DeviceRecord

__all__ = [
    "MAX_ANCESTRY_LINKS",
    "Ancestry",
    "AncestrySource",
    "Link",
    "LinkStatus",
    "PolicyOf",
    "walk_ancestry",
]

MAX_ANCESTRY_LINKS = 64
"""Most links one walk follows (the decision itself included); a longer chain is cut there
and said so."""

PolicyOf = Callable[[bytes], CompiledPolicy | None]
"""The compiled policy of the bundle with this SHA-256 digest, verified under the hub's
trust root; ``None`` when the hub does not hold it (or it no longer verifies)."""


class AncestrySource(ProofSource, Protocol):
    """What a walk reads (:class:`hub.registry.Registry` is one): the proofs, and the signed
    directory versions the hub issued."""

    def directory_version(self, region: str, version: int) -> bytes | None: ...


class LinkStatus(StrEnum):
    """What the hub could establish about one link."""

    VERIFIED = "verified"
    """Stored, the leaf the child recorded, proven in a checkpoint the hub cosigned."""
    NOT_COSIGNED = "not_yet_cosigned"
    """Stored and the leaf the child recorded, but no cosigned checkpoint covers it yet."""
    NOT_SHIPPED = "not_yet_shipped"
    """The device has not shipped the entry to this hub yet (not an error)."""
    FAILED = "failed"
    """The link does not hold: ``detail`` says why."""


@dataclass(frozen=True, slots=True)
class Link:
    """One link of a chain: ``device``'s entry ``seq``, what was established about it, and
    (when it was read) the entry, its leaf hash and its proof."""

    device: str
    seq: int
    status: LinkStatus
    detail: str
    entry: Entry | None = None
    leaf: bytes | None = None
    proven: ProvenEntry | None = None
    policy: str = ""
    """What re-deciding the entry under its bundle established (empty: not re-decided)."""

    @property
    def parent(self) -> ParentFacts | None:
        """The verified parent this link's entry records, if any."""
        return None if self.entry is None else cited_parent(self.entry)


@dataclass(frozen=True, slots=True)
class Ancestry:
    """A walked chain, child first, and why the walk ended."""

    links: tuple[Link, ...]
    end: str
    """Why the walk stopped, as a sentence."""

    @property
    def verified(self) -> bool:
        """Every link verified and the last one has no parent: the whole chain is proven."""
        last = self.links[-1]
        return last.parent is None and all(
            link.status == LinkStatus.VERIFIED for link in self.links
        )

    @property
    def failed(self) -> Link | None:
        """The link that failed, if one did."""
        return next((link for link in self.links if link.status == LinkStatus.FAILED), None)


def walk_ancestry(
    source: AncestrySource,
    device_id: str,
    seq: int,
    *,
    witnesses: Sequence[PublicKey],
    policy_of: PolicyOf | None = None,
    max_links: int = MAX_ANCESTRY_LINKS,
) -> Ancestry:
    """The chain of ``device_id``'s entry ``seq`` back to its root, each link checked as the
    module docstring numbers it.

    Raises:
        ConfigError: ``device_id`` is not registered, or the hub does not hold entry ``seq``.
        RegistryError: the registry cannot be read.
    """
    if max_links < 1:
        raise ValueError("a walk follows at least one link")
    registered(source, device_id)
    stored_entry(source, device_id, seq)
    links: list[Link] = []
    visited: set[tuple[str, int]] = set()
    at: tuple[str, int] = (device_id, seq)
    cited: ParentFacts | None = None
    while True:
        if at in visited:
            links.append(_failed(at, f"entry {at[1]} of {at[0]} appears twice: a cycle"))
            return Ancestry(tuple(links), "a cycle: the chain cites itself")
        if len(links) == max_links:
            return Ancestry(tuple(links), f"cut after {max_links} links")
        visited.add(at)
        link = _check_link(source, at, cited, witnesses, policy_of)
        links.append(link)
        if link.status in (LinkStatus.FAILED, LinkStatus.NOT_SHIPPED):
            return Ancestry(tuple(links), link.detail)
        parent = link.parent
        if parent is None:
            return Ancestry(tuple(links), _root_end(link))
        at, cited = (parent.device, parent.seq), parent


def _check_link(
    source: AncestrySource,
    at: tuple[str, int],
    cited: ParentFacts | None,
    witnesses: Sequence[PublicKey],
    policy_of: PolicyOf | None,
) -> Link:
    device_id, seq = at
    device = source.device(device_id)
    if device is None:
        return _failed(at, f"the parent's device {device_id!r} is not registered at this hub")
    entries = source.entries(device_id, seq, seq + 1)
    if not entries:
        return Link(
            device_id, seq, LinkStatus.NOT_SHIPPED, f"{device_id} has not shipped entry {seq} yet"
        )
    data = entries[0]
    leaf = leaf_hash(data)
    if cited is not None and leaf != cited.leaf_hash:
        return _failed(
            at,
            f"the stored entry {seq} of {device_id} is not the one its child cited (leaf "
            f"{leaf.hex()[:16]}…, cited {cited.leaf_hash.hex()[:16]}…)",
        )
    try:
        entry = decode_entry(data, seq)
    except LineageError as exc:
        return _failed(at, f"the stored entry {seq} of {device_id} does not decode: {exc}")
    if cited is not None and entry.kind != Kind.DECISION:
        return _failed(at, f"entry {seq} of {device_id} is a {entry.kind}, not a decision")
    depth_problem = _depth_problem(entry, cited)
    if depth_problem is not None:
        return Link(device_id, seq, LinkStatus.FAILED, depth_problem, entry, leaf)
    verified = _verified_parent(source, device, entry)
    if isinstance(verified, str):
        return Link(device_id, seq, LinkStatus.FAILED, f"parent facts: {verified}", entry, leaf)
    policy, policy_problem = _redecided(entry, policy_of, verified)
    if policy_problem is not None:
        return Link(device_id, seq, LinkStatus.FAILED, policy_problem, entry, leaf)
    try:
        proven = prove_entry(source, device, seq, data, witnesses)
    except LineageError as exc:
        return Link(device_id, seq, LinkStatus.NOT_COSIGNED, str(exc), entry, leaf, None, policy)
    except RegistryError as exc:
        return Link(device_id, seq, LinkStatus.FAILED, str(exc), entry, leaf)
    return Link(
        device_id,
        seq,
        LinkStatus.VERIFIED,
        f"in the checkpoint at size {proven.held.stored.size}, cosigned at "
        f"{proven.held.cosignature.time}",
        entry,
        leaf,
        proven,
        policy,
    )


@dataclass(frozen=True, slots=True)
class _Unchecked:
    """The parent's facts could not be checked at the child's link; ``why`` says so, and the
    walk fails or ends at the parent's own link (steps 1 to 3)."""

    why: str


def _verified_parent(
    source: AncestrySource, device: DeviceRecord, entry: Entry
) -> ParentFacts | str | _Unchecked | None:
    """Step 7: the facts of the verified parent ``entry`` records, read from the parent entry
    the hub stores and the directory version the entry recorded (``None``: it records no
    verified parent), or the sentence naming what the child recorded falsely."""
    cited = cited_parent(entry)
    request = entry.request
    if cited is None or request is None or request.parent is None:
        return None
    stored = source.entries(cited.device, cited.seq, cited.seq + 1)
    if not stored or source.device(cited.device) is None:
        return _Unchecked("its parent is not stored at this hub yet")
    if leaf_hash(stored[0]) != cited.leaf_hash:
        return _Unchecked("the parent stored is not the entry it cited")
    try:
        parent = decode_entry(stored[0], cited.seq)
    except LineageError:
        return _Unchecked("the parent stored does not decode")
    if parent.kind != Kind.DECISION:
        return _Unchecked("the parent stored is not a decision")
    recorded = request.parent.directory_version
    data = None if recorded is None else source.directory_version(device.region, recorded)
    listed = None if data is None else listed_groups(data, cited.device)
    return verified_parent_facts(
        cited,
        recorded_version=recorded,
        directory_version=None if listed is None else listed[0],
        groups=None if listed is None else listed[1],
        entry=parent,
        leaf=leaf_hash(stored[0]),
    )


def _redecided(
    entry: Entry, policy_of: PolicyOf | None, verified: ParentFacts | _Unchecked | None
) -> tuple[str, str | None]:
    """Step 8: (what re-deciding established, or why it did not run; the failure or None),
    as ``edge-verify chain --bundle`` does it (:func:`edge_agent.protocol.chain.redecide_entry`),
    with the parent's verified facts."""
    if policy_of is None or not needs_redecision(entry) or entry.bundle_digest is None:
        return "", None
    if isinstance(verified, _Unchecked):
        return f"not re-decided: {verified.why}", None
    policy = policy_of(entry.bundle_digest)
    if policy is None:
        return f"not re-decided: the hub holds no bundle v{entry.bundle_version} it names", None
    return redecide_entry(entry, partial(evaluate, policy), verified)


def _depth_problem(entry: Entry, cited: ParentFacts | None) -> str | None:
    if cited is None:
        return None
    own_parent = cited_parent(entry)
    own = 0 if own_parent is None else own_parent.depth
    if cited.depth == own + 1:
        return None
    return (
        f"the child records depth {cited.depth}, but entry {entry.seq} has depth {own}: "
        "a child's depth is its parent's plus one"
    )


def _root_end(link: Link) -> str:
    request = None if link.entry is None else link.entry.request
    if request is not None and request.parent is not None:
        return (
            f"{link.device} {link.seq} cited a parent its agent refused "
            f"({request.parent.refusal}): the chain known ends there"
        )
    return f"{link.device} {link.seq} cites no parent: the root"


def _failed(at: tuple[str, int], detail: str) -> Link:
    return Link(at[0], at[1], LinkStatus.FAILED, detail)

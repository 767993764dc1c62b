"""Chains of decisions across devices: the file ``edge-hub lineage ancestry --export`` writes
and ``edge-verify chain`` checks offline.

A chain file is deterministic CBOR::

    {"format": "edgegov-chain/2", "child": [device, seq], "directory": bstr,
     "links": [+ bstr]}

``child`` names the decision the chain was exported for (the first link); ``directory`` is
the region's signed device directory (the verifier role signs it) at the version every
child of the chain recorded when it verified its parent; each link is a receipt
(:mod:`edge_agent.protocol.receipt`) of one decision, the child the chain starts from first,
then its parent, its parent's parent, ... up to a decision without one.

:func:`verify_chain` checks, with the trust root alone (no clock, state or network):

1. ``format``: the file is a chain of 1 to :data:`MAX_CHAIN_LINKS` links, within
   :data:`MAX_CHAIN_BYTES`;
2. ``directory``: the directory is signed by the root's verifier role for its region;
3. per link, ``receipt``: the receipt verifies (:func:`verify_receipt`) with the key the
   directory lists for the device whose log it proves (its origin names the device and key
   epoch, both as listed), and a witness (a verifier role key) cosigned its checkpoint;
4. ``decision``: the entry is a decision;
5. ``parent``: the child's recorded parent is exactly the next link (device, ``seq``, leaf
   hash);
6. ``parent facts``: the directory is the version the child recorded, and every fact the
   child recorded of its parent is the parent entry's own (:func:`verified_parent_facts`:
   groups as that directory lists them, subject, action, resource, time, so its age, and an
   allow verdict: a parent that was denied never gave verified facts): a child device that
   lied about its parent fails here;
7. ``depth``: the child's recorded depth is the parent's plus one;
8. ``age``: the parent's time is at most :data:`MAX_PARENT_SKEW_S` after the child's;
9. ``policy``: a decision that cited a parent, made under a bundle given (its bundle step
   held: signed by the root's policy role, the version the entry names), is re-decided with
   the device's own engine under that bundle at its own time, with its parent's VERIFIED
   facts (step 6; a refused parent as recorded) (:func:`redecide_entry`, the code
   ``edge-hub lineage ancestry`` runs): it must come out as logged (verdict, reason, rule),
   so the rule's parent requirement held; without its bundle this step is not run, and the
   report says so (``unchecked``);
10. ``end``: the last link records no parent (the chain reaches its root);
11. ``child``: the first link is the decision the header names, and the one the verifier
   asked for (``child``) when it named one: a chain cut short of its child proves only its
   parent, and says so.

The first failing check raises :class:`ChainError` naming the link and the step. What this
does not prove: that a device told the truth about its own request when it logged (see
docs/receipts.md); what it recorded of its parent is checked (step 6). The
policy engine itself is the caller's (``decide_under``: a bundle's SHA-256 to its compiled
policy's decision function), so this module stays free of it. No I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from edge_agent.errors import ChainError, EdgeGovError, EnvelopeError, LineageError, ReceiptError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol.checkpoint import parse_checkpoint_body, split_note
from edge_agent.protocol.directory import (
    MAX_DIRECTORY_BYTES,
    Directory,
    DirectoryDevice,
    verify_directory,
)
from edge_agent.protocol.lineage_entries import Entry, Kind, decode_entry
from edge_agent.protocol.merkle import leaf_hash
from edge_agent.protocol.receipt import (
    LABEL_CHECKPOINT,
    LABEL_RECEIPTS,
    MAX_RECEIPT_BYTES,
    ReceiptReport,
    Step,
    verify_receipt,
)
from edge_agent.protocol.request import ParentFacts, Request
from edge_agent.protocol.root import TrustRoot

__all__ = [
    "CHAIN_FORMAT",
    "MAX_CHAIN_BYTES",
    "MAX_CHAIN_LINKS",
    "MAX_PARENT_SKEW_S",
    "REDECIDED_REASONS",
    "Chain",
    "ChainLink",
    "ChainReport",
    "ChainStep",
    "Decide",
    "Decision",
    "cited_parent",
    "decode_chain",
    "encode_chain",
    "needs_redecision",
    "redecide_entry",
    "verified_parent_facts",
    "verify_chain",
]

CHAIN_FORMAT = "edgegov-chain/2"
MAX_CHAIN_LINKS = 64
"""Most links in one chain file (the hub cuts its walks at the same bound)."""
MAX_CHAIN_BYTES = MAX_DIRECTORY_BYTES + MAX_CHAIN_LINKS * (MAX_RECEIPT_BYTES + 16) + 256
"""Largest chain file accepted, in bytes: a directory and the most links, each a receipt."""
MAX_PARENT_SKEW_S = 5
"""Seconds a parent's time may be after its child's (two devices' trusted clocks differ)."""
REDECIDED_REASONS = frozenset(
    {"allowed", "policy_denied", "no_matching_rule", "parent_missing", "parent_invalid"}
)
"""Reasons of decisions the policy made (every other gate check had passed): the ones a
re-decision must reproduce; a gate denial (no bundle, expired, ...) is not re-decided."""


class Decision(Protocol):
    """What the policy engine answers (``edge_agent.policy.engine.Match``)."""

    @property
    def allowed(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def rule_id(self) -> str | None: ...


Decide = Callable[[Request, int], Decision]
"""The device's engine under one compiled policy: a request and its decision time to the
decision (``functools.partial(evaluate, policy)``)."""


class ChainStep(StrEnum):
    """The checks of a chain, in the order they run (per link from ``receipt`` on)."""

    FORMAT = "format"
    DIRECTORY = "directory"
    RECEIPT = "receipt"
    DECISION = "decision"
    PARENT = "parent"
    PARENT_FACTS = "parent facts"
    DEPTH = "depth"
    AGE = "age"
    POLICY = "policy"
    END = "end"
    CHILD = "child"


@dataclass(frozen=True, slots=True)
class Chain:
    """A chain file's parts: the decision it was exported for (device, seq), the signed
    directory and the links' receipts, child first."""

    child: tuple[str, int]
    directory: bytes
    links: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One verified link: the device, its directory entry, the receipt's report (entry,
    checkpoint, cosignature), the entry's age when its child cited it (``None`` for the
    first link), its depth in the chain (0: the root), and what the ``policy`` step
    established (re-decided as logged, or why it did not run; empty for a link that cites
    no parent)."""

    device: DirectoryDevice
    receipt: ReceiptReport
    age_s: int | None
    depth: int
    policy: str = ""
    policy_checked: bool = False

    @property
    def entry(self) -> Entry:
        return self.receipt.entry


@dataclass(frozen=True, slots=True)
class ChainReport:
    """A verified chain: the directory it was checked with and every link, child first."""

    directory: Directory
    links: tuple[ChainLink, ...]

    @property
    def child(self) -> tuple[str, int]:
        """The decision the chain proves the ancestry of: its first link (device, seq)."""
        return self.links[0].device.id, self.links[0].entry.seq

    @property
    def unchecked(self) -> tuple[str, ...]:
        """Why the policy step did not run, for each link that cites a parent and was not
        re-decided (its bundle not given), in link order."""
        return tuple(
            f"link {index}: {link.policy}"
            for index, link in enumerate(self.links)
            if link.policy and not link.policy_checked
        )


def cited_parent(entry: Entry) -> ParentFacts | None:
    """The verified parent ``entry`` records, if any (a parent its agent refused is recorded
    with the refusal only, and links to nothing)."""
    request = entry.request
    if request is None or request.parent is None:
        return None
    return request.parent.facts


def needs_redecision(entry: Entry) -> bool:
    """Whether ``entry`` is a decision that cited a parent (verified or refused) and that the
    policy made (:data:`REDECIDED_REASONS`) under a bundle it names: the decisions whose
    parent requirement a re-decision checks."""
    request = entry.request
    return (
        request is not None
        and request.parent is not None
        and entry.bundle_digest is not None
        and entry.reason in REDECIDED_REASONS
    )


def redecide_entry(
    entry: Entry, decide: Decide, verified: ParentFacts | None = None
) -> tuple[str, str | None]:
    """Re-decide ``entry`` (:func:`needs_redecision`) with ``decide``, the device's engine
    under the bundle it names, at its own time, with ``verified``, its parent's facts as
    read from the parent entry itself (:func:`verified_parent_facts`), never the ones the
    entry recorded: ``(what that established, None)``, or ``("", why it does not come out
    as logged)``. ``verified`` is required when the entry recorded verified parent facts,
    and ignored when its parent was refused (the refusal is all it records).

    The engine's outcome depends on the compiled policy, the request and the time only: so
    a device that logged an outcome its policy would not give is caught.
    """
    request = entry.request
    if request is None:
        raise ValueError("only a decision entry is re-decided")
    if request.parent is not None and request.parent.facts is not None:
        if verified is None:
            raise ValueError("a decision citing a verified parent is re-decided with its facts")
        request = replace(request, parent=replace(request.parent, facts=verified))
    match = decide(request, entry.time)
    logged = (entry.allowed, entry.reason, entry.rule)
    if (match.allowed, match.reason, match.rule_id) != logged:
        return "", (
            f"re-decided under the bundle v{entry.bundle_version} it names, with its parent's "
            f"verified facts, it comes out {match.reason} (rule {match.rule_id or '-'}), not "
            f"{entry.reason} (rule {entry.rule or '-'}) as logged"
        )
    verdict = "allowed" if entry.allowed else "denied"
    return (
        f"re-decided under bundle v{entry.bundle_version}: {verdict} by rule "
        f"{entry.rule or '-'} with its parent's verified facts ({entry.reason})"
    ), None


def verified_parent_facts(
    cited: ParentFacts,
    *,
    recorded_version: int | None,
    directory_version: int | None,
    groups: tuple[str, ...] | None,
    entry: Entry,
    leaf: bytes,
) -> ParentFacts | str:
    """The facts of the parent ``entry`` (leaf hash ``leaf``) as the entry itself and the
    directory the child recorded (``recorded_version``) prove them, or the sentence naming
    every fact ``cited`` (what the child recorded) gets wrong.

    ``directory_version`` and ``groups`` are the directory the checker holds and the groups
    it lists for the parent's device (``None``: it holds none, or none listing the device):
    it must be the version the child recorded. Each other fact is read from the entry:
    device and ``seq`` as cited, the leaf hash, subject, action, resource, time (so the age
    the child's policy saw: its time minus this), an allow verdict; the depth of the facts
    returned is the parent's own recorded depth plus one (the caller's depth step compares
    it with the child's). A child device that logged lies about its parent is caught here,
    whatever its policy would have made of them.
    """
    request = entry.request
    if entry.kind != Kind.DECISION or request is None:
        return f"entry {entry.seq} of {cited.device} is a {entry.kind}, not a decision"
    lies: list[str] = []
    if not entry.allowed:
        lies.append(f"verdict: recorded as allowed, the parent was denied ({entry.reason})")
    if directory_version is None or directory_version != recorded_version:
        held = "none" if directory_version is None else f"version {directory_version}"
        lies.append(
            f"groups: recorded from directory version {recorded_version}, the directory held "
            f"is {held}"
        )
        groups = None
    elif groups is None:
        lies.append(f"groups: {cited.device} is not in directory version {directory_version}")
    own = cited_parent(entry)
    verified = ParentFacts(
        device=cited.device,
        groups=cited.groups if groups is None else groups,
        seq=entry.seq,
        leaf_hash=leaf,
        subject=request.subject,
        action=request.action,
        resource=request.resource,
        time=entry.time,
        depth=(0 if own is None else own.depth) + 1,
    )
    for name in ("groups", "seq", "leaf_hash", "subject", "action", "resource", "time"):
        said, fact = getattr(cited, name), getattr(verified, name)
        if said != fact:
            lies.append(f"{name}: recorded {_shown(said)}, the parent's is {_shown(fact)}")
    if lies:
        return (
            f"the child recorded facts of {cited.device} entry {cited.seq} that are not the "
            f"parent's: {'; '.join(lies)}"
        )
    return verified


def _shown(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()[:16] + "…"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def encode_chain(child: tuple[str, int], directory: bytes, links: Sequence[bytes]) -> bytes:
    """The chain file of the decision ``child`` (device, seq), ``directory`` and ``links``
    (receipts, child first).

    Raises:
        ValueError: no link, more than MAX_CHAIN_LINKS, or over MAX_CHAIN_BYTES.
    """
    if not 1 <= len(links) <= MAX_CHAIN_LINKS:
        raise ValueError(f"a chain has 1 to {MAX_CHAIN_LINKS} links, not {len(links)}")
    data = dcbor.encode(
        {
            "format": CHAIN_FORMAT,
            "child": [child[0], child[1]],
            "directory": directory,
            "links": list(links),
        }
    )
    if len(data) > MAX_CHAIN_BYTES:
        raise ValueError(f"a chain file is at most {MAX_CHAIN_BYTES} bytes")
    return data


def decode_chain(data: bytes) -> Chain:
    """The parts of a chain file, strictly decoded (nothing verified).

    Raises:
        ChainError: step ``format``: not a chain file of this format within the bounds.
    """

    def fail(message: str) -> ChainError:
        return ChainError(ChainStep.FORMAT, message)

    if len(data) > MAX_CHAIN_BYTES:
        raise fail(f"a chain file is at most {MAX_CHAIN_BYTES} bytes")
    value: object
    try:
        value = dcbor.decode(data, max_bytes=MAX_CHAIN_BYTES, what="chain file")
    except EnvelopeError as exc:
        raise fail(f"not a chain file: {exc.message}") from exc
    if not isinstance(value, dict) or set(value) != {"format", "child", "directory", "links"}:
        raise fail("a chain file is a map of exactly format, child, directory and links")
    if value["format"] != CHAIN_FORMAT:
        raise fail(f"format {value['format']!r} is not {CHAIN_FORMAT!r}")
    child = value["child"]
    if (
        not isinstance(child, list)
        or len(child) != 2
        or not isinstance(child[0], str)
        or not isinstance(child[1], int)
        or isinstance(child[1], bool)
        or child[1] < 0
    ):
        raise fail("child is [device id, seq]: the decision the chain was exported for")
    directory, links = value["directory"], value["links"]
    if not isinstance(directory, bytes) or len(directory) > MAX_DIRECTORY_BYTES:
        raise fail(f"the directory is a byte string of at most {MAX_DIRECTORY_BYTES} bytes")
    if (
        not isinstance(links, list)
        or not 1 <= len(links) <= MAX_CHAIN_LINKS
        or not all(isinstance(link, bytes) for link in links)
    ):
        raise fail(f"links is a list of 1 to {MAX_CHAIN_LINKS} byte strings (receipts)")
    return Chain(
        (child[0], child[1]), directory, tuple(link for link in links if isinstance(link, bytes))
    )


def verify_chain(
    data: bytes,
    *,
    root: TrustRoot,
    child: tuple[str, int] | None = None,
    bundles: Sequence[bytes] = (),
    decide_under: Mapping[bytes, Decide] | None = None,
) -> ChainReport:
    """Verify a chain file step by step (the module docstring numbers them). A link whose
    entry names one of ``bundles`` (by SHA-256) also passes the receipt's bundle step: that
    bundle is signed by the root's policy role, at the version the entry names; and with
    ``decide_under`` holding that bundle's compiled policy (by the same SHA-256), a link
    that cited a parent is re-decided under it (the ``policy`` step). ``child`` (device,
    seq), when given, is the decision the caller means the chain to prove: the chain must
    start from it.

    Raises:
        ChainError: the first check that fails, with the link (``None``: the file or the
            directory) and step named.
    """
    held: list[tuple[str, str]] = []
    link_index: int | None = None
    by_digest = {hashlib.sha256(bundle).digest(): bundle for bundle in bundles}
    try:
        chain = decode_chain(data)
        held.append((ChainStep.FORMAT, f"{len(chain.links)} links"))
        directory = _check_directory(chain.directory, root)
        held.append(
            (
                ChainStep.DIRECTORY,
                f"{directory.region} version {directory.version}, "
                f"{len(directory.devices)} devices, signed by the verifier role",
            )
        )
        links: list[ChainLink] = []
        for link_index, receipt in enumerate(chain.links):
            link, verified = _check_link(
                receipt, directory, root, by_digest, links[-1] if links else None
            )
            if verified is not None:
                try:
                    links[-1] = _with_policy(links[-1], decide_under or {}, verified)
                except ChainError as exc:
                    raise ChainError(exc.step, exc.message, link=link_index - 1) from exc
            policy, checked = ("", False)
            if cited_parent(link.entry) is None:
                policy, checked = _check_policy(link.receipt, decide_under or {}, None)
            link = replace(link, policy=policy, policy_checked=checked)
            links.append(link)
            held.append((f"link {link_index}", _describe(link)))
        link_index = len(links) - 1
        if cited_parent(links[-1].entry) is not None:
            raise ChainError(
                ChainStep.END,
                "the last link cites a parent the chain does not hold: the chain stops short "
                "of its root",
            )
        _check_child(chain.child, links[0], child)
    except ChainError as exc:
        where = exc.link if exc.link is not None else link_index
        raise ChainError(exc.step, exc.message, link=where, held=tuple(held)) from exc
    return ChainReport(directory, _with_depths(links))


def _check_directory(data: bytes, root: TrustRoot) -> Directory:
    try:
        return verify_directory(data, root=root, region=_claimed_region(data))
    except EdgeGovError as exc:
        raise ChainError(
            ChainStep.DIRECTORY, f"the device directory does not verify: {exc}"
        ) from exc


def _claimed_region(data: bytes) -> str:
    """The region a directory names, UNVERIFIED: only to choose the scope it is verified
    for, which its signature then binds."""
    value: object = dcbor.decode(
        cose.peek_payload(data, max_bytes=MAX_DIRECTORY_BYTES),
        max_bytes=MAX_DIRECTORY_BYTES,
        what="device directory",
    )
    region = value.get("region") if isinstance(value, dict) else None
    if not isinstance(region, str):
        raise ChainError(ChainStep.DIRECTORY, "the device directory names no region")
    return region


def _check_child(header: tuple[str, int], first: ChainLink, asked: tuple[str, int] | None) -> None:
    """Check 11: the first link is the decision the header names and the one asked for."""
    proven = (first.device.id, first.entry.seq)
    if header != proven:
        raise ChainError(
            ChainStep.CHILD,
            f"the chain was exported for {header[0]} seq {header[1]}, but its first link is "
            f"{proven[0]} seq {proven[1]}: links were cut from it",
            link=0,
        )
    if asked is not None and asked != proven:
        raise ChainError(
            ChainStep.CHILD,
            f"the chain proves the ancestry of {proven[0]} seq {proven[1]}, not of "
            f"{asked[0]} seq {asked[1]} asked for",
            link=0,
        )


def _check_link(
    receipt: bytes,
    directory: Directory,
    root: TrustRoot,
    bundles: Mapping[bytes, bytes],
    child: ChainLink | None,
) -> tuple[ChainLink, ParentFacts | None]:
    """Checks 3 to 8 of one link (``child``: the link before it, ``None`` for the first):
    the link, and its facts as verified for the child's policy step (``None`` for the
    first link)."""
    origin, entry_bytes = _read_receipt(receipt)
    device = _device_of(origin, directory)
    try:
        bundle = bundles.get(decode_entry(entry_bytes).bundle_digest or b"")
    except LineageError:
        bundle = None
    try:
        report = verify_receipt(receipt, device_key=device.key, root=root, bundle=bundle)
    except ReceiptError as exc:
        raise ChainError(
            ChainStep.RECEIPT, f"the receipt of {device.id} fails step '{exc.step}': {exc}"
        ) from exc
    entry = report.entry
    if entry.kind != Kind.DECISION or entry.request is None:
        raise ChainError(ChainStep.DECISION, f"entry {entry.seq} of {device.id} is a {entry.kind}")
    link = ChainLink(device, report, None, 0)
    if child is None:
        return link, None
    cited = cited_parent(child.entry)
    if cited is None:
        raise ChainError(
            ChainStep.PARENT,
            f"entry {child.entry.seq} of {child.device.id} records no parent, but the chain "
            "goes on",
        )
    leaf = leaf_hash(entry_bytes)
    _check_cited(cited, device, entry, leaf)
    child_parent = None if child.entry.request is None else child.entry.request.parent
    verified = verified_parent_facts(
        cited,
        recorded_version=None if child_parent is None else child_parent.directory_version,
        directory_version=directory.version,
        groups=device.groups,
        entry=entry,
        leaf=leaf,
    )
    if isinstance(verified, str):
        raise ChainError(ChainStep.PARENT_FACTS, verified)
    if cited.depth != verified.depth:
        raise ChainError(
            ChainStep.DEPTH,
            f"the child records depth {cited.depth}; its parent's depth is {verified.depth - 1}",
        )
    age = child.entry.time - entry.time
    if age < -MAX_PARENT_SKEW_S:
        raise ChainError(
            ChainStep.AGE,
            f"the parent was decided {-age} s after its child (at most {MAX_PARENT_SKEW_S} s "
            "of clock skew)",
        )
    return ChainLink(device, report, age, 0), verified


def _with_policy(
    child: ChainLink, decide_under: Mapping[bytes, Decide], verified: ParentFacts
) -> ChainLink:
    """``child`` with check 10 run on its parent's verified facts."""
    policy, checked = _check_policy(child.receipt, decide_under, verified)
    return replace(child, policy=policy, policy_checked=checked)


def _check_policy(
    report: ReceiptReport, decide_under: Mapping[bytes, Decide], verified: ParentFacts | None
) -> tuple[str, bool]:
    """Check 9: (what it established or why it did not run, whether it ran); empty for an
    entry that is not re-decided. ``verified``: the parent's verified facts (check 6)."""
    entry = report.entry
    if not needs_redecision(entry):
        return "", False
    decide = decide_under.get(entry.bundle_digest or b"")
    if decide is None or not any(r.step == Step.BUNDLE for r in report.held):
        return (
            f"policy requirement not checked: its bundle v{entry.bundle_version} not given",
            False,
        )
    detail, problem = redecide_entry(entry, decide, verified)
    if problem is not None:
        raise ChainError(ChainStep.POLICY, f"entry {entry.seq}: {problem}")
    return detail, True


def _check_cited(cited: ParentFacts, device: DirectoryDevice, entry: Entry, leaf: bytes) -> None:
    if (cited.device, cited.seq, cited.leaf_hash) != (device.id, entry.seq, leaf):
        raise ChainError(
            ChainStep.PARENT,
            f"the child cites entry {cited.seq} of {cited.device} (leaf "
            f"{cited.leaf_hash.hex()[:16]}…), the chain holds entry {entry.seq} of {device.id} "
            f"(leaf {leaf.hex()[:16]}…)",
        )


def _device_of(origin: str, directory: Directory) -> DirectoryDevice:
    """The directory's device whose log ``origin`` names (id and key epoch)."""
    device = directory.by_origin.get(origin)
    if device is not None:
        return device
    raise ChainError(
        ChainStep.RECEIPT,
        f"the receipt proves log {origin!r}, of no device (at its key epoch) in directory "
        f"version {directory.version}",
    )


def _read_receipt(receipt: bytes) -> tuple[str, bytes]:
    """The UNVERIFIED origin of the receipt's checkpoint and the entry bytes it carries: only
    to pick the device key the receipt is then verified with."""
    try:
        statement = cose.parse_sign1_open(
            receipt, max_bytes=MAX_RECEIPT_BYTES, max_protected_bytes=4096, what="receipt"
        )
        receipts = statement.unprotected.get(LABEL_RECEIPTS)
        if not isinstance(receipts, list) or len(receipts) != 1:
            raise EnvelopeError("the statement does not carry exactly one receipt")
        inner = receipts[0]
        if not isinstance(inner, bytes):
            raise EnvelopeError("the receipt is not a byte string")
        opened = cose.parse_sign1_open(
            inner, max_bytes=MAX_RECEIPT_BYTES, max_protected_bytes=4096, what="receipt"
        )
        note = opened.unprotected.get(LABEL_CHECKPOINT)
        if not isinstance(note, str):
            raise EnvelopeError("the receipt carries no checkpoint note")
        if statement.payload is None:
            raise EnvelopeError("the statement carries no entry")
        origin = parse_checkpoint_body(split_note(note)[0].decode("utf-8")).origin
    except (EdgeGovError, UnicodeDecodeError) as exc:
        raise ChainError(ChainStep.RECEIPT, f"not a readable receipt: {exc}") from exc
    return origin, statement.payload


def _with_depths(links: list[ChainLink]) -> tuple[ChainLink, ...]:
    """The links with their depth in the chain: the last (the root) 0, each child one more."""
    count = len(links)
    return tuple(
        ChainLink(
            link.device,
            link.receipt,
            link.age_s,
            count - 1 - index,
            link.policy,
            link.policy_checked,
        )
        for index, link in enumerate(links)
    )


def _describe(link: ChainLink) -> str:
    entry = link.entry
    request = entry.request
    verdict = "allow" if entry.allowed else "deny"
    what = "" if request is None else f" {request.subject} {request.action} {request.resource}"
    age = "" if link.age_s is None else f", {link.age_s} s before its child"
    return f"{link.device.id} seq {entry.seq}: {verdict}{what} at {entry.time}{age}"

"""The values that cross the registry interface: frozen records, one per kind of row.

Every backend takes and returns these: the rows below, the ingest values (a device log's
state, an accepted batch, fork evidence: :mod:`hub.core.ingest` produces them), and the
protocol's :class:`~edge_agent.protocol.attestation.Challenge` and
:class:`~edge_agent.protocol.shipping.DeviceStatus`. No method of
:class:`hub.registry.interface.Registry` passes a bare tuple. Records hold what callers
verified: constructing one checks nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge_agent.protocol.checkpoint import Checkpoint
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Entry
from edge_agent.protocol.merkle import HASH_SIZE, Frontier, Node

__all__ = [
    "STORED_NODE_LEVEL",
    "Accepted",
    "AttestationRecord",
    "AuditEntry",
    "ConsoleFleetRow",
    "ConsoleToken",
    "DeviceLog",
    "DeviceRecord",
    "FleetCount",
    "FleetRow",
    "FleetSummary",
    "ForkEvidence",
    "IssuedDirectory",
    "IssuedFreshness",
    "IssuedRevocation",
    "PublishedBundle",
    "RejectionCount",
    "RejectionTotal",
    "RolloutCount",
    "ScheduleLeaseHolder",
    "StatusSpan",
    "StoredCheckpoint",
    "StoredEntry",
    "StoredLog",
]

STORED_NODE_LEVEL = 6
"""Lowest level of the Merkle tree nodes a registry stores for a device log: ingest hands it
the perfect nodes of this level and up, and a node below is rehashed from the at most
``2**STORED_NODE_LEVEL`` stored entries under it (so a proof costs O(log n) reads while
ingest writes one node row per 32 entries)."""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device: who it is and the public key its lineage and status verify with."""

    device_id: str
    region: str
    groups: tuple[str, ...]
    profile: str
    public_key: PublicKey
    key_epoch: int = 1
    added_at: int = 0


@dataclass(frozen=True, slots=True)
class PublishedBundle:
    """The bundle current on one channel of a region."""

    region: str
    channel: str
    version: int
    digest: bytes
    data: bytes
    expires_at: int
    max_offline: int | None
    pushed_at: int


@dataclass(frozen=True, slots=True)
class IssuedRevocation:
    """A signed revocation as issued: its region's epoch, what it revokes and why."""

    region: str
    epoch: int
    kind: str
    value: str
    reason: str
    data: bytes
    issued_at: int


@dataclass(frozen=True, slots=True)
class IssuedFreshness:
    """The signed freshness token last issued on one (region, channel), with what it pins:
    the hub time it states, its expiry and the region's kill epoch then."""

    region: str
    channel: str
    data: bytes
    hub_time: int
    expires_at: int
    kill_epoch: int


@dataclass(frozen=True, slots=True)
class IssuedDirectory:
    """The signed device directory last issued for a region: its ``version``, the SHA-256
    of the device list it signs (``content``: what a new version is compared against), the
    signed bytes and their validity."""

    region: str
    version: int
    content: bytes
    data: bytes
    issued_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One stored lineage entry of a device: its sequence number and exact bytes."""

    seq: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RejectionCount:
    """Rejections to add to the counter of (``device``, ``code``): how many since the last
    flush and the detail of the last one."""

    device: str
    code: str
    count: int
    last_detail: str


@dataclass(frozen=True, slots=True)
class RejectionTotal:
    """The counter of (``device``, ``code``): every rejection counted, when the last was
    recorded and its detail."""

    device: str
    code: str
    count: int
    last_at: int
    last_detail: str


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One device as ``edge-hub fleet`` shows it."""

    device_id: str
    region: str
    groups: tuple[str, ...]
    online: bool | None
    bundle_version: int | None
    expires_at: int | None
    gate: str | None
    status_time: int | None
    last_seen: int | None
    device_lineage_size: int | None
    lineage_size: int
    forks: int
    rejections: dict[str, int]


@dataclass(frozen=True, slots=True)
class AttestationRecord:
    """A device's last attestation outcome at the hub, with the signed result sent to it.

    ``measurements`` is the evidence's name -> hex digest map as JSON (what ``edge-hub
    attest expect --from-device`` builds expectations from)."""

    device: str
    verdict: str
    detail: str
    measured: bytes
    nonce: bytes
    issued_at: int
    expires_at: int
    bundle_digest: bytes | None
    lineage_size: int
    measurements: str
    result: bytes
    verified_at: int


@dataclass(frozen=True, slots=True)
class DeviceLog:
    """The hub's state of one device's log: size, tree frontier, last entry hash, and the
    last checkpoint note it verified (always at ``size``: every batch ends in one)."""

    size: int = 0
    frontier: Frontier = field(default_factory=Frontier)
    last_hash: bytes = GENESIS_PREV
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.frontier.size != self.size or len(self.last_hash) != HASH_SIZE:
            raise ValueError("a device log's frontier must be at its size")

    @property
    def root(self) -> bytes:
        return self.frontier.root()


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint the hub verified for a device's log: the device-signed note at ``size``
    (with the hub's witness cosignature when the hub cosigned it) and its ``root``."""

    size: int
    root: bytes
    note: str
    received_at: int


class StoredLog(Protocol):
    """Read access to what the hub stored for one device (the registry implements it)."""

    def entries(self, start: int, stop: int) -> Sequence[bytes]:
        """The stored entry bytes of seqs ``start`` to ``stop - 1``."""
        ...

    def checkpoint_root(self, size: int) -> bytes | None:
        """The root of the verified checkpoint the hub holds at ``size``, if any."""
        ...


@dataclass(frozen=True, slots=True)
class ForkEvidence:
    """Two checkpoints signed by one device key that cannot both describe one log."""

    device: str
    reason: str
    held_note: str | None
    """The last checkpoint the hub verified and stored for the device."""
    new_note: str
    """The conflicting checkpoint, from the batch below."""
    batch: bytes
    """The device-signed batch that carried ``new_note`` (its entries are the evidence)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A verified batch: store ``entries`` from ``first_seq`` and ``log``, then ack."""

    device: str
    first_seq: int
    entries: tuple[bytes, ...]
    log: DeviceLog
    checkpoint: Checkpoint
    nodes: tuple[Node, ...] = ()
    """The perfect nodes of level :data:`STORED_NODE_LEVEL` and up the new entries closed."""
    decoded: tuple[Entry, ...] = ()
    """``entries`` as verification decoded them, in order (the registry's search columns
    come from them); empty when the caller kept only the bytes (then they are decoded)."""

    @property
    def acked(self) -> int:
        return self.log.size


@dataclass(frozen=True, slots=True)
class ConsoleToken:
    """A console login token as stored: its name, role (``viewer`` or ``operator``) and the
    SHA-256 digest of the token (the token itself is shown once and never stored)."""

    name: str
    role: str
    digest: bytes
    created_at: int


@dataclass(frozen=True, slots=True)
class StatusSpan:
    """A stretch of a device's status history: from ``since`` to ``until`` (when the hub
    received the first and the last fresh status of the stretch) the device reported the
    same ``online``, ``gate`` and ``bundle_version``, each status within
    :data:`hub.registry.interface.STATUS_SPAN_JOIN_S` of the one before. Between two spans,
    and after the last one, the hub heard nothing that says what the device was doing."""

    since: int
    until: int
    online: bool
    gate: str
    bundle_version: int | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator action in the audit log: who did what, when, and how it ended."""

    id: int
    """Its place in the log: ids only grow (the newest action has the highest)."""
    at: int
    """When the operator asked for it."""
    operator: str
    """The console user (or command) that asked."""
    action: str
    """What kind of action: ``bundle_push``, ``revoke``, ``challenge``, ``register``."""
    target: str
    """What it acted on, as the operator named it (a device, a bundle version, ...)."""
    reason: str
    """Why, as the operator gave it (empty when none was asked for)."""
    outcome: str
    """``pending`` until it ends, then ``done``, ``refused`` (a check said no) or ``failed``
    (it broke: the detail says where)."""
    detail: str
    """What happened, in a sentence."""
    finished_at: int | None
    """When it ended; ``None`` while pending (or when the hub stopped before it ended)."""


@dataclass(frozen=True, slots=True)
class ConsoleFleetRow:
    """One device as the console's dashboard counts it: its registration, its last kept
    status (``None`` fields when it never sent one), when it was last heard from, its log
    sizes (on the device as last reported; stored at the hub), fork evidence kept, and its
    last attestation's verdict, expiry and time (``None`` when it never attested)."""

    device_id: str
    region: str
    groups: tuple[str, ...]
    online: bool | None
    gate: str | None
    bundle_version: int | None
    status_time: int | None
    last_seen: int | None
    device_lineage_size: int | None
    lineage_size: int
    forks: int
    attestation_verdict: str | None
    attestation_expires_at: int | None
    attested_at: int | None


@dataclass(frozen=True, slots=True)
class FleetCount:
    """``count`` devices (or rejections) counted together, and the oldest and newest report
    time they are counted from (``None``: none reported)."""

    count: int = 0
    oldest: int | None = None
    newest: int | None = None


@dataclass(frozen=True, slots=True)
class RolloutCount:
    """The devices of one (region, group) whose target bundle version is ``target`` and that
    run ``running`` (``known`` false: stale or never seen, so what they run is unknown)."""

    region: str
    group: str
    target: int | None
    running: int | None
    known: bool
    devices: FleetCount


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """The fleet counted for the console's dashboard, as of one moment (see
    :meth:`hub.registry.interface.Registry.fleet_summary` for each rule)."""

    states: dict[str, FleetCount]
    rollout: tuple[RolloutCount, ...]
    attestation: dict[str, FleetCount]
    lineage_current: FleetCount
    lineage_lagging: FleetCount
    lineage_waiting: int
    lineage_max_lag: tuple[str, int] | None
    forks: FleetCount
    rejections: dict[str, FleetCount]
    state_examples: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The first few device ids (by id) in each state of ``states``."""


@dataclass(frozen=True, slots=True)
class ScheduleLeaseHolder:
    """The schedule lease as committed: who holds it (empty once released), under which
    fencing token, until when (Unix seconds, the holder's clock)."""

    holder: str
    token: int
    expires_at: int

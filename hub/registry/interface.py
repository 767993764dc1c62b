"""The hub registry's contract: every operation the hub's service, CLIs and console use.

:class:`Registry` is a :class:`typing.Protocol`; a backend (SQLite in
:mod:`hub.registry.sqlite`, PostgreSQL in :mod:`hub.registry.postgres`) implements every
method as its docstring states, and callers name only this type. The registry stores what
callers verified; it verifies nothing itself. What every backend guarantees:

- **Atomic writes.** Every method that writes is one transaction: it changes all it
  states or nothing, and raises :class:`RegistryError` (or the :class:`ConfigError` its
  docstring names) when it changed nothing. Several hub processes and ``edge-hub``
  commands share one registry; the compare-and-set writes (:meth:`Registry.store_batch`,
  :meth:`Registry.spend_challenge`, :meth:`Registry.record_revocation`,
  :meth:`Registry.add_device`, :meth:`Registry.record_directory`,
  :meth:`Registry.claim_schedule_lease`) decide against what is committed at that moment,
  never against an earlier read.
- **Write groups.** Inside :meth:`Registry.write_group` every write stays atomic on its own
  (one that raises undoes only itself) but nothing is durable until the block ends; reads
  in the block see the block's writes.
- **Errors.** Storage failures (unreachable, full, damaged, another program's database)
  are :class:`RegistryError`, with the backend's own exception as its cause; no backend
  exception type escapes. A row that does not decode to its record is damage, so
  :class:`RegistryError` too.
- **Times** are integer Unix seconds the caller passes in; a backend reads no clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from edge_agent.errors import StateError
from edge_agent.protocol.attestation import Challenge
from edge_agent.protocol.merkle import NodeFetcher
from edge_agent.protocol.shipping import DeviceStatus
from hub.registry.lineage_records import LineageCursor, LineageHit, LineagePage, LineageQuery
from hub.registry.records import (
    Accepted,
    AttestationRecord,
    AuditEntry,
    ConsoleFleetRow,
    ConsoleToken,
    DeviceLog,
    DeviceRecord,
    FleetRow,
    FleetSummary,
    ForkEvidence,
    IssuedDirectory,
    IssuedFreshness,
    IssuedRevocation,
    PublishedBundle,
    RejectionCount,
    RejectionTotal,
    ScheduleLeaseClaim,
    ScheduleLeaseHolder,
    StatusSpan,
    StoredCheckpoint,
    StoredEntry,
    StoredLog,
)
from hub.registry.retention import SearchPrune, TableLayout
from hub.registry.rollout_records import LineageTally, RolloutRecord

__all__ = [
    "AUDIT_OUTCOMES",
    "FLEET_EXAMPLES",
    "MAX_AUDIT_PAGE",
    "MAX_AUDIT_TEXT",
    "MAX_FORK_EVIDENCE",
    "MAX_REJECTION_DETAIL",
    "MAX_STATUS_SPANS",
    "STATUS_SPAN_JOIN_S",
    "UNREGISTERED",
    "Registry",
    "RegistryError",
]

MAX_FORK_EVIDENCE = 8
"""Fork evidence rows kept per device; later forks are only counted (a compromised device
key must not be able to fill the hub's disk)."""
MAX_REJECTION_DETAIL = 500
"""Characters of a rejection's last detail kept (the rest is cut)."""
FLEET_EXAMPLES = 5
"""Device ids :meth:`Registry.fleet_summary` names per state (the first, by id)."""
MAX_STATUS_SPANS = 256
"""Status history spans kept per device (the oldest dropped first)."""
STATUS_SPAN_JOIN_S = 90
"""A fresh status received this soon after the last one of a span with the same state
extends the span; later, it starts a new one (the hub heard nothing in between: the
console draws that gap as unknown). Three default heartbeats (:mod:`hub.core.liveness`)."""
UNREGISTERED = "*"
"""The device of rejection counters for messages naming no registered device."""
MAX_AUDIT_TEXT = 1000
"""Characters kept of each text field of an audit entry (the rest is cut)."""
MAX_AUDIT_PAGE = 200
"""Most audit entries one read returns."""
AUDIT_OUTCOMES = frozenset({"done", "refused", "failed"})
"""How an operator action can end (it is ``pending`` until then)."""


class RegistryError(StateError):
    """The hub registry cannot be read or written (or is damaged)."""

    code = "registry_error"


class ScheduleLeaseExhausted(RegistryError):
    """The schedule lease row holds the largest fencing token there is
    (:data:`hub.registry.lease_sql.MAX_TOKEN`): no hub can take the lease over (the token
    cannot go up), so none schedules until the row is reset. Only tampering writes it."""

    code = "schedule_lease_exhausted"


class Registry(Protocol):
    """An open hub registry. Use as a context manager, or call :meth:`close`.

    Methods are grouped by concern: lifecycle and transactions; devices (registration,
    status, activity); publications (bundles, channels, revocations, freshness); device
    logs (lineage batches, entries, checkpoints, forks); attestation (challenges, results,
    TPM attestation keys); rejections; the fleet view; the lineage search; staged rollouts;
    the schedule lease.
    """

    # Lifecycle and transactions.

    def close(self) -> None:
        """Release the registry; it is unusable afterwards. Not inside a write group."""
        ...

    def __enter__(self) -> Registry:
        """Return the registry itself."""
        ...

    def __exit__(self, *exc_info: object) -> None:
        """:meth:`close` the registry."""
        ...

    def write_group(self) -> AbstractContextManager[None]:
        """Make every write until the block ends part of one transaction: a burst of lineage
        batches and statuses costs one commit (one fsync) instead of one each.

        Each write in the block stays atomic on its own: one that raises undoes only its
        own changes, and the block may go on. Nothing written in the block is durable
        before it ends, so whatever depends on durability (an ack) waits for the end. An
        exception out of the block undoes all of it. A storage failure that undoes the
        whole transaction (a full disk) makes every later write of the block raise
        :class:`RegistryError`, and the block's end raise it too. Nested groups join the
        outer one (only the outermost commits).

        Raises:
            RegistryError: the transaction could not begin or commit; nothing was stored.
        """
        ...

    # Devices.

    def add_device(self, record: DeviceRecord) -> None:
        """Register a device.

        A key registered to another device is refused: statuses and lineage signed by one
        device would verify as the other's (a phantom device reported online).

        Raises:
            ConfigError: a device with that id, or with that public key, is registered
                already; nothing changed.
            RegistryError: the write failed.
        """
        ...

    def remove_device(self, device_id: str) -> DeviceRecord | None:
        """Unregister ``device_id`` and return the record it had; ``None`` (nothing changed)
        when it is not registered.

        The device's live state goes with it: its last status and last seen time, status
        history, challenges, attestation outcome and TPM attestation key. Its stored log
        (entries, checkpoints, tree nodes), fork evidence and rejection counters stay, as
        evidence: :meth:`lineage_state`, :meth:`iter_entries` and :meth:`search_lineage`
        still answer for it, and registering the id again continues that log. Atomic.

        Raises:
            RegistryError: the write failed; nothing changed.
        """
        ...

    def device(self, device_id: str) -> DeviceRecord | None:
        """The registered device ``device_id``; ``None`` when none is registered."""
        ...

    def devices(self) -> list[DeviceRecord]:
        """Every registered device, ordered by device id."""
        ...

    def regions(self) -> list[str]:
        """Every region a registered device, a current bundle or a revocation is in, each
        once, in ascending order."""
        ...

    def record_status(self, status: DeviceStatus, raw: bytes, received_at: int) -> bool:
        """Keep a verified status (``raw``: its signed bytes) unless the one held is newer;
        return whether it was kept.

        - No status held, or ``status.time`` later than the held one's: kept, and the
          device counts as heard from at ``received_at`` (its last seen is the latest such
          time ever recorded, never moved back).
        - ``status.time`` equal to the held one's, other bytes: kept (a trust event or a
          clean stop just after a heartbeat), but not heard from (a replay could do it).
        - Older, or the same bytes again: nothing changes (a replay or a stale last will);
          ``False``.

        Raises:
            RegistryError: the write failed.
        """
        ...

    # Publications: bundles and channels.

    def record_bundle(
        self,
        *,
        bundle: PublishedBundle,
        issued_at: int,
        target: Mapping[str, object],
        channels: Sequence[str],
    ) -> None:
        """Record a verified bundle (by digest: one already recorded keeps its first
        record) and make it current on ``channels`` of ``bundle.region``, as of
        ``bundle.pushed_at``. ``target`` (JSON-serialisable) is kept with it. Atomic.

        Raises:
            RegistryError: the write failed; nothing changed.
        """
        ...

    def bundle_versions(self, region: str) -> list[int]:
        """Every distinct bundle version ever recorded for ``region``, lowest first."""
        ...

    def current_bundles(self, region: str | None = None) -> list[PublishedBundle]:
        """The bundle current on each channel (of ``region``, or of every region), ordered
        by region then channel; ``pushed_at`` is when it became current there."""
        ...

    def bundle_data(self, digest: bytes) -> bytes | None:
        """The bytes of the recorded bundle with ``digest``; ``None`` when never recorded."""
        ...

    def bundles_of_version(self, region: str, version: int) -> list[bytes]:
        """The bytes of every recorded bundle of ``region`` with ``version`` (bundles for
        different groups may share one), ordered by digest; empty when none was recorded."""
        ...

    # Publications: revocations.

    def kill_epoch(self, region: str) -> int:
        """The highest revocation epoch recorded for ``region`` (0: none)."""
        ...

    def record_revocation(self, revocation: IssuedRevocation) -> None:
        """Record a signed revocation. Epochs are allocated once: the write refuses an
        epoch that ``revocation.region`` already has.

        Raises:
            ConfigError: its epoch was taken meanwhile by another ``revoke`` (run it again).
            RegistryError: the write failed.
        """
        ...

    def current_revocations(self) -> list[IssuedRevocation]:
        """The newest revocation (highest epoch) for each (region, kind, value): what is
        retained on its topic. Ordered by region then epoch."""
        ...

    # Publications: freshness.

    def record_freshness(self, tokens: Sequence[IssuedFreshness]) -> None:
        """Make each token the last one issued on its (region, channel), replacing any, all
        in one transaction (for one pair given twice, the later wins).

        Raises:
            RegistryError: the write failed; none was recorded.
        """
        ...

    def freshness(self, region: str, channel: str) -> IssuedFreshness | None:
        """The last token issued on (``region``, ``channel``); ``None`` when none was."""
        ...

    # Publications: the device directory.

    def record_directory(self, directory: IssuedDirectory) -> bool:
        """Make ``directory`` its region's current one if its version is above the current
        one's (compare-and-set: several hub processes may issue at once, and versions only
        go up, across restarts too). Returns whether it was recorded; when not, another
        process recorded that version or a later one first: read :meth:`directory`.

        Raises:
            RegistryError: the write failed; nothing was recorded.
        """
        ...

    def directory(self, region: str) -> IssuedDirectory | None:
        """The current directory of ``region``; ``None`` when none was issued."""
        ...

    def directory_version(self, region: str, version: int) -> bytes | None:
        """The signed bytes of ``region``'s directory ``version`` as issued (every recorded
        version is kept: a child's lineage entry names the version it verified its parent
        with, and ancestry checks the groups it recorded against it); ``None`` when this
        registry never recorded it (before it kept every version, only the current one)."""
        ...

    # Device logs.

    def lineage_state(self, device: str) -> DeviceLog:
        """The hub's state of ``device``'s log: size, frontier, last entry hash and last
        checkpoint note; an empty ``DeviceLog()`` when it never shipped.

        Raises:
            RegistryError: unreadable or damaged.
        """
        ...

    def stored_log(self, device: str) -> StoredLog:
        """Read access to ``device``'s stored entries and checkpoints, for ingest: the same
        answers as :meth:`entries` and :meth:`checkpoint_root`, read when asked."""
        ...

    def entries(self, device: str, start: int, stop: int) -> list[bytes]:
        """The stored entries of ``device`` with ``start <= seq < stop``, by seq."""
        ...

    def iter_entries(self, device: str, start: int = 0) -> Iterator[StoredEntry]:
        """Stream ``device``'s stored entries from seq ``start`` upwards, a bounded page at
        a time (memory does not grow with the log). Entries are never changed once stored,
        so the pages read at different moments still form one prefix of the log."""
        ...

    def checkpoint_root(self, device: str, size: int) -> bytes | None:
        """The tree root of ``device``'s stored checkpoint at ``size``; ``None`` when the
        hub holds no checkpoint of that size."""
        ...

    def checkpoint(self, device: str, size: int) -> StoredCheckpoint | None:
        """``device``'s stored checkpoint at ``size`` (its note cosigned when the hub
        cosigned it); ``None`` when the hub holds none of that size."""
        ...

    def iter_checkpoints(self, device: str, *, min_size: int = 0) -> Iterator[StoredCheckpoint]:
        """Stream ``device``'s stored checkpoints of size ``min_size`` or more, largest size
        first, a bounded page at a time."""
        ...

    def tree_nodes(self, device: str) -> NodeFetcher:
        """The perfect Merkle nodes of ``device``'s stored log, as the proof functions of
        :mod:`edge_agent.protocol.merkle` fetch them: each node costs O(1) reads, so a proof
        in a log of any size costs O(log n). Only nodes within the stored size exist.

        The fetcher raises :class:`RegistryError` for a node the registry does not hold (never
        a made-up hash), or when unreadable or damaged."""
        ...

    def store_batch(self, accepted: Accepted, *, expected_size: int, received_at: int) -> bool:
        """Store a verified batch (its entries from ``accepted.first_seq``), its new log
        state, its checkpoint (``accepted.log.checkpoint``, the note as the hub witnessed it)
        and the tree nodes it closed (``accepted.nodes``), in one transaction.

        Returns ``False`` (storing nothing) when the stored size is no longer
        ``expected_size``: another hub process stored a batch of this device meanwhile, so
        the batch must be verified again against the new state. A batch is thus stored at
        most once even when two hubs verify it at the same moment.

        Raises:
            RegistryError: the write failed; nothing was stored.
        """
        ...

    def record_fork(self, evidence: ForkEvidence, detected_at: int) -> None:
        """Keep fork evidence: while the device holds fewer than :data:`MAX_FORK_EVIDENCE`
        rows, add this one; otherwise store nothing.

        Raises:
            RegistryError: the write failed.
        """
        ...

    def forks(self, device: str) -> list[ForkEvidence]:
        """The fork evidence kept for ``device``, in the order it was recorded."""
        ...

    # Attestation.

    def record_challenge(self, challenge: Challenge) -> None:
        """Record an issued challenge nonce: spendable once by its device, until it expires.

        Raises:
            RegistryError: the write failed, or this nonce was issued to this device already.
        """
        ...

    def spend_challenge(self, device: str, nonce: bytes, now: int) -> str | None:
        """Spend ``nonce`` for ``device``: ``None`` when it was issued to that device,
        expires after ``now`` and was not spent (it is spent now); otherwise a sentence
        saying why not (never issued to this device, already used, or expired and how long
        ago). One conditional write: two hub processes can never both spend one nonce.

        Raises:
            RegistryError: the write failed.
        """
        ...

    def prune_challenges(self, before: int) -> None:
        """Forget challenges that expired before ``before`` (they can no longer be spent).

        Raises:
            RegistryError: the write failed.
        """
        ...

    def record_attestation(self, record: AttestationRecord) -> None:
        """Make ``record`` the device's last attestation outcome, replacing any, and count
        the device as heard from at ``record.verified_at`` (nonce-bound evidence is nothing
        a replay can produce). Atomic.

        Raises:
            RegistryError: the write failed.
        """
        ...

    def attestation(self, device: str) -> AttestationRecord | None:
        """``device``'s last attestation outcome; ``None`` when it never attested."""
        ...

    def attestations(self) -> dict[str, AttestationRecord]:
        """Every device's last attestation outcome, by device id."""
        ...

    def set_tpm_ak(self, device: str, public_key: bytes | None, at: int) -> None:
        """Register ``device``'s TPM attestation key (DER ``SubjectPublicKeyInfo``) as of
        ``at``, replacing any; ``None`` removes it (removing none is no error).

        Raises:
            RegistryError: the write failed.
        """
        ...

    def tpm_ak(self, device: str) -> bytes | None:
        """The DER public key of ``device``'s registered TPM attestation key; ``None`` when
        none is registered."""
        ...

    # Rejections.

    def add_rejections(self, counts: Sequence[RejectionCount], at: int) -> None:
        """Add each count to its (device, code) counter, set the counter's last time to
        ``at`` and its last detail to the count's (cut to :data:`MAX_REJECTION_DETAIL`
        characters), in the order given and in one transaction. Nothing given: no write.

        Raises:
            RegistryError: the write failed; no counter changed.
        """
        ...

    def rejections(self, device: str | None = None) -> list[RejectionTotal]:
        """The rejection counters of ``device`` (of every device when ``None``; those of
        messages naming no registered device under :data:`UNREGISTERED`), ordered by
        device then code."""
        ...

    # Fleet view.

    def fleet(self) -> list[FleetRow]:
        """One row per registered device, ordered by device id, for ``edge-hub fleet``:
        its last kept status (``None`` fields when it never sent one), last seen time,
        stored lineage size (0 when it never shipped), fork evidence rows kept and
        rejection counts by code."""
        ...

    # The console (docs/console.md): login tokens and status history.

    def add_console_token(self, token: ConsoleToken) -> None:
        """Store a console login token.

        Raises:
            ConfigError: a token named ``token.name`` is stored already; nothing changed.
            RegistryError: the write failed.
        """
        ...

    def console_tokens(self) -> list[ConsoleToken]:
        """Every stored console login token, ordered by name."""
        ...

    def revoke_console_token(self, name: str) -> bool:
        """Delete the console login token ``name``; whether there was one."""
        ...

    def console_devices(
        self,
        *,
        now: int,
        stale_after_s: int,
        limit: int,
        after: str = "",
        state: str | None = None,
        region: str | None = None,
    ) -> list[ConsoleFleetRow]:
        """A page of the console's devices list: one row per registered device with an id
        after ``after``, ordered by id, at most ``limit``: what :meth:`fleet` says of it
        (without rejections) and its last attestation's verdict and times. Only devices of
        ``region``, and only those in ``state`` at ``now`` as :meth:`fleet_summary` counts
        states, when given (``stale_after_s`` is its heartbeat window)."""
        ...

    def fleet_summary(self, now: int, stale_after_s: int) -> FleetSummary:
        """The fleet counted for the console's dashboard at ``now``, in one consistent read.
        Each count has the report times it is made of (``oldest``/``newest``). A backend
        keeps what this counts summarised as it is written (one small row per device, no
        log entries read here): the dashboard asks for it on every refresh of every open
        page, and at 10,000 devices it takes about 10 ms (SQLite).

        - ``states``: devices by state now: ``never_seen`` (no status, or never heard
          from), ``stale`` (last heard from more than ``stale_after_s`` before ``now``: its
          last status says nothing about now), ``offline`` (heard from in time, its status
          says offline), else the gate its status reports. Times: last heard from.
          ``state_examples``: the first :data:`FLEET_EXAMPLES` device ids of each, by id.
        - ``rollout``: per (region, group of the device; a device in several groups counts
          in each), target version (the highest version current on a channel the device
          listens on in its region: ``all``, each of its groups', its own; ``None``: none)
          and version running (``known`` false for stale and never-seen devices, whose
          ``running`` is ``None``). Times: last heard from.
        - ``attestation``: devices by their last attestation's verdict, ``"<verdict>
          (expired)"`` once it expired (``expires_at <= now``), or ``"never attested"``.
          Times: when verified.
        - ``lineage_current`` / ``lineage_lagging``: devices whose last status reported a
          log size the hub has stored all of / not all of; ``lineage_waiting``: entries
          reported and not stored, in total; ``lineage_max_lag``: the device with the most
          (lowest id first) and how many (``None``: none waiting). Times: the status's
          signed time.
        - ``forks``: devices with fork evidence (no times).
        - ``rejections``: rejection counters by code, summed over devices. Times: last
          counted.
        """
        ...

    def console_device(self, device_id: str) -> ConsoleFleetRow | None:
        """:meth:`console_devices`'s row of ``device_id``; ``None`` when it is not
        registered."""
        ...

    def status_history(self, device: str, since: int = 0) -> list[StatusSpan]:
        """``device``'s status spans that end at or after ``since``, oldest first (at most
        :data:`MAX_STATUS_SPANS`). :meth:`record_status` keeps them: each status it keeps and
        counts as heard from extends the device's last span or starts a new one."""
        ...

    # Operator audit log.

    def begin_action(self, *, at: int, operator: str, action: str, target: str, reason: str) -> int:
        """Record that ``operator`` asked for ``action`` on ``target`` at ``at``, its
        outcome ``pending``, before it is carried out (an action whose record cannot be
        written is not carried out); return its id, higher than every earlier one. Each
        text is cut to :data:`MAX_AUDIT_TEXT` characters.

        Raises:
            RegistryError: the write failed.
        """
        ...

    def finish_action(self, action_id: int, *, outcome: str, detail: str, at: int) -> None:
        """Record how the pending action ``action_id`` ended (``outcome`` one of
        :data:`AUDIT_OUTCOMES`) and why (``detail``, cut to :data:`MAX_AUDIT_TEXT`), at
        ``at``. An entry's outcome is written once.

        Raises:
            ValueError: ``outcome`` is not one of :data:`AUDIT_OUTCOMES`.
            RegistryError: no pending action has that id, or the write failed.
        """
        ...

    def audit_log(self, *, before: int | None = None, limit: int = 50) -> list[AuditEntry]:
        """The newest ``limit`` actions with an id below ``before`` (all when ``None``, or
        when ``before`` is above every id an entry can have), newest first: a page, and the
        last entry's id is where the next page starts (keyset paging, so a page costs the
        same anywhere in the log).

        Raises:
            ValueError: ``limit`` is not between 1 and :data:`MAX_AUDIT_PAGE`.
        """
        ...

    # Lineage search.

    def search_lineage(
        self, query: LineageQuery, *, after: LineageCursor | None = None, limit: int = 50
    ) -> LineagePage:
        """One page of the stored entries of every device that match ``query``: at most
        ``limit`` hits, newest first by (time, device, seq), strictly after ``after`` in
        that order (keyset pagination: a page costs the same wherever it is, and entries
        stored meanwhile never repeat or skip a hit of the pages after). Every stored entry
        is searchable from the transaction that stored it until the search is pruned past
        it (:meth:`prune_search`); a page of a query reaching before the retention cut
        carries the cut (``LineagePage.past_retention``).

        Raises:
            ValueError: ``limit`` is not 1 to 500.
            RegistryError: unreadable or damaged.
        """
        ...

    def iter_lineage(self, query: LineageQuery) -> Iterator[LineageHit]:
        """Every hit of ``query`` in the order of :meth:`search_lineage`, a bounded page at
        a time (memory does not grow with the result; for exports)."""
        ...

    def lineage_hit(self, device: str, seq: int) -> LineageHit | None:
        """The search columns of ``device``'s stored entry ``seq``; ``None`` when the hub
        holds no such entry."""
        ...

    # The lineage search's retention, and the lineage tables' layout.

    def search_retention(self) -> int | None:
        """The lineage search's retention cut: search rows of entries before it (Unix
        seconds, the start of a month) were pruned, and a search reaching before it is not
        complete there; ``None``: never pruned. The entries themselves stay in each log.

        Raises:
            RegistryError: unreadable.
        """
        ...

    def prune_search(self, cut: int, *, at: int, dry_run: bool) -> SearchPrune:
        """Delete the lineage search rows of entries before ``cut`` (the start of a month),
        having recorded ``cut`` (the greater of it and the held one) as the retention cut
        at ``at``; on a partitioned registry whole month partitions go first. With
        ``dry_run``, count what would go and change nothing. Each step is its own
        transaction: an interrupted prune resumes when run again, and a second run finds
        nothing. Never touches the entries, checkpoints or tree nodes.

        Raises:
            ValueError: ``cut`` is not the start of a month.
            PruneRefused: (PostgreSQL) ``cut`` is later than ``--older-than 1`` gives by the
                database server's clock, which its months are made by (nothing changed).
            RegistryError: the write failed (what was pruned before stays pruned).
        """
        ...

    def prepare_search_months(self, first: int, last: int) -> list[str]:
        """Make the lineage search's partitions of the months from ``first``'s to
        ``last``'s that lack one, where the search is partitioned by month (PostgreSQL
        registries created partitioned); return their names (none elsewhere). A month whose
        DEFAULT partition other sessions hold is left for the next call (its rows stay in
        the DEFAULT partition): this never waits more than a fraction of a second.

        Raises:
            RegistryError: the database refused.
        """
        ...

    def lineage_layout(self) -> tuple[TableLayout, ...]:
        """How each lineage table is stored: one table, or its partitions.

        Raises:
            RegistryError: unreadable.
        """
        ...

    # Staged rollouts (docs/rollout.md, section 3).

    def create_rollout(self, record: RolloutRecord) -> None:
        """Record a new rollout.

        Raises:
            ConfigError: a rollout with its id exists, or another rollout of its region is
                active (running, paused or aborting); nothing changed.
            RegistryError: the write failed.
        """
        ...

    def rollout(self, rollout_id: str) -> RolloutRecord | None:
        """The rollout ``rollout_id``; ``None`` when there is none."""
        ...

    def rollouts(self, *, active: bool = False) -> list[RolloutRecord]:
        """Every rollout (only the active ones when ``active``), oldest first (by creation
        time, then id)."""
        ...

    def update_rollout(self, record: RolloutRecord, *, expected: RolloutRecord) -> bool:
        """Replace the rollout by ``record`` if it is still exactly ``expected``
        (compare-and-set: the hub's driver and the ``rollout`` commands write the same
        record); whether it was replaced.

        Raises:
            ValueError: ``record`` and ``expected`` have different ids.
            RegistryError: the write failed.
        """
        ...

    def lineage_tallies(self, devices: Sequence[str], since: int, until: int) -> list[LineageTally]:
        """The stored entries of ``devices`` with ``since <= time < until``, counted per
        (kind, verdict, reason, rule, bundle version), with how many devices each; ordered
        by those (``None`` first)."""
        ...

    def devices_with_entry(self, devices: Sequence[str], kind: str, since: int) -> list[str]:
        """Which of ``devices`` stored an entry of ``kind`` at or after ``since``, by id."""
        ...

    def clear_channels(self, region: str, channels: Sequence[str]) -> None:
        """Make no bundle current on ``channels`` of ``region`` any more (and forget their
        last freshness tokens); the bundles stay recorded. Atomic.

        Raises:
            RegistryError: the write failed; nothing changed.
        """
        ...

    # The schedule lease (docs/scale.md, "One scheduler at a time").

    def claim_schedule_lease(self, holder: str, now: int, ttl_s: int) -> ScheduleLeaseClaim:
        """Take or renew the schedule lease for ``holder`` until ``now + ttl_s``: when it is
        free, expired (its expiry at or before ``now``), ``holder``'s already, or ending
        further ahead than a correct holder writes (after ``now + ttl_s +``
        :data:`hub.registry.lease_sql.LEASE_SKEW_LIMIT_S`). Return the fencing token then,
        ``None`` (nothing changed) while another holder's lease runs; with the lease as it
        was just before the claim, from the claim itself (no read of its own).

        The fencing token is the same for as long as one holder keeps the lease (renewals,
        even one after its expiry that nobody took) and above every earlier token whenever
        another holder takes it, so what a holder did under a token it no longer gets back
        is known to be stale. Compare-and-set against what is committed: of holders claiming
        at once, one gets the lease.

        Raises:
            ValueError: ``holder`` is empty or ``ttl_s`` is not positive.
            ScheduleLeaseExhausted: the lease would have been taken over but its token is
                the largest there is (a tampered row); nothing changed.
            RegistryError: the write failed; nothing changed.
        """
        ...

    def schedule_lease(self) -> ScheduleLeaseHolder | None:
        """The schedule lease as committed (``None`` before any hub claimed it), for
        saying who leads.

        Raises:
            RegistryError: the read failed.
        """
        ...

    def release_schedule_lease(self, holder: str) -> None:
        """Free the schedule lease if ``holder`` holds it (a hub stopping cleanly), so the
        next claim of any holder takes it at once, with a higher token; otherwise nothing.

        Raises:
            RegistryError: the write failed; nothing changed.
        """
        ...

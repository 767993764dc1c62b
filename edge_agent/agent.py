"""The agent's state directory, opened: load and re-verify, install, decide, report.

This is the I/O shell around the pure core. Each operation reads the clock once (the caller
passes ``wall``) and uses that value throughout. Every trust decision is the trust
machine's (:mod:`edge_agent.trust.machine`: state, object bytes and now in, an outcome
out); the agent reads the clock, persists the outcome's write, records its transition in
the lineage and swaps in its state. Everything read back from disk is verified again before
it is trusted (:mod:`edge_agent.trust.restore`): a database edited behind the agent's back
can only make it deny.

Attestation (DESIGN.md section 6): the running agent records each local measurement's
verdict against the installed bundle, answers verified hub challenges with signed evidence
(:attr:`LocalAgent.evidence`, :mod:`edge_agent.attest.responder`), and installs the hub's
result only for a nonce it answered with the measured state it sent. Both are kept in
``attestation.cbor`` beside the database (:mod:`edge_agent.attest.persist`) so that other
``edge-agent`` processes decide with what the running agent measured. The hub's result in it
is re-verified when read; the local verdict is not signed, so whoever can write the state
directory (root, or the agent's own user) can forge it. That user can already replace the
agent itself; docs/attestation.md says so.

Several processes, one state (docs/trust.md "Several processes"): ``edge-agent run`` and the
commands an operator runs beside it share ``state.db``. A change another process commits is
noticed before the next decision at most :data:`STATE_CHECK_INTERVAL_S` later (and before
every change this process makes), and the state is then loaded and verified again exactly
as :meth:`LocalAgent.open` does. Every change names the generation it was computed from; when
another process committed in between, the change is verified again against the new state
and re-applied (:class:`~edge_agent.store.StaleStateError`), so a process holding old state
never writes it back. A trust transition's lineage entry is committed with the change (the
store's outbox) and appended to the lineage after it, by this process or, if it was killed
in between, by the next one to open the state (:mod:`edge_agent.lineage.transitions`).

Trusted time: each process keeps an anchor, the newest signed time it verified and its
monotonic clock then (:mod:`edge_agent.trust.clock`, rule 4); decisions use
:func:`~edge_agent.trust.clock.trusted_now` and installs
:func:`~edge_agent.trust.clock.earliest_now`, both with it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TypeVar

from edge_agent.attest.measure import MeasurementSet
from edge_agent.attest.persist import StoredAttestation, read_attestation, write_attestation
from edge_agent.attest.responder import EvidenceResponder
from edge_agent.device_key import KEY_NAME, create_device_key, load_device_key
from edge_agent.directory_file import HeldDirectory
from edge_agent.errors import EdgeGovError, LineageError, StateError
from edge_agent.lineage.decisions import divergence_entry
from edge_agent.lineage.log import LineageConfig, LineageLog
from edge_agent.lineage.receipt_maker import ReceiptMaker
from edge_agent.lineage.transitions import TransitionRecorder
from edge_agent.policy.bundle import CompiledBundle
from edge_agent.protocol.attestation import AttestationResult
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.directory import Directory
from edge_agent.protocol.freshness import FreshnessToken
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.lineage_entries import Entry, Kind
from edge_agent.protocol.request import Parent, Request
from edge_agent.protocol.revocation import Revocation
from edge_agent.protocol.root import TrustRoot, verify_trusted_root
from edge_agent.store import DB_NAME, StaleStateError, StateStore, StoredState, Written
from edge_agent.trust.clock import TimeAnchor, advance_anchor, earliest_now, trusted_now
from edge_agent.trust.gate import (
    Decision,
    GateCheck,
    GateState,
    LastDecision,
    check_report,
    decide,
    gate_state,
    lineage_unavailable,
)
from edge_agent.trust.machine import (
    ATTESTATION_UNOBSERVED,
    AttestationVerdict,
    AttestationWrite,
    BundleWrite,
    FloorWrite,
    FreshnessWrite,
    Outcome,
    Refused,
    RevocationWrite,
    RootWrite,
    StoreWrite,
    Transition,
    Write,
    accept_attestation_result,
    accept_bundle,
    accept_freshness,
    accept_measurement,
    accept_revocation,
    accept_root,
    accept_root_chain,
    accept_shadow,
    observe_attestation,
    observe_clock,
    observe_deadlines,
)
from edge_agent.trust.parent import VerifiedParents, verify_parent
from edge_agent.trust.restore import restore_state
from edge_agent.trust.shadow import HeldShadow, shadow_dropped, shadow_outcome
from edge_agent.trust.state import LocalVerdict, TrustState

__all__ = ["InstallResult", "LocalAgent", "init_state_dir"]

logger = logging.getLogger(__name__)

STATE_CHECK_INTERVAL_S = 0.005
"""Deciding checks at most this often whether another process changed the state: a decision
made later than this after such a change decides with it. The check costs about 2 us, a
tenth of a decision's gate and engine, so it is not made on every one."""
MAX_STATE_RETRIES = 8
"""Times a change is verified again and re-applied because another process committed first."""
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class InstallResult:
    bundle: CompiledBundle
    unchanged: bool


def init_state_dir(
    state_dir: Path,
    identity: DeviceIdentity,
    root_bytes: bytes,
    wall: int,
    settings: dict[str, str] | None = None,
) -> PublicKey:
    """Enrol this device: pin ``root_bytes``, record ``identity`` and text ``settings``
    (the broker options), create the device key.

    Returns the device's public key, for the hub to register.

    All or nothing: the device key is created first (a key already there, from an earlier
    enrolment, is kept), then the database, built aside and renamed into place; when the
    database cannot be created, a key made here is removed again, so a failed ``init``
    leaves the directory as it found it and can simply be run again.

    Raises:
        RootError: the root is not a valid, self-signed, unexpired trust root.
        StateError: the directory is already initialised or cannot be written.
    """
    root = verify_trusted_root(root_bytes, now=wall)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the state directory {state_dir}: {exc}") from exc
    if not os.access(state_dir, os.W_OK):
        raise StateError(f"the state directory {state_dir} is not writable")
    if (state_dir / DB_NAME).exists():
        raise StateError(
            f"{state_dir} is already initialised; to re-enrol this device, move "
            f"{state_dir / DB_NAME} away first"
        )
    created = create_device_key(state_dir)
    key = created if created is not None else load_device_key(state_dir)
    try:
        StateStore.create(state_dir, identity, root.raw, wall, settings or {})
    except BaseException:
        if created is not None:
            with contextlib.suppress(OSError):
                (state_dir / KEY_NAME).unlink()
        raise
    logger.info(
        "device enrolled: device=%s region=%s root_version=%d",
        identity.device_id,
        identity.region,
        root.version,
    )
    return key.public


class LocalAgent:
    """An opened state directory and the trust state verified from it."""

    def __init__(
        self,
        store: StateStore,
        state: TrustState,
        lineage: LineageLog | None = None,
        device_key: PrivateKey | None = None,
        *,
        generation: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
        read_only: bool = False,
    ) -> None:
        self.store = store
        self.state = state
        self.lineage = lineage
        self._device_key = device_key
        self._generation = generation
        """The stored generation ``state`` was loaded from or written as."""
        self._monotonic = monotonic
        self._anchor: TimeAnchor | None = None
        self._lock = threading.RLock()
        """Held while the state is reloaded or changed (deciders on other threads only
        read ``state``, swapped whole)."""
        self._next_check = 0.0
        self._must_reload = False
        self._last_decision = LastDecision()
        """:meth:`judge`'s gate, remembering its last call (a workload asks again)."""
        self.reloads = 0
        """Times the state was taken in again because another process changed it (or it
        could not be, and decisions deny): a caller that let an install refresh the state
        compares it to know whether something beyond its own change moved."""
        self._read_only = read_only
        """Read-only agents (``status``) never write the lineage."""
        self._transitions = TransitionRecorder(store, lineage, read_only=read_only)
        self._clock_trusted = True
        self.last_seq: int | None = None
        """Lineage seq of the last decision this agent returned (``None``: not logged)."""
        self.measurement: MeasurementSet | None = None
        """The last local measurement (``None``: this process has not measured)."""
        self._interval_s = 0
        self.evidence = EvidenceResponder(self)
        """Answers the hub's attestation challenges with this agent's measured state."""
        self._attestation_seen: AttestationVerdict = ATTESTATION_UNOBSERVED
        self.directory = HeldDirectory(
            store.path.parent,
            state.device.region,
            lambda: self.state.root,
            lambda: self.state.directory_version,
            monotonic=monotonic,
        )
        """The device directory parents are verified against (docs/policy.md "Parents")."""
        self._parents = VerifiedParents()
        self._receipts = ReceiptMaker(lineage) if lineage is not None else None
        self._shadows: dict[str, HeldShadow] = {}
        """Shadow bundles held, by the topic each came on; replaced whole on every change
        (deciders on other threads read it), in memory only (docs/rollout.md)."""
        self._shadow: HeldShadow | None = None
        """The shadow evaluated beside the active bundle: the newest held."""
        self._shadow_root: TrustRoot | None = None
        """The root the held shadows were verified under."""
        self._unrecorded: set[bytes] = set()
        """Revocations verified and in force (the gate denies by them) whose state write has
        not committed yet, by their exact bytes: from the moment each is verified until its
        write commits, or, when the write fails, until it is delivered again and written
        then (the broker retains it). Every reload keeps them in force."""

    @classmethod
    def open(
        cls,
        state_dir: Path,
        lineage: LineageConfig | None = None,
        *,
        record_lineage_breaks: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> LocalAgent:
        """Open ``state_dir`` and re-verify the root chain and everything signed under it.

        A root chain that fails verification is an error (nothing can be trusted); an active
        bundle that does not verify under the newest root leaves a state that denies with
        ``bundle_untrusted`` (as :meth:`install_root` does in a running agent). Read-only
        callers pass ``record_lineage_breaks=False``: a lineage break they find is reported
        (the gate shows closed) but never recorded, and neither is a transition another
        process left unlogged (any other caller logs it now). ``monotonic`` is the clock
        the time anchor counts with (a parameter for tests).

        Raises:
            StateError: not initialised, unreadable, or its trust roots do not verify.
        """
        store = StateStore.open(state_dir)
        try:
            stored = store.load()
            state = _load_state(stored, state_dir)
        except EdgeGovError as exc:
            store.close()
            raise StateError(f"the agent state in {state_dir} does not verify: {exc}") from exc
        stored_device = state.device
        try:
            key = load_device_key(state_dir)
        except EdgeGovError as exc:
            store.close()
            raise StateError(f"the device key in {state_dir} cannot be used: {exc}") from exc
        log = LineageLog.open(
            state_dir,
            stored_device.device_id,
            config=lineage,
            record_breaks=record_lineage_breaks,
        )
        agent = cls(
            store,
            state,
            log,
            key,
            generation=stored.generation,
            monotonic=monotonic,
            read_only=not record_lineage_breaks,
        )
        agent.refresh()
        return agent

    @property
    def device_key(self) -> PrivateKey:
        """The device's signing key (lineage batches, status).

        Raises:
            StateError: this agent was opened without one.
        """
        if self._device_key is None:
            raise StateError("this agent has no device key loaded")
        return self._device_key

    def close(self) -> None:
        if self.lineage is not None:
            self.lineage.close(int(time.time()))
        self.store.close()

    def __enter__(self) -> LocalAgent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- several processes, one state -------------------------------------------------

    def refresh(self) -> bool:
        """Load and verify the state again if another process committed a change since this
        agent loaded it, then log any transition left in the outbox; return whether the
        state was reloaded. Never raises: a changed state that cannot be loaded makes every
        decision deny ``internal_error`` until it can.

        A writing agent also rechecks its lineage here (:meth:`LineageLog.recheck`): a break
        another process recorded, or its log file deleted, replaced, cut short or
        overwritten, closes the gate before the next decision."""
        with self._lock:
            if self.lineage is not None and not self._read_only:
                self.lineage.recheck()
            try:
                reloaded = self._must_reload or self.store.changed(self._generation)
                if reloaded:
                    self._reload()
            except StateError as exc:
                self._must_reload = True
                self.reloads += 1
                if self.state.fault is None:
                    logger.error("decisions deny internal_error: %s", exc)
                self.state = replace(self.state, fault=str(exc))
                return True
            self._transitions.flush()
            return reloaded

    def _reload(self, *, ours: bool = False) -> None:
        """Swap in the state as stored, verified as :meth:`open` verifies it (``ours``: after
        this agent's own change, rather than another process's).

        Raises:
            StateError: unreadable, or its trust roots do not verify.
        """
        self._must_reload = True
        stored = self.store.load()
        try:
            state = _load_state(stored, self.store.path.parent)
        except EdgeGovError as exc:
            raise StateError(f"the agent state does not verify: {exc}") from exc
        if state.distrusted is not None and self.state.distrusted is None:
            logger.warning("decisions deny bundle_untrusted: %s", state.distrusted.why)
        if not ours:
            self.reloads += 1
            logger.info(
                "agent state reloaded: changed by another process (generation %d)",
                stored.generation,
            )
        self.state, self._generation = self._keep_unrecorded(state), stored.generation
        self._must_reload = False
        self._transitions.expect_pending()

    def _changing(self, change: Callable[[], _T]) -> _T:
        """Run ``change`` (verify against ``self.state``, then commit) on the newest state:
        reloaded first when another process changed it, and again, with ``change`` run
        again, each time one commits in between.

        Raises:
            StateError: the state kept changing or cannot be reloaded; nothing changed.
        """
        with self._lock:
            self.refresh()
            for _ in range(MAX_STATE_RETRIES):
                try:
                    return change()
                except StaleStateError as exc:
                    logger.info("%s; verifying the change again against it", exc)
                    self._reload()
            raise StateError(
                f"the agent state kept changing while this process tried to record a change "
                f"({MAX_STATE_RETRIES} attempts); try again"
            )

    def _commit(self, write: Callable[..., Written], new_state: TrustState | None) -> None:
        """Write a change computed from this agent's generation and swap in ``new_state``
        (``None``: the state as stored after the write, verified again).

        Raises:
            StaleStateError: another process committed first; nothing changed.
            StateError: the write failed; nothing changed.
        """
        self._swap(write(generation=self._generation), new_state)

    def _swap(self, written: Written, new_state: TrustState | None) -> None:
        self._generation = written.generation
        if new_state is None:
            self._reload(ours=True)
        else:
            self.state = new_state

    # --- trusted time ---------------------------------------------------------------------

    def trusted_now(self, wall: int) -> int:
        """The time decisions use at wall-clock ``wall``: the floor and this process's time
        anchor applied (:func:`edge_agent.trust.clock.trusted_now`)."""
        return trusted_now(wall, self.state.floor, self._anchor, self._monotonic())

    def earliest_now(self, wall: int) -> int:
        """The least "now" can be at wall-clock ``wall``, what installs judge expiry with
        (:func:`edge_agent.trust.clock.earliest_now`)."""
        return earliest_now(wall, self.state.floor, self._anchor, self._monotonic())

    # --- installing: the trust machine decides, the agent persists, logs and swaps --------

    def _take(self, outcome: Outcome[_T] | Refused, wall: int) -> _T:
        """Carry out what the trust machine decided (:mod:`edge_agent.trust.machine`): log a
        refusal and raise it; otherwise persist the outcome's write with its transition,
        swap in its state and anchor trusted time to the signed time it vouches for.

        Raises:
            EdgeGovError: the object was refused; nothing changed.
            StaleStateError: another process committed first; nothing changed.
            StateError: the write failed; nothing changed.
        """
        if isinstance(outcome, Refused):
            error = outcome.error
            logger.warning("%s: code=%s %s", outcome.transition.kind, error.code, error)
            self._transitions.record(outcome.transition, wall)
            raise error
        if outcome.write is not None:
            self._persist(outcome.write, outcome.state, outcome.transition, wall)
        if outcome.signed is not None:
            signed = outcome.signed
            self._anchor = advance_anchor(
                self._anchor, signed.seconds, signed.role, self._monotonic()
            )
        return outcome.value

    def _persist(
        self, write: Write, new_state: TrustState, transition: Transition | None, wall: int
    ) -> None:
        """Write ``write`` from this agent's generation (with ``transition``, through the
        outbox: :meth:`~edge_agent.lineage.transitions.TransitionRecorder.commit`), then
        swap in ``new_state``; after a root, the state as stored, verified again, as the
        objects the rotation voided are gone from it.

        Raises:
            StaleStateError: another process committed first; nothing changed.
            StateError: the write failed; nothing changed.
        """
        if isinstance(write, AttestationWrite):
            self._save_attestation(new_state)
            if write.floor is not None:
                self._commit(
                    functools.partial(self.store.record_freshness, data=None, floor=write.floor),
                    new_state,
                )
            self.state = new_state
            if transition is not None:
                self._transitions.record(transition, wall)
            return
        swap = None if isinstance(write, RootWrite) else new_state
        change = self._store_change(write, wall)
        if transition is None:
            self._commit(change, swap)
            return
        self._transitions.commit(
            functools.partial(change, generation=self._generation),
            transition,
            wall,
            functools.partial(self._swap, new_state=swap),
        )

    def _store_change(self, write: StoreWrite, wall: int) -> Callable[..., Written]:
        """The store call that makes ``write`` durable: the write's fields are its keywords,
        with ``now=wall`` where the store records when."""
        store, keywords = self.store, {f.name: getattr(write, f.name) for f in fields(write)}
        match write:
            case BundleWrite():
                return functools.partial(store.install_bundle, **keywords, now=wall)
            case RootWrite():
                return functools.partial(store.install_root, **keywords, now=wall)
            case RevocationWrite():
                return functools.partial(store.record_revocation, **keywords, now=wall)
            case FreshnessWrite():
                return functools.partial(store.record_freshness, **keywords)
            case FloorWrite():
                return functools.partial(store.record_floor, **keywords)

    def install_bundle(self, data: bytes, wall: int) -> InstallResult:
        """Verify ``data`` and make it the active bundle; on any failure nothing changes.

        The expiry check uses :meth:`earliest_now`: time is at least the floor even when the
        wall clock is behind it. A bundle issued too far ahead of that time, or older than
        the newest freshness token names, is refused
        (:func:`~edge_agent.trust.machine.accept_bundle`).

        Raises:
            BundleError: the bundle was refused; the installed one stays.
            StateError: the new state could not be written; the installed one stays.
        """
        return self._changing(functools.partial(self._install_bundle, data, wall))

    def _install_bundle(self, data: bytes, wall: int) -> InstallResult:
        bundle = self._take(accept_bundle(self.state, data, self.earliest_now(wall)), wall)
        if bundle.unchanged:
            logger.info("bundle version %d already installed; no change", bundle.version)
            return InstallResult(bundle, unchanged=True)
        logger.info(
            "bundle installed: version=%d digest=%s expires_at=%d",
            bundle.version,
            bundle.digest.hex(),
            bundle.expires_at,
        )
        self._current_shadow(self.earliest_now(wall))
        if self.measurement is not None:
            self.record_measurement(self.measurement, wall, self._interval_s)
        return InstallResult(bundle, unchanged=False)

    # --- shadow bundles (docs/rollout.md, "Shadow mode") ---------------------------------

    @property
    def shadow(self) -> CompiledBundle | None:
        """The shadow bundle evaluated beside the active one now (``None``: none)."""
        held = self._shadow
        return None if held is None else held.bundle

    def install_shadow(self, source: str, data: bytes, wall: int) -> CompiledBundle | None:
        """Verify ``data`` exactly as :meth:`install_bundle` would, without installing it,
        and hold it as the shadow from ``source`` (its topic), replacing the one held from
        there; return it, or ``None`` when it is the active bundle itself (nothing held).

        A held shadow never decides and changes no trust state; it is kept in memory only:
        after a restart the broker's retained message brings it back, so a shadow cleared
        meanwhile is never evaluated.

        Raises:
            BundleError: refused with the code a bundle would be (logged as
                ``shadow_rejected``); the shadow from ``source`` is dropped.
            StateError: the refusal could not be checked against the newest state.
        """
        return self._changing(functools.partial(self._install_shadow, source, data, wall))

    def _install_shadow(self, source: str, data: bytes, wall: int) -> CompiledBundle | None:
        now = self.earliest_now(wall)
        self._current_shadow(now)
        outcome = accept_shadow(self.state, data, now)
        others = {s: b for s, b in self._shadows.items() if s != source}
        if isinstance(outcome, Refused) or outcome.value is None:
            self._hold_shadows(others)
        bundle = self._take(outcome, wall)
        if bundle is None:
            logger.info("shadow bundle from %s is the active bundle; nothing held", source)
            return None
        self._hold_shadows({**others, source: HeldShadow(bundle)}, self.state.root)
        logger.info(
            "shadow bundle held from %s: version=%d digest=%s expires_at=%d",
            source,
            bundle.version,
            bundle.digest.hex(),
            bundle.expires_at,
        )
        return bundle

    def clear_shadow(self, source: str) -> bool:
        """Drop the shadow held from ``source`` (its topic was cleared); return whether one
        was held."""
        with self._lock:
            held = self._shadows.get(source)
            if held is None:
                return False
            self._hold_shadows({s: b for s, b in self._shadows.items() if s != source})
        logger.info("shadow bundle version %d from %s cleared", held.bundle.version, source)
        return True

    def _hold_shadows(self, shadows: dict[str, HeldShadow], root: TrustRoot | None = None) -> None:
        with self._lock:
            self._shadows = shadows
            if root is not None:
                self._shadow_root = root
            self._shadow = max(shadows.values(), key=lambda h: h.bundle.version, default=None)

    def shadow_entry(self, decision: Decision) -> Entry | None:
        """The ``shadow_divergence`` entry to log right after ``decision``, when a shadow is
        held and decides it otherwise (:func:`~edge_agent.trust.shadow.shadow_outcome`).
        Never raises and never changes ``decision``: any failure is logged and only the
        comparison is lost."""
        if self._shadow is None:
            return None
        try:
            shadow = self._current_shadow(decision.time)
            outcome = None if shadow is None else shadow_outcome(decision, shadow)
            return None if outcome is None else divergence_entry(decision, outcome)
        except Exception:
            logger.exception("shadow evaluation failed; the decision stands, not compared")
            return None

    def _current_shadow(self, now: int) -> HeldShadow | None:
        """The shadow to compare with at trusted ``now``, after dropping the held ones that
        expired, became or fell behind the active bundle, or (after a root rotation) no
        longer verify."""
        shadow, state = self._shadow, self.state
        same_root = self._verified_under(state.root)
        if shadow is not None and same_root and shadow_dropped(shadow.bundle, state, now) is None:
            return shadow
        with self._lock:
            kept: dict[str, HeldShadow] = {}
            for source, held in self._shadows.items():
                why = shadow_dropped(held.bundle, state, now)
                if why is None and not same_root:
                    verdict = accept_shadow(state, held.bundle.raw, now)
                    if isinstance(verdict, Refused):
                        why = f"it no longer verifies: {verdict.error}"
                if why is None:
                    kept[source] = held
                else:
                    logger.info("shadow bundle from %s dropped: %s", source, why)
            self._hold_shadows(kept, state.root)
            return self._shadow

    def _verified_under(self, root: TrustRoot) -> bool:
        """Whether the held shadows were verified under ``root``: the same object, or the
        same signed bytes (a state loaded again holds a new object of the same root)."""
        held = self._shadow_root
        if root is held:
            return True
        if held is None or root.raw != held.raw:
            return False
        self._shadow_root = root
        return True

    def install_root(self, data: bytes, wall: int) -> TrustRoot:
        """Rotate to the next trust root; on any failure nothing changes.

        As in TUF, an expired root is still a valid link in the chain: it is installed, and
        the gate denies ``root_expired`` until a newer root is. Then everything signed under
        the old root is verified again under the new one, as :meth:`open` would: a rotated
        role's time mark (for the freshness role also its kill epoch and pin, for the revoke role
        the epoch seen from revocations that no longer verify) is dropped, and revocations and
        freshness tokens that no longer verify are deleted. An installed
        bundle that no longer verifies makes the gate deny ``bundle_untrusted``.

        The root already installed (by another process, or delivered again) is a no-op.

        Raises:
            RootError: not signed by both thresholds, or not exactly the next version.
            StateError: the new root could not be written.
        """
        return self._changing(functools.partial(self._install_root, data, wall))

    def _install_root(self, data: bytes, wall: int) -> TrustRoot:
        old = self.state
        outcome = accept_root(old, data, self.store.load())
        root = self._take(outcome, wall)
        if isinstance(outcome, Refused) or not isinstance(outcome.write, RootWrite):
            logger.info("trust root version %d already installed; no change", root.version)
            return root
        if old.attestation_result is not None and self.state.attestation_result is None:
            self._save_attestation(self.state)
        expired = self.earliest_now(wall) >= root.expires_at
        rotated = outcome.write.rotated
        logger.info(
            "trust root rotated to version %d (rotated roles: %s)%s",
            root.version,
            ", ".join(sorted(rotated)) or "none",
            "; it has expired: decisions deny root_expired until a newer root is installed"
            if expired
            else "",
        )
        return root

    def install_roots(self, chain: Sequence[bytes], wall: int) -> tuple[TrustRoot, ...]:
        """Install roots N+1, N+2, ... all or none: the whole chain is verified before the
        first is installed (a refused link is logged as :meth:`install_root` logs it).

        Raises:
            RootError: a link does not verify; nothing was installed.
            StateError: a root could not be written; those before it stay installed.
        """
        self._take(accept_root_chain(self.state, chain), wall)
        return tuple(self.install_root(data, wall) for data in chain)

    def install_revocation(self, data: bytes, wall: int) -> Revocation | None:
        """Verify a revocation and record it; return it when it changed what this device
        decides, ``None`` when it was already applied, lifted, or for another device
        (:func:`~edge_agent.trust.state.revocation_effect` decides which).

        The gate denies by it from the moment it is verified, before its write commits;
        this returns once the write committed.

        Raises:
            RevocationError: not signed by a revoke-role threshold, or malformed.
            StateError: it could not be recorded: it stays in force (the gate denies by it)
                but unrecorded until it is delivered again and recorded then.
        """
        return self._changing(functools.partial(self._install_revocation, data, wall))

    def _install_revocation(self, data: bytes, wall: int) -> Revocation | None:
        """Deny as soon as the revocation is verified, then record it: the gate swaps to
        the revoked state before the write commits (denying earlier is the safe direction),
        and the install returns only once it committed, so nothing is acknowledged before
        it is durable. A write that fails leaves it in force, unrecorded, until it is
        delivered again (:attr:`_unrecorded`)."""
        outcome = accept_revocation(self._unrecorded_removed(data), data)
        if isinstance(outcome, Outcome) and outcome.value is not None:
            self._unrecorded.add(data)
            self.state = outcome.state
        revocation = self._take(outcome, wall)
        self._unrecorded.discard(data)
        if revocation is not None:
            logger.warning(
                "revocation applied: epoch=%d %s %s reason=%r",
                revocation.epoch,
                revocation.kind,
                revocation.value,
                revocation.reason,
            )
        return revocation

    def _unrecorded_removed(self, data: bytes) -> TrustState:
        """The state without the revocation ``data`` when it is in force but not written
        yet, so that delivering it again verifies it again and writes it."""
        if data not in self._unrecorded:
            return self.state
        kept = tuple(r for r in self.state.revocations if r.raw != data)
        return replace(self.state, revocations=kept)

    def _keep_unrecorded(self, state: TrustState) -> TrustState:
        """``state`` (as loaded) with the revocations in force but not yet written applied
        again, each verified again against it; one it no longer verifies under, or that no
        longer applies to it (recorded by another process, lifted by a newer bundle), is
        dropped."""
        for data in sorted(self._unrecorded):
            outcome = accept_revocation(state, data)
            if isinstance(outcome, Outcome) and outcome.value is not None:
                state = outcome.state
            else:
                self._unrecorded.discard(data)
        return state

    def install_freshness(self, data: bytes, wall: int) -> FreshnessToken:
        """Verify a freshness token and apply it: signed time, kill epoch, ``max_offline``.

        A token pinning the active bundle is persisted (so a restart keeps it), and so is one
        naming a newer bundle than any before (the pin); others still advance the time floor.

        Raises:
            FreshnessError: not signed by a freshness key, malformed, or expired.
            StateError: it could not be recorded; nothing changed.
        """
        return self._changing(functools.partial(self._install_freshness, data, wall))

    def _install_freshness(self, data: bytes, wall: int) -> FreshnessToken:
        return self._take(accept_freshness(self.state, data, self.earliest_now(wall)), wall)

    def observe_clock(self, wall: int) -> bool:
        """Check the wall clock against the trusted floor, record the signed deadlines it
        has passed (the observed floor) and log a change of verdict (``clock_untrusted`` /
        ``clock_restored``); return whether it is trusted now
        (:func:`~edge_agent.trust.machine.observe_clock`)."""
        now = self.trusted_now(wall)
        seen = observe_clock(self.state, wall, now, trusted=self._clock_trusted)
        if seen.state is not self.state:
            self._observe(now)
        if seen.transition is not None:
            if seen.trusted:
                logger.warning("clock trusted again: %s", seen.transition.detail)
            else:
                logger.error("clock untrusted: %s", seen.transition.detail)
            self._transitions.record(seen.transition, wall)
        self._clock_trusted = seen.trusted
        return seen.trusted

    def decide(self, request: Request, wall: int, *, parent: bytes | None = None) -> Decision:
        """Decide ``request`` at ``wall``, citing the ``parent`` receipt if given; the
        decision is durable in the lineage before it is returned, or it is replaced by a
        deny with ``lineage_unavailable``."""
        now = self._decision_time(wall)
        if parent is not None:
            request = replace(request, parent=self._judge_parent(parent, now))
        decision = decide(self.state, request, now)
        self._observe(decision.time)
        if self.lineage is None:
            return lineage_unavailable(decision, "the lineage is not open")
        decision, self.last_seq = self.lineage.record_decision(
            decision, self.shadow_entry(decision)
        )
        return decision

    def judge(self, request: Request, wall: int) -> Decision:
        """The gate's decision on ``request`` at ``wall``, not yet durable: :meth:`record`
        makes it so (the decision socket's two steps; thread-safe)."""
        now = self._decision_time(wall)
        decision = self._last_decision.decide(self.state, request, now)
        self._observe(decision.time)
        return decision

    def record(self, decisions: Sequence[Decision]) -> list[Decision]:
        """Make ``decisions`` durable in one lineage commit (each with its shadow
        divergence, if any); return them in order, each replaced by a deny with
        ``lineage_unavailable`` where it could not be written. Blocking; thread-safe."""
        if self.lineage is None:
            return [lineage_unavailable(d, "the lineage is not open") for d in decisions]
        return self.lineage.record_decisions([(d, self.shadow_entry(d)) for d in decisions])

    def decide_cited(
        self, request: Request, wall: int, parent: bytes | None, want_receipt: bool
    ) -> tuple[Decision, bytes | None]:
        """:meth:`decide` citing the ``parent`` receipt, and with ``want_receipt`` the
        decision's own receipt once it is durable (``None`` when it could not be logged or
        proven; the reason is logged). Blocking; thread-safe."""
        now = self._decision_time(wall)
        if parent is not None:
            request = replace(request, parent=self._judge_parent(parent, now))
        decision = decide(self.state, request, now)
        self._observe(decision.time)
        if self.lineage is None:
            return lineage_unavailable(decision, "the lineage is not open"), None
        decision, seq = self.lineage.record_decision(decision, self.shadow_entry(decision))
        if not want_receipt or seq is None or self._receipts is None:
            return decision, None
        try:
            return decision, self._receipts.receipt(seq, wall)
        except Exception as exc:
            logger.error("no receipt for the decision logged as entry %d: %s", seq, exc)
            return decision, None

    def receipt(self, seq: int, wall: int) -> bytes:
        """A device-signed receipt of lineage entry ``seq`` (docs/receipts.md), proven
        against a checkpoint covering it (one signed now if none does).

        Raises:
            LineageError: the lineage is not open, or the entry cannot be proven.
        """
        if self._receipts is None:
            raise LineageError("the lineage is not open")
        return self._receipts.receipt(seq, wall)

    def install_directory(self, data: bytes, wall: int) -> Directory:
        """Verify and keep the hub's device directory (:class:`HeldDirectory.install`), its
        version recorded first as the directory's rollback floor in the trust state.

        Raises:
            DirectoryError: refused (logged); nothing changes.
            StateError: it could not be recorded; nothing changes.
        """
        return self._changing(functools.partial(self._install_directory, data, wall))

    def _install_directory(self, data: bytes, wall: int) -> Directory:
        return self.directory.install(
            data, self.earliest_now(wall), record=self._record_directory_version
        )

    def _record_directory_version(self, version: int) -> None:
        """Raise the directory's version floor to ``version`` (a no-op when it is not below).

        Raises:
            StaleStateError: another process committed first; nothing changed.
            StateError: the write failed; nothing changed.
        """
        if version <= self.state.directory_version:
            return
        self._commit(
            functools.partial(self.store.record_directory_version, version),
            replace(self.state, directory_version=version),
        )

    def _judge_parent(self, data: bytes, now: int) -> Parent:
        """The cited parent as verified at trusted ``now``; any unexpected failure refuses
        it (fail closed), never the decision."""
        directory = self.directory.current()
        try:
            return verify_parent(data, directory, now, cache=self._parents)
        except Exception as exc:
            logger.exception("parent verification failed unexpectedly; refusing the parent")
            version = directory.version if directory is not None else None
            return Parent(None, version, f"parent refused: internal error: {exc}")

    def _decision_time(self, wall: int) -> int:
        """Trusted now for a decision at ``wall``; first, at most every
        :data:`STATE_CHECK_INTERVAL_S`, take in what another process changed. A thread that
        finds the state being changed skips the check (the change swaps the state whole)."""
        monotonic = self._monotonic()
        if monotonic >= self._next_check and self._lock.acquire(blocking=False):
            try:
                self._next_check = monotonic + STATE_CHECK_INTERVAL_S
                self.refresh()
            finally:
                self._lock.release()
        return trusted_now(wall, self.state.floor, self._anchor, monotonic)

    def _observe(self, now: int) -> None:
        """Raise the observed floor to the signed deadlines trusted ``now`` has passed, and
        persist it when it moved (once per deadline: the decision path stays O(1)). A write
        that fails keeps the raised floor in memory."""
        if observe_deadlines(self.state, now) is None:
            return
        with self._lock:
            for _ in range(MAX_STATE_RETRIES):
                outcome = observe_deadlines(self.state, now)
                if outcome is None:
                    return
                try:
                    self._take(outcome, now)
                except StaleStateError:
                    self._must_reload = True
                    self.refresh()
                    continue
                except StateError as exc:
                    logger.error("observed floor not recorded: %s", exc)
                    self.state = outcome.state
                    return
                logger.info("observed floor raised to %d", outcome.value.observed)
                return

    # --- attestation ---------------------------------------------------------------------

    def record_measurement(
        self, measured: MeasurementSet, wall: int, interval_s: int
    ) -> LocalVerdict:
        """Judge ``measured`` against the installed bundle and make it the local verdict.

        The verdict is swapped in whatever happens: it is what this device is now. A failing
        verdict drops the hub's result (a fresh challenge is needed). It is then persisted
        for the other ``edge-agent`` processes; a failed write is logged (they deny once the
        stored verdict is stale).
        """
        self.measurement, self._interval_s = measured, interval_s
        outcome = accept_measurement(self.state, measured, wall, interval_s)
        had_result = self.state.attestation_result is not None
        self.state = outcome.state
        if had_result and self.state.attestation_result is None:
            logger.warning("attestation: the hub's result is void after a failed measurement")
        if outcome.write is not None:
            try:
                self._save_attestation(self.state)
            except StateError as exc:
                logger.error("attestation state not recorded: %s", exc)
        return outcome.value

    def install_attestation_result(self, data: bytes, wall: int) -> AttestationResult:
        """Verify the hub's result and keep it: a verifier key signed it for this device, its
        nonce is one this agent answered (once), it attests the measured state sent, and it
        has not expired. The exact result already held is a no-op.

        Raises:
            AttestationError: refused (logged as a rejected attestation); nothing changes.
            StateError: it could not be recorded; nothing changes.
        """
        return self._changing(functools.partial(self._install_attestation_result, data, wall))

    def _install_attestation_result(self, data: bytes, wall: int) -> AttestationResult:
        old = self.state
        outcome = accept_attestation_result(old, data, self.earliest_now(wall), self.evidence.sent)
        result = self._take(outcome, wall)
        if self.state is old:
            return result
        self.evidence.settle(result.nonce)
        logger.info(
            "attestation result: %s, valid until %d (%s)",
            result.verdict,
            result.expires_at,
            result.detail,
        )
        return result

    def observe_attestation(self, wall: int) -> bool:
        """Log a change of the gate's attestation verdict as a trust transition (passed,
        failed, stale); return whether it changed since the last call
        (:func:`~edge_agent.trust.machine.observe_attestation`)."""
        seen = observe_attestation(
            self.state, wall, self.trusted_now(wall), seen=self._attestation_seen
        )
        if seen.verdict == self._attestation_seen:
            return False
        self._attestation_seen = seen.verdict
        transition = seen.transition
        if transition is not None:
            level = logging.INFO if transition.kind is Kind.ATTESTATION_PASSED else logging.WARNING
            logger.log(level, "attestation %s: %s", seen.verdict, transition.detail)
            self._transitions.record(transition, wall)
        return True

    def _save_attestation(self, state: TrustState) -> None:
        result = state.attestation_result
        write_attestation(
            self.store.path.parent,
            StoredAttestation(result.raw if result is not None else None, state.local_attestation),
        )

    def checks(self, wall: int) -> tuple[GateCheck, ...]:
        return check_report(self.state, self.trusted_now(wall))

    def lineage_problem(self) -> str | None:
        """Why decisions cannot be logged now (``None``: they can), the gate's lineage
        check."""
        lineage = self.lineage
        return "the lineage is not open" if lineage is None else lineage.status()

    def gate_state(self, wall: int) -> GateState:
        """:data:`~edge_agent.trust.gate.GATE_OPEN`, or the reason code every decision
        would deny with now (:func:`~edge_agent.trust.gate.gate_state`)."""
        problem = self.lineage_problem()
        if problem is not None:
            return gate_state((), problem)
        return gate_state(self.checks(wall), None)


def _load_state(stored: StoredState, state_dir: Path) -> TrustState:
    """The trust state ``stored`` holds, verified again with the attestation state kept
    beside it (:func:`~edge_agent.trust.restore.restore_state`); an unreadable attestation
    file is left out (logged). The device directory's version floor is taken as stored: it
    only ever refuses directories, so an edited one can only make parents refused.

    Raises:
        EdgeGovError: the root chain does not verify.
    """
    try:
        attestation = read_attestation(state_dir)
    except StateError as exc:
        logger.error("attestation state ignored: %s", exc)
        restored = restore_state(stored, None, None)
    else:
        restored = restore_state(stored, attestation.result, attestation.local)
    return replace(restored, directory_version=stored.directory_version)

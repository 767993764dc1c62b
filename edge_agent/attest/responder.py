"""Answering the hub's attestation challenges: verify, sign evidence, remember the nonce.

DESIGN.md section 6: the hub challenges a device with a fresh nonce; the device answers with
signed evidence of its last measurement, its bundle and its lineage head. The hub's result
is then kept only for a nonce this device answered, and only when it attests the measured
digest sent with that nonce (:func:`~edge_agent.trust.machine.accept_attestation_result`
checks it against :attr:`EvidenceResponder.sent`). At most :data:`MAX_ANSWERED_NONCES` are
remembered: older ones are forgotten, and a result for them is refused as a replay.

This module reads the agent through :class:`EvidenceSource` (its state, last measurement,
lineage, key and clock) and changes nothing in it: installing the result is the agent's.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Protocol

from edge_agent.attest.measure import MeasurementSet
from edge_agent.errors import LineageError
from edge_agent.protocol.attestation import (
    AttestationError,
    Challenge,
    Evidence,
    LineageHead,
    sign_evidence,
    verify_challenge,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.merkle import EMPTY_ROOT
from edge_agent.trust.state import TrustState

__all__ = ["MAX_ANSWERED_NONCES", "EvidenceResponder", "EvidenceSource", "LineageTip"]

logger = logging.getLogger(__name__)

MAX_ANSWERED_NONCES = 16
"""Challenges answered and awaiting a result; older ones are forgotten (their results are
then refused as replays)."""


class LineageTip(Protocol):
    """The lineage as evidence reads it (:class:`~edge_agent.lineage.log.LineageLog`)."""

    @property
    def size(self) -> int:
        """Entries in the log.

        Raises:
            LineageError: it cannot be read.
        """
        ...

    def root_at(self, size: int) -> bytes:
        """The tree root at ``size`` entries.

        Raises:
            LineageError: it cannot be read.
        """
        ...


class EvidenceSource(Protocol):
    """What answering a challenge reads from the agent, each at the time it answers."""

    @property
    def state(self) -> TrustState: ...

    @property
    def measurement(self) -> MeasurementSet | None: ...

    @property
    def lineage(self) -> LineageTip | None: ...

    @property
    def device_key(self) -> PrivateKey: ...

    def earliest_now(self, wall: int) -> int: ...


class EvidenceResponder:
    """Verifies the hub's challenges for one device, answers them with signed evidence and
    remembers each nonce answered with the measured digest sent (:attr:`sent`)."""

    def __init__(self, source: EvidenceSource) -> None:
        self._source = source
        self._answered: OrderedDict[bytes, bytes] = OrderedDict()

    @property
    def sent(self) -> Mapping[bytes, bytes]:
        """Nonces answered and awaiting a result -> the measured digest sent with each."""
        return self._answered

    def check(self, data: bytes, wall: int) -> Challenge:
        """Verify a hub challenge for this device (verifier key, not expired at the earliest
        now at ``wall``).

        Raises:
            AttestationError: refused; nothing changes.
        """
        source = self._source
        now = source.earliest_now(wall)
        state = source.state
        try:
            return verify_challenge(data, root=state.root, device=state.device.device_id, now=now)
        except AttestationError as exc:
            logger.warning("attestation challenge refused: %s", exc)
            raise

    def answer(self, challenge: Challenge, wall: int) -> bytes:
        """Signed evidence answering ``challenge`` with the last measurement and the lineage
        head; the nonce is remembered with the measured digest sent.

        Raises:
            AttestationError: the agent has not measured (no firmware profile).
            StateError: the agent has no device key loaded.
        """
        source = self._source
        measured = source.measurement
        if measured is None:
            raise AttestationError(
                "cannot answer an attestation challenge: this agent measures nothing "
                "(no firmware profile)"
            )
        state = source.state
        bundle = state.bundle
        evidence = Evidence(
            device=state.device.device_id,
            nonce=challenge.nonce,
            time=wall,
            bundle_digest=bundle.digest if bundle is not None else None,
            measurements=measured.digests,
            lineage=self._lineage_head(),
        )
        self._answered[challenge.nonce] = measured.digest
        while len(self._answered) > MAX_ANSWERED_NONCES:
            self._answered.popitem(last=False)
        return sign_evidence(evidence, source.device_key)

    def answered(self, nonce: bytes) -> bool:
        """Whether this device already answered the challenge with ``nonce``."""
        return nonce in self._answered

    def settle(self, nonce: bytes) -> None:
        """Forget ``nonce``: its result is installed, so it is answered only once."""
        del self._answered[nonce]

    def _lineage_head(self) -> LineageHead:
        lineage = self._source.lineage
        if lineage is None:
            return LineageHead(0, EMPTY_ROOT)
        try:
            size = lineage.size
            return LineageHead(size, lineage.root_at(size))
        except LineageError as exc:
            logger.error("lineage head unavailable for evidence: %s", exc)
            return LineageHead(0, EMPTY_ROOT)

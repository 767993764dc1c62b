"""The evidence topic family's handler: challenges out, evidence in, signed results back.

Every ``attest_interval_s`` the hub challenges every registered device with a fresh nonce,
and at once (at most every ``attest_retry_s``) a device whose signed status reports
``attestation_failed`` or ``attestation_stale``; each answer (evidence, its envelope verified
by the intake) is judged by :class:`~hub.service.verifier.Verifier` under the service's
current trust root, and the signed, retained result is queued in the outbox. Without a
verifier key of the trust root loaded at start nobody is challenged and evidence is refused
(``evidence_rejected``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from edge_agent.errors import ConfigError
from edge_agent.protocol.attestation import AttestationError, Evidence
from edge_agent.protocol.roles import Role
from edge_agent.support.mqtt import Connection
from hub.core.codes import RejectCode
from hub.core.publications import Publication
from hub.hubdir.keys import load_role_keys
from hub.registry import DeviceRecord
from hub.service.context import CurrentConnection, ServiceContext, every, wall
from hub.service.verifier import IssuedChallenge, Verifier

__all__ = ["CHALLENGE_RETENTION_S", "EvidenceHandler"]

logger = logging.getLogger(__name__)

CHALLENGE_RETENTION_S = 3600
"""Seconds spent or expired challenge nonces are kept (for the replay counters' messages)."""


class EvidenceHandler:
    """Challenges devices and handles the evidence they answer with."""

    def __init__(self, context: ServiceContext) -> None:
        self._context = context
        self._verifier = self._open_verifier()
        self._last_challenge: dict[str, float] = {}

    def _open_verifier(self) -> Verifier | None:
        context = self._context
        keys = context.keys
        verifier_keys = load_role_keys(
            context.config.keys_dir or context.hub_dir.keys, Role.VERIFIER, keys.root
        )
        if not verifier_keys:
            logger.warning(
                "no verifier key of trust root version %d: devices are not challenged and "
                "bundles that require attestation deny",
                keys.root.version,
            )
            return None
        return Verifier(context.registry, verifier_keys[0], root=lambda: context.current_root)

    async def run(self, current: CurrentConnection, stop: asyncio.Event) -> None:
        """Challenge every registered device every ``attest_interval_s`` until ``stop``."""
        await every(
            self._context.config.attest_interval_s,
            lambda: self.challenge_round(current()),
            stop,
            unpublished="attestation round not published: %s",
            failed="attestation round failed: %s",
        )

    async def challenge_round(self, conn: Connection | None) -> int:
        """Challenge every registered device on ``conn`` (``None``: not connected, nobody);
        return how many were challenged."""
        context, verifier = self._context, self._verifier
        if conn is None or verifier is None:
            return 0
        devices, publications = await context.db(self._challenges, verifier)
        started = time.monotonic()
        self._last_challenge.update((d.device_id, started) for d in devices)
        await context.retained.publish(conn, publications)
        context.stats.challenges_sent += len(publications)
        return len(publications)

    def _challenges(self, verifier: Verifier) -> tuple[list[DeviceRecord], list[Publication]]:
        """Every known device and its challenge, each nonce recorded, the expired ones
        pruned first: one registry operation (on the gateway's worker)."""
        context, now = self._context, wall()
        context.registry.prune_challenges(now - CHALLENGE_RETENTION_S)
        devices = context.devices.known()
        ttl_s = context.config.challenge_ttl_s
        return devices, [verifier.challenge(d, now=now, ttl_s=ttl_s).publication for d in devices]

    async def challenge_now(self, device: DeviceRecord, conn: Connection) -> IssuedChallenge:
        """Challenge ``device`` now on ``conn`` (an operator asked: ``edge-hub attest
        challenge`` or the console), whenever it was last challenged.

        Raises:
            ConfigError: this hub has no verifier key to sign the challenge with.
            RegistryError: the nonce could not be recorded (nothing is published then).
            TransportError: the publish failed.
        """
        context, verifier = self._context, self._verifier
        if verifier is None:
            raise ConfigError(
                f"no verifier key of trust root version {context.keys.root.version}: "
                "this hub cannot challenge"
            )
        issued = await context.db(
            verifier.challenge, device, now=wall(), ttl_s=context.config.challenge_ttl_s
        )
        self._last_challenge[device.device_id] = time.monotonic()
        await context.retained.publish(conn, [issued.publication])
        context.stats.challenges_sent += 1
        return issued

    def challenge_soon(self, device: DeviceRecord) -> None:
        """Queue a challenge to ``device`` unless it was challenged less than
        ``attest_retry_s`` ago (a device cannot make the hub sign without bound)."""
        verifier, config = self._verifier, self._context.config
        started = time.monotonic()
        last = self._last_challenge.get(device.device_id)
        if verifier is None or (last is not None and started - last < config.attest_retry_s):
            return
        self._last_challenge[device.device_id] = started
        issued = verifier.challenge(device, now=wall(), ttl_s=config.challenge_ttl_s)
        self._context.outbox[issued.publication.topic] = issued.publication

    def handle(self, device: DeviceRecord, evidence: Evidence) -> None:
        """Judge ``evidence`` from ``device``, its envelope verified by the intake; queue the
        signed result."""
        context, verifier = self._context, self._verifier
        if verifier is None:
            context.rejections.reject(
                device.device_id, RejectCode.EVIDENCE_REJECTED, "this hub has no verifier key"
            )
            return
        try:
            issued = verifier.verify(
                device, evidence, now=wall(), ttl_s=context.config.attest_ttl_s
            )
        except AttestationError as exc:
            replay = exc.code == RejectCode.EVIDENCE_REPLAY
            code = RejectCode.EVIDENCE_REPLAY if replay else RejectCode.EVIDENCE_REJECTED
            context.rejections.reject(device.device_id, code, str(exc))
            return
        result = issued.result
        verdict = str(result.verdict)
        context.stats.attestations[verdict] = context.stats.attestations.get(verdict, 0) + 1
        log = logger.info if result.passed else logger.warning
        log("attestation of %s: %s (%s)", device.device_id, verdict, result.detail)
        context.outbox[issued.publication.topic] = issued.publication

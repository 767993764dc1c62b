"""The hub's attestation verifier: challenges out, evidence in, signed results back.

Round trip (docs/attestation.md):

1. :meth:`Verifier.challenge` draws a 32-byte random nonce, records it for the device with its
   expiry (``challenges`` in the registry) and signs a challenge with the verifier key;
2. the device answers on ``device/{id}/evidence``; :meth:`Verifier.verify` verifies the
   envelope (:func:`hub.core.attestation.read_evidence`), spends the nonce (one conditional
   update in the registry, so two hub processes cannot both spend it), reads what the
   registry holds for the judgement (the named bundle's expectations, the checkpoint at the
   evidence's lineage size, the registered TPM attestation key), has
   :func:`hub.core.attestation.judge_attestation` decide, then records the outcome and
   signs a result (pass or fail) valid ``ttl_s`` seconds.

What is judged, and why refused evidence gets no result, is :mod:`hub.core.attestation`.
This module does the I/O around it.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict

from edge_agent.errors import BundleError
from edge_agent.protocol import topics
from edge_agent.protocol.attestation import (
    NONCE_BYTES,
    AttestationResult,
    Challenge,
    Evidence,
    sign_challenge,
    sign_result,
)
from edge_agent.protocol.bundle import claimed_region, verify_bundle
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.root import TrustRoot
from edge_agent.protocol.topics import DeviceLeaf
from hub.core.attestation import (
    BundleView,
    bundle_view,
    judge_attestation,
    read_evidence,
    unusable_bundle,
)
from hub.core.publications import Publication
from hub.registry import AttestationRecord, DeviceRecord, Registry

__all__ = [
    "DEFAULT_CHALLENGE_TTL_S",
    "Verifier",
    "recorded_bundle_view",
]

DEFAULT_CHALLENGE_TTL_S = 60
"""Seconds a device has to answer a challenge."""
MAX_CACHED_EXPECTATIONS = 64


class Verifier:
    """Issues challenges and verifies evidence for the devices of one registry; the bundles
    evidence names are verified under ``root``, the hub's trust root."""

    def __init__(self, registry: Registry, key: PrivateKey, *, root: TrustRoot) -> None:
        self.registry = registry
        self.key = key
        self.root = root
        self._bundles: OrderedDict[bytes, BundleView] = OrderedDict()

    def challenge(
        self, device: DeviceRecord, *, now: int, ttl_s: int = DEFAULT_CHALLENGE_TTL_S
    ) -> tuple[Challenge, Publication]:
        """Record a fresh nonce for ``device``; return the challenge and its signed
        publication.

        Raises:
            RegistryError: the nonce could not be recorded (nothing is published then).
        """
        challenge = Challenge(device.device_id, os.urandom(NONCE_BYTES), now, now + ttl_s)
        self.registry.record_challenge(challenge)
        return challenge, Publication(
            topics.device_topic(device.region, device.device_id, DeviceLeaf.CHALLENGE),
            sign_challenge(challenge, key=self.key),
            retain=False,
        )

    def verify(
        self, device: DeviceRecord, payload: bytes, *, now: int, ttl_s: int
    ) -> tuple[AttestationResult, Publication]:
        """Verify evidence from ``device``; record and return the signed result to publish.

        Raises:
            AttestationError: refused before judging (bad envelope, another device, a nonce
                that is unknown, spent or expired); ``code`` is the rejection counter.
            RegistryError: the outcome could not be recorded.
        """
        evidence = read_evidence(payload, device)
        result = judge_attestation(
            evidence,
            device,
            nonce_problem=self.registry.spend_challenge(device.device_id, evidence.nonce, now),
            bundle=self._bundle(evidence.bundle_digest),
            hub_root=self.registry.checkpoint_root(device.device_id, evidence.lineage.size),
            tpm_ak=self.registry.tpm_ak(device.device_id),
            now=now,
            ttl_s=ttl_s,
        )
        data = sign_result(result, key=self.key)
        self.registry.record_attestation(_record(result, evidence, data, now))
        topic = topics.device_topic(device.region, device.device_id, DeviceLeaf.ATTESTATION)
        return result, Publication(topic, data)

    def _bundle(self, digest: bytes | None) -> BundleView | None:
        if digest is None:
            return None
        view = self._bundles.get(digest)
        if view is None:
            data = self.registry.bundle_data(digest)
            if data is None:
                return None
            view = recorded_bundle_view(data, root=self.root)
            self._bundles[digest] = view
            while len(self._bundles) > MAX_CACHED_EXPECTATIONS:
                self._bundles.popitem(last=False)
        return view


def recorded_bundle_view(data: bytes, *, root: TrustRoot) -> BundleView:
    """The view of the recorded bundle ``data``, verified again under ``root`` for the region
    it claims (expiry is not judged: the device's gate judges it), so its target and
    expectations are read as ``verify_bundle`` parsed them, once."""
    try:
        verified = verify_bundle(
            data, root=root, region=claimed_region(data), installed=None, now=None
        )
    except BundleError as exc:
        return unusable_bundle(f"the bundle cannot be used: {exc}")
    return bundle_view(verified)


def _record(
    result: AttestationResult, evidence: Evidence, data: bytes, now: int
) -> AttestationRecord:
    return AttestationRecord(
        device=result.device,
        verdict=str(result.verdict),
        detail=result.detail,
        measured=result.measured,
        nonce=result.nonce,
        issued_at=result.issued_at,
        expires_at=result.expires_at,
        bundle_digest=evidence.bundle_digest,
        lineage_size=evidence.lineage.size,
        measurements=json.dumps(
            {name: digest.hex() for name, digest in sorted(evidence.measurements.items())}
        ),
        result=data,
        verified_at=now,
    )

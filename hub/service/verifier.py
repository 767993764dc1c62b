"""The hub's attestation verifier: challenges out, evidence in, signed results back.

Round trip (docs/attestation.md):

1. :meth:`Verifier.challenge` draws a 32-byte random nonce, records it for the device with its
   expiry (``challenges`` in the registry) and signs a challenge with the verifier key;
2. the device answers on ``device/{id}/evidence``; the intake verifies the envelope once
   (:func:`hub.core.attestation_judging.read_evidence`) and :meth:`Verifier.verify` takes the
   verified evidence: it spends the nonce (one conditional update in the registry, so two
   hub processes cannot both spend it), reads what the registry holds for the judgement (the
   named bundle, verified again under the current trust root; the checkpoint at the
   evidence's lineage size; the registered TPM attestation key), has
   :func:`hub.core.attestation_judging.judge_attestation` decide, then records the outcome
   and signs a result (pass or fail) valid ``ttl_s`` seconds.

The trust root is read from a provider on every verification, not fixed when the verifier is
made: ``edge-hub root rotate`` may replace the policy keys while the service runs, and a
bundle signed by the new key must verify as soon as the service has re-read its roots.
Recorded bundles are cached by (root digest, bundle digest), so a rotation never reuses a
view judged under the old root.

What is judged, and why refused evidence gets no result, is
:mod:`hub.core.attestation_judging`. This module does the I/O around it.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.protocol import topics
from edge_agent.protocol.attestation import (
    NONCE_BYTES,
    AttestationResult,
    Challenge,
    Evidence,
    sign_challenge,
    sign_result,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.root import TrustRoot
from edge_agent.protocol.topics import DeviceLeaf
from hub.core.attestation_judging import BundleView, judge_attestation, recorded_bundle_view
from hub.core.publications import Publication
from hub.registry import AttestationRecord, DeviceRecord, Registry

__all__ = [
    "DEFAULT_CHALLENGE_TTL_S",
    "MAX_CACHED_BUNDLES",
    "IssuedChallenge",
    "IssuedResult",
    "RootProvider",
    "Verifier",
]

DEFAULT_CHALLENGE_TTL_S = 60
"""Seconds a device has to answer a challenge."""
MAX_CACHED_BUNDLES = 64
"""Recorded bundles whose verified view the verifier keeps (the oldest dropped first)."""

RootProvider = Callable[[], TrustRoot]
"""The hub's current trust root, asked on every verification."""


@dataclass(frozen=True, slots=True)
class IssuedChallenge:
    """A challenge recorded for a device, and its signed publication."""

    challenge: Challenge
    publication: Publication


@dataclass(frozen=True, slots=True)
class IssuedResult:
    """An attestation result recorded for a device, and its signed, retained publication."""

    result: AttestationResult
    publication: Publication


class Verifier:
    """Issues challenges and verifies evidence for the devices of one registry; the bundles
    evidence names are verified under the trust root ``root()`` returns then."""

    def __init__(self, registry: Registry, key: PrivateKey, *, root: RootProvider) -> None:
        self.registry = registry
        self.key = key
        self.root = root
        self._bundles: OrderedDict[tuple[bytes, bytes], BundleView] = OrderedDict()

    def challenge(
        self, device: DeviceRecord, *, now: int, ttl_s: int = DEFAULT_CHALLENGE_TTL_S
    ) -> IssuedChallenge:
        """Record a fresh nonce for ``device``; return the challenge and its signed
        publication.

        Raises:
            RegistryError: the nonce could not be recorded (nothing is published then).
        """
        challenge = Challenge(device.device_id, os.urandom(NONCE_BYTES), now, now + ttl_s)
        self.registry.record_challenge(challenge)
        return IssuedChallenge(
            challenge,
            Publication(
                topics.device_topic(device.region, device.device_id, DeviceLeaf.CHALLENGE),
                sign_challenge(challenge, key=self.key),
                retain=False,
            ),
        )

    def verify(
        self, device: DeviceRecord, evidence: Evidence, *, now: int, ttl_s: int
    ) -> IssuedResult:
        """Judge ``evidence`` from ``device`` (its envelope verified:
        :func:`~hub.core.attestation_judging.read_evidence`); record and return the signed
        result to publish.

        Raises:
            AttestationError: refused before judging (a nonce that is unknown, spent or
                expired); ``code`` is the rejection counter.
            RegistryError: the outcome could not be recorded.
        """
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
        return IssuedResult(result, Publication(topic, data))

    def _bundle(self, digest: bytes | None) -> BundleView | None:
        """The view of the recorded bundle ``digest`` under the current root (``None``: the
        hub recorded no such bundle)."""
        if digest is None:
            return None
        root = self.root()
        key = (root.digest, digest)
        view = self._bundles.get(key)
        if view is None:
            data = self.registry.bundle_data(digest)
            if data is None:
                return None
            view = recorded_bundle_view(data, root=root)
            self._bundles[key] = view
            while len(self._bundles) > MAX_CACHED_BUNDLES:
                self._bundles.popitem(last=False)
        return view


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

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
This module does the I/O around it, and builds and re-signs bundles with expectations for
``edge-hub attest expect``.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping

from edge_agent.errors import BundleError, ConfigError
from edge_agent.policy.bundle import CompiledBundle, compile_bundle_policy
from edge_agent.protocol import topics
from edge_agent.protocol.attestation import (
    NONCE_BYTES,
    AttestationResult,
    Challenge,
    Evidence,
    sign_challenge,
    sign_result,
)
from edge_agent.protocol.bundle import (
    bundle_payload,
    claimed_region,
    sign_bundle,
    verify_bundle,
)
from edge_agent.protocol.expectations import (
    Expectations,
    ExpectationsError,
    expectations_value,
    parse_expectations,
)
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
    "expectations_from_json",
    "expectations_to_json",
    "recorded_bundle_view",
    "with_expectations",
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
        verified = verify_bundle(data, root=root, region=claimed_region(data))
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


def expectations_to_json(expectations: Expectations) -> dict[str, object]:
    """Expectations as JSON (hex digests): what ``edge-hub attest expect`` writes."""

    def allowed(values: Mapping[str, frozenset[bytes]]) -> dict[str, list[str]]:
        return {name: sorted(d.hex() for d in values[name]) for name in sorted(values)}

    profiles: dict[str, object] = {}
    for name, entry in sorted(expectations.profiles.items()):
        body: dict[str, object] = {"measurements": allowed(entry.measurements)}
        if entry.devices:
            body["devices"] = {d: allowed(v) for d, v in sorted(entry.devices.items())}
        profiles[name] = body
    return {"profiles": profiles}


def expectations_from_json(value: object) -> Expectations:
    """Parse JSON expectations (hex digests) as a bundle would carry them.

    Raises:
        ExpectationsError: not the expectations shape, or a digest is not 64 hex digits.
    """

    def convert(node: object, depth: int) -> object:
        if depth > 8:
            raise ExpectationsError("the expectations nest too deeply")
        if isinstance(node, dict):
            return {k: convert(v, depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [_digest(item) for item in node]
        return node

    converted = convert(value, 0)
    if not isinstance(converted, dict):
        raise ExpectationsError("the expectations must be a JSON object")
    return parse_expectations(converted)


def _digest(text: object) -> bytes:
    if not isinstance(text, str) or len(text) != 64:
        raise ExpectationsError(f"{text!r} is not a SHA-256 digest (64 hex digits)")
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise ExpectationsError(f"{text!r} is not a SHA-256 digest (64 hex digits)") from exc


def with_expectations(
    bundle: CompiledBundle,
    policy: Mapping[str, object],
    expectations: Expectations,
    *,
    root: TrustRoot,
    signers: list[PrivateKey],
) -> tuple[bytes, CompiledBundle]:
    """``bundle`` (built and verified from ``policy``) signed again carrying
    ``expectations``, and verified again as a device of its target would.

    Raises:
        ConfigError: the expectations name a profile the bundle does not target.
        BundleError: the signed bundle would be refused.
    """
    target = bundle.target
    foreign = sorted(set(expectations.profiles) - set(target.profiles)) if target.profiles else []
    if foreign:
        raise ConfigError(
            f"the expectations are for profile(s) {', '.join(foreign)}, but the bundle targets "
            f"{', '.join(target.profiles)}"
        )
    payload = bundle_payload(
        version=bundle.version,
        issued_at=bundle.issued_at,
        expires_at=bundle.expires_at,
        target=target,
        policy=policy,
        attestation=expectations_value(expectations),
        max_offline=bundle.max_offline,
    )
    data = sign_bundle(payload, region=target.region, signers=signers)
    return data, compile_bundle_policy(verify_bundle(data, root=root, region=target.region))

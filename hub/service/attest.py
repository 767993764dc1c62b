"""The hub's attestation verifier: challenges out, evidence in, signed results back.

Round trip (docs/attestation.md):

1. :meth:`Verifier.challenge` draws a 32-byte random nonce, records it for the device with its
   expiry (``challenges`` in the registry) and signs a challenge with the verifier key;
2. the device answers on ``device/{id}/evidence``; :meth:`Verifier.verify`:
   a. verifies the envelope against the device's registered key and the payload's device;
   b. spends the nonce: it must have been issued to *this* device, be unexpired and unused
      (one conditional update, so two hub processes cannot both spend it);
   c. judges the measurements against the expectations of the bundle the evidence names,
      which must be one this hub recorded and that targets the device, for the device's
      registered profile (never one the device claims);
   d. checks the lineage head against the hub's stored checkpoint at that size, if any;
   e. checks the TPM quote against the device's registered attestation key, if any
      (:func:`hub.core.tpm_quote.tpm_problem`: a quote is required then, and PCR values count
      only when such a quote covers them);
   f. records the outcome and signs a result (pass or fail) valid ``ttl_s`` seconds.

Evidence refused at (a) or (b) gets no result: a replayed, stale or misaddressed piece of
evidence is only counted. A fail verdict is a result: the device must learn it is failed.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from edge_agent.errors import ConfigError, EnvelopeError
from edge_agent.policy.bundle import CompiledBundle, compile_bundle_policy
from edge_agent.protocol import cose, dcbor, topics
from edge_agent.protocol.attestation import (
    NONCE_BYTES,
    AttestationError,
    AttestationResult,
    Challenge,
    Evidence,
    Verdict,
    sign_challenge,
    sign_result,
    verify_evidence,
)
from edge_agent.protocol.bundle import (
    BundleTarget,
    DeviceIdentity,
    bundle_payload,
    sign_bundle,
    verify_bundle,
)
from edge_agent.protocol.expectations import (
    Expectations,
    ExpectationsError,
    compare,
    expectations_value,
    measured_digest,
    parse_expectations,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.root import TrustRoot
from edge_agent.protocol.topics import DeviceLeaf
from hub.core.tpm_quote import tpm_problem
from hub.registry.sqlite import AttestationRecord, DeviceRecord, Registry
from hub.service.publish import Publication

__all__ = [
    "DEFAULT_CHALLENGE_TTL_S",
    "BundleView",
    "Verifier",
    "bundle_view",
    "expectations_from_json",
    "expectations_to_json",
    "judge_evidence",
    "with_expectations",
]

DEFAULT_CHALLENGE_TTL_S = 60
"""Seconds a device has to answer a challenge."""
MAX_CACHED_EXPECTATIONS = 64
MAX_DETAIL_PROBLEMS = 4


@dataclass(frozen=True, slots=True)
class BundleView:
    """What the verifier needs of a recorded bundle: its target and its expectations
    (``None``: none required), or why it cannot be used (``problem``)."""

    target: BundleTarget
    expectations: Expectations | None
    problem: str | None


class Verifier:
    """Issues challenges and verifies evidence for the devices of one registry."""

    def __init__(self, registry: Registry, key: PrivateKey) -> None:
        self.registry = registry
        self.key = key
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
        try:
            evidence = verify_evidence(payload, device=device.device_id, key=device.public_key)
        except AttestationError as exc:
            raise AttestationError(str(exc), code="evidence_rejected") from exc
        spent = self.registry.spend_challenge(device.device_id, evidence.nonce, now)
        if spent is not None:
            raise AttestationError(f"evidence refused: {spent}", code="evidence_replay")
        verdict, detail = judge_evidence(
            evidence,
            device,
            self._bundle(evidence.bundle_digest, device),
            self.registry.checkpoint_root(device.device_id, evidence.lineage.size),
            tpm_ak=self.registry.tpm_ak(device.device_id),
        )
        result = AttestationResult(
            device=device.device_id,
            nonce=evidence.nonce,
            verdict=verdict,
            measured=measured_digest(evidence.measurements),
            issued_at=now,
            expires_at=now + ttl_s,
            detail=detail,
        )
        data = sign_result(result, key=self.key)
        self.registry.record_attestation(_record(result, evidence, data, now))
        topic = topics.device_topic(device.region, device.device_id, DeviceLeaf.ATTESTATION)
        return result, Publication(topic, data)

    def _bundle(self, digest: bytes | None, device: DeviceRecord) -> BundleView | None:
        if digest is None:
            return None
        view = self._bundles.get(digest)
        if view is None:
            data = self.registry.bundle_data(digest)
            if data is None:
                return None
            view = bundle_view(data)
            self._bundles[digest] = view
            while len(self._bundles) > MAX_CACHED_EXPECTATIONS:
                self._bundles.popitem(last=False)
        return view


def judge_evidence(
    evidence: Evidence,
    device: DeviceRecord,
    bundle: BundleView | None,
    hub_root: bytes | None,
    *,
    tpm_ak: bytes | None = None,
) -> tuple[Verdict, str]:
    """The verdict on verified, fresh ``evidence``: the named bundle must be known to the
    hub and target ``device``, its expectations for the device's registered profile must
    hold, the lineage head must agree with the hub's copy at that size (``hub_root``), and
    its TPM part must verify under the device's registered attestation key ``tpm_ak`` (DER;
    ``None``: none registered, so the evidence may carry neither a quote nor PCR values)."""
    if bundle is None:
        return Verdict.FAIL, "the evidence names no bundle this hub published"
    identity = DeviceIdentity(device.device_id, device.region, device.groups, device.profile)
    why = bundle.target.mismatch(identity)
    if why is not None:
        return Verdict.FAIL, f"the bundle the evidence names is not for this device: {why}"
    if bundle.problem is not None:
        return Verdict.FAIL, bundle.problem
    problems: list[str] = []
    quote_problem = tpm_problem(evidence, tpm_ak)
    if quote_problem is not None:
        problems.append(quote_problem)
    if bundle.expectations is not None:
        expected = bundle.expectations.for_device(device.profile, device.device_id)
        if expected is None:
            problems.append(f"the bundle has no expectations for profile {device.profile!r}")
        else:
            problems.extend(compare(expected, evidence.measurements))
    if hub_root is not None and hub_root != evidence.lineage.root:
        problems.append(
            f"the lineage root at size {evidence.lineage.size} differs from the hub's copy"
        )
    if problems:
        more = len(problems) - MAX_DETAIL_PROBLEMS
        return Verdict.FAIL, "; ".join(problems[:MAX_DETAIL_PROBLEMS]) + (
            f"; and {more} more" if more > 0 else ""
        )
    quoted = ", TPM quote verified" if evidence.tpm is not None else ""
    return Verdict.PASS, f"{len(evidence.measurements)} measurement(s) as expected{quoted}"


def bundle_view(data: bytes) -> BundleView:
    """Target and expectations of a bundle this hub recorded (verified when pushed)."""
    try:
        payload = dcbor.as_map(
            dcbor.decode(
                cose.peek_payload(data, max_bytes=MAX_BUNDLE_BYTES), max_bytes=MAX_BUNDLE_BYTES
            ),
            "bundle",
        )
        target = dcbor.as_map(payload["target"], "bundle target")
        view_target = BundleTarget(
            region=str(target["region"]),
            groups=tuple(str(g) for g in dcbor.as_list(target["groups"], "groups")),
            profiles=tuple(str(p) for p in dcbor.as_list(target["profiles"], "profiles")),
            devices=tuple(str(d) for d in dcbor.as_list(target["devices"], "devices")),
        )
        attestation = dcbor.as_map(payload["attestation"], "bundle attestation")
    except (EnvelopeError, KeyError) as exc:
        return BundleView(BundleTarget(region="_"), None, f"the bundle cannot be read: {exc}")
    if not attestation:
        return BundleView(view_target, None, None)
    try:
        return BundleView(view_target, parse_expectations(attestation), None)
    except ExpectationsError as exc:
        return BundleView(view_target, None, f"the bundle's expectations are malformed: {exc}")


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
    verified = verify_bundle(data, root=root, installed=None, now=bundle.issued_at)
    return data, compile_bundle_policy(verified)

"""Judging attestation evidence at the hub: values in, a verdict with its reasons out.

The verifier (:mod:`hub.service.verifier`) does the I/O of a round trip: it issues
challenges, spends nonces in the registry, reads what the registry holds about the device
and records and publishes the signed result. This module decides, from values only:

1. :func:`read_evidence`: the evidence envelope verifies under the device's registered key
   and names that device (else it is refused, ``evidence_rejected``); the intake
   (:mod:`hub.service.intake`) calls it once per message and hands the verified evidence on;
2. :func:`recorded_bundle_view`: the bundle the evidence names, as the hub recorded it,
   verified again under the hub's current trust root (or :func:`unusable_bundle` when it no
   longer verifies, as when a rotation removed its policy key);
3. :func:`judge_attestation`: the nonce was spent by this evidence (the registry's answer,
   ``nonce_problem``: an unknown, replayed or expired nonce is refused, ``evidence_replay``),
   then the verdict: the named bundle is one the hub recorded, still verifies and targets
   the device, its expectations for the device's registered profile hold, the lineage head
   agrees with the hub's checkpoint at that size, and the TPM part verifies under the
   device's registered attestation key (:func:`hub.core.tpm_quote.tpm_problem`).

A refusal is an :class:`~edge_agent.protocol.attestation.AttestationError` and gets no
result: a replayed, stale or misaddressed piece of evidence is only counted. A fail verdict
is a result, as a pass is: the device must learn it is failed.

This module reads no clock, registry or network and signs nothing: ``now`` is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import BundleError
from edge_agent.protocol.attestation import (
    AttestationError,
    AttestationResult,
    Evidence,
    Verdict,
    verify_evidence,
)
from edge_agent.protocol.bundle import (
    BundleTarget,
    DeviceIdentity,
    VerifiedBundle,
    claimed_region,
    verify_bundle,
)
from edge_agent.protocol.expectations import Expectations, compare, measured_digest
from edge_agent.protocol.root import TrustRoot
from hub.core.codes import RejectCode
from hub.core.tpm_quote import tpm_problem
from hub.registry.records import DeviceRecord

__all__ = [
    "MAX_DETAIL_PROBLEMS",
    "BundleView",
    "bundle_view",
    "judge_attestation",
    "read_evidence",
    "recorded_bundle_view",
    "unusable_bundle",
]

MAX_DETAIL_PROBLEMS = 4
"""Problems named in a fail verdict's detail; more are counted (``and N more``)."""


@dataclass(frozen=True, slots=True)
class BundleView:
    """What the verifier needs of a recorded bundle: its target and its expectations
    (``None``: none required), or why it cannot be used (``problem``)."""

    target: BundleTarget
    expectations: Expectations | None
    problem: str | None


def read_evidence(payload: bytes, device: DeviceRecord) -> Evidence:
    """The evidence in ``payload``, signed by ``device``'s registered key and naming it.

    Raises:
        AttestationError: ``code`` ``evidence_rejected``: not evidence, or not ``device``'s.
    """
    try:
        return verify_evidence(payload, device=device.device_id, key=device.public_key)
    except AttestationError as exc:
        raise AttestationError(str(exc), code=RejectCode.EVIDENCE_REJECTED) from exc


def judge_attestation(
    evidence: Evidence,
    device: DeviceRecord,
    *,
    nonce_problem: str | None,
    bundle: BundleView | None,
    hub_root: bytes | None,
    tpm_ak: bytes | None,
    now: int,
    ttl_s: int,
) -> AttestationResult:
    """The result for verified ``evidence`` from ``device``, issued ``now`` and valid
    ``ttl_s`` seconds.

    ``nonce_problem`` is why the evidence's nonce could not be spent (never issued to the
    device, used already, expired), ``None`` when this evidence spent it. ``bundle`` is the
    view of the bundle the evidence names (``None``: it names none the hub recorded),
    ``hub_root`` the root of the hub's checkpoint of the device's log at the evidence's
    lineage size (``None``: none held), ``tpm_ak`` the device's registered attestation key
    (DER; ``None``: none registered, so the evidence may carry neither a quote nor PCR
    values).

    Raises:
        AttestationError: ``code`` ``evidence_replay``: the nonce was not spent, no result.
    """
    if nonce_problem is not None:
        raise AttestationError(
            f"evidence refused: {nonce_problem}", code=RejectCode.EVIDENCE_REPLAY
        )
    verdict, detail = _verdict(evidence, device, bundle, hub_root, tpm_ak)
    return AttestationResult(
        device=device.device_id,
        nonce=evidence.nonce,
        verdict=verdict,
        measured=measured_digest(evidence.measurements),
        issued_at=now,
        expires_at=now + ttl_s,
        detail=detail,
    )


def _verdict(
    evidence: Evidence,
    device: DeviceRecord,
    bundle: BundleView | None,
    hub_root: bytes | None,
    tpm_ak: bytes | None,
) -> tuple[Verdict, str]:
    """Steps of :func:`judge_attestation` after the nonce: bundle, TPM, expectations, lineage."""
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


def bundle_view(bundle: VerifiedBundle[object]) -> BundleView:
    """Target and expectations of a recorded bundle, as ``verify_bundle`` parsed them."""
    return BundleView(bundle.target, bundle.attestation, None)


def unusable_bundle(problem: str) -> BundleView:
    """The view of a recorded bundle that does not verify: it targets no device (region
    ``_``) and requires nothing, so evidence naming it fails."""
    return BundleView(BundleTarget(region="_"), None, problem)


def recorded_bundle_view(data: bytes, *, root: TrustRoot) -> BundleView:
    """The view of the recorded bundle ``data``, verified again under ``root`` for the region
    it claims (expiry is not judged: the device's gate judges it), so its target and
    expectations are read as ``verify_bundle`` parsed them, once."""
    try:
        verified = verify_bundle(data, root=root, region=claimed_region(data))
    except BundleError as exc:
        return unusable_bundle(f"the bundle cannot be used: {exc}")
    return bundle_view(verified)

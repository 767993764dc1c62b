"""Compiling a verified bundle's policy: the last, separate step of accepting a bundle.

``edge_agent.protocol.bundle.verify_bundle`` checks size, signatures, schema and signer
authorisation and returns the policy as verified CBOR; it does not import the compiler, so
the shared core stays below the policy engine. :func:`compile_bundle_policy` turns that
payload into the index the gate decides with, and refuses a bundle whose policy does not
compile, so a device never installs a bundle it could not decide with.
:func:`compile_for_device` is the whole of what a device does with offered bytes: verify,
check the target, check the version and expiry, compile (the order of
``edge_agent.protocol.bundle``), under one pause of the cyclic collector (a 10,000-rule
bundle allocates hundreds of thousands of objects; pausing once instead of per step saves a
collection over all of them).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import TypeAlias

from edge_agent.errors import BundleError, PolicyError
from edge_agent.policy.compiler import CompiledPolicy, compile_policy
from edge_agent.protocol.allocation import paused_gc
from edge_agent.protocol.bundle import (
    DeviceIdentity,
    InstalledRef,
    PolicyPayload,
    VerifiedBundle,
    check_admission,
    check_targeting,
    verify_bundle,
)
from edge_agent.protocol.root import TrustRoot

__all__ = ["CompiledBundle", "compile_bundle_policy", "compile_for_device"]

CompiledBundle: TypeAlias = VerifiedBundle[CompiledPolicy]
"""A verified bundle whose policy is compiled: what a device installs and decides with."""


def compile_bundle_policy(bundle: VerifiedBundle[PolicyPayload]) -> CompiledBundle:
    """``bundle`` with its verified policy payload compiled.

    Raises:
        BundleError: ``bundle_policy``, the policy does not compile (with the compiler's
            reason).
    """
    try:
        policy = compile_policy(bundle.policy)
    except PolicyError as exc:
        raise BundleError(f"bundle policy is invalid: {exc}", code="bundle_policy") from exc
    return bundle.with_policy(policy)


def compile_for_device(
    data: bytes,
    *,
    root: TrustRoot,
    device: DeviceIdentity,
    installed: InstalledRef | None,
    now: int | None,
) -> CompiledBundle:
    """Verify ``data`` under ``root`` for ``device``'s region (``verify_bundle``: signatures
    first), check that it targets ``device`` (``check_targeting``), that it is newer than
    ``installed`` and not expired at ``now`` (``check_admission``, which says how ``None``
    is read), and compile its policy (:func:`compile_bundle_policy`), in that order: the
    agent's one entry point for bundle bytes, installing and re-loading alike.

    Raises:
        BundleError: from the step that refused it (its ``code`` names the check).
    """
    with paused_gc():
        verified = verify_bundle(data, root=root, region=device.region)
        check_targeting(verified, device)
        verified = check_admission(verified, installed, now)
        compiled = compile_bundle_policy(verified)
        # The decoded payload is garbage now: free it before the collector resumes, or the
        # collector's first pass scans every object of it.
        del verified
    return compiled

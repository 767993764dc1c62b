"""Compiling a verified bundle's policy: the last, separate step of accepting a bundle.

``edge_agent.protocol.bundle.verify_bundle`` checks signatures, schema, version and expiry
and returns the policy as verified CBOR; it does not import the compiler, so the shared core
stays below the policy engine. :func:`compile_bundle_policy` turns that payload into the
index the gate decides with, and refuses a bundle whose policy does not compile, so a device
never installs a bundle it could not decide with.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import TypeAlias

from edge_agent.errors import BundleError, PolicyError
from edge_agent.policy.compiler import CompiledPolicy, compile_policy
from edge_agent.protocol.bundle import PolicyPayload, VerifiedBundle

__all__ = ["CompiledBundle", "compile_bundle_policy"]

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

"""An operator's bundle at the hub: verified as its devices would, and re-signed with
expectations.

:func:`verify_operator_bundle` is the one check every command that accepts or emits a
bundle runs (``edge-hub bundle build``, ``bundle push``, ``attest expect``'s re-signing): the
signatures are verified for the region the bundle claims
(:func:`~edge_agent.protocol.bundle.claimed_region`, which they then bind), then the payload,
its expiry at ``now``, and the policy compiles. It judges no particular device: targeting is
the device's own check. :func:`with_expectations` signs a built bundle again carrying
attestation expectations.

Everything here is a function of values: no file, registry or clock is touched; ``now`` is a
parameter.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge_agent.errors import ConfigError
from edge_agent.policy.bundle import CompiledBundle, compile_bundle_policy
from edge_agent.protocol.bundle import (
    bundle_payload,
    check_admission,
    claimed_region,
    sign_bundle,
    verify_bundle,
)
from edge_agent.protocol.expectations import Expectations, expectations_value
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.root import TrustRoot
from edge_agent.trust.clock import check_not_ahead

__all__ = ["verify_operator_bundle", "with_expectations"]


def verify_operator_bundle(
    data: bytes, *, root: TrustRoot, now: int, region: str | None = None
) -> CompiledBundle:
    """Verify ``data`` under ``root`` as a device of its target would at ``now``, and
    compile its policy.

    1. the region to verify for: ``region`` when the caller signed the bundle for it (the
       payload is then not decoded twice), else the region the bundle claims, read
       unverified only to choose the signatures' scope; either way step 2 refuses a bundle
       whose signed target names another region;
    2. :func:`~edge_agent.protocol.bundle.verify_bundle` for that region (signatures,
       threshold, authorisation, payload, target region);
    3. :func:`~edge_agent.protocol.bundle.check_admission` with no installed bundle (expiry),
       and issued no further ahead of ``now`` than a device's trusted time allows
       (:func:`~edge_agent.trust.clock.check_not_ahead`);
    4. the policy compiles.

    Raises:
        BundleError: a device would refuse it (``code`` names the check; ``bundle_future``
            with the device's own sentence).
    """
    verified = verify_bundle(data, root=root, region=region or claimed_region(data))
    bundle = compile_bundle_policy(check_admission(verified, None, now))
    check_not_ahead(bundle, now)
    return bundle


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
    return data, verify_operator_bundle(data, root=root, now=bundle.issued_at, region=target.region)

"""Signing roles, and what binds a signed object to one role and scope.

Each role has its own COSE content type and its own ``external_aad``
(``["edgegov/v1", role, scope]`` in deterministic CBOR), so a signature made for one role or
scope never verifies as another: a revocation can never pass as a bundle, nor a bundle for
region ``eu-1`` as one for ``us-2``.
"""

from __future__ import annotations

from enum import StrEnum

from edge_agent.protocol import dcbor

__all__ = ["PROTOCOL_TAG", "Role", "content_type", "external_aad"]

PROTOCOL_TAG = "edgegov/v1"


class Role(StrEnum):
    """Who signs an object. The trust root lists keys and a threshold for each."""

    ROOT = "root"
    POLICY = "policy"
    FRESHNESS = "freshness"
    VERIFIER = "verifier"
    REVOKE = "revoke"
    DEVICE = "device"


_CONTENT_TYPES = {
    Role.ROOT: "application/edgegov-root+cbor",
    Role.POLICY: "application/edgegov-bundle+cbor",
    Role.FRESHNESS: "application/edgegov-freshness+cbor",
    Role.VERIFIER: "application/edgegov-attestation-result+cbor",
    Role.REVOKE: "application/edgegov-revocation+cbor",
    Role.DEVICE: "application/edgegov-device+cbor",
}

HUB_ROLES = (Role.ROOT, Role.POLICY, Role.FRESHNESS, Role.VERIFIER, Role.REVOKE)
"""Roles whose keys the trust root lists (device keys are registered at the hub instead)."""


def content_type(role: Role) -> str:
    """The COSE content type (header label 3) that objects signed by ``role`` carry."""
    return _CONTENT_TYPES[role]


def external_aad(role: Role, scope: str) -> bytes:
    """The COSE ``external_aad`` binding a signature to ``role`` and ``scope``.

    ``scope`` is ``""`` for the trust root, the region for bundles, freshness tokens and
    revocations, and the device id for device-signed objects.
    """
    return dcbor.encode([PROTOCOL_TAG, str(role), scope])

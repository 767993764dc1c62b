"""Which firmware profile the agent measures with, and opening it at start.

The ``[attestation]`` section of ``agent.toml`` (all optional)::

    [attestation]
    profile_file = "/etc/edge-agent/firmware_profiles/generic-x86_64.toml"
    profile_dir = "/etc/edge-agent/firmware_profiles"   # default; NAME.toml is looked up
    measure_root = "/"                                   # measured paths are read under it

Without ``profile_file``, the agent looks for ``profile_dir/<its enrolled profile>.toml``.
When there is none, it runs without measuring: a bundle that carries attestation
expectations then denies everything (``attestation_failed``), so a missing profile can never
weaken what a bundle requires. A profile that exists but is invalid, describes another
profile or architecture, or names a file that cannot be measured stops the agent.

A profile with a ``[tpm]`` table is measured by :class:`~edge_agent.attest.tpm.TpmProvider`
(PCRs too, and quotes for the hub); at start the agent then also needs tpm2-pytss, the TPM
and its enrolled attestation key, and stops with a message saying which is missing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edge_agent.attest.measure import FileFactProvider, MeasurementProvider, MeasurementSet
from edge_agent.attest.profile import load_profile
from edge_agent.attest.tpm import TpmProvider
from edge_agent.errors import ConfigError
from edge_agent.protocol.attestation import TpmQuote
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.firmware_profile import Profile
from edge_agent.protocol.settings import Section

__all__ = [
    "DEFAULT_PROFILE_DIR",
    "AttestationConfig",
    "Attestor",
    "open_attestor",
    "provider_for",
    "resolve",
]

logger = logging.getLogger(__name__)

DEFAULT_PROFILE_DIR = "/etc/edge-agent/firmware_profiles"
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64"}


@dataclass(frozen=True, slots=True)
class AttestationConfig(Section):
    """Where the firmware profile is and what root measured paths are read under."""

    profile_file: str | None = None
    profile_dir: str = DEFAULT_PROFILE_DIR
    measure_root: str = "/"


@dataclass(slots=True)
class Attestor:
    """A validated profile, its measurement provider and the measurement taken at start."""

    provider: MeasurementProvider
    first: MeasurementSet

    @property
    def profile(self) -> Profile:
        return self.provider.profile

    @property
    def interval_s(self) -> int:
        return self.profile.reattest_interval_s

    def measure(self) -> MeasurementSet:
        """Measure now (file I/O: call it off the event loop)."""
        return self.provider.measure()

    def quote(self, device: str, nonce: bytes) -> TpmQuote | None:
        """A TPM quote answering ``nonce`` when the profile has a ``[tpm]`` table, else
        ``None`` (TPM I/O: call it off the event loop).

        Raises:
            AttestationError: the TPM cannot quote now.
        """
        if isinstance(self.provider, TpmProvider):
            return self.provider.quote(device, nonce)
        return None


def provider_for(profile: Profile, root: Path) -> MeasurementProvider:
    """The provider that measures ``profile``: the TPM one when it has a ``[tpm]`` table,
    else the file/fact default."""
    if profile.tpm is not None:
        return TpmProvider(profile, root)
    return FileFactProvider(profile, root)


def resolve(config: AttestationConfig, device: DeviceIdentity) -> Path | None:
    """The profile file to use: the configured one, else the enrolled profile's file in
    ``profile_dir`` if it exists, else ``None`` (no measuring)."""
    if config.profile_file is not None:
        return Path(config.profile_file)
    candidate = Path(config.profile_dir) / f"{device.profile}.toml"
    return candidate if candidate.is_file() else None


def open_attestor(
    config: AttestationConfig, device: DeviceIdentity, *, machine: str | None = None
) -> Attestor | None:
    """Load, check and measure the profile once; ``None`` when no profile is configured or
    found. ``machine`` overrides ``uname -m`` (tests).

    Raises:
        ConfigError: the profile is unreadable or invalid, is for another profile name or
            architecture, or an item it measures cannot be measured; or it has a ``[tpm]``
            table and tpm2-pytss, the TPM or the attestation key is missing.
    """
    path = resolve(config, device)
    if path is None:
        logger.warning(
            "no firmware profile %s.toml in %s: not measuring; bundles that require "
            "attestation will deny",
            device.profile,
            config.profile_dir,
        )
        return None
    profile = load_profile(path)
    if profile.name != device.profile:
        raise ConfigError(
            f"the firmware profile {path} describes {profile.name!r}, but this device is "
            f"enrolled as {device.profile!r}"
        )
    actual = machine or os.uname().machine
    if _MACHINE_ALIASES.get(actual, actual) != profile.architecture:
        raise ConfigError(
            f"the firmware profile {profile.name} is for {profile.architecture}, but this "
            f"machine is {actual}"
        )
    provider = provider_for(profile, Path(config.measure_root))
    if isinstance(provider, TpmProvider):
        provider.check()
    first = provider.measure()
    if first.errors:
        raise ConfigError(
            f"the firmware profile {profile.name} cannot be measured here: "
            + "; ".join(first.errors)
        )
    logger.info(
        "firmware profile %s: %d measurement(s), re-measured every %d s",
        profile.name,
        len(first.items),
        profile.reattest_interval_s,
    )
    return Attestor(provider, first)

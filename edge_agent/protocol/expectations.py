"""Attestation expectations: what a bundle says a device's measurements must be.

A bundle's ``attestation`` map (DESIGN.md section 6) is empty (nothing required) or::

    {"profiles": {
        "generic-x86_64": {                                ; a firmware profile name
            "measurements": {"os-release": [+ bstr .size 32], ...},   ; class-wide values
            "devices": {"gw-001": {"machine-id": [+ bstr .size 32]}}  ; per-device values
        }, ...}}

Each measurement name maps to the SHA-256 digests it may have (more than one during a rolling
upgrade). For a device, the expected set is its profile's ``measurements`` overlaid with its
own ``devices`` entry. A measurement the expectations do not name is reported but not
compared; a named one that is missing or has another digest fails. A device whose profile the
expectations do not name fails: an attestation requirement is never silently skipped.

Pure: no I/O, no clock. The agent and the hub's verifier compare with the same functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import dcbor
from edge_agent.protocol._schema import check_name

__all__ = [
    "DIGEST_BYTES",
    "MAX_DEVICES",
    "MAX_MEASUREMENTS",
    "MAX_VALUES",
    "Expectations",
    "ExpectationsError",
    "ProfileExpectations",
    "compare",
    "expectations_value",
    "measured_digest",
    "parse_expectations",
]

DIGEST_BYTES = 32
MAX_MEASUREMENTS = 64
"""Measurements one profile may name (and one piece of evidence may carry)."""
MAX_VALUES = 16
"""Accepted digests per measurement: enough for a staged rollout, small enough to read."""
MAX_DEVICES = 10_000
MAX_PROFILES = 64


class ExpectationsError(EnvelopeError):
    """A bundle's attestation expectations are malformed."""

    code = "attestation_expectations"


Allowed = Mapping[str, frozenset[bytes]]


@dataclass(frozen=True, slots=True)
class ProfileExpectations:
    """The expected measurements of one device class, and per-device overrides."""

    measurements: Allowed
    devices: Mapping[str, Allowed]

    def for_device(self, device_id: str) -> Allowed:
        """The expected digests for ``device_id``: class values overlaid with its own."""
        own = self.devices.get(device_id)
        if not own:
            return self.measurements
        return {**self.measurements, **own}


@dataclass(frozen=True, slots=True)
class Expectations:
    """Parsed expectations, keyed by profile name."""

    profiles: Mapping[str, ProfileExpectations]

    def for_device(self, profile: str, device_id: str) -> Allowed | None:
        """What ``device_id`` of ``profile`` must measure; ``None`` when the profile is not
        named (which fails attestation)."""
        entry = self.profiles.get(profile)
        return None if entry is None else entry.for_device(device_id)


def parse_expectations(value: Mapping[object, object]) -> Expectations:
    """Parse a bundle's ``attestation`` map (non-empty) into :class:`Expectations`.

    Raises:
        ExpectationsError: unknown or missing fields, bad names, digests that are not 32
            bytes, or more entries than the limits above.
    """
    _keys(value, "attestation", required={"profiles"})
    profiles = value["profiles"]
    if not isinstance(profiles, dict) or not profiles or len(profiles) > MAX_PROFILES:
        raise ExpectationsError(
            f"attestation.profiles must map 1 to {MAX_PROFILES} profile names to expectations"
        )
    parsed = {}
    for name, entry in profiles.items():
        profile = _name(name, "attestation.profiles key")
        parsed[profile] = _profile(entry, f"attestation.profiles.{profile}")
    return Expectations(parsed)


def _profile(value: object, where: str) -> ProfileExpectations:
    if not isinstance(value, dict):
        raise ExpectationsError(f"{where} must be a map")
    _keys(value, where, required={"measurements"}, optional={"devices"})
    devices = value.get("devices", {})
    if not isinstance(devices, dict) or len(devices) > MAX_DEVICES:
        raise ExpectationsError(f"{where}.devices must map at most {MAX_DEVICES} device ids")
    return ProfileExpectations(
        measurements=_allowed(value["measurements"], f"{where}.measurements"),
        devices={
            _name(d, f"{where}.devices key"): _allowed(v, f"{where}.devices.{d}")
            for d, v in devices.items()
        },
    )


def _allowed(value: object, where: str) -> Allowed:
    if not isinstance(value, dict) or len(value) > MAX_MEASUREMENTS:
        raise ExpectationsError(f"{where} must map at most {MAX_MEASUREMENTS} measurement names")
    allowed = {}
    for name, digests in value.items():
        key = _name(name, f"{where} key")
        if (
            not isinstance(digests, list)
            or not 1 <= len(digests) <= MAX_VALUES
            or not all(isinstance(d, bytes) and len(d) == DIGEST_BYTES for d in digests)
        ):
            raise ExpectationsError(
                f"{where}.{key} must list 1 to {MAX_VALUES} SHA-256 digests ({DIGEST_BYTES} bytes)"
            )
        allowed[key] = frozenset(digests)
    return allowed


def _keys(
    value: Mapping[object, object],
    where: str,
    *,
    required: set[str],
    optional: frozenset[str] | set[str] = frozenset(),
) -> None:
    keys = set(value)
    missing = required - keys
    if missing:
        raise ExpectationsError(f"{where} lacks field(s) {', '.join(sorted(missing))}")
    unknown = keys - required - set(optional)
    if unknown:
        raise ExpectationsError(
            f"{where} has unknown field(s) {', '.join(sorted(repr(k) for k in unknown))}"
        )


def _name(value: object, where: str) -> str:
    return check_name(value, where, ExpectationsError)


def compare(expected: Allowed, measured: Mapping[str, bytes]) -> tuple[str, ...]:
    """Every way ``measured`` (name -> digest) falls short of ``expected``, one sentence each,
    in name order; empty when every expected measurement has an accepted digest."""
    problems = []
    for name in sorted(expected):
        digest = measured.get(name)
        if digest is None:
            problems.append(f"{name}: not measured")
        elif digest not in expected[name]:
            problems.append(f"{name}: measured sha256:{digest.hex()[:16]}, not an expected value")
    return tuple(problems)


def measured_digest(measurements: Mapping[str, bytes]) -> bytes:
    """SHA-256 of the deterministic CBOR of ``measurements``: one value naming the whole
    measured state, bound into evidence and the hub's result."""
    return hashlib.sha256(dcbor.encode(dict(measurements))).digest()


def expectations_value(expectations: Expectations) -> dict[str, object]:
    """The CBOR-encodable map of ``expectations`` (what a bundle's ``attestation`` holds)."""

    def allowed(values: Allowed) -> dict[str, object]:
        return {name: sorted(values[name]) for name in sorted(values)}

    return {
        "profiles": {
            name: {
                "measurements": allowed(entry.measurements),
                **(
                    {"devices": {d: allowed(v) for d, v in sorted(entry.devices.items())}}
                    if entry.devices
                    else {}
                ),
            }
            for name, entry in sorted(expectations.profiles.items())
        }
    }

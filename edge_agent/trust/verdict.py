"""The local verdict: one measurement judged against the installed bundle's expectations.

Pure (no I/O, ``now`` given): the trust machine
(:func:`edge_agent.trust.machine.accept_measurement`) judges every measurement the agent
takes, and again whenever a new bundle is installed, with the measurement it already holds,
so a bundle that changes the expectations takes effect at once, without touching a file. The
measurement itself (files, facts, a TPM) is the shell's (:mod:`edge_agent.attest.measure`);
it is read here through :class:`Measured`.

A measurement fails when any item could not be measured, when the bundle's expectations are
malformed or do not name the device's profile, or when an expected measurement is missing
or has a digest the bundle does not accept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import Protocol

from edge_agent.protocol.bundle import DeviceIdentity, VerifiedBundle
from edge_agent.protocol.expectations import compare
from edge_agent.trust.state import LocalVerdict

__all__ = ["LOCAL_GRACE_S", "Measured", "judge", "problems"]

LOCAL_GRACE_S = 5
"""Seconds a local verdict outlives two re-measure intervals before the gate calls it stale."""
MAX_DETAIL_PROBLEMS = 4


class Measured(Protocol):
    """What a verdict reads of one measurement (``edge_agent.attest.measure.MeasurementSet``)."""

    @property
    def items(self) -> Sized:
        """The measured items (a verdict counts them)."""

    @property
    def digests(self) -> Mapping[str, bytes]:
        """Name -> digest of every item that could be measured."""

    @property
    def digest(self) -> bytes:
        """The digest of the whole measured state."""

    @property
    def errors(self) -> tuple[str, ...]:
        """Why items could not be measured, one sentence each."""


def problems(
    bundle: VerifiedBundle[object] | None, device: DeviceIdentity, measured: Measured
) -> tuple[str, ...]:
    """Why ``measured`` does not satisfy ``bundle`` for ``device``; empty when it does (or
    when the bundle requires no attestation and every item could be measured)."""
    found = list(measured.errors)
    if bundle is None or bundle.attestation is None:
        return tuple(found)
    expected = bundle.attestation.for_device(device.profile, device.device_id)
    if expected is None:
        return (*found, f"the bundle has no expectations for profile {device.profile!r}")
    return (*found, *compare(expected, measured.digests))


def judge(
    bundle: VerifiedBundle[object] | None,
    device: DeviceIdentity,
    measured: Measured,
    *,
    now: int,
    interval_s: int,
) -> LocalVerdict:
    """The :class:`LocalVerdict` of ``measured`` at ``now``, valid for two re-measure
    intervals plus :data:`LOCAL_GRACE_S`."""
    found = problems(bundle, device, measured)
    if found:
        shown = "; ".join(found[:MAX_DETAIL_PROBLEMS])
        more = len(found) - MAX_DETAIL_PROBLEMS
        detail = shown + (f"; and {more} more" if more > 0 else "")
    else:
        detail = f"{len(measured.items)} measurement(s) match"
    return LocalVerdict(
        passed=not found,
        digest=measured.digest,
        bundle_digest=bundle.digest if bundle is not None else b"",
        measured_at=now,
        valid_until=now + 2 * interval_s + LOCAL_GRACE_S,
        detail=detail,
    )

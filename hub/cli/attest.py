"""``edge-hub attest``: expectations for bundles, on-demand challenges, fleet attestation view.

``attest expect`` turns device reports (``edge-agent attest --json`` on a golden device) or
the last verified evidence of registered devices into the expectations a bundle carries, so
nobody copies a digest by hand: class-scoped measurements become the class's accepted values
(every distinct value seen, for a staged rollout), device-scoped ones each device's own.

``attest challenge`` records a nonce and publishes a signed challenge through the running
``edge-hub serve``'s broker (or ``--broker``); the running service verifies the answer.
With ``--wait`` it waits for the outcome in the registry.

``attest tpm-ak ID FILE`` registers the TPM attestation key a device's ``edge-agent attest
tpm-enroll`` wrote (PEM); from then on that device's evidence must carry a quote signed by
it (``--remove`` forgets it again).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from edge_agent.errors import ConfigError, TransportError
from edge_agent.protocol.attestation import REPORT_FORMAT
from edge_agent.protocol.expectations import (
    MAX_VALUES,
    Expectations,
    ExpectationsError,
    ProfileExpectations,
)
from edge_agent.protocol.firmware_profile import MAX_PROFILE_BYTES, Profile, parse_profile
from edge_agent.protocol.roles import Role
from edge_agent.support.cli import (
    format_duration,
    read_bounded,
    wall_clock,
)
from edge_agent.support.mqtt import BrokerSettings
from hub.cli.exits import counted
from hub.cli.hub_dir import hub_dir_of
from hub.cli.out import write_hub_out
from hub.core.expectations import expectations_to_json
from hub.core.tpm_quote import MAX_AK_PEM_BYTES, load_ak
from hub.hubdir.keys import load_role_keys
from hub.hubdir.layout import HubDir
from hub.registry import AttestationRecord
from hub.service.publish import publish_once
from hub.service.verifier import DEFAULT_CHALLENGE_TTL_S, Verifier

__all__ = [
    "attestation_json",
    "attestation_lines",
    "build_expectations",
    "cmd_challenge",
    "cmd_expect",
    "cmd_tpm_ak",
]

MAX_REPORT_BYTES = 256 * 1024
WAIT_POLL_S = 0.2

Digests = dict[str, set[bytes]]


# --- expect --------------------------------------------------------------------------------


def cmd_expect(args: argparse.Namespace) -> int:
    path = Path(args.profile)
    if not (path.suffix == ".toml" or path.exists()):
        path = args.profile_dir / f"{args.profile}.toml"
    profile = parse_profile(
        read_bounded(path, MAX_PROFILE_BYTES, "the firmware profile"), str(path)
    )
    if args.from_device_report:
        reports = [_report_measurements(p, profile) for p in args.from_device_report]
    else:
        with hub_dir_of(args).open_registry(create=False) as registry:
            reports = [_device_measurements(registry.attestation(d), d) for d in args.from_device]
    expectations = build_expectations(profile, reports)
    text = json.dumps(expectations_to_json(expectations), indent=2, sort_keys=True) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_hub_out(
            args.out,
            text.encode(),
            hub_dir=args.hub_dir,
            force=args.force,
            mode=0o644,
            inputs=[path],
        )
    entry = expectations.profiles[profile.name]
    several = sorted(n for n, v in entry.measurements.items() if len(v) > 1)
    print(
        f"expectations for {profile.name}: "
        f"{counted(len(entry.measurements), 'class measurement')}, "
        f"{counted(len(entry.devices), 'device')} with their own values"
        + (f"; several values accepted for {', '.join(several)}" if several else "")
        + (f"; written to {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0


def build_expectations(
    profile: Profile, reports: Iterable[tuple[str, dict[str, bytes]]]
) -> Expectations:
    """Expectations for ``profile`` from ``(device id, name -> digest)`` measurements.

    Raises:
        ConfigError: a report lacks a measurement of the profile, or a class measurement has
            more than ``MAX_VALUES`` distinct values.
    """
    scope = profile.scopes
    shared: Digests = {}
    own: dict[str, Digests] = {}
    count = 0
    for device, measured in reports:
        count += 1
        for name, kind in scope.items():
            if name not in measured:
                raise ConfigError(
                    f"the measurements of {device} lack {name!r} (profile {profile.name})"
                )
            target = shared if kind == "class" else own.setdefault(device, {})
            target.setdefault(name, set()).add(measured[name])
    if not count:
        raise ConfigError("no device measurements given")
    crowded = sorted(n for n, v in shared.items() if len(v) > MAX_VALUES)
    if crowded:
        raise ConfigError(
            f"{', '.join(crowded)} differ(s) across more than {MAX_VALUES} values: these "
            'devices do not look like one class; check the reports or set scope = "device"'
        )
    try:
        entry = ProfileExpectations(
            {n: frozenset(v) for n, v in shared.items()},
            {d: {n: frozenset(v) for n, v in m.items()} for d, m in own.items() if m},
        )
    except ExpectationsError as exc:
        raise ConfigError(str(exc)) from exc
    return Expectations({profile.name: entry})


def _report_measurements(path: Path, profile: Profile) -> tuple[str, dict[str, bytes]]:
    raw = read_bounded(path, MAX_REPORT_BYTES, "device report")
    try:
        report = json.loads(raw)
        if report.get("format") != REPORT_FORMAT:
            raise ValueError(f"it is not an {REPORT_FORMAT} (made by 'edge-agent attest --json')")
        device = report["device"]
        if report["profile"] != profile.name:
            raise ValueError(f"it measures profile {report['profile']!r}, not {profile.name!r}")
        measured = {}
        for item in report["measurements"]:
            if item.get("error") or item.get("digest") is None:
                raise ValueError(f"{item['name']} could not be measured: {item.get('error')}")
            digest = bytes.fromhex(item["digest"])
            if len(digest) != 32:
                raise ValueError(f"{item['name']} has no SHA-256 digest")
            measured[str(item["name"])] = digest
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"device report {path} cannot be used: {exc}") from exc
    if not isinstance(device, str):
        raise ConfigError(f"device report {path} names no device")
    return device, measured


def _device_measurements(
    record: AttestationRecord | None, device: str
) -> tuple[str, dict[str, bytes]]:
    if record is None:
        raise ConfigError(
            f"no verified evidence from {device!r} at this hub yet: run "
            f"'edge-hub attest challenge {device} --wait 30s' first"
        )
    try:
        return device, {n: bytes.fromhex(d) for n, d in json.loads(record.measurements).items()}
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"the stored measurements of {device} are damaged") from exc


# --- challenge -----------------------------------------------------------------------------


def cmd_challenge(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    keys = hub.load_keys(args.keys)
    verifier_keys = load_role_keys(args.keys or hub.keys, Role.VERIFIER, keys.root)
    if not verifier_keys:
        raise ConfigError(f"no verifier key of trust root version {keys.root.version} here")
    info = None if args.broker else hub.read_serve_info()
    settings = (
        BrokerSettings.from_url(args.broker) if args.broker else (info.settings if info else None)
    )
    if settings is None:
        raise TransportError("no running 'edge-hub serve' found (and no --broker): nothing sent")
    with hub.open_registry(create=False) as registry:
        device = registry.device(args.device_id)
        if device is None:
            raise ConfigError(f"device {args.device_id!r} is not registered")
        issued = Verifier(registry, verifier_keys[0], root=lambda: keys.root).challenge(
            device, now=wall_clock(), ttl_s=max(DEFAULT_CHALLENGE_TTL_S, args.wait or 0)
        )
    challenge = issued.challenge
    asyncio.run(publish_once(settings, [issued.publication]))
    sent = {"device": device.device_id, "nonce": challenge.nonce.hex(), "sent": True}
    if not args.json:
        print(f"challenge sent to {device.device_id} (nonce {challenge.nonce.hex()[:16]}…)")
    if not args.wait:
        if args.json:
            print(json.dumps(sent | {"outcome": None}, sort_keys=True))
        return 0
    record = _wait_outcome(hub, device.device_id, challenge.nonce, args.wait)
    if record is None:
        raise TransportError(f"no answer from {device.device_id} within {args.wait} s")
    if args.json:
        outcome = attestation_json(record, wall_clock())
        print(json.dumps(sent | {"outcome": outcome}, sort_keys=True))
    else:
        print(_outcome_line(record, wall_clock()))
    return 0 if record.verdict == "pass" else 1


def _wait_outcome(hub: HubDir, device: str, nonce: bytes, wait_s: int) -> AttestationRecord | None:
    deadline = time.monotonic() + wait_s
    with hub.open_registry(create=False) as registry:
        while time.monotonic() < deadline:
            record = registry.attestation(device)
            if record is not None and record.nonce == nonce:
                return record
            time.sleep(WAIT_POLL_S)
    return None


# --- tpm-ak --------------------------------------------------------------------------------


def cmd_tpm_ak(args: argparse.Namespace) -> int:
    der = None
    if args.ak_file is not None:
        key = load_ak(read_bounded(args.ak_file, MAX_AK_PEM_BYTES, "attestation key"))
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    with hub_dir_of(args).open_registry(create=False) as registry:
        if registry.device(args.device_id) is None:
            raise ConfigError(f"device {args.device_id!r} is not registered")
        registry.set_tpm_ak(args.device_id, der, wall_clock())
    fingerprint = None if der is None else hashlib.sha256(der).hexdigest()
    if args.json:
        print(json.dumps({"device": args.device_id, "tpm_ak_sha256": fingerprint}, sort_keys=True))
    elif fingerprint is None:
        print(f"{args.device_id}: TPM attestation key removed; no quote is required any more")
    else:
        print(
            f"{args.device_id}: TPM attestation key sha256:{fingerprint[:16]} registered; its "
            "evidence must now carry a quote signed by it"
        )
    return 0


# --- fleet ---------------------------------------------------------------------------------


def attestation_json(record: AttestationRecord | None, now: int) -> dict[str, object] | None:
    """A device's attestation outcome for ``edge-hub fleet --json``."""
    if record is None:
        return None
    return {
        "verdict": record.verdict,
        "detail": record.detail,
        "verified_at": record.verified_at,
        "expires_at": record.expires_at,
        "expires_in": record.expires_at - now,
        "state": _state(record, now),
    }


def attestation_lines(records: dict[str, AttestationRecord], now: int) -> list[str]:
    """The attestation block under the ``edge-hub fleet`` table."""
    if not records:
        return []
    return ["attestation:"] + [
        "  " + _outcome_line(records[device], now) for device in sorted(records)
    ]


def _state(record: AttestationRecord, now: int) -> str:
    if record.verdict != "pass":
        return "failed"
    return "passed" if now < record.expires_at else "expired"


def _outcome_line(record: AttestationRecord, now: int) -> str:
    left = record.expires_at - now
    when = f"{format_duration(left)} left" if left > 0 else f"expired {format_duration(-left)} ago"
    return (
        f"{record.device:<16} {_state(record, now).upper():<8} {when:<16} "
        f"verified {format_duration(now - record.verified_at)} ago: {record.detail}"
    )

"""``edge-agent attest``: measure now, compare with the bundle, show the hub's last result.

For a technician at the device: every measurement with its digest (and a fact's value), what
the installed bundle expects, and the verdict; then the hub's last attestation result and
the time it has left. ``--json`` prints the same as one object, which is also the *device
report* ``edge-hub attest expect --from-device-report`` turns into bundle expectations.
Measuring here changes nothing in the agent's state: the running agent measures on its own.

Exit codes: 0 the measurement satisfies the bundle (or none is required and every item could
be measured), 1 it does not, 2 no usable profile, 3 no agent state.

``edge-agent attest tpm-enroll`` creates (or finds) the TPM attestation key the profile's
``[tpm]`` table names and writes its public key as PEM (``STATE_DIR/tpm-ak.pem``) for the
operator to register at the hub (``edge-hub attest tpm-ak ID FILE``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from edge_agent.attest.config import (
    DEFAULT_PROFILE_DIR,
    AttestationConfig,
    provider_for,
    resolve,
)
from edge_agent.attest.measure import Measurement, MeasurementSet
from edge_agent.attest.profile import load_profile
from edge_agent.attest.tpm import enroll
from edge_agent.errors import ConfigError
from edge_agent.protocol.attestation import REPORT_FORMAT
from edge_agent.protocol.firmware_profile import Profile
from edge_agent.support.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    epilog,
    expiry_text,
    format_duration,
    wall_clock,
    write_atomic,
    write_out,
)
from edge_agent.trust.state import TrustState
from edge_agent.trust.verdict import problems

__all__ = ["register"]

AK_FILE = "tpm-ak.pem"


StateReader = Callable[[Path], TrustState]
"""Reads a state directory's trust state (the agent's, handed in by ``edge_agent.cli``: the
attest package sits below the agent, which measures with it)."""


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    read_state: StateReader,
) -> None:
    """Add ``attest`` to the ``edge-agent`` parser; ``read_state`` opens a state directory."""
    attest = commands.add_parser(
        "attest",
        parents=[common],
        help="measure now and compare with the bundle's expectations",
        description="Measure this device now and compare with what the installed bundle "
        "expects; --json prints the device report 'edge-hub attest expect "
        "--from-device-report' reads.",
        epilog=epilog(
            [
                (EXIT_OK, "the measurement satisfies the bundle (or none is required)"),
                (EXIT_REFUSED, "it does not"),
                (EXIT_USAGE, "no usable firmware profile, or a bad argument"),
                (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
            ],
            "edge-agent attest --json > report.json",
        ),
    )
    attest.add_argument("--profile-file", type=Path, help="firmware profile TOML to measure with")
    attest.add_argument(
        "--profile-dir",
        default=DEFAULT_PROFILE_DIR,
        help="where PROFILE.toml is looked up (default: %(default)s)",
    )
    attest.add_argument(
        "--measure-root",
        default="/",
        help="read measured paths under this root (default: %(default)s)",
    )
    attest.set_defaults(handler=_cmd_attest, read_state=read_state, reads_only=True)
    enroll_tpm = attest.add_subparsers(dest="attest_command", metavar="COMMAND").add_parser(
        "tpm-enroll",
        parents=[common],
        help="create the TPM attestation key and write its public key for the hub",
        epilog=epilog(
            [
                (EXIT_OK, "the key's public part is written"),
                (EXIT_USAGE, "no usable profile or [tpm] table, or --out cannot be written"),
                (EXIT_UNAVAILABLE, "no usable agent state in --state-dir"),
            ],
            "edge-agent attest tpm-enroll --out gw-001-ak.pem",
        ),
    )
    enroll_tpm.add_argument("--profile-file", type=Path, help="firmware profile TOML")
    enroll_tpm.add_argument(
        "--profile-dir",
        default=DEFAULT_PROFILE_DIR,
        help="where PROFILE.toml is looked up (default: %(default)s)",
    )
    enroll_tpm.add_argument("--out", type=Path, help=f"PEM file (default: STATE_DIR/{AK_FILE})")
    enroll_tpm.add_argument("--force", action="store_true", help="replace --out if it is a file")
    enroll_tpm.set_defaults(handler=_cmd_tpm_enroll, read_state=read_state, reads_only=False)


def _load(args: argparse.Namespace, measure_root: str = "/") -> tuple[TrustState, Profile]:
    """This device's trust state and its firmware profile (``--profile-file`` or the
    enrolled profile in ``--profile-dir``)."""
    read_state: StateReader = args.read_state
    state = read_state(args.state_dir)
    config = AttestationConfig(
        profile_file=None if args.profile_file is None else str(args.profile_file),
        profile_dir=args.profile_dir,
        measure_root=measure_root,
    )
    path = resolve(config, state.device)
    if path is None:
        raise ConfigError(
            f"no firmware profile {state.device.profile}.toml in {args.profile_dir}: pass "
            "--profile-file FILE"
        )
    return state, load_profile(path)


def _cmd_tpm_enroll(args: argparse.Namespace) -> int:
    state, profile = _load(args)
    if profile.tpm is None:
        raise ConfigError(
            f"the firmware profile {profile.name} has no [tpm] table: there is no TPM key to enroll"
        )
    pem = enroll(profile.tpm)
    if args.out is None:
        out = args.state_dir / AK_FILE
        write_atomic(out, pem, mode=0o644)
    else:
        out = args.out
        write_out(out, pem, mode=0o644, force=args.force, state_dir=args.state_dir)
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    fingerprint = hashlib.sha256(base64.b64decode(body)).hexdigest()[:16]
    if args.json:
        document = {"out": str(out), "handle": profile.tpm.ak_handle, "sha256": fingerprint}
        print(json.dumps(document, sort_keys=True))
        return EXIT_OK
    print(
        f"TPM attestation key at handle 0x{profile.tpm.ak_handle:08x} "
        f"(sha256:{fingerprint}) written to {out}; register it at the hub: "
        f"edge-hub attest tpm-ak {state.device.device_id} {out.name}"
    )
    return 0


def _cmd_attest(args: argparse.Namespace) -> int:
    now = wall_clock()
    state, profile = _load(args, args.measure_root)
    measured = provider_for(profile, Path(args.measure_root)).measure()
    found = problems(state.bundle, state.device, measured)
    required = state.bundle is not None and bool(state.bundle.attestation)
    verdict = "fail" if found else ("pass" if required else "not_required")
    rows = [_row(m, _expected(state)) for m in measured.items]
    if args.json:
        print(json.dumps(_report(state, measured, rows, found, verdict, now), sort_keys=True))
    else:
        _print(state, measured, rows, found, verdict, now)
    return 0 if verdict != "fail" else 1


def _expected(state: TrustState) -> dict[str, list[str]] | None:
    """Name -> accepted hex digests for this device, or ``None`` when nothing is expected."""
    bundle = state.bundle
    if bundle is None or bundle.attestation is None:
        return None
    allowed = bundle.attestation.for_device(state.device.profile, state.device.device_id) or {}
    return {name: sorted(d.hex() for d in digests) for name, digests in allowed.items()}


def _row(measurement: Measurement, expected: dict[str, list[str]] | None) -> dict[str, object]:
    digest = measurement.digest.hex() if measurement.digest is not None else None
    accepted = None if expected is None else expected.get(measurement.name)
    if measurement.error is not None:
        verdict = "error"
    elif accepted is None:
        verdict = "unchecked"
    else:
        verdict = "match" if digest in accepted else "mismatch"
    return {
        "name": measurement.name,
        "kind": measurement.kind,
        "source": measurement.source,
        "scope": measurement.scope,
        "digest": digest,
        "value": measurement.value,
        "error": measurement.error,
        "expected": accepted,
        "verdict": verdict,
    }


def _report(
    state: TrustState,
    measured: MeasurementSet,
    rows: list[dict[str, object]],
    found: tuple[str, ...],
    verdict: str,
    now: int,
) -> dict[str, object]:
    bundle, result = state.bundle, state.attestation_result
    return {
        "format": REPORT_FORMAT,
        "device": state.device.device_id,
        "region": state.device.region,
        "profile": measured.profile,
        "time": now,
        "bundle": None
        if bundle is None
        else {"version": bundle.version, "digest": bundle.digest.hex()},
        "measured_digest": measured.digest.hex(),
        "verdict": verdict,
        "problems": list(found),
        "measurements": rows,
        "hub_result": None
        if result is None
        else {
            "verdict": str(result.verdict),
            "detail": result.detail,
            "issued_at": result.issued_at,
            "expires_at": result.expires_at,
            "expires_in_s": result.expires_at - now,
            "matches_this_measurement": result.measured == measured.digest,
        },
    }


def _print(
    state: TrustState,
    measured: MeasurementSet,
    rows: list[dict[str, object]],
    found: tuple[str, ...],
    verdict: str,
    now: int,
) -> None:
    bundle = state.bundle
    version = f"bundle v{bundle.version}" if bundle is not None else "no bundle"
    print(f"device   {state.device.device_id} (profile {measured.profile}, {version})")
    for measurement, row in zip(measured.items, rows, strict=True):
        digest = measurement.digest.hex()[:16] if measurement.digest is not None else "-"
        value = f" = {measurement.value}" if measurement.value is not None else ""
        print(
            f"  {row['verdict']!s:<9} {measurement.name:<18} sha256:{digest:<16} "
            f"{measurement.source}{value}"
        )
        if measurement.error is not None:
            print(f"            {measurement.error}")
        elif row["verdict"] == "mismatch" and isinstance(row["expected"], list):
            print(f"            expected one of: {', '.join(d[:16] for d in row['expected'])}")
    print(f"state    sha256:{measured.digest.hex()[:16]} verdict {verdict.upper()}")
    for problem in found:
        print(f"  - {problem}")
    result = state.attestation_result
    if result is None:
        print("hub      no attestation result held")
        return
    when = expiry_text(result.expires_at - now)
    same = "this measurement" if result.measured == measured.digest else "another measured state"
    print(f"hub      {str(result.verdict).upper()} for {same}, {when}: {result.detail}")


def attestation_status(state: TrustState, now: int) -> dict[str, object]:
    """The attestation part of ``edge-agent status --json``: whether the bundle requires
    it, the last local verdict and the hub's last result, with the time each has left."""
    bundle, local, result = state.bundle, state.local_attestation, state.attestation_result
    return {
        "required": bundle is not None and bool(bundle.attestation),
        "local": None
        if local is None
        else {
            "passed": local.passed,
            "detail": local.detail,
            "measured_at": local.measured_at,
            "valid_for_s": local.valid_until - now,
            "digest": local.digest.hex(),
        },
        "hub_result": None
        if result is None
        else {
            "verdict": str(result.verdict),
            "detail": result.detail,
            "expires_at": result.expires_at,
            "expires_in_s": result.expires_at - now,
            "matches_local": local is not None and result.measured == local.digest,
        },
    }


def attestation_line(state: TrustState, now: int) -> str:
    """One ``status`` line: required or not, the local verdict, the hub's result and time left."""
    bundle, local, result = state.bundle, state.local_attestation, state.attestation_result
    required = "required" if bundle is not None and bundle.attestation else "not required"
    if local is None:
        measured = "not measured"
    else:
        verdict = "PASS" if local.passed else "FAIL"
        measured = f"local {verdict} {format_duration(now - local.measured_at)} ago"
    if result is None:
        hub = "no hub result"
    else:
        hub = f"hub {str(result.verdict).upper()}, {expiry_text(result.expires_at - now)}"
    return f"attest   {required}; {measured}; {hub}"

"""``edge-hub policy lint``, ``edge-hub policy test`` and ``edge-hub bundle eval``
(docs/policy-tools.md).

``policy lint`` reports what in a valid policy source is probably a mistake
(:mod:`hub.core.lint`); ``policy test`` decides a YAML table of requests with the device's
engine and compares (:mod:`hub.core.policy_tests`), as ``opa test`` does; ``bundle eval``
decides one request against a signed bundle file with the device's gate
(:func:`edge_agent.trust.gate.decide`): the bundle verified under the trust root, targeted
at ``--device`` when one is named, and judged at ``--at`` (default now), with no state
directory. What a device also holds and a file cannot say (revocations, freshness tokens
after the bundle was issued, attestation) is taken as a device that has received none and
passes attestation; the output says so.

Exit codes (``edge_agent.support.cli``): lint 0 clean (warnings allowed unless
``--strict``), 1 findings of error severity, 2 an unreadable or invalid policy or
vocabulary; test 0 every case passes, 1 some case fails, 2 an unreadable or invalid policy
or tests file; eval 0 allow, 1 deny (or a bundle the device would refuse), 2 an unreadable
or malformed input, 3 the hub directory ``--device`` needs is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from edge_agent.errors import BundleError, ConfigError, EdgeGovError, PolicyError
from edge_agent.policy.bundle import CompiledBundle, compile_bundle_policy
from edge_agent.policy.compiler import compile_policy
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.bundle import (
    DeviceIdentity,
    check_targeting,
    claimed_region,
    verify_bundle,
)
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES, MAX_ROOT_BYTES
from edge_agent.protocol.request import Request
from edge_agent.protocol.root import TrustRoot, verify_trusted_root
from edge_agent.support.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    fail,
    read_regular,
    utc_text,
    wall_clock,
)
from edge_agent.trust.gate import Decision, decide
from edge_agent.trust.state import TrustState, with_bundle
from hub.cli.hub_dir import hub_dir_of
from hub.core.lint import MAX_VOCABULARY_BYTES, LintReport, lint_policy, read_vocabulary
from hub.core.policy_tests import CaseResult, read_cases, run_cases
from hub.hubdir.keys import ROOT_FILE
from hub.hubdir.layout import HubDirError

__all__ = ["cmd_eval", "cmd_lint", "cmd_test"]

PROG = "edge-hub"
MAX_POLICY_BYTES = 16 * 1024 * 1024
MAX_TESTS_BYTES = 8 * 1024 * 1024
_TIME = "%Y-%m-%dT%H:%M:%SZ"
_ANY_DEVICE = "(any device it targets)"


class _InputError(ConfigError):
    """An input file cannot be used; ``path`` names it (the JSON error's ``path``)."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = str(path)


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` with our errors reported once, as CLI.md says: an invalid input exits
    2, a bundle the device would refuse 1, a missing hub directory 3."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except HubDirError as exc:
            return _fail(args, exc, EXIT_UNAVAILABLE)
        except (PolicyError, ConfigError) as exc:
            return _fail(args, exc, EXIT_USAGE)
        except BundleError as exc:
            malformed = exc.code == "bundle_format"
            return _fail(args, exc, EXIT_USAGE if malformed else EXIT_REFUSED)
        except EdgeGovError as exc:
            return _fail(args, exc, EXIT_USAGE)

    return run


def _fail(args: argparse.Namespace, exc: EdgeGovError, code: int) -> int:
    return fail(PROG, exc, getattr(args, "verbose", False), code, as_json=args.json)


def _read(path: Path, limit: int, what: str, *, offered: bool = False) -> bytes:
    try:
        return read_regular(path, limit, what, offered=offered)
    except ConfigError as exc:
        raise _InputError(exc.message, path) from exc


def _read_text(path: Path, limit: int, what: str) -> str:
    try:
        return _read(path, limit, what).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _InputError(f"{what} {path} is not UTF-8 text", path) from exc


@_guarded
def cmd_lint(args: argparse.Namespace) -> int:
    vocabularies = [
        read_vocabulary(_read_text(f, MAX_VOCABULARY_BYTES, "action vocabulary"), str(f))
        for f in args.actions
    ]
    text = _read_text(args.policy, MAX_POLICY_BYTES, "policy file")
    report = lint_policy(text, str(args.policy), vocabularies)
    failed = report.errors > 0 or (args.strict and report.warnings > 0)
    if args.json:
        print(json.dumps(_lint_json(report, failed), sort_keys=True))
    else:
        for finding in report.findings:
            print(finding.text())
        print(_lint_summary(report))
    return EXIT_REFUSED if failed else EXIT_OK


def _lint_summary(report: LintReport) -> str:
    if not report.findings:
        return f"{report.path}: no findings"
    errors, warnings = report.errors, report.warnings
    return (
        f"{report.path}: {errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}"
    )


def _lint_json(report: LintReport, failed: bool) -> dict[str, object]:
    return {
        "path": report.path,
        "ok": not failed,
        "errors": report.errors,
        "warnings": report.warnings,
        "vocabularies": list(report.vocabularies),
        "findings": [finding.as_json() for finding in report.findings],
    }


@_guarded
def cmd_test(args: argparse.Namespace) -> int:
    text = _read_text(args.policy, MAX_POLICY_BYTES, "policy file")
    source = load_policy_source(text, str(args.policy))
    policy = compile_policy(source.policy)
    tests_text = _read_text(args.tests, MAX_TESTS_BYTES, "policy tests file")
    try:
        cases = read_cases(tests_text, str(args.tests), policy.rule_ids)
    except PolicyError as exc:
        return fail(
            PROG,
            exc,
            getattr(args, "verbose", False),
            EXIT_USAGE,
            as_json=args.json,
            reason="policy_tests_invalid",
        )
    results = run_cases(policy, cases, wall_clock() if args.at is None else args.at)
    failed = sum(1 for result in results if not result.passed)
    if args.json:
        print(json.dumps(_tests_json(args, results, failed), sort_keys=True))
    else:
        for result in results:
            print(_case_line(result, str(args.tests)))
        print("-" * 40)
        total = len(results)
        print(f"PASS: {total - failed}/{total}")
        if failed:
            print(f"FAIL: {failed}/{total}")
    return EXIT_REFUSED if failed else EXIT_OK


def _outcome(allowed: bool, reason: str | None, rule: str | None) -> str:
    parts = [reason] if reason else []
    if rule:
        parts.append(f"rule {rule}")
    return ("allow" if allowed else "deny") + (f" ({', '.join(parts)})" if parts else "")


def _case_line(result: CaseResult, path: str) -> str:
    case, got = result.case, result.got
    if result.passed:
        return f"PASS {case.name}"
    return (
        f"FAIL {case.name} ({path}:{case.line}): got "
        f"{_outcome(got.allowed, got.reason, got.rule_id)}; expected "
        f"{_outcome(case.expect_allow, case.reason, case.rule)}"
    )


def _tests_json(
    args: argparse.Namespace, results: list[CaseResult], failed: int
) -> dict[str, object]:
    return {
        "policy": str(args.policy),
        "tests": str(args.tests),
        "passed": len(results) - failed,
        "failed": failed,
        "cases": [
            {
                "name": r.case.name,
                "line": r.case.line,
                "passed": r.passed,
                "time": r.now,
                "expected": {
                    "decision": "allow" if r.case.expect_allow else "deny",
                    "rule": r.case.rule,
                    "reason": r.case.reason,
                },
                "got": {
                    "decision": "allow" if r.got.allowed else "deny",
                    "rule": r.got.rule_id,
                    "reason": r.got.reason,
                },
            }
            for r in results
        ],
    }


@_guarded
def cmd_eval(args: argparse.Namespace) -> int:
    root = _root(args)
    data = _read(args.bundle, MAX_BUNDLE_BYTES, "bundle", offered=True)
    device = _device(args) if args.device else None
    now = wall_clock() if args.at is None else args.at
    bundle = _verified(data, root, device)
    identity = device or DeviceIdentity(
        _ANY_DEVICE,
        bundle.target.region,
        bundle.target.groups,
        next(iter(bundle.target.profiles), ""),
    )
    keys = [key for key, _ in args.context]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ConfigError(f"--context key {twice[0]!r} given twice")
    request = Request(
        subject=args.subject,
        action=args.action,
        resource=args.resource,
        context=tuple(sorted(args.context)),
        selectors=tuple(args.selector),
    )
    decision = _evaluate(bundle, root, identity, request, now)
    notes = _notes(bundle)
    if args.json:
        print(json.dumps(_eval_json(decision, bundle, root, identity, notes), sort_keys=True))
    else:
        _print_eval(decision, bundle, root, identity, notes)
    return EXIT_OK if decision.allowed else EXIT_REFUSED


def _evaluate(
    bundle: CompiledBundle,
    root: TrustRoot,
    device: DeviceIdentity,
    request: Request,
    now: int,
) -> Decision:
    """Decide ``request`` at ``now`` with the device's gate on a device that holds ``root``
    and has installed ``bundle`` and nothing since: no revocation, no freshness token,
    attestation taken as passed (its expectations set aside)."""
    installed = dataclasses.replace(bundle, attestation=None)
    state = with_bundle(TrustState(device=device, root=root), installed)
    return decide(state, request, now)


def _root(args: argparse.Namespace) -> TrustRoot:
    path = args.root or (args.keys / ROOT_FILE if args.keys else None)
    if path is None:
        raise ConfigError(
            "give the trust root to verify the bundle under: --root FILE (or --keys DIR "
            "holding root.cbor)"
        )
    data = _read(path, MAX_ROOT_BYTES, "trust root", offered=True)
    try:
        return verify_trusted_root(data, now=None)
    except EdgeGovError as exc:
        raise _InputError(f"trust root {path}: {exc.message}", path) from exc


def _device(args: argparse.Namespace) -> DeviceIdentity:
    hub = hub_dir_of(args)
    if hub.registry is None and not hub.registry_path.is_file():
        raise HubDirError(
            f"--device needs the hub's registry: {hub.registry_path} does not exist "
            "(pass --hub-dir, or leave out --device to decide as any device the bundle targets)",
            hub.path,
        )
    with hub.open_registry(create=False) as registry:
        record = registry.device(args.device)
    if record is None:
        raise ConfigError(f"device {args.device!r} is not registered in {hub.path}")
    return DeviceIdentity(record.device_id, record.region, record.groups, record.profile)


def _verified(data: bytes, root: TrustRoot, device: DeviceIdentity | None) -> CompiledBundle:
    """The bundle as a device installs it: verified under ``root`` for the device's region
    (or, with no device, the region the bundle claims), targeted at ``device``, its policy
    compiled. Expiry is the gate's to judge, at the decision's time.

    Raises:
        BundleError: the device would refuse it (``code`` names the check).
    """
    region = device.region if device else claimed_region(data)
    verified = verify_bundle(data, root=root, region=region)
    if device is not None:
        check_targeting(verified, device)
    return compile_bundle_policy(verified)


def _notes(bundle: CompiledBundle) -> list[str]:
    notes = ["no revocations and no freshness tokens are known to this evaluation"]
    if bundle.attestation is not None:
        notes.append("the bundle requires attestation: taken as passed")
    return notes


def _eval_json(
    decision: Decision,
    bundle: CompiledBundle,
    root: TrustRoot,
    device: DeviceIdentity,
    notes: list[str],
) -> dict[str, object]:
    request = decision.request
    return {
        "decision": "allow" if decision.allowed else "deny",
        "reason": str(decision.reason),
        "message": decision.message,
        "rule": decision.rule_id,
        "bundle_version": bundle.version,
        "bundle_digest": bundle.digest.hex(),
        "bundle_expires_at": bundle.expires_at,
        "root_version": root.version,
        "verified_signers": sorted(k.hex() for k in bundle.signer_ids),
        "device": None if device.device_id == _ANY_DEVICE else device.device_id,
        "time": decision.time,
        "request": {
            "subject": request.subject,
            "action": request.action,
            "resource": request.resource,
            "context": dict(request.context),
            "selectors": list(request.selectors),
        },
        "notes": notes,
        "decision_digest": decision.digest.hex(),
    }


def _print_eval(
    decision: Decision,
    bundle: CompiledBundle,
    root: TrustRoot,
    device: DeviceIdentity,
    notes: list[str],
) -> None:
    verdict = "ALLOW" if decision.allowed else "DENY"
    print(f"{verdict} {decision.reason} rule={decision.rule_id or '-'}")
    print(f"  {decision.message}")
    print(
        f"  bundle v{bundle.version} sha256:{bundle.digest.hex()[:16]}, verified under trust "
        f"root v{root.version} ({len(bundle.signer_ids)} signature(s)); "
        f"decided at {utc_text(decision.time, _TIME)} as {device.device_id}"
    )
    for note in notes:
        print(f"  note: {note}")

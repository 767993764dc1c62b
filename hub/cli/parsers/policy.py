"""The parsers of ``policy lint|test`` and ``bundle eval`` (handlers: :mod:`hub.cli.policy`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from edge_agent.support.cli import EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE, epilog
from hub.cli.lazy import Handler

__all__ = ["register"]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    bundle: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add ``policy lint``, ``policy test`` and ``bundle eval`` to the ``edge-hub`` parser
    (``parents``: the global options every subcommand takes)."""
    policy = commands.add_parser(
        "policy",
        parents=list(parents),
        help="check policy sources: lint and unit tests",
        epilog=epilog(
            [(EXIT_USAGE, "no or an unknown subcommand")], "edge-hub policy lint fleet.yaml"
        ),
    ).add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    _register_lint(policy, parents)
    _register_test(policy, parents)
    _register_eval(bundle, parents)


def _register_lint(
    policy: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    lint = policy.add_parser(
        "lint",
        parents=list(parents),
        help="report probable mistakes in a policy source, with file:line",
        description="Check a policy source as 'bundle build' does, then report what is "
        "probably a mistake: actions outside the declared vocabulary (or one typo from "
        "another action), allow rules a deny makes unreachable, rules shadowed by or "
        "identical to an earlier one, allows a deny overrides in part, unused groups and "
        "workloads. Shadowing is claimed only when proven.",
        epilog=epilog(
            [
                (EXIT_OK, "no finding of error severity (warnings allowed unless --strict)"),
                (EXIT_REFUSED, "findings of error severity (or any finding with --strict)"),
                (EXIT_USAGE, "the policy or vocabulary file is unreadable or invalid"),
            ],
            "edge-hub policy lint fleet.yaml --actions actions.txt --json",
        ),
    )
    lint.add_argument("policy", type=Path, help="the policy source (YAML)")
    lint.add_argument(
        "--actions",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="an action vocabulary: one action a line, '#' comments (repeat for several; "
        "the policy's own 'actions:' list is checked too)",
    )
    lint.add_argument(
        "--strict", action="store_true", help="warnings fail too (exit 1 on any finding)"
    )
    lint.add_argument("--json", action="store_true", help="print one JSON object")
    lint.set_defaults(handler=Handler("hub.cli.policy", "cmd_lint"))


def _register_test(
    policy: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    test = policy.add_parser(
        "test",
        parents=list(parents),
        help="decide a table of requests and compare with the expected decisions",
        description="Decide each case of a tests table with the device's engine over the "
        "compiled policy and compare the decision (and, when given, the rule and reason) "
        "with what the case expects.",
        epilog=epilog(
            [
                (EXIT_OK, "every case passes"),
                (EXIT_REFUSED, "some case fails"),
                (EXIT_USAGE, "the policy or tests file is unreadable or invalid"),
            ],
            "edge-hub policy test fleet.yaml fleet.tests.yaml",
        ),
    )
    test.add_argument("policy", type=Path, help="the policy source (YAML)")
    test.add_argument("tests", type=Path, help="the tests table (YAML, docs/policy-tools.md)")
    _add_time_and_json(test, "decide cases without their own time")
    test.set_defaults(handler=Handler("hub.cli.policy", "cmd_test"))


def _register_eval(
    bundle: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    evaluate = bundle.add_parser(
        "eval",
        parents=list(parents),
        help="decide one request against a signed bundle file, as a device would",
        description="Decide one request against a signed bundle file with the device's "
        "gate, no state directory needed: the bundle verified under the trust root, "
        "targeted at --device when given, not expired (nor past max_offline without a "
        "freshness token) at --at. Revocations and freshness tokens are taken as none, "
        "attestation as passed.",
        epilog=epilog(
            [
                (EXIT_OK, "allow"),
                (EXIT_REFUSED, "deny, or a bundle the device would refuse"),
                (EXIT_USAGE, "an unreadable or malformed bundle, root or argument"),
                (EXIT_UNAVAILABLE, "--device given and the hub directory has no registry"),
            ],
            "edge-hub bundle eval bundle.cbor --root keys/root.cbor --subject svc:camera "
            "--action exec --resource /opt/camera/bin/capture --selector uid:1001",
        ),
    )
    evaluate.add_argument("bundle", type=Path, help="the signed bundle (CBOR)")
    evaluate.add_argument("--subject", required=True, help="who asks (a workload id)")
    evaluate.add_argument("--action", required=True, help="what it asks to do (e.g. exec)")
    evaluate.add_argument("--resource", required=True, help="on what (e.g. /opt/x/bin/run)")
    evaluate.add_argument(
        "--selector",
        type=_selector,
        action="append",
        default=[],
        metavar="KIND:VALUE",
        help="a kernel-vouched identity of the caller, e.g. uid:1001 (repeat)",
    )
    evaluate.add_argument(
        "--context",
        type=_context,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a request context pair, e.g. zone=plant-a (repeat)",
    )
    evaluate.add_argument(
        "--root", type=Path, metavar="FILE", help="the trust root (default: KEYS/root.cbor)"
    )
    evaluate.add_argument(
        "--keys", type=Path, metavar="DIR", help="key directory holding root.cbor"
    )
    evaluate.add_argument(
        "--device",
        metavar="ID",
        help="decide as this registered device (its region, groups and profile, from the "
        "hub directory's registry); the bundle must target it",
    )
    if not _has_option(parents, "--hub-dir"):
        evaluate.add_argument(
            "--hub-dir",
            type=Path,
            metavar="DIR",
            help="hub directory for --device (default: $EDGE_HUB_DIR or .)",
        )
    _add_time_and_json(evaluate, "decide")
    evaluate.set_defaults(handler=Handler("hub.cli.policy", "cmd_eval"))


def _add_time_and_json(parser: argparse.ArgumentParser, decides: str) -> None:
    """Add ``--at TIME`` (what it ``decides`` at that time) and ``--json``: the options
    closing ``policy test`` and ``bundle eval``."""
    parser.add_argument(
        "--at",
        type=_time,
        metavar="TIME",
        help=f"{decides} at this UTC time (2026-01-07T12:00:00Z or Unix seconds; default now)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _has_option(parents: Sequence[argparse.ArgumentParser], option: str) -> bool:
    """Whether the global options in ``parents`` already hold ``option`` (the hub's global
    options may carry ``--hub-dir``; adding it twice is an argparse error)."""
    return any(option in parent._option_string_actions for parent in parents)


def _time(text: str) -> int:
    """A ``--at`` time; the reader of the tests tables parses it, imported only when given."""
    from hub.core.policy_tests import parse_utc_time

    try:
        return parse_utc_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _selector(text: str) -> str:
    kind, colon, value = text.partition(":")
    if not colon or not kind or not value or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError(
            f"selector {text!r} must look like KIND:VALUE, e.g. uid:1001 or exe:/usr/bin/x"
        )
    return text


def _context(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"context {text!r} must look like KEY=VALUE")
    return key, value
